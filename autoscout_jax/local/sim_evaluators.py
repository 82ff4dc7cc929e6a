"""F0 and F1 on this machine's devices: the simulators score local
candidates on a model of the devices measured by micro-benchmarks, so a
search on real devices is screened by simulators of those devices (the
ladder F0 -> F1 -> F2 -> F3 in one run).

Where it sits: gin (gin/evaluators/local_ladder.gin) lists
`LocalAnalyticEvaluator` and `LocalEventEvaluator` beside the local F2/F3
evaluators; the search loop hands them the run's `Problem` with a
`LocalCluster`. They are the simulators' evaluators (sim/analytic.py,
sim/event.py) with two hooks changed: the plan of a local candidate comes
from `targets.local.plan` (a simulator space's own translation otherwise:
a JAX-mesh/MaxText space on this machine scores the same way), and the
hardware is `local/devices.sim_model` (measured once, cached in the run's
workdir, which experiment.py hands over with `use_workdir` before the
search starts; or a committed `devices_file`). The measurement is setup,
not charged to the budget (its wall time is in the cached file's
provenance, `measure_s`).

Each measurement's provenance names the measurement it was scored on
(`devices_key`, `devices_digest`). The measured numbers are fixed for a
workdir (its cache), so a resumed run scores exactly as before.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from autoscout_jax.local.devices import sim_model
from autoscout_jax.problem import Problem
from autoscout_jax.sim.analytic import AnalyticEvaluator
from autoscout_jax.sim.event import EventEvaluator
from autoscout_jax.space import Candidate
from autoscout_jax.targets import local as local_target
from autoscout_jax.workload import LocalCluster

__all__ = ["LocalAnalyticEvaluator", "LocalEventEvaluator"]


class _MeasuredDevices:
  """Arguments (besides the simulator's `constants`, `charge_s`):

  devices_file: a measured-devices JSON (local/devices.py) to score on
    instead of measuring this machine (a committed table's devices).
  cache_dir: where this machine's measurement is cached (None: the run's
    workdir, else $AUTOSCOUT_DEVICES_CACHE or the user's cache directory).
  """

  def __init__(self, *args: Any, devices_file: str | None = None, cache_dir: str | None = None,
               **kwargs: Any):
    super().__init__(*args, **kwargs)
    self.devices_file = devices_file
    self.cache_dir = cache_dir
    self._workdir: str | None = None
    self._model: dict[str, Any] = {}  # (cluster key, precision) -> sim model; travels empty

  def __getstate__(self):
    state = dict(self.__dict__)
    state["_model"] = {}
    return state

  def use_workdir(self, workdir: str, problem: Problem) -> None:
    """Cache this machine's measurement in the run's workdir, and take it
    now (the run's first act on the devices, before any executor worker
    could race to measure them)."""
    self._workdir = workdir
    self._hardware(problem)

  def check_fits(self, workload, cluster) -> str | None:
    if not isinstance(cluster, LocalCluster):
      return (f"the local {self.fidelity} simulator scores a LocalCluster (this machine's devices), got "
              f"{type(cluster).__name__}; use the simulators' own evaluator for a simulated cluster")
    need = local_target.min_state_bytes_per_device(workload, cluster.num_devices)
    if need > cluster.memory_bytes_per_device:
      return (f"workload {workload.name!r}: its training state needs {need:,} bytes per device even fully "
              f"sharded, the budget is {cluster.memory_bytes_per_device:,}")
    return None

  def settings(self) -> dict[str, Any]:
    out = super().settings()
    out["devices"] = {"file": self.devices_file} if self.devices_file else {"measured": "this machine"}
    return out

  def _plan(self, problem: Problem, candidates: Sequence[Candidate]) -> Mapping[str, np.ndarray]:
    if problem.family == local_target.FAMILY:
      return local_target.plan(candidates, problem.workload)
    return super()._plan(problem, candidates)

  def _hardware(self, problem: Problem) -> tuple[Any, Any, dict[str, Any]]:
    cluster, workload = problem.cluster, problem.workload
    why = self.check_fits(workload, cluster)
    if why:
      raise ValueError(why)
    k = (cluster.key, str(workload.precision))
    if k not in self._model:
      base = self.constants
      sim, consts, md = sim_model(cluster, workload.precision, self.cache_dir or self._workdir,
                                  self.devices_file, **({} if base is None else {"base": base}))
      self._model[k] = (sim, consts, {"devices_key": md.key, "devices_digest": md.digest})
    return self._model[k]


class LocalAnalyticEvaluator(_MeasuredDevices, AnalyticEvaluator):
  """F0 (fidelity 'analytic') of local candidates on the measured devices."""

  simulator = "F0-local"


class LocalEventEvaluator(_MeasuredDevices, EventEvaluator):
  """F1 (fidelity 'event') of local candidates on the measured devices."""

  simulator = "F1-local"

