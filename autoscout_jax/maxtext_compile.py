"""`MaxTextCompileEvaluator`: fidelity 'compile' (F2) for the maxtext
family, by MaxText's own ahead-of-time path: its train step (the program
`maxtext.trainers.pre_train.train_compile` builds) lowered from shapes and
compiled for this machine's devices, or for a TPU topology (compile-only
devices from libtpu) when the cluster is a simulated TPU cluster.

Where it sits: the search hands it candidates of `targets.maxtext.space`;
it turns each into MaxText overrides (`targets.maxtext.overrides`) and has
them compiled in a Python 3.12 child (`python -m autoscout_jax.maxtext_child.child`,
interpreter from maxtext_env.py) through local/runner.py (per-candidate
timeout; a crash or hang costs one candidate). A config MaxText refuses is
'invalid', XLA's HBM out-of-memory verdict (or a per-device peak above the
device's memory) 'oom', any other compiler failure 'compile_error' -- data,
never an exception.

Cost: seconds this host spent on the candidate; for this machine's devices
times the device count (device-seconds, as the local F2), for a TPU target
host seconds (`provenance['cost_unit'] = 'host_s'`, as
compile.CompileAtScaleEvaluator: nothing runs on the cluster).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from autoscout_jax import maxtext_env
from autoscout_jax.compile.evaluator import attach_timing
from autoscout_jax.evaluator import CheckedEvaluator, Evaluator
from autoscout_jax.local.runner import LocalSetupError, Outcome, run_candidates
from autoscout_jax.measurement import OOM, Measurement, Metrics
from autoscout_jax.problem import Problem
from autoscout_jax.space import Candidate
from autoscout_jax.targets import maxtext as mt
from autoscout_jax.targets import xla
from autoscout_jax.units import fmt_bytes
from autoscout_jax.workload import Workload

__all__ = ["MaxTextCompileEvaluator", "compile_target", "tpu_topology"]

# MaxText's topology names count chips on v5e/v6e and TensorCores (2 per
# chip, megacore) on v4/v5p: v5e-256 is 256 chips, v5p-128 is 64.
_CORES_PER_CHIP = {"tpu_v4": 2, "tpu_v5p": 2, "tpu_v5e": 1, "tpu_v6e": 1}


def tpu_topology(cluster: Any) -> str:
  """MaxText's compile_topology name of one slice of a sim TPU cluster."""
  dev = cluster.device.name
  if dev not in _CORES_PER_CHIP:
    raise ValueError(f"cluster {cluster.name!r}: MaxText has no compile topology for device {dev!r}")
  return f"{dev[len('tpu_'):]}-{cluster.node_size * _CORES_PER_CHIP[dev]}"


def compile_target(cluster: Any) -> dict[str, Any]:
  """{'kind': 'local'} for this machine, else a TPU topology and slices."""
  if not hasattr(cluster, "device"):
    return {"kind": "local"}
  if cluster.platform != "tpu":
    raise ValueError(f"cluster {cluster.name!r}: MaxText's AOT compile targets TPU topologies; "
                     f"{cluster.device.name} is not one (compile GPU clusters with compile.CompileAtScaleEvaluator)")
  return {"kind": "tpu", "topology": tpu_topology(cluster), "num_slices": int(cluster.num_nodes)}


class MaxTextCompileEvaluator(CheckedEvaluator):
  """Arguments:

  python: the 3.12 interpreter with MaxText (None: maxtext_env.find_python).
  timeout_s: per-candidate limit (config, lowering and compile).
  startup_timeout_s: limit for a child to import MaxText and JAX.
  timing: optional cheaper-fidelity evaluator (e.g. the F1 event simulator)
    whose step time is attached to every candidate XLA says fits on a TPU
    target (compile.evaluator.attach_timing), so this fidelity can top a
    cluster search without real profiling.
  """

  fidelity = "compile"

  def __init__(self, python: str | None = None, timeout_s: float = 900.0, startup_timeout_s: float = 300.0,
               timing: Evaluator | None = None):
    if timeout_s <= 0 or startup_timeout_s <= 0:
      raise ValueError(f"timeouts must be positive, got timeout_s={timeout_s}, "
                       f"startup_timeout_s={startup_timeout_s}")
    if timing is not None and timing.fidelity in ("compile", "profile"):
      raise ValueError(f"timing must be a cheaper fidelity than compile, got {timing.fidelity!r}")
    self.timing = timing
    self.python = python
    self.timeout_s = float(timeout_s)
    self.startup_timeout_s = float(startup_timeout_s)

  def settings(self) -> dict[str, Any]:
    return {"backend": "maxtext", "timing": self.timing.fidelity if self.timing else None}

  def check_fits(self, workload: Workload, cluster: Any) -> str | None:
    """Why this evaluator cannot compile the job at all, or None."""
    why = maxtext_env.missing(self.python)
    if why:
      return why
    try:
      compile_target(cluster)
      mt.model_keys(workload)
    except ValueError as e:
      return str(e)
    return None

  def check_problem(self, problem: Problem) -> str | None:
    if problem.space.family != mt.FAMILY:
      return (f"the MaxText compile evaluator takes the maxtext family's candidates, "
              f"got space {problem.space.name!r} ({problem.space.family or 'ad hoc'})")
    return super().check_problem(problem)

  def measure(self, problem: Problem, candidates: Sequence[Candidate]) -> list[Measurement]:
    workload, cluster = problem.workload, problem.cluster
    target = compile_target(cluster)
    _, slices, platform = mt.layout(cluster)
    items = []
    for i, c in enumerate(candidates):
      keys = mt.overrides(c, workload, platform, slices, local=target["kind"] == "local")
      if target["kind"] == "tpu":
        flags = xla.xla_flags({k: v for k, v in c.values.items() if k in mt.FLAG_KNOBS}, "tpu")
        if flags:
          keys["compile_xla_flags"] = " ".join(flags)  # MaxText hands them to XLA as compiler options
      items.append({"index": i, "key": c.key, "values": keys})
    if target["kind"] == "tpu":
      env = maxtext_env.child_env(platform="tpu_compile")
    else:
      env = maxtext_env.child_env(cluster.num_devices, platform="cpu" if platform == "cpu" else platform)
    python = maxtext_env.find_python(self.python)
    try:
      outcomes = run_candidates({"op": "compile", "target": target}, items, env, self.timeout_s,
                                self.startup_timeout_s, argv=maxtext_env.child_argv(python, "autoscout_jax.maxtext_child.child"))
    except LocalSetupError as e:
      raise ValueError(str(e).strip().splitlines()[0] if str(e).strip() else "MaxText child failed") from None
    out = [self._measurement(workload, cluster, target, c, outcomes[i]) for i, c in enumerate(candidates)]
    if self.timing is not None and target["kind"] == "tpu":
      return attach_timing(self.timing, problem, out)
    return out

  def _measurement(self, workload: Workload, cluster: Any, target: dict[str, Any], cand: Candidate,
                   outcome: Outcome) -> Measurement:
    metrics = outcome.metrics
    limit = float(getattr(cluster, "memory_bytes_per_device", 0) or 0)
    if metrics.feasible and limit and (metrics.peak_mem_bytes or 0) > limit:
      metrics = Metrics.failed(OOM, f"needs {fmt_bytes(metrics.peak_mem_bytes)} per device (XLA memory "
                               f"analysis of MaxText's step) but the device has {fmt_bytes(limit)}",
                               peak_mem_bytes=metrics.peak_mem_bytes, flops_per_step=metrics.flops_per_step,
                               extra=dict(metrics.extra))
    at_scale = target["kind"] == "tpu"
    cost = outcome.wall_s if at_scale else outcome.wall_s * cluster.num_devices
    return dataclasses.replace(outcome, metrics=metrics).measurement(
        cand, self.fidelity, workload, cluster, cost, dict(evaluator="maxtext.compile", backend="maxtext",
                                                           target=dict(target),
                                                           cost_unit="host_s" if at_scale else "device_s"))
