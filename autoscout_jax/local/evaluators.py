"""F2 `CompileEvaluator` and F3 `ProfileEvaluator`: real measurements of the
local training space (targets/local.py) or of the serving space
(targets/serving.py: a prefill + decode engine, local/serve_probe.py) on
this machine's devices.

Where it sits: the search loop hands a batch of `Candidate`s of
`targets.local.space(workload, cluster)` to `evaluate`; each candidate is
measured in a child process (`local/runner.py` -> `local/child.py` ->
`local/probe.py`) and comes back as a `Measurement`. Candidates whose XLA
flag knobs differ run in different children (XLA reads its flags once per
process); otherwise one child measures the whole batch, and a fresh one
takes over after a crash, OOM kill or timeout.

cost_s is device-seconds: the seconds a candidate held the child (build,
compile and, for F3, init and steps; not the child's start-up) times the
number of devices it used. The children of one search share a persistent
compilation cache (local/xla_flags.compile_cache_dir), so F3 loads what F2
compiled for the same candidate instead of compiling it again.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

from autoscout_jax.evaluator import CheckedEvaluator
from autoscout_jax.local.runner import ChildFaults, LocalSetupError, Outcome, run_candidates
from autoscout_jax.local.xla_flags import child_env, compile_cache_dir, knob_flags
from autoscout_jax.measurement import Measurement
from autoscout_jax.problem import Problem
from autoscout_jax.space import Candidate
from autoscout_jax.workload import LocalCluster, Workload

__all__ = ["CompileEvaluator", "LocalSetupError", "ProfileEvaluator"]


class _LocalEvaluator(ChildFaults, CheckedEvaluator):
  """Shared machinery. Arguments:

  timeout_s: per-candidate limit, from the child starting the candidate to
    its result; past it the child is killed and the candidate is 'timeout'.
  startup_timeout_s: limit for a child to import JAX and find its devices.
  max_per_child: candidates one child measures before a fresh one starts
    (None: the whole batch); bounds what a long batch can leak.
  seed: parameter and synthetic-data seed.
  faults: test hook, {candidate key: 'crash' | 'hang' | 'oom' | 'oom_kill' |
    'garbage'} (see child_protocol.py); the gin macro FAULTS adds rules
    by knob pattern through `with_faults` (faults.py).
  python: interpreter for the child (default: this one).
  """

  fidelity = ""

  def __init__(self, timeout_s: float = 300.0, startup_timeout_s: float = 180.0,
               max_per_child: int | None = None, seed: int = 0,
               faults: Mapping[str, str] | None = None, python: str | None = None):
    if timeout_s <= 0 or startup_timeout_s <= 0:
      raise ValueError(f"timeouts must be positive, got timeout_s={timeout_s}, "
                       f"startup_timeout_s={startup_timeout_s}")
    if max_per_child is not None and max_per_child < 1:
      raise ValueError(f"max_per_child must be >= 1 or None, got {max_per_child}")
    self._init_faults(faults)
    self.timeout_s = float(timeout_s)
    self.startup_timeout_s = float(startup_timeout_s)
    self.max_per_child = max_per_child
    self.seed = int(seed)
    self.python = python

  def settings(self) -> dict[str, Any]:
    return self.fault_settings()

  def _options(self) -> dict[str, Any]:
    return {"seed": self.seed}

  def check_fits(self, workload: Workload, cluster: Any) -> str | None:
    """Why this evaluator cannot measure the job at all, or None (the
    experiment asks before it starts)."""
    if not isinstance(cluster, LocalCluster):
      return (f"the local {self.fidelity} evaluator measures a LocalCluster, "
              f"got {type(cluster).__name__}")
    if cluster.num_slices > 1:
      return (f"the local {self.fidelity} evaluator runs one process; cluster {cluster.name!r} has "
              f"num_slices={cluster.num_slices} (several processes: the maxtext family's F3)")
    from autoscout_jax.local.model import check_supported  # flax: only when used
    try:
      check_supported(workload.model)
    except ValueError as e:
      return str(e)
    return None

  def measure(self, problem: Problem, candidates: Sequence[Candidate]) -> list[Measurement]:
    workload, cluster = problem.workload, problem.cluster
    request = {
        "fidelity": self.fidelity,
        "family": problem.family,  # which program the child builds: train step or serving engine
        "workload": dataclasses.asdict(workload),
        "cluster": dataclasses.asdict(cluster),
        "options": self._options(),
        "faults": self.faults_for(candidates),
    }
    # One child per distinct environment, candidates in batch order within it.
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for i, cand in enumerate(candidates):
      values = cand.values
      groups.setdefault(tuple(knob_flags(values)), []).append(
          {"index": i, "key": cand.key, "values": values})
    outcomes: dict[int, Outcome] = {}
    for items in groups.values():
      # F2 and F3 children share a compilation cache: a candidate compiles once
      env = child_env(cluster.platform, cluster.num_devices, items[0]["values"],
                      compile_cache=compile_cache_dir())
      outcomes.update(run_candidates(request, items, env, self.timeout_s,
                                     self.startup_timeout_s, self.max_per_child, self.python))
    return [self._measurement(workload, cluster, cand, outcomes[i], request["faults"].get(cand.key))
            for i, cand in enumerate(candidates)]

  def _measurement(self, workload: Workload, cluster: LocalCluster, cand: Candidate,
                   outcome: Outcome, fault: str | None = None) -> Measurement:
    prov = {"evaluator": f"local.{self.fidelity}", "xla_flag_knobs": knob_flags(cand.values),
            **({"injected_fault": fault} if fault else {})}
    return outcome.measurement(cand, self.fidelity, workload, cluster, outcome.wall_s * cluster.num_devices, prov,
                               defaults={"platform": cluster.platform, "device_count": cluster.num_devices})


class CompileEvaluator(_LocalEvaluator):
  """F2: lower + compile the candidate's sharded train step, never run it.

  Metrics: peak_mem_bytes (per device: XLA argument + output + temp - alias
  bytes), flops_per_step (per device, loops unrolled), compile timings and
  the memory breakdown in `extra`. Over `cluster.memory_bytes_per_device`:
  infeasible with failure_kind 'oom'."""

  fidelity = "compile"


class ProfileEvaluator(_LocalEvaluator):
  """F3: the F2 figures and OOM screen, then `warmup_steps` untimed steps and
  the median of `timed_steps` timed ones (each until block_until_ready).

  Metrics: step_time_s (median), tokens_per_s = global_batch * seq_len /
  step_time_s, mfu against the device kind's nominal bf16 peak (None where
  unknown, e.g. CPUs), every timed step in extra['step_times_s']."""

  fidelity = "profile"

  def __init__(self, warmup_steps: int = 2, timed_steps: int = 5, **kwargs: Any):
    super().__init__(**kwargs)
    if warmup_steps < 0 or timed_steps < 1:
      raise ValueError(f"need warmup_steps >= 0 and timed_steps >= 1, got {warmup_steps}, "
                       f"{timed_steps}")
    self.warmup_steps = int(warmup_steps)
    self.timed_steps = int(timed_steps)

  def _options(self) -> dict[str, Any]:
    return {"seed": self.seed, "warmup_steps": self.warmup_steps, "timed_steps": self.timed_steps}

  def settings(self) -> dict[str, Any]:
    return {**self._options(), **super().settings()}
