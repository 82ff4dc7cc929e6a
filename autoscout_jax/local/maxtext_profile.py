"""`MaxTextProfileEvaluator`: fidelity 'profile' (F3) for the maxtext family
-- MaxText's own train step run for real on this machine's devices, in one
process or as several processes mapped as slices (DCN axes for real).

Where it sits: the search hands it candidates of `targets.maxtext.space`;
each becomes MaxText overrides (`targets.maxtext.overrides`, plus
`num_slices`) measured in a Python 3.12 child (interpreter and environment
from maxtext_env.py): `python -m autoscout_jax.maxtext_child.profile_child` (compile,
warm-up, `repeats` timed blocks of `timed_steps` steps; steps.py), or for a
cluster with `num_slices` > 1 the launcher `autoscout_jax.maxtext_child.multiproc`,
which starts one child per slice joined by `jax.distributed` (coordinator
on localhost) and tears them all down. Driven by local/runner.py: a crash,
OOM kill or hang (past `timeout_s`) of any process costs one candidate and
is recorded as its failure; a fresh child takes the rest of the batch.

cost_s is device-seconds: the seconds a candidate held the child (build,
compile, steps) times the cluster's devices. Metrics: step_time_s (median
of the timed blocks), tokens_per_s, peak_mem_bytes (XLA's per-device
argument + output + temp - alias bytes), every block in
extra['step_times_s'].
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from autoscout_jax import maxtext_env
from autoscout_jax.evaluator import CheckedEvaluator
from autoscout_jax.local.runner import ChildFaults, Outcome, run_candidates
from autoscout_jax.measurement import Measurement
from autoscout_jax.problem import Problem
from autoscout_jax.space import Candidate
from autoscout_jax.targets import maxtext as mt
from autoscout_jax.targets import xla
from autoscout_jax.workload import LocalCluster, Workload

__all__ = ["CPU_XLA_FLAGS", "MaxTextProfileEvaluator"]

# XLA:CPU deadlocks in its collective rendezvous (e.g. gradient accumulation
# loops: "Termination timeout ... only 6 of 8 arrived") on a 2-core host
# unless its concurrency-optimized scheduler is off (maxtext_env.child_env
# sets it for every MaxText child on the CPU); part of the settings.
CPU_XLA_FLAGS = ("--xla_cpu_enable_concurrency_optimized_scheduler=false",)


class MaxTextProfileEvaluator(ChildFaults, CheckedEvaluator):
  """F3 of the maxtext family. Arguments:

  warmup_steps, timed_steps, repeats: untimed steps after the compile, then
    `repeats` blocks of `timed_steps` steps, each timed to block_until_ready.
  timeout_s: per-candidate limit (start to result); past it every process
    of the child is killed and the candidate is 'timeout'.
  startup_timeout_s: limit for a child to import MaxText and join.
  max_per_child: candidates one child measures before a fresh one starts.
  python: the interpreter with MaxText (maxtext_env.find_python).
  faults: test hook {candidate key: kind} (child_protocol.py kinds); the
    gin macro FAULTS adds rules through `with_faults`.
  fault_process: test hook for a multi-process cluster: only this process
    acts out the faults (None: every process).
  """

  fidelity = "profile"
  contends_for_devices = True

  def __init__(self, warmup_steps: int = 1, timed_steps: int = 3, repeats: int = 3, timeout_s: float = 600.0,
               startup_timeout_s: float = 300.0, max_per_child: int | None = None, seed: int = 0,
               python: str | None = None, faults: Mapping[str, str] | None = None,
               fault_process: int | None = None):
    if warmup_steps < 0 or timed_steps < 1 or repeats < 1:
      raise ValueError(f"need warmup_steps >= 0, timed_steps >= 1, repeats >= 1; got {warmup_steps}, "
                       f"{timed_steps}, {repeats}")
    if timeout_s <= 0 or startup_timeout_s <= 0:
      raise ValueError(f"timeouts must be positive, got timeout_s={timeout_s}, startup_timeout_s={startup_timeout_s}")
    self._init_faults(faults)
    self.warmup_steps, self.timed_steps, self.repeats = int(warmup_steps), int(timed_steps), int(repeats)
    self.timeout_s, self.startup_timeout_s = float(timeout_s), float(startup_timeout_s)
    self.max_per_child = max_per_child
    self.seed = int(seed)
    self.python = python
    self.fault_process = fault_process

  def _options(self) -> dict[str, Any]:
    return {"warmup_steps": self.warmup_steps, "timed_steps": self.timed_steps, "repeats": self.repeats,
            "seed": self.seed}

  def settings(self) -> dict[str, Any]:
    return {**self._options(), "runner": "maxtext", "cpu_xla_flags": list(CPU_XLA_FLAGS), **self.fault_settings()}

  def check_fits(self, workload: Workload, cluster: Any) -> str | None:
    if not isinstance(cluster, LocalCluster):
      return f"the maxtext profile evaluator measures a LocalCluster, got {type(cluster).__name__}"
    if cluster.num_slices > 1 and cluster.platform not in ("cpu", "auto"):
      return (f"cluster {cluster.name!r}: several processes (num_slices={cluster.num_slices}) run on CPU devices "
              f"only (one process per GPU set is not wired here)")
    try:
      mt.model_keys(workload)
    except ValueError as e:
      return str(e)
    return maxtext_env.missing(self.python)

  def measure(self, problem: Problem, candidates: Sequence[Candidate]) -> list[Measurement]:
    workload, cluster = problem.workload, problem.cluster
    per, slices, platform = mt.layout(cluster)
    faults = self.faults_for(candidates)
    request: dict[str, Any] = {"options": self._options(), "faults": faults}
    module = "autoscout_jax.maxtext_child.profile_child"
    if slices > 1:
      module = "autoscout_jax.maxtext_child.multiproc"
      request["processes"] = {"count": slices, "timeout_s": int(self.startup_timeout_s),
                              "fault_process": self.fault_process}
    python = maxtext_env.find_python(self.python)
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for i, cand in enumerate(candidates):
      keys = mt.overrides(cand, workload, platform, num_slices=slices, local=True)
      flags = tuple(xla.xla_flags({k: v for k, v in cand.values.items() if k in mt.FLAG_KNOBS}, platform)
                    if platform in ("tpu", "gpu") else ())
      groups.setdefault(flags, []).append({"index": i, "key": cand.key, "values": keys})
    outcomes: dict[int, Outcome] = {}
    for flags, items in groups.items():
      env = maxtext_env.child_env(per, platform)  # on 'cpu' with CPU_XLA_FLAGS
      if flags:
        env["XLA_FLAGS"] = " ".join([env.get("XLA_FLAGS", "")] + list(flags)).strip()
      outcomes.update(run_candidates(request, items, env, self.timeout_s, self.startup_timeout_s,
                                     self.max_per_child, argv=maxtext_env.child_argv(python, module)))
    return [self._measurement(workload, cluster, cand, outcomes[i], faults.get(cand.key), slices)
            for i, cand in enumerate(candidates)]

  def _measurement(self, workload: Workload, cluster: LocalCluster, cand: Candidate, outcome: Outcome,
                   fault: str | None, slices: int) -> Measurement:
    return outcome.measurement(
        cand, self.fidelity, workload, cluster, outcome.wall_s * cluster.num_devices,
        {"evaluator": "maxtext.profile", **({"injected_fault": fault} if fault else {})},
        defaults={"platform": cluster.platform, "device_count": cluster.num_devices, "processes": slices})
