"""`CompileAtScaleEvaluator`: fidelity 'compile' for JAX-mesh candidates on a
simulated TPU or GPU cluster, by compiling the real sharded train step for
the cluster's topology on this host.

Where it sits: beside the local F2 (`local/evaluators.CompileEvaluator`,
which compiles for this machine's devices). The search loop hands it a batch
of candidates of `targets.jax_mesh.space` on a sim `Cluster`;
each candidate is lowered and compiled in a child process
(`compile/child.py` via `local/runner.py`, per-candidate timeout; a crash or
hang costs one candidate) and comes back as a `Measurement`: per-device peak
bytes (infeasible 'oom' above the target's usable HBM, or when XLA refuses
with RESOURCE_EXHAUSTED), per-device flops with loop trip counts corrected,
and the collectives of the compiled HLO in `extra`. Results are cached on
disk by a hash of the lowered program.

Cost: host seconds, charged explicitly. `cost_s` is the wall time this
host spent on the candidate (lowering, plus compiling unless the program was
cached), with `provenance['cost_unit'] = 'host_s'`; nothing runs on the
cluster, so no device-seconds are spent. The search budget adds it 1:1 to
the device-seconds of the other fidelities (report.md says so).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from autoscout_jax.compile import targets as tg
from autoscout_jax.evaluator import CheckedEvaluator, Evaluator
from autoscout_jax.local.runner import LocalSetupError, Outcome, run_candidates
from autoscout_jax.measurement import Measurement
from autoscout_jax.problem import Problem
from autoscout_jax.space import Candidate
from autoscout_jax.workload import Workload

__all__ = ["CompileAtScaleEvaluator", "attach_timing", "default_cache_dir"]


def default_cache_dir() -> str:
  """$AUTOSCOUT_COMPILE_CACHE, else the user's cache directory."""
  if os.environ.get("AUTOSCOUT_COMPILE_CACHE"):
    return os.environ["AUTOSCOUT_COMPILE_CACHE"]
  base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
  return str(Path(base) / "autoscout_jax" / "compile")


def attach_timing(timing: Evaluator, problem: Problem, ms: list[Measurement]) -> list[Measurement]:
  """`ms` with the step time, throughput and breakdown of the cheaper
  fidelity `timing` attached to every candidate the compiler says fits (its
  cost added). Memory is XLA's verdict here: the timing model runs on a copy
  of the cluster whose HBM it cannot run out of, so every fitting candidate
  gets a time."""
  fits = [i for i, m in enumerate(ms) if m.feasible]
  if not fits:
    return ms
  cluster = problem.cluster
  roomy = dataclasses.replace(cluster, device=dataclasses.replace(cluster.device, hbm_bytes=float(2**60)))
  timed = timing.evaluate(dataclasses.replace(problem, cluster=roomy), [ms[i].candidate for i in fits])
  for i, t in zip(fits, timed):
    m, tm = ms[i], t.metrics
    extra = dict(m.metrics.extra, timing_fidelity=timing.fidelity, timing_peak_mem_bytes=tm.peak_mem_bytes)
    metrics = dataclasses.replace(m.metrics, step_time_s=tm.step_time_s, tokens_per_s=tm.tokens_per_s,
                                  mfu=tm.mfu, breakdown=dict(tm.breakdown), extra=extra)
    ms[i] = dataclasses.replace(m, metrics=metrics, cost_s=m.cost_s + t.cost_s)
  return ms


class CompileAtScaleEvaluator(CheckedEvaluator):
  """Arguments:

  timeout_s: per-candidate limit (lowering + compile); past it the child is
    killed and the candidate is 'timeout'.
  startup_timeout_s: limit for a child to import JAX and build the topology.
  cache_dir: where compiled figures are kept by program hash (None: the
    default cache directory; '' disables the cache).
  backend: the program builder (compile/probe.BACKENDS), 'flax' today.
  timing: optional evaluator of a cheaper fidelity (e.g. the F1 event
    simulator) whose step time, throughput and breakdown are attached to
    every candidate XLA says fits. Compiling tells memory, flops and
    communication, not time; with `timing` this fidelity can be the top of
    a cluster search that has no real profiling (the answer is then "F1's
    fastest among what XLA says fits"). Without it, compile measurements
    carry no throughput and serve as a screen.
  python: interpreter for the child (default: this one).
  """

  fidelity = "compile"

  def __init__(self, timeout_s: float = 900.0, startup_timeout_s: float = 180.0,
               cache_dir: str | None = None, backend: str = "flax", timing: Evaluator | None = None,
               python: str | None = None):
    if timeout_s <= 0 or startup_timeout_s <= 0:
      raise ValueError(f"timeouts must be positive, got timeout_s={timeout_s}, "
                       f"startup_timeout_s={startup_timeout_s}")
    from autoscout_jax.compile.probe import BACKENDS  # jax-free module-level imports only
    if backend not in BACKENDS:
      raise ValueError(f"unknown compile backend {backend!r}; known: {sorted(BACKENDS)}")
    self.timeout_s = float(timeout_s)
    self.startup_timeout_s = float(startup_timeout_s)
    self.cache_dir = default_cache_dir() if cache_dir is None else cache_dir
    self.backend = backend
    if timing is not None and timing.fidelity in ("compile", "profile"):
      raise ValueError(f"timing must be a cheaper fidelity than compile, got {timing.fidelity!r}")
    self.timing = timing
    self.python = python

  def settings(self) -> dict[str, Any]:
    return {"backend": self.backend, "timing": self.timing.fidelity if self.timing else None}

  def check_fits(self, workload: Workload, cluster: Any) -> str | None:
    """Why this evaluator cannot compile the job at all, or None."""
    if not hasattr(cluster, "device"):
      return (f"the compile-at-scale evaluator compiles for a simulated cluster "
              f"(sim.hardware.Cluster), got {type(cluster).__name__}; use the local compile evaluator "
              f"for this machine's devices")
    m = workload.model
    if m.is_hybrid:
      return (f"model {m.name!r} is a hybrid Mamba-2/transformer model; the compile-at-scale programs build "
              f"transformer decoders: screen it with the simulators (F0/F1)")
    if m.moe_latent_size or m.mtp_layers:
      return (f"model {m.name!r} has LatentMoE or multi-token prediction, which the compile-at-scale programs "
              f"do not build: screen it with the simulators (F0/F1)")
    try:
      target = tg.compile_target(cluster)
    except tg.TargetError as e:
      return str(e)
    missing = tg.missing_extra(target, self.python)
    if missing:
      return missing
    if m.head_dim % 2:
      return f"model {m.name!r}: head_dim {m.head_dim} must be even (rotary position embedding)"
    if getattr(workload, "is_lora", False):
      return (f"workload {workload.name!r} is a LoRA fine-tune; the compile-at-scale programs train every "
              f"weight, so their memory would be pre-training's: screen it with the simulators (F0/F1), "
              f"which model frozen weights, or measure it with the local evaluators")
    return None

  def measure(self, problem: Problem, candidates: Sequence[Candidate]) -> list[Measurement]:
    workload, cluster = problem.workload, problem.cluster
    target = tg.compile_target(cluster)
    request = {
        "workload": {**dataclasses.asdict(workload), "default": ()},
        "target": target.to_json(),
        "options": {"cache_dir": self.cache_dir, "backend": self.backend},
    }
    items = [{"index": i, "key": c.key, "values": c.values} for i, c in enumerate(candidates)]
    env = dict(os.environ)
    env.update(tg.child_env_vars(target))
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
                                                  if p and p != root])
    try:
      outcomes = run_candidates(request, items, env, self.timeout_s, self.startup_timeout_s,
                                argv=[self.python or sys.executable, "-m", "autoscout_jax.compile.child"])
    except LocalSetupError as e:
      raise tg.TargetError(str(e).strip().splitlines()[0] if str(e).strip() else "compile target failed") from None
    out = [self._measurement(workload, cluster, target, c, outcomes[i]) for i, c in enumerate(candidates)]
    return attach_timing(self.timing, problem, out) if self.timing is not None else out

  def _measurement(self, workload: Workload, cluster: Any, target: tg.CompileTarget, cand: Candidate,
                   outcome: Outcome) -> Measurement:
    return outcome.measurement(cand, self.fidelity, workload, cluster, outcome.wall_s, dict(
        evaluator="compile.at_scale", cost_unit="host_s", platform=target.platform, topology=target.topology,
        num_slices=target.num_slices, backend=self.backend))
