"""Measured serving tasks: groups of aiconfigurator's measured sample as scoutbench tasks.

Where it sits: a task file gin/bench/serving_<name>.gin binds `workload`,
`cluster` and `space` (this module) with one `GROUP` (model, system, engine,
weight format, input/output lengths) and a `tasks.RecordedProfiling` truth:
the JSON table `write_truth` derives from the measured rows
(`python -m autoscout_jax.bench.serving_tables`, which also writes the gin
files). The F0 serving model is on offer as the cheap fidelity
(`SampleServingEvaluator`, 'analytic'). Nothing in bench/tasks.py changes:
a serving task is a recorded table like the real local one.

A task is an aggregated-serving sweep of one group (>= 20 distinct
configurations): the knobs are the engine layout the sample varies
(tensor / pipeline / attention-data-parallel / expert-parallel sizes, max
sequences per attention rank, engine replicas); the candidates are exactly
the measured configurations (an allow-list constraint); the objective is
output tokens/s per GPU = concurrency x osl / (TTFT + (osl - 1) x TPOT) /
GPUs, with the measured TTFT and TPOT; a configuration whose measured TTFT
or TPOT misses the task's SLO is infeasible (failure kind `slo`).
Profiling a configuration costs (engine start `overhead_s` + four request
rounds) x GPUs device-seconds.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import math
import os
import re
import sys
from typing import Any, Mapping, Sequence

import numpy as np

from autoscout_jax.evaluator import Evaluator
from autoscout_jax.measurement import Measurement, Metrics
from autoscout_jax.sim import hardware, serving, silicon
from autoscout_jax.sim.serving_catalog import find_arch
from autoscout_jax.space import Candidate, Constraint, Ordinal, SearchSpace
from autoscout_jax.targets.serving import log_margins
from autoscout_jax.workload import ModelConfig, Workload

GROUP_FIELDS = ("model_path", "system", "backend", "isl", "osl", "weights")
# knob -> the sample's column
KNOBS = (("tensor_parallel_size", "tp_size"), ("pipeline_parallel_size", "pp_size"),
         ("data_parallel_size", "attention_dp_size"), ("expert_parallel_size", "moe_ep_size"),
         ("max_num_seqs", "batch_size"), ("replicas", None))
OVERHEAD_S = 300.0  # engine start: weights loaded, CUDA graphs captured
ROUNDS = 4  # request rounds a benchmark of one configuration runs
SLO_KIND = "slo"


def _weights(row: Mapping[str, str]) -> str:
  return (row.get("gemm_quant_mode") or "").strip() or silicon.PRECISION_FORMATS.get(
      (row.get("precision") or "").strip()) or silicon.checkpoint_format(row.get("model_path") or "")


def _int(v: Any, default: int = 1) -> int:
  try:
    f = float(v)
  except (TypeError, ValueError):
    return default
  return default if math.isnan(f) or f <= 0 else int(f)


@dataclasses.dataclass(frozen=True)
class Config:
  """One measured configuration of a group, with its measured repeats."""

  values: tuple[tuple[str, int], ...]
  rows: tuple[Mapping[str, str], ...]

  @property
  def knobs(self) -> dict[str, int]:
    return dict(self.values)

  @property
  def gpus(self) -> int:
    k = self.knobs
    return k["tensor_parallel_size"] * k["pipeline_parallel_size"] * k["data_parallel_size"] * k["replicas"]


def group_configs(group: Mapping[str, Any], path: str | None = None) -> list[Config]:
  """The group's aggregated rows, one Config per distinct configuration (in
  the order first measured)."""
  want = {k: str(group[k]) for k in GROUP_FIELDS}
  with open(path or silicon.sample_path(), newline="") as f:
    rows = [r for r in csv.DictReader(f) if r["mode"] == "agg"
            and all((_weights(r) if k == "weights" else r[k]) == v for k, v in want.items())]
  by: dict[tuple, list] = collections.OrderedDict()
  for r in rows:
    tp, pp, dp = _int(r["tp_size"]), _int(r["pp_size"]), _int(r["attention_dp_size"])
    batch = _int(r["batch_size"])
    conc = silicon.concurrency(r) or batch * dp
    reps = conc // (batch * dp) if conc > batch * dp and conc % (batch * dp) == 0 else 1
    ep = _int(r["moe_ep_size"]) if find_arch(r["model_path"]).is_moe else 1
    key = (("tensor_parallel_size", tp), ("pipeline_parallel_size", pp), ("data_parallel_size", dp),
           ("expert_parallel_size", ep), ("max_num_seqs", batch), ("replicas", reps))
    by.setdefault(key, []).append(r)
  return [Config(k, tuple(v)) for k, v in by.items()]


def measured_objective(row: Mapping[str, str], cfg: Config) -> tuple[float, float, float]:
  """(tokens/s per GPU, TTFT ms, TPOT ms) of one measured row."""
  ttft, tpot = float(row["silicon_ttft_ms"]), float(row["silicon_tpot_ms"])
  osl = int(float(row["osl"]))
  k = cfg.knobs
  conc = silicon.concurrency(row) or k["max_num_seqs"] * k["data_parallel_size"] * k["replicas"]
  return tokens_per_gpu(conc, osl, ttft, tpot, cfg.gpus), ttft, tpot


def tokens_per_gpu(conc: float, osl: int, ttft_ms: float, tpot_ms: float, gpus: int) -> float:
  """Output tokens/s per GPU of a closed loop of `conc` users (Little's law)."""
  return conc * osl / ((ttft_ms + (osl - 1) * tpot_ms) / 1e3) / gpus


def workload(group: Mapping[str, Any], ttft_slo_ms: float, tpot_slo_ms: float) -> Workload:
  """The group as a serving Workload (the architecture as a ModelConfig; the
  default is a typical measured configuration: median throughput among
  those meeting the SLO)."""
  arch = find_arch(str(group["model_path"]))
  if arch is None:
    raise ValueError(f"model {group['model_path']!r} is not in the serving catalog")
  isl, osl = int(group["isl"]), int(group["osl"])
  model = ModelConfig(name=str(group["model_path"]), num_layers=arch.layers, hidden_size=arch.hidden,
                      num_heads=arch.heads, ffn_hidden_size=arch.ffn, vocab_size=arch.vocab, seq_len=isl + osl,
                      num_kv_heads=arch.kv_heads, gated_mlp=True, num_experts=arch.experts, moe_top_k=arch.top_k,
                      moe_ffn_hidden_size=arch.expert_ffn or None, num_dense_layers=arch.dense_layers,
                      kv_channels=arch.head_dim)
  cfgs = group_configs(group)
  scored = []
  for c in cfgs:
    vals = [measured_objective(r, c) for r in c.rows]
    if all(t <= ttft_slo_ms and p <= tpot_slo_ms for _, t, p in vals):
      scored.append((float(np.median([v for v, _, _ in vals])), c))
  scored.sort(key=lambda x: x[0])
  default = (scored[len(scored) // 2][1] if scored else cfgs[0]).knobs
  name = re.sub(r"[^a-z0-9]+", "_", f"{group['model_path'].split('/')[-1]}_{group['backend']}_{group['weights']}"
                f"_{isl}x{osl}".lower())
  return Workload(name=f"serve_{name}", model=model, global_batch=1, task="serve", precision=str(group["weights"]),
                  default=default)


def cluster(group: Mapping[str, Any]) -> hardware.Cluster:
  sys_name = silicon.SYSTEMS[str(group["system"])]
  node = hardware.SYSTEMS[sys_name].devices_per_node
  gpus = max(c.gpus for c in group_configs(group))
  return hardware.make_cluster(sys_name, max(node, math.ceil(gpus / node) * node))


def space(workload_: Workload, cluster_: Any, group: Mapping[str, Any]) -> SearchSpace:
  """The group's measured configurations as a space: one Ordinal per knob
  (the values measured) and an allow-list of the measured combinations."""
  cfgs = group_configs(group)
  keys = {Candidate.of(c.knobs).key for c in cfgs}
  default = workload_.default_values
  knobs = []
  for name, _ in KNOBS:
    vals = sorted({c.knobs[name] for c in cfgs})
    knobs.append(Ordinal(name, default=default.get(name, vals[0]), values=tuple(vals), log=True,
                         doc=f"{name} (aiconfigurator sample column)"))
  con = Constraint("measured_configuration",
                   lambda v, f: None if Candidate.of(dict(v)).key in keys else
                   f"{Candidate.of(dict(v)).short()} was not measured in this group",
                   f"one of the {len(keys)} measured configurations")
  facts = {"serving_group": {k: str(group[k]) for k in GROUP_FIELDS}}
  return SearchSpace(knobs, [con], facts=facts, name=f"serving_sample|{workload_.name}")


def _row_for(group: Mapping[str, str], values: Mapping[str, Any]) -> dict[str, str]:
  tp, pp, dp, ep = (int(values[k]) for k in ("tensor_parallel_size", "pipeline_parallel_size",
                                             "data_parallel_size", "expert_parallel_size"))
  batch, reps = int(values["max_num_seqs"]), int(values["replicas"])
  w = group["weights"]
  return {"model_path": group["model_path"], "system": group["system"], "backend": group["backend"],
          "mode": "agg", "isl": group["isl"], "osl": group["osl"], "gemm_quant_mode": w, "moe_quant_mode": w,
          "tp_size": str(tp), "pp_size": str(pp), "attention_dp_size": str(dp), "moe_ep_size": str(ep),
          "moe_tp_size": str(tp * dp // ep), "batch_size": str(batch),
          "silicon_data_source": f"silicon_concurrency={batch * dp * reps}"}


class SampleServingEvaluator(Evaluator):
  """F0 serving model on a measured group's candidates ('analytic'):
  tokens/s per GPU from predicted TTFT and TPOT, infeasible (`slo`) when a
  prediction misses the SLO, (`oom`) when the weights do not fit."""

  fidelity = "analytic"

  def __init__(self, ttft_slo_ms: float, tpot_slo_ms: float, charge_s: float = 1.0):
    self.ttft_slo_ms, self.tpot_slo_ms, self.charge_s = float(ttft_slo_ms), float(tpot_slo_ms), float(charge_s)

  def settings(self) -> dict[str, Any]:
    return {"model": "sim.serving", "constants": dataclasses.asdict(serving.DEFAULT),
            "ttft_slo_ms": self.ttft_slo_ms, "tpot_slo_ms": self.tpot_slo_ms}

  def evaluate(self, problem, candidates: Sequence[Candidate]) -> list[Measurement]:
    group = problem.space.facts["serving_group"]
    out = []
    for c in candidates:
      out.append(Measurement(c, self.fidelity, self._metrics(group, c.values), self.charge_s,
                             problem.workload.key, problem.cluster.key, provenance={"model": "sim.serving"}))
    return out

  def _metrics(self, group, values) -> Metrics:
    try:
      plan, arch, system, req = silicon.row_inputs(_row_for(group, values))
      p = serving.predict(plan, arch, system, req)
    except ValueError as e:  # silicon.Unsupported included
      return Metrics.failed("crash", f"serving model: {e}")
    if not p.fits:
      return Metrics.failed("oom", p.reason)
    ttft, tpot = p.ttft_s * 1e3, p.tpot_s * 1e3
    tps = p.tokens_per_s_per_device
    extra = {"ttft_ms": ttft, "tpot_ms": tpot, "effective_batch": p.effective_batch, "tokens_per_s_per_device": tps,
             **log_margins(ttft, tpot, self.ttft_slo_ms, self.tpot_slo_ms)}
    if ttft > self.ttft_slo_ms or tpot > self.tpot_slo_ms:  # a miss carries no objective
      return Metrics.failed(SLO_KIND, f"predicted TTFT {ttft:.0f} ms / TPOT {tpot:.1f} ms vs SLO "
                            f"{self.ttft_slo_ms:.0f} / {self.tpot_slo_ms:.1f}", step_time_s=tpot / 1e3,
                            extra=extra)
    return Metrics(feasible=True, step_time_s=tpot / 1e3, tokens_per_s=tps, extra=extra)


# name -> (group, TTFT SLO ms, TPOT SLO ms); SLOs near each group's median,
# so the highest-throughput (largest-batch) configurations miss them.
TASKS: dict[str, tuple[tuple[str, ...], float, float]] = {
    "serving_minimax_m2_5_b200_vllm_fp8_1k1k": (("MiniMaxAI/MiniMax-M2.5", "b200_sxm", "vllm", "1024", "1024",
                                                 "fp8"), 200.0, 20.0),
    "serving_gpt_oss_120b_h200_trtllm_fp4_1k8k": (("openai/gpt-oss-120b", "h200_sxm", "trtllm", "1024", "8192",
                                                   "nvfp4"), 150.0, 8.0),
    "serving_deepseek_r1_b200_trtllm_fp4_1k1k": (("deepseek-ai/DeepSeek-R1", "b200_sxm", "trtllm", "1024", "1024",
                                                  "nvfp4"), 500.0, 15.0),
    "serving_deepseek_r1_b200_sglang_fp4_1k1k": (("deepseek-ai/DeepSeek-R1", "b200_sxm", "sglang", "1024", "1024",
                                                  "nvfp4"), 600.0, 15.0),
    "serving_llama3_70b_h200_trtllm_fp8_8k1k": (("meta-llama/Llama-3.1-70B", "h200_sxm", "trtllm", "8192", "1024",
                                                 "fp8"), 1500.0, 30.0),
    "serving_qwen3_5_397b_b200_sglang_fp8_1k1k": (("Qwen/Qwen3.5-397B-A17B", "b200_sxm", "sglang", "1024", "1024",
                                                   "fp8"), 700.0, 15.0),
    "serving_qwen3_32b_h100_trtllm_fp8_2k512": (("Qwen/Qwen3-32B", "h100_sxm", "trtllm", "2048", "512", "fp8"),
                                                500.0, 20.0),
}


QUICK = "serving_llama3_70b_h200_trtllm_fp8_8k1k"  # the one serving task in the quick suite


def task_group(name: str) -> dict[str, str]:
  return dict(zip(GROUP_FIELDS, TASKS[name][0]))


def truth_table(name: str):
  """The task's truth from the measured rows: repeats as measured (served
  cyclically to the most-repeated configuration's count), infeasible where
  a measured TTFT or TPOT misses the SLO."""
  from autoscout_jax.bench import truth as truth_lib
  group, ttft_slo, tpot_slo = task_group(name), TASKS[name][1], TASKS[name][2]
  wl = workload(group, ttft_slo, tpot_slo)
  cl = cluster(group)
  sp = space(wl, cl, group)
  cfgs = group_configs(group)
  reps = max(len(c.rows) for c in cfgs)
  n = len(cfgs)
  tps, step, cost = np.full((n, reps), np.nan), np.full((n, reps), np.nan), np.zeros((n, reps))
  kinds: list[list[str | None]] = []
  extra: list[list[dict]] = []
  for i, c in enumerate(cfgs):
    kinds.append([])
    extra.append([])
    for r in range(reps):
      row = c.rows[r % len(c.rows)]
      v, ttft, tpot = measured_objective(row, c)
      osl = int(group["osl"])
      cost[i, r] = (OVERHEAD_S + ROUNDS * (ttft + osl * tpot) / 1e3) * c.gpus
      ok = ttft <= ttft_slo and tpot <= tpot_slo
      kinds[i].append(None if ok else SLO_KIND)
      # the measured latencies, a miss's included: how far a configuration is
      # from its SLO is what a search learns its latency model's error from
      # and its measured throughput (a serving benchmark reports it either way)
      extra[i].append({"ttft_ms": ttft, "tpot_ms": tpot, "tokens_per_s_per_device": v,
                       **log_margins(ttft, tpot, ttft_slo, tpot_slo)})
      if ok:
        tps[i, r], step[i, r] = v, tpot / 1e3
  true = np.array([np.median(r[np.isfinite(r)]) if np.isfinite(r).any() else np.nan for r in tps])
  return truth_lib.TruthTable(
      task=name, workload_key=wl.key, cluster_key=cl.key, source_fidelity="profile",
      candidates=[sp.make(c.knobs) for c in cfgs], tokens_per_s=tps, step_time_s=step, cost_s=cost,
      failure_kind=kinds, true_tokens_per_s=true, extra=extra,
      provenance=dict(kind="measured_table", source="aiconfigurator silicon_sample.csv (Apache-2.0), "
                      "autoscout_jax/data/aiconfigurator/", group=group, ttft_slo_ms=ttft_slo,
                      tpot_slo_ms=tpot_slo, rows=sum(len(c.rows) for c in cfgs), overhead_s=OVERHEAD_S,
                      rounds=ROUNDS))


GIN = """# Bench task: {doc}
# Truth: aiconfigurator's measured sample (autoscout_jax/data/aiconfigurator/, Apache-2.0), the
# group's {n} measured aggregated configurations; objective output tokens/s per GPU, infeasible
# where the measured TTFT > {ttft:g} ms or TPOT > {tpot:g} ms. Cheap fidelity: the F0 serving model.
# Written by `python -m autoscout_jax.bench.serving_tables` (with its truth table).
# Provides: the task '{name}' (tasks.task_spec).
from __gin__ import dynamic_registration
from autoscout_jax.bench import serving_tables
from autoscout_jax.bench import tasks

GROUP = {group!r}

serving_tables.workload:
  group = %GROUP
  ttft_slo_ms = {ttft!r}
  tpot_slo_ms = {tpot!r}
serving_tables.cluster.group = %GROUP

tasks.RecordedProfiling:
  table = 'experiments/scoutbench/{name}.json'

tasks.task_spec:
  name = '{name}'
  workload = @serving_tables.workload()
  cluster = @serving_tables.cluster()
  space_fn = @serving_tables.space
  space_kwargs = {{'group': %GROUP}}
  truth = @tasks.RecordedProfiling()
  cheap = [@serving_tables.SampleServingEvaluator()]
  budget_evals = (3, 6, 12)
  suites = {suites!r}
  doc = '{doc}'

serving_tables.SampleServingEvaluator:
  ttft_slo_ms = {ttft!r}
  tpot_slo_ms = {tpot!r}
"""


def write_task(name: str, root: str) -> tuple[str, str]:
  """Writes experiments/scoutbench/<name>.json and gin/bench/<name>.gin under `root`."""
  from autoscout_jax.bench import truth as truth_lib
  group, ttft, tpot = task_group(name), TASKS[name][1], TASKS[name][2]
  table = truth_table(name)
  jpath = os.path.join(root, "experiments", "scoutbench", f"{name}.json")
  truth_lib.save_table(table, jpath)
  doc = (f"{group['model_path']} on {group['system']} with {group['backend']} ({group['weights']}), "
         f"{group['isl']}/{group['osl']} tokens in/out, SLO TTFT {ttft:g} ms TPOT {tpot:g} ms")
  gpath = os.path.join(root, "gin", "bench", f"{name}.gin")
  with open(gpath, "w") as f:
    f.write(GIN.format(name=name, group=group, ttft=ttft, tpot=tpot, doc=doc, n=len(table.candidates),
                       suites=("quick", "measured", "full") if name == QUICK else ("measured", "full")))
  return jpath, gpath


def main(argv: Sequence[str]) -> int:
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  names = list(argv[1:]) or list(TASKS)
  unknown = [n for n in names if n not in TASKS]
  if unknown:
    print(f"serving_tables: unknown task(s) {unknown}; known: {list(TASKS)}", file=sys.stderr)
    return 2
  for n in names:
    j, g = write_task(n, root)
    t = truth_table(n)
    feas = int(np.isfinite(t.true_tokens_per_s).sum())
    print(f"{n}: {len(t.candidates)} configurations, {feas} meet the SLO -> {os.path.relpath(j, root)}, "
          f"{os.path.relpath(g, root)}")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
