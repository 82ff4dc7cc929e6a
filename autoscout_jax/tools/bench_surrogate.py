"""Benchmark of the learned multi-fidelity surrogate, in one run.

    python -m autoscout_jax.tools.bench_surrogate [--output=FILE.json] [--workdir=DIR]
        [--sources=local,simulated] [--seeds=0,1,2] [--gather_local]

Where it sits: a program over the evaluators, `encoding.to_arrays` and
`surrogates` (fit, predict, metrics), not a test. Two data sources:
- local: real measurements of the quickstart's local-device space (tiny
  transformer, 8 CPU devices; surrogate_bench_local.py), F2 compile as the
  cheap fidelity (it measures no time: its XLA flops at a nominal rate
  stand in) and F3 profile as the top one, replayed from the table
  committed under experiments/surrogate_bench/ (`--gather_local` measures
  it again here). The space has 150 candidates, so the cheap points are
  every candidate of it, not 2000.
- simulated: Llama 3 70B on 256 H100 (Megatron space), F0 analytic as the
  cheap fidelity on `--n_cheap` random valid candidates, F1 event as the
  top one on `--n_train` + `--n_heldout` others.
For each source and seed, `--n_train` top-fidelity candidates are drawn for
training and the other top-fidelity candidates are held out; three
predictors rank the held-out ones:
1. multi_fidelity: the ensemble on the cheap rows + the training top rows,
   with the cheap fidelity's log time of every candidate as its `prior`;
2. top_only: the same ensemble on the training top rows alone (no cheap
   rows, no prior);
3. cheapest_fidelity: the cheap fidelity's log time plus its mean offset
   on the training top rows, ±2σ from the spread of that offset; its
   feasibility verdict as the feasibility score.
Metrics on the held-out rows (surrogates.metrics; medians over seeds):
Spearman of log step time, top-5 regret (the true best of the predictor's
5 best-ranked, relative to the true best), ±2σ coverage, feasibility AUC.
Then the fit time (5 members, 5,000 rows) and prediction throughput (1e5
candidates) of surrogates/benchmark.py's synthetic data. TensorBoard logs
of every fit go to `--workdir` (surrogate_logging.write_fit).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import statistics
import sys
import tempfile
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from absl import app, flags

import surrogates as S
from autoscout_jax import encoding
from autoscout_jax.measurement import Measurement
from autoscout_jax.space import Candidate, SearchSpace
from autoscout_jax.surrogate_logging import write_fit
from autoscout_jax.tools import surrogate_bench_local as local_src
from autoscout_jax.writers import JsonlWriter, MultiWriter, TensorBoardWriter, Writer

PREDICTORS = ("multi_fidelity", "top_only", "cheapest_fidelity")
METRICS = ("spearman", "top5_regret", "coverage_2sigma", "feasibility_auc")
SOURCES = ("local", "simulated")
FLAGS = flags.FLAGS

@dataclasses.dataclass
class Source:
  """One data source: measurements at a cheap and a top fidelity.

  cheap_log_time / cheap_feasible hold the cheap fidelity's verdict on every
  candidate the benchmark touches (training and held-out): the prior input
  of predictor 1 and the whole of predictor 3.
  """

  name: str
  space: SearchSpace
  fidelities: tuple[str, str]  # (cheap, top)
  cheap: list[Measurement]
  top: list[Measurement]
  cheap_log_time: dict[Candidate, float]
  cheap_feasible: dict[Candidate, float]
  step_time: dict[str, encoding.StepTime]
  notes: list[str]


def _fill_unknown(log_time: dict[Candidate, float | None]) -> dict[Candidate, float]:
  # A candidate the cheap fidelity could not time (compile error) gets the
  # slowest known time: pessimistic, and finite as the prior input must be.
  known = [v for v in log_time.values() if v is not None]
  worst = max(known) if known else 0.0
  return {c: (worst if v is None else v) for c, v in log_time.items()}


def local_source(table_path: str) -> Source:
  space, ms, header = local_src.load_local(table_path)
  cheap = [m for m in ms if m.fidelity == "compile"]
  top = [m for m in ms if m.fidelity == "profile"]
  lt = {}
  for m in cheap:
    secs = local_src.f2_step_time(m)
    lt[m.candidate] = math.log(secs) if secs else None
  prov = header.get("provenance", {})
  notes = [f"cheap points: every candidate of the space ({len(cheap)} F2), not 2000",
           local_src.F2_TIME_DOC,
           "F3 time: fastest timed step (shared machine; see surrogate_bench_local.f3_step_time)",
           f"measured {prov.get('date')} on {prov.get('device_kind')} x {prov.get('device_count')}, "
           f"jax {prov.get('jax_version')}"]
  return Source("local", space, ("compile", "profile"), cheap, top, _fill_unknown(lt),
                {m.candidate: float(m.feasible) for m in cheap},
                {"compile": local_src.f2_step_time, "profile": local_src.f3_step_time}, notes)


def simulated_source(n_cheap: int, n_top: int, seed: int = 0, model: str = "llama3_70b",
                     system: str = "dgx_h100", devices: int = 256,
                     devices_per_node: int = 8) -> Source:
  from autoscout_jax.problem import Problem
  from autoscout_jax.sim import analytic, catalog, costs, event, hardware, spaces
  wl = catalog.make_workload(model, devices, devices_per_slice=devices_per_node)
  cl = hardware.make_cluster(system, devices, devices_per_node=devices_per_node)
  space = spaces.megatron_training_space(wl, cl)
  if n_cheap + n_top > space.size():
    raise ValueError(f"the simulated space has {space.size()} valid candidates, fewer than "
                     f"n_cheap + top candidates = {n_cheap + n_top}")
  idx = np.random.default_rng(seed).choice(space.size(), n_cheap + n_top, replace=False)
  cands = space.candidates_from_table(space.table(), idx)
  # F0 scores every candidate once through its evaluator (the cheap rows)
  # and once directly, for the time of OOM candidates too (the evaluator
  # reports time only for feasible ones); same shapes, so one compile.
  problem = Problem(wl, cl, space, ("analytic", "event"))
  cheap = analytic.AnalyticEvaluator().evaluate(problem, cands)[:n_cheap]
  plan = analytic.candidates_to_arrays(space, cands, wl, cl)
  f0 = analytic.simulate_f0(plan, costs.model_scalars(wl), hardware.cluster_scalars(cl))
  top = event.EventEvaluator().evaluate(problem, cands[n_cheap:])
  lt = {c: float(np.log(t)) for c, t in zip(cands, f0["step_time_s"])}
  feas = {c: float(f) for c, f in zip(cands, f0["feasible"])}
  notes = [f"{wl.name} on {cl.name} ({space.size():,} valid candidates), "
           f"{n_cheap} F0 + {n_top} F1 random distinct candidates"]
  return Source("simulated", space, ("analytic", "event"), list(cheap), list(top), lt, feas, {},
                notes)


# --- predictors -------------------------------------------------------------------------------
@dataclasses.dataclass
class Outcome:
  mean: np.ndarray  # predicted log step time per held-out row
  std: np.ndarray
  feasible_prob: np.ndarray
  history: Any = None  # FitHistory of the ensembles


def heldout_metrics(truth: S.SurrogateData, out: Outcome, top_k: int = 5) -> dict[str, float]:
  """The benchmark's metrics of one predictor on the held-out rows, defined
  as in `surrogates.evaluate`: time metrics on feasible rows, AUC on all,
  top-k regret ranks predicted-infeasible rows (P < 0.5) last."""
  feas = np.asarray(truth.feasible) > 0
  t = np.asarray(truth.log_time)[feas]
  m, s = out.mean[feas], out.std[feas]
  true_time = np.where(feas, np.exp(np.nan_to_num(truth.log_time)), np.inf)
  score = np.where(out.feasible_prob >= 0.5, out.mean, np.inf)
  return {"spearman": S.spearman(t, m), "kendall": S.kendall_tau(t, m),
          f"top{top_k}_regret": S.top_k_regret(true_time, score, top_k),
          "coverage_2sigma": S.coverage(t, m, s, 2.0),
          "feasibility_auc": S.auc(feas, out.feasible_prob), "num_heldout": float(feas.size)}


def _ensemble(train: S.SurrogateData, pool: S.SurrogateData, config: S.ModelConfig,
              tc: S.TrainConfig) -> Outcome:
  state, hist = S.fit(train, config, tc)
  p = S.predict(state, pool.x, pool.active, prior=pool.prior if config.has_prior else None,
                fidelity=config.top_fidelity)
  return Outcome(p.log_time_mean, p.log_time_std, p.feasible_prob, hist)


def _cheapest(src: Source, train_top: Sequence[Measurement], heldout: Sequence[Measurement],
              top_train_data: S.SurrogateData) -> Outcome:
  prior = np.asarray([src.cheap_log_time[m.candidate] for m in train_top])
  ok = np.asarray(top_train_data.feasible) > 0
  resid = np.asarray(top_train_data.log_time)[ok] - prior[ok]
  offset = float(resid.mean()) if resid.size else 0.0
  spread = float(resid.std(ddof=1)) if resid.size > 1 else float("nan")
  mean = np.asarray([src.cheap_log_time[m.candidate] for m in heldout]) + offset
  p = np.asarray([src.cheap_feasible[m.candidate] for m in heldout])
  return Outcome(mean, np.full_like(mean, spread), p)


def run_source(src: Source, seed: int, n_train: int, members: int, max_steps: int,
               writer: Writer | None = None, mf_prior: bool = True,
               top_repeat: int = 1) -> dict[str, dict[str, float]]:
  """The three predictors on one train/held-out draw of `src`.

  mf_prior: give predictor 1 the cheap fidelity's log time as its prior
    input (it then learns the top fidelity as a correction of it).
  top_repeat: how many times predictor 1 sees each top-fidelity training
    row (the surrogate treats row weights as 0/1, so repeating is how 20
    rows are kept from drowning in 2000 cheap ones).
  """
  top = encoding.select(src.top, [src.fidelities[1]])
  if len(top) <= n_train:
    raise ValueError(f"source {src.name!r} has {len(top)} top-fidelity measurements; need more "
                     f"than n_train={n_train} to hold some out")
  order = np.random.default_rng(seed).permutation(len(top))
  train_top = [top[i] for i in order[:n_train]]
  heldout = [top[i] for i in order[n_train:]]
  fids = src.fidelities
  mf_kw = dict(step_time=src.step_time, prior=src.cheap_log_time if mf_prior else None)
  mf_train = encoding.to_arrays(list(src.cheap) + train_top * top_repeat, src.space, fids,
                                **mf_kw)
  mf_pool = encoding.to_arrays(heldout, src.space, fids, **mf_kw)
  top_kw = dict(step_time={k: v for k, v in src.step_time.items() if k == fids[1]})
  top_train = encoding.to_arrays(train_top, src.space, fids[1:], **top_kw)
  truth = encoding.to_arrays(heldout, src.space, fids[1:], **top_kw)
  tc = S.TrainConfig(seed=seed, max_steps=max_steps)
  d = truth.num_features
  outcomes = {
      "multi_fidelity": _ensemble(mf_train, mf_pool, S.ModelConfig(
          num_features=d, num_fidelities=2, has_prior=mf_prior, ensemble_size=members), tc),
      "top_only": _ensemble(top_train, truth, S.ModelConfig(
          num_features=d, num_fidelities=1, ensemble_size=members), tc),
      "cheapest_fidelity": _cheapest(src, train_top, heldout, top_train),
  }
  results = {}
  for name, out in outcomes.items():
    results[name] = heldout_metrics(truth, out)
    if writer is not None and out.history is not None:
      write_fit(writer, f"{src.name}/{name}/seed_{seed}", out.history, results[name])
  return results


# --- speed (surrogates/benchmark.py's synthetic data) -------------------------------------------
def _timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
  """(result, wall seconds, process CPU seconds): on a shared machine the CPU
  time is the steadier figure."""
  t, c = time.perf_counter(), time.process_time()
  out = fn()
  return out, time.perf_counter() - t, time.process_time() - c


def speed(rows: int, pool: int, members: int) -> dict[str, float]:
  """Fit time (first call, which compiles, and a compiled refit) and the
  prediction throughput, on surrogates/benchmark.py's synthetic data."""
  from surrogates import benchmark
  d, c, f = 32, 4, 3
  data = benchmark.synthetic(rows, d, c, f)
  cfg = S.ModelConfig(num_features=d, context_dim=c, num_fidelities=f, has_prior=True,
                      ensemble_size=members)
  load = os.getloadavg()[0]
  _, first, first_cpu = _timed(lambda: S.fit(data, cfg))
  (state, _), again, again_cpu = _timed(lambda: S.fit(data, cfg, S.TrainConfig(seed=1)))
  cands = benchmark.synthetic(pool, d, c, f, seed=1)
  run = lambda: S.predict(state, cands.x, cands.active, cands.context, cands.prior)  # noqa: E731
  run()  # compiles
  _, wall, cpu = _timed(lambda: [run() for _ in range(3)])
  return {"fit_seconds": first, "fit_cpu_seconds": first_cpu, "fit_seconds_compiled": again,
          "fit_cpu_seconds_compiled": again_cpu, "predictions_per_second": 3 * pool / wall,
          "predictions_per_cpu_second": 3 * pool / cpu, "fit_rows": float(rows),
          "members": float(members), "pool": float(pool), "load_average_1min": load}


# --- the program --------------------------------------------------------------------------------
def _median(vals: Sequence[float]) -> float:
  finite = [v for v in vals if not math.isnan(v)]
  return float(statistics.median(finite)) if finite else float("nan")


def _json_num(v: float) -> float | None:
  return float(v) if math.isfinite(v) else None


def run(sources: Sequence[str] = SOURCES, seeds: Sequence[int] = (0, 1, 2), n_train: int = 20,
        n_cheap: int = 2000, n_heldout: int = 300, members: int = 5, max_steps: int = 2000,
        with_speed: bool = True, speed_rows: int = 5000, speed_pool: int = 100_000,
        local_table: str = local_src.LOCAL_TABLE, workdir: str | None = None,
        mf_prior: bool = True, top_repeat: int = 1,
        log: Callable[[str], None] = print) -> dict[str, Any]:
  """Everything in the module docstring; returns the JSON record."""
  bad = [s for s in sources if s not in SOURCES]
  if bad or not sources:
    raise ValueError(f"unknown source(s) {bad or '(none given)'}; known: {list(SOURCES)}")
  if n_train < 2:
    raise ValueError(f"n_train must be >= 2, got {n_train}")
  if top_repeat < 1:
    raise ValueError(f"top_repeat must be >= 1, got {top_repeat}")
  workdir = workdir or tempfile.mkdtemp(prefix="bench_surrogate_")
  writer = MultiWriter([TensorBoardWriter(os.path.join(workdir, "tb"), flat=True), JsonlWriter(workdir)])
  record: dict[str, Any] = {"sources": {}, "details": {}, "seeds": list(seeds),
                            "n_train": n_train, "members": members, "mf_prior": mf_prior,
                            "top_repeat": top_repeat}
  try:
    for name in sources:
      t0 = time.perf_counter()
      src = (local_source(local_table) if name == "local"
             else simulated_source(n_cheap, n_train + n_heldout))
      per_seed = [run_source(src, s, n_train, members, max_steps, writer, mf_prior, top_repeat)
                  for s in seeds]
      record["sources"][name] = {
          p: {m: _json_num(_median([r[p][m] for r in per_seed])) for m in METRICS}
          for p in PREDICTORS}
      record["details"][name] = {
          "notes": src.notes, "cheap_fidelity": src.fidelities[0],
          "top_fidelity": src.fidelities[1], "cheap_rows": len(src.cheap),
          "heldout_rows": int(per_seed[0]["top_only"]["num_heldout"]),
          "kendall": {p: _json_num(_median([r[p]["kendall"] for r in per_seed]))
                      for p in PREDICTORS},
          "per_seed": [{p: {m: _json_num(r[p][m]) for m in METRICS} for p in PREDICTORS}
                       for r in per_seed],
          "seconds": round(time.perf_counter() - t0, 1)}
      log(_table(name, record))
    if with_speed:
      sp = speed(speed_rows, speed_pool, members)
      record.update(sp)
      log(f"speed (load average {sp['load_average_1min']:.1f} on {os.cpu_count()} cores): fit "
          f"{members} members x {speed_rows} rows {sp['fit_seconds']:.1f} s wall / "
          f"{sp['fit_cpu_seconds']:.1f} s CPU (first call, compiles; compiled "
          f"{sp['fit_seconds_compiled']:.1f} s / {sp['fit_cpu_seconds_compiled']:.1f} s), "
          f"predict {sp['predictions_per_second']:,.0f} candidates/s wall "
          f"({sp['predictions_per_cpu_second']:,.0f} per CPU second) on {speed_pool:,}")
  finally:
    writer.close()
  record["targets"] = targets(record)
  log("targets: " + ", ".join(f"{k}={v}" for k, v in record["targets"].items()))
  return record


# Spearman differences below this are within the spread between seeds
# (simulated source: 0.986-0.987 for both predictors 1 and 3), so "beats"
# needs at least this margin.
SPEARMAN_MARGIN = 0.005


def _beats(a: Mapping[str, float | None], b: Mapping[str, float | None]) -> bool:
  """Spearman higher by SPEARMAN_MARGIN and top-5 regret no higher."""
  sa, sb, ra, rb = a["spearman"], b["spearman"], a["top5_regret"], b["top5_regret"]
  return (sa is not None and (sb is None or sa >= sb + SPEARMAN_MARGIN)
          and (rb is None or (ra is not None and ra <= rb)))


def targets(record: Mapping[str, Any]) -> dict[str, bool | float | None]:
  """The issue's targets, checked on the medians."""
  out: dict[str, bool | float | None] = {}
  for name, res in record["sources"].items():
    mf = res["multi_fidelity"]
    out[f"{name}_beats_top_only"] = _beats(mf, res["top_only"])
    out[f"{name}_beats_cheapest"] = _beats(mf, res["cheapest_fidelity"])
    for other in ("top_only", "cheapest_fidelity"):
      so = res[other]["spearman"]
      out[f"{name}_spearman_gain_vs_{other}"] = (
          None if mf["spearman"] is None or so is None else round(mf["spearman"] - so, 4))
  if "simulated" in record["sources"]:
    s = record["sources"]["simulated"]["multi_fidelity"]["spearman"]
    out["simulated_spearman_ge_0.9"] = s is not None and s >= 0.9
  if "fit_seconds" in record:
    out["fit_le_30s"] = record["fit_seconds"] <= 30.0
    out["predict_ge_1e5_per_s"] = record["predictions_per_second"] >= 1e5
  return out


def _table(name: str, record: Mapping[str, Any]) -> str:
  det = record["details"][name]
  lines = [f"source {name}: cheap {det['cheap_fidelity']} ({det['cheap_rows']} rows), top "
           f"{det['top_fidelity']} ({record['n_train']} train, {det['heldout_rows']} held out), "
           f"medians over seeds {record['seeds']}"]
  lines += [f"  {n}" for n in det["notes"]]
  lines.append(f"  {'predictor':<18}" + "".join(f"{m:>17}" for m in METRICS))
  for p in PREDICTORS:
    vals = record["sources"][name][p]
    lines.append(f"  {p:<18}" + "".join(
        f"{'n/a' if vals[m] is None else format(vals[m], '.3f'):>17}" for m in METRICS))
  return "\n".join(lines)


def write_json(record: Mapping[str, Any], path: str) -> None:
  """The record as JSON (undefined metrics are null)."""
  with open(path, "w", encoding="utf-8") as f:
    json.dump(record, f, indent=1, sort_keys=True, allow_nan=False)
    f.write("\n")


def _define_flags() -> None:
  """Flags exist only when this runs as a program: absl flags are
  process-global, and tests import this module next to other tools."""
  flags.DEFINE_string("output", None, "write the results as JSON here")
  flags.DEFINE_string("workdir", None, "TensorBoard logs of the fits (default: a new temp dir)")
  flags.DEFINE_list("sources", list(SOURCES), "data sources: local, simulated")
  flags.DEFINE_list("seeds", ["0", "1", "2"], "seeds of the train/held-out draws and the fits")
  flags.DEFINE_integer("n_train", 20, "top-fidelity training candidates")
  flags.DEFINE_integer("n_cheap", 2000, "simulated: cheap (F0) candidates")
  flags.DEFINE_integer("n_heldout", 300, "simulated: held-out top-fidelity (F1) candidates")
  flags.DEFINE_integer("members", 5, "ensemble members")
  flags.DEFINE_integer("max_steps", 2000, "optimizer steps per fit at most (TrainConfig.max_steps)")
  flags.DEFINE_bool("mf_prior", True, "predictor 1 gets the cheap fidelity's log time as input")
  flags.DEFINE_integer("top_repeat", 1, "predictor 1 sees each top-fidelity training row this "
                       "many times")
  flags.DEFINE_bool("speed", True, "also time fit (5,000 rows) and predict (1e5 candidates)")
  flags.DEFINE_integer("speed_rows", 5000, "rows of the timed fit")
  flags.DEFINE_integer("speed_pool", 100_000, "candidates of the timed prediction")
  flags.DEFINE_string("local_table", local_src.LOCAL_TABLE, "source (a) table (replayed)")
  flags.DEFINE_bool("gather_local", False, "measure source (a) again on this machine (about 20 "
                    "minutes, resumable in --workdir) and rewrite --local_table first")
  flags.DEFINE_integer("gather_n_top", 50, "source (a): candidates profiled (F3) when gathering")


def main(argv: Sequence[str]) -> None:
  del argv
  try:
    seeds = [int(s) for s in FLAGS.seeds]
  except ValueError:
    print(f"bench_surrogate: error: --seeds must be integers, got {FLAGS.seeds}", file=sys.stderr)
    sys.exit(2)
  workdir = FLAGS.workdir or tempfile.mkdtemp(prefix="bench_surrogate_")
  try:
    if FLAGS.gather_local:
      local_src.gather_local(os.path.join(workdir, "local_store"), FLAGS.local_table,
                             n_top=FLAGS.gather_n_top)
    record = run(FLAGS.sources, seeds, FLAGS.n_train, FLAGS.n_cheap, FLAGS.n_heldout,
                 FLAGS.members, FLAGS.max_steps, FLAGS.speed, FLAGS.speed_rows, FLAGS.speed_pool,
                 FLAGS.local_table, workdir, FLAGS.mf_prior, FLAGS.top_repeat)
  except (ValueError, FileNotFoundError) as e:
    print(f"bench_surrogate: error: {e}", file=sys.stderr)
    sys.exit(2)
  print(f"TensorBoard logs: {os.path.join(workdir, 'tb')}")
  if FLAGS.output:
    write_json(record, FLAGS.output)
    print(f"wrote {FLAGS.output}")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
