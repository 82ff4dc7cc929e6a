"""How F0's memory model compares with XLA's, compiled for real targets.

Where it sits: a program on top of the F0 simulator (sim/analytic.py) and
the compile-at-scale evaluator (compile/evaluator.py) over the bench
workloads' JAX-mesh spaces (targets/jax_mesh.py); no library module imports it.

    python -m autoscout_jax.tools.compile_report --output=R.json [--quick] [--cache_dir=DIR]

For each bench workload it can compile (the 'tpu' extra for TPU targets,
'gpu' for GPU ones), draws a stratified sample of valid JAX-mesh candidates
(the workload's default first, then an even share per remat policy), scores
them with F0 and compiles them with the compile-at-scale evaluator, and
writes per target: `platform`, `topology`, `candidates_compiled` (compiled
to a verdict, fitting or OOM), `compile_s_median` (wall seconds of the
compiles this run did), `compile_cpu_s_median`, `oom_count` and
`f0_memory_mape` (mean |F0 - XLA| / XLA per-device peak over candidates that
compile and fit; `f0_memory_mape_with_ooms` adds the OOMs, whose need XLA's
message names; `f0_says_fits_xla_oom` counts F0's wrong "fits"), with every
candidate's row. `--quick`: the two TPU targets,
5 candidates each, and a wall-clock deadline of 10 minutes for the whole
run (a target that runs out of time says so: `deadline_hit`). Targets
compile side by side (`--jobs`, default 2: one compile child per core; XLA's
TPU compile of one program keeps about one core busy). Without
`--cache_dir` a fresh cache is used, so every compile is timed.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Any, Callable

import numpy as np
from absl import app, flags

from autoscout_jax.compile import CompileAtScaleEvaluator, compile_target, missing_extra
from autoscout_jax.problem import Problem
from autoscout_jax.sim.analytic import AnalyticEvaluator
from autoscout_jax.sim.catalog import make_workload
from autoscout_jax.sim.hardware import make_cluster
from autoscout_jax.targets import jax_mesh

FLAGS = flags.FLAGS
QUICK_DEADLINE_S = 600.0


@dataclasses.dataclass(frozen=True)
class Target:
  name: str
  model: str
  system: str
  devices: int
  per_slice: int
  quick: bool
  global_batch: int | None = None  # None: the catalog recipe's

  def build(self) -> tuple[Any, Any]:
    workload = make_workload(self.model, self.devices, global_batch=self.global_batch, space="jax_mesh",
                             devices_per_slice=self.per_slice)
    cluster = make_cluster(self.system, self.devices, devices_per_node=self.per_slice, name=self.name)
    return workload, cluster


TARGETS = (
    Target("llama3_8b_tpu_v5p_128", "llama3_8b", "tpu_v5p", 128, 64, True),
    # 256 chips need at least 256 sequences for the FSDP default (one per chip).
    Target("llama3_8b_tpu_v5e_256", "llama3_8b", "tpu_v5e", 256, 256, True, global_batch=256),
    Target("mixtral_8x7b_tpu_v5p_128", "mixtral_8x7b", "tpu_v5p", 128, 64, False),
    Target("llama3_8b_h100_64", "llama3_8b", "dgx_h100", 64, 8, False),
)


def define_flags() -> None:
  flags.DEFINE_string("output", None, "where to write the JSON report")
  flags.DEFINE_bool("quick", False, "two TPU targets, 5 candidates each, <= 10 minutes")
  flags.DEFINE_integer("per_target", 12, "candidates per target (without --quick)")
  flags.DEFINE_string("cache_dir", None, "compile cache to use (default: a fresh one)")
  flags.DEFINE_integer("seed", 0, "sampling seed")
  flags.DEFINE_integer("jobs", 2, "targets compiled at the same time (one child process each)")
  flags.DEFINE_list("targets", None, f"targets to compile (default: all, or the quick ones); known: "
                    f"{', '.join(t.name for t in TARGETS)}")


def sample(space: Any, default: Any, n: int, seed: int) -> list[Any]:
  """The default (when valid), then valid candidates drawn evenly across
  remat policies."""
  rng = np.random.default_rng(seed)
  picked = [default] if space.is_valid(default) else []
  pool = space.sample(rng, n=max(64, 8 * n))
  by_remat = {r: [c for c in pool if c.values["remat_policy"] == r and c != default] for r in jax_mesh.REMAT}
  while len(picked) < n and any(by_remat.values()):
    for r in jax_mesh.REMAT:
      if by_remat[r] and len(picked) < n:
        picked.append(by_remat[r].pop(0))
  return picked


def _row(cand: Any, f0: Any, xla: Any) -> dict[str, Any]:
  x = xla.metrics
  ex = x.extra or {}
  return dict(values=dict(cand.values), f0_peak_bytes=f0.metrics.peak_mem_bytes, f0_feasible=f0.feasible,
              xla_peak_bytes=x.peak_mem_bytes, feasible=x.feasible, failure_kind=x.failure_kind,
              compile_s=ex.get("compile_s"), compile_cpu_s=ex.get("compile_cpu_s"), cache_hit=ex.get("cache_hit"),
              argument_bytes=ex.get("argument_bytes"), temp_bytes=ex.get("temp_bytes"),
              flops_per_step=x.flops_per_step, collectives=ex.get("collectives"),
              error=None if x.failure_kind in (None, "oom") else (x.error or "")[-300:])


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
  verdict = [r for r in rows if r["feasible"] or r["failure_kind"] == "oom"]
  fresh = [r for r in rows if r["compile_s"] is not None and not r["cache_hit"]]
  fit = [r for r in rows if r["feasible"] and r["xla_peak_bytes"] and r["f0_peak_bytes"]]
  # XLA's OOM verdicts name what the program needed: F0's error there too.
  told = [r for r in rows if r["xla_peak_bytes"] and r["f0_peak_bytes"]]
  med = lambda xs: statistics.median(xs) if xs else None
  mape = lambda rs: (float(np.mean([abs(r["f0_peak_bytes"] - r["xla_peak_bytes"]) / r["xla_peak_bytes"]
                                    for r in rs])) if rs else None)
  return dict(candidates_compiled=len(verdict), oom_count=sum(r["failure_kind"] == "oom" for r in rows),
              compile_s_median=med([r["compile_s"] for r in fresh]),
              compile_cpu_s_median=med([r["compile_cpu_s"] for r in fresh if r["compile_cpu_s"] is not None]),
              f0_memory_mape=mape(fit), f0_memory_mape_with_ooms=mape(told),
              f0_says_fits_xla_oom=sum(r["failure_kind"] == "oom" and bool(r["f0_feasible"]) for r in rows),
              failed=sum(r["failure_kind"] not in (None, "oom") for r in rows))


def run_target(t: Target, n: int, seed: int, cache_dir: str, deadline: float,
               say: Callable[[str], None]) -> dict[str, Any]:
  workload, cluster = t.build()
  target = compile_target(cluster)
  out: dict[str, Any] = dict(platform=target.platform, topology=target.label, model=t.model,
                             cluster=t.name, devices=t.devices)
  missing = missing_extra(target)
  if missing:
    return {**out, "skipped": missing}
  space = jax_mesh.space(workload, cluster)
  cands = sample(space, space.make(workload.default_values), n, seed)
  problem = Problem(workload, cluster, space, ("analytic", "compile"), default=cands[0])
  f0 = AnalyticEvaluator().evaluate(problem, cands)
  ev = CompileAtScaleEvaluator(cache_dir=cache_dir)
  rows, hit_deadline = [], False
  for cand, a in zip(cands, f0):
    if time.time() >= deadline:
      hit_deadline = True
      break
    ev.timeout_s = min(1800.0, max(30.0, deadline - time.time()))
    [m] = ev.evaluate(problem, [cand])
    rows.append(_row(cand, a, m))
    r = rows[-1]
    say(f"{t.name}: {len(rows)}/{len(cands)} {'fits' if r['feasible'] else r['failure_kind']} "
        f"XLA {(r['xla_peak_bytes'] or 0) / 2**30:.2f} GiB, F0 {(r['f0_peak_bytes'] or 0) / 2**30:.2f} GiB, "
        f"compile {r['compile_s'] or 0:.0f} s")
  return {**out, **summarize(rows), "deadline_hit": hit_deadline, "candidates": rows}


def main(argv) -> None:
  del argv
  if not FLAGS.output:
    print("compile_report: --output=R.json is required", file=sys.stderr)
    sys.exit(2)
  # This process only runs F0 (on the host CPU; JAX reads this when its backend
  # starts); the compiles happen in child processes that load the compilers.
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  say = lambda s: print(s, flush=True)
  start = time.time()
  known = {t.name: t for t in TARGETS}
  unknown = sorted(set(FLAGS.targets or ()) - set(known))
  if unknown:
    print(f"compile_report: unknown target(s) {unknown}; known: {sorted(known)}", file=sys.stderr)
    sys.exit(2)
  targets = ([known[n] for n in FLAGS.targets] if FLAGS.targets
             else [t for t in TARGETS if t.quick or not FLAGS.quick])
  n = 5 if FLAGS.quick else FLAGS.per_target
  cache = FLAGS.cache_dir or tempfile.mkdtemp(prefix="autoscout_compile_report_")
  report: dict[str, Any] = dict(quick=FLAGS.quick, per_target=n, seed=FLAGS.seed, jobs=FLAGS.jobs, targets={})
  # Leave a little of the quick budget for starting up and writing the report.
  deadline = start + QUICK_DEADLINE_S - 30.0 if FLAGS.quick else float("inf")
  with concurrent.futures.ThreadPoolExecutor(max(1, FLAGS.jobs)) as pool:
    futures = {t.name: pool.submit(run_target, t, n, FLAGS.seed, cache, deadline, say) for t in targets}
    report["targets"] = {name: f.result() for name, f in futures.items()}
  report["wall_s"] = time.time() - start
  with open(FLAGS.output, "w") as f:
    json.dump(report, f, indent=1, default=str)
  for name, r in report["targets"].items():
    if "skipped" in r:
      say(f"{name}: skipped ({r['skipped']})")
      continue
    mape = r["f0_memory_mape"]
    say(f"{name}: {r['platform']} {r['topology']}: {r['candidates_compiled']} compiled, {r['oom_count']} OOM, "
        f"median compile {r['compile_s_median'] or 0:.0f} s, F0 memory MAPE "
        f"{'-' if mape is None else f'{100 * mape:.1f} %'}")
  say(f"wrote {FLAGS.output} ({report['wall_s']:.0f} s)")


if __name__ == "__main__":
  define_flags()
  app.run(main)
