"""Warm start of the AutoScout designer across workloads, leave-one-sweep-out
on vTrain's four measured multi-node sweeps (or any list of measured tasks:
`--sweeps`, e.g. the three single-node ones, `--sweeps=single`).

    python -m autoscout_jax.tools.bench_warm_start [--sweeps=multi|single|t1,t2,...] [--seeds=0,1,2,3,4] [--workdir=DIR]

Where it sits: a benchmark program over scoutbench (bench/runner.run_one),
not a test. For each held-out sweep and seed: AutoScout runs on the other
three sweeps (the whole largest budget each) and their cheap-order stages'
residual rows (`AutoScoutDesigner.export_warm`: how F0 erred there, by
configuration, F0 breakdown shares and workload descriptors) become the
warm start of a run on the held-out sweep; the same seed's cold run is the
comparison. Prints, per held-out sweep, the median cost to 2 % (evals) cold
and warm and their ratio, and the median number of profiles.
"""

from __future__ import annotations

import sys

from absl import app, flags

from autoscout_jax.bench import runner, tasks
from autoscout_jax.bench.__main__ import load_task  # the bench entry: the one task-file loader
from autoscout_jax.bench import metrics as metrics_lib
from autoscout_jax.designers.autoscout import AutoScoutDesigner
from autoscout_jax.designers.autoscout.factories import VARIANTS

SWEEPS = ("vtrain_gpt_3.6b_a100_64", "vtrain_gpt_18.4b_a100_256", "vtrain_gpt_39.1b_a100_512",
          "vtrain_gpt_175b_a100_512")
SINGLE = ("vtrain_gpt_h2048_l24_gbs16_a100_8", "vtrain_gpt_h1024_l24_gbs16_a100_8",
          "vtrain_gpt_h2048_l24_gbs32_a100_8")
GROUPS = {"multi": SWEEPS, "single": SINGLE}
_SWEEPS = flags.DEFINE_list("sweeps", ["multi"], "Tasks to leave out one at a time: 'multi' (vTrain's four "
                            "multi-node sweeps), 'single' (three single-node ones) or task names (>= 2).")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2", "3", "4"], "Seeds.")
_WORKDIR = flags.DEFINE_string("workdir", "runs/warm-start", "Cache directory for the tasks.")


def merge(rows_list):
  names, value, memory = [], [], []
  for r in rows_list:
    if not r:
      continue
    names += [n for n in r["names"] if n not in names]
    value += r["value"]
    memory += r["memory"]
  return {"names": names, "value": value, "memory": memory}


def main(argv) -> None:
  del argv
  names = [n for g in _SWEEPS.value for n in GROUPS.get(g, (g,))]
  try:
    if len(set(names)) < 2:
      raise tasks.BenchError(f"--sweeps needs at least two tasks, got {names}")
    built = {n: tasks.build_task(load_task(n), _WORKDIR.value) for n in dict.fromkeys(names)}
  except tasks.BenchError as e:
    print(f"bench_warm_start: error: {e}", file=sys.stderr)
    sys.exit(2)
  seeds = [int(s) for s in _SEEDS.value]
  cfg = VARIANTS["autoscout"]
  exported = {}
  for n, task in built.items():
    for s in seeds:
      _, res = runner.run_one(task, "autoscout", s)
      exported[(n, s)] = res.designer.export_warm()
  print("| held-out sweep | cost to 2 % cold (evals) | warm | warm / cold | profiles cold | warm |")
  print("|---|---|---|---|---|---|")
  for held, task in built.items():
    unit = task.table.median_cost_s()
    cold, warm, pc, pw = [], [], [], []
    for s in seeds:
      rows = merge(exported[(o, s)] for o in built if o != held)
      trc, _ = runner.run_one(task, "autoscout", s)
      trw, _ = runner.run_one(task, "autoscout", s,
                              make=lambda p, sd, rows=rows: AutoScoutDesigner(p, sd, cfg, residual_warm=rows))
      for tr, out, prof in ((trc, cold, pc), (trw, warm, pw)):
        m = metrics_lib.run_measures(tr, task.optimum, task.expert_value, task.budgets_s)
        out.append(m["cost_to_2pct"])
        prof.append(m["paid_top"])
    c, w = metrics_lib.quantile(cold, 0.5), metrics_lib.quantile(warm, 0.5)
    fmt = lambda v: "never" if v is None else f"{v / unit:.1f}"
    ratio = "—" if c is None or w is None or c == 0 else f"{w / c:.2f}"
    print(f"| {held} | {fmt(c)} | {fmt(w)} | {ratio} | {metrics_lib.quantile(pc, 0.5):g} | "
          f"{metrics_lib.quantile(pw, 0.5):g} |")


if __name__ == "__main__":
  app.run(main)
