"""How well the simulators rank a measured table of this machine: F0 and F1
of this machine's devices (local/sim_evaluators.py) against the real step
times of `experiments/scoutbench/real_maxtext_cpu8.csv` (MaxText) and of
`experiments/scoutbench/real_tiny_cpu8.json` (the project's own decoder).

Where it sits: a program on top of the table (tools/maxtext_table.py wrote
it), the maxtext target (targets/maxtext.py: the rows become candidates of
its space, whose plan the simulators score) and the ladder's local
simulators (scored on a measured-devices file). Prints, per simulator, the
Spearman rank correlation of predicted and measured tokens/s over the rows
both call feasible, its error (the median of predicted / measured
throughput, and the median relative error of the prediction), the
measured rank of the simulator's pick, and how many measured failures it
called feasible. A `.json` table is a scoutbench truth file: its task
(`gin/bench/<task>.gin`) gives the space and the candidates.

    python -m autoscout_jax.tools.maxtext_table_sims \
      --table=experiments/scoutbench/real_maxtext_cpu8.csv,experiments/scoutbench/real_tiny_cpu8.json \
      --devices_file=experiments/scoutbench/real_tiny_cpu8_devices.json
"""

from __future__ import annotations

import collections
import csv
import statistics
import sys
from typing import Any, Mapping, Sequence

import numpy as np
from absl import app, flags

from autoscout_jax.tools import maxtext_table as mtab


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
  """Spearman's rho (average ranks for ties)."""
  def ranks(x):
    x = np.asarray(x, np.float64)
    order = np.argsort(x, kind="mergesort")
    r = np.empty(len(x))
    r[order] = np.arange(len(x), dtype=np.float64)
    for v in np.unique(x):  # ties share their mean rank
      m = x == v
      r[m] = r[m].mean()
    return r
  ra, rb = ranks(a), ranks(b)
  if ra.std() == 0 or rb.std() == 0:
    return float("nan")
  return float(np.corrcoef(ra, rb)[0, 1])


def read_table(path: str) -> tuple[dict[str, str], list[tuple[dict[str, Any], float | None, str]]]:
  """(workload columns, [(knobs, median step time or None, status)]) per candidate."""
  rows = list(csv.DictReader(ln for ln in open(path) if not ln.startswith("#")))
  if not rows:
    raise ValueError(f"{path}: no rows")
  by: dict[str, list[dict[str, str]]] = collections.OrderedDict()
  for r in rows:
    by.setdefault(mtab.key_of({k: mtab._typed(r[k]) for k in mtab.KNOB_COLUMNS}), []).append(r)
  out = []
  for rs in by.values():
    knobs = {k: mtab._typed(rs[0][k]) for k in mtab.KNOB_COLUMNS if rs[0][k] != ""}
    ok = [float(r["step_time_s"]) for r in rs if r["status"] == "ok"]
    bad = [r["status"] for r in rs if r["status"] != "ok"]
    out.append((knobs, statistics.median(ok) if ok and not bad else None, bad[0] if bad else "ok"))
  return {k: rows[0][k] for k in mtab.WORKLOAD_COLUMNS}, out


def problem_of(workload_cols: Mapping[str, str]) -> Any:
  from autoscout_jax.problem import Problem
  from autoscout_jax.targets import maxtext as mt
  from autoscout_jax.workload import LocalCluster, ModelConfig, Workload
  w = {k: int(v) for k, v in workload_cols.items()}
  model = ModelConfig("tiny_moe", num_layers=w["num_layers"], hidden_size=w["hidden_size"], num_heads=w["num_heads"],
                      ffn_hidden_size=w["ffn_hidden_size"], vocab_size=w["vocab_size"], seq_len=w["seq_len"],
                      num_kv_heads=w["num_kv_heads"], gated_mlp=True, num_experts=w["num_experts"],
                      moe_top_k=w["experts_per_token"])
  wl = Workload("tiny_moe", model, global_batch=w["global_batch"])
  cluster = LocalCluster(w["num_devices"], platform="cpu")
  return Problem(wl, cluster, mt.space(wl, cluster), fidelities=("analytic", "event", "profile"))


def candidate(space: Any, knobs: Mapping[str, Any]) -> Any:
  vals = {k: (int(v) if isinstance(v, float) and v == int(v) else v) for k, v in knobs.items()}
  return space.make(vals)


def task_truth(path: str) -> tuple[Any, list[Any], np.ndarray]:
  """(problem, candidates, measured tokens/s or NaN) of a scoutbench truth
  file, through its task's gin file (the space it was measured over)."""
  import json
  import tempfile

  from autoscout_jax.bench import tasks
  from autoscout_jax.bench.__main__ import load_task  # the bench entry: the one task-file loader
  from autoscout_jax.problem import Problem
  with open(path) as f:
    name = json.load(f).get("task")
  try:
    spec = load_task(name or "")
  except tasks.BenchError as e:
    raise ValueError(f"{path}: {e}") from e
  with tempfile.TemporaryDirectory() as workdir:
    task = tasks.build_task(spec, workdir)
  truth = np.array([task.table.true_value(c) or np.nan for c in task.candidates], np.float64)
  return Problem(spec.workload, spec.cluster, task.space, fidelities=("analytic", "event", "profile")), \
      list(task.candidates), truth


def score(table: str, devices_file: str, log=print) -> dict[str, dict[str, float]]:
  from autoscout_jax.local.sim_evaluators import LocalAnalyticEvaluator, LocalEventEvaluator
  if table.endswith(".json"):
    problem, cands, truth = task_truth(table)
  else:
    cols, rows = read_table(table)
    problem = problem_of(cols)
    cands = [candidate(problem.space, k) for k, _, _ in rows]
    bad = [(c, problem.space.validate(c)) for c in cands if problem.space.validate(c)]
    if bad:
      raise ValueError(f"{len(bad)} row(s) are not valid in the maxtext space, e.g. {bad[0][0].short()}: "
                       f"{bad[0][1][0]}")
    tokens = problem.workload.tokens_per_step
    truth = np.array([tokens / t if t else np.nan for _, t, _ in rows])
  out = {}
  log(f"{table}: {len(cands)} candidates, {int(np.isfinite(truth).sum())} measured ok")
  for ev in (LocalAnalyticEvaluator(devices_file=devices_file), LocalEventEvaluator(devices_file=devices_file)):
    ms = ev.evaluate(problem, cands)
    pred = np.array([m.metrics.tokens_per_s if m.feasible and m.metrics.tokens_per_s else np.nan for m in ms])
    both = np.isfinite(pred) & np.isfinite(truth)
    rho = spearman(pred[both], truth[both])
    pick = int(np.nanargmax(pred))
    order = np.argsort(-np.nan_to_num(truth, nan=-1.0))
    rank = int(np.where(order == pick)[0][0]) + 1
    false_ok = int((np.isfinite(pred) & ~np.isfinite(truth)).sum())
    ratio = pred[both] / truth[both]
    out[ev.fidelity] = {"spearman": rho, "pairs": int(both.sum()), "pick_measured_rank": rank,
                        "pick_over_best": float(truth[pick] / np.nanmax(truth)) if np.isfinite(truth[pick]) else 0.0,
                        "failures_called_feasible": false_ok, "median_pred_over_measured": float(np.median(ratio)),
                        "median_rel_error": float(np.median(np.abs(ratio - 1.0)))}
    r = out[ev.fidelity]
    log(f"  {ev.fidelity:8s} Spearman {rho:+.3f} over {int(both.sum())} rows; predicted / measured tok/s "
        f"{r['median_pred_over_measured']:.2f} (median; error {100 * r['median_rel_error']:.0f} %); its pick is "
        f"measured #{rank} ({r['pick_over_best']:.2f} of the best); {false_ok} measured failure(s) called feasible")
  return out


def define_flags() -> None:
  flags.DEFINE_list("table", ["experiments/scoutbench/real_maxtext_cpu8.csv",
                              "experiments/scoutbench/real_tiny_cpu8.json"],
                    "the measured tables: a MaxText CSV (tools/maxtext_table.py) or a scoutbench truth JSON")
  flags.DEFINE_string("devices_file", "experiments/scoutbench/real_tiny_cpu8_devices.json",
                      "measured devices of the machine the table was measured on (local/devices.py)")


def main(argv: Sequence[str]) -> int:
  del argv
  try:
    for table in flags.FLAGS.table:
      score(table, flags.FLAGS.devices_file)
  except (OSError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  define_flags()
  app.run(lambda argv: sys.exit(main(argv)))
