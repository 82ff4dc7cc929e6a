"""Problem: what a run is about, built once and handed down.

Where it sits: `experiment.run_experiment` (and scoutbench's runner) build
one `Problem` from the workload, the cluster, the space the target family
made for them, the fidelities the run's evaluators offer, and the
workload's expert default; designer factories receive it as
`designer_fn(problem, seed)`, evaluators as `evaluate(problem, candidates)`,
the search loop routes with it. Nobody downstream rebuilds a space or
guesses which fidelities exist (after OSS Vizier's `ProblemStatement` and
its `DesignerFactory(problem)`).
"""

from __future__ import annotations

import dataclasses
import types
from typing import Any, Mapping, Protocol, runtime_checkable

from autoscout_jax.measurement import fidelity_rank
from autoscout_jax.space import Candidate, SearchSpace


@runtime_checkable
class Cluster(Protocol):
  """What every cluster offers the run: a name, a cache key and a device
  count (`workload.LocalCluster` for this machine, `sim.hardware.Cluster`
  for the simulators' clusters, which add their hardware)."""

  @property
  def name(self) -> str: ...

  @property
  def key(self) -> str: ...

  @property
  def num_devices(self) -> int: ...


@dataclasses.dataclass(frozen=True)
class Problem:
  """workload: `workload.Workload`; cluster: a `Cluster`; space: the run's
  search space (its `family` names the target module that made it);
  fidelities: the fidelities the run can measure at, cheapest first (the
  last is the one results are ranked by); costs: nominal device-seconds of
  one measurement per fidelity, where known before measuring; default: the
  workload's expert default as a candidate of the space (None when the run
  does not compare against it)."""

  workload: Any
  cluster: Cluster
  space: SearchSpace
  fidelities: tuple[str, ...] = ("profile",)
  costs: Mapping[str, float] = dataclasses.field(default_factory=dict)
  default: Candidate | None = None

  def __post_init__(self):
    fids = tuple(self.fidelities)
    if not fids:
      raise ValueError("a problem needs at least one fidelity")
    if len(set(fids)) != len(fids):
      raise ValueError(f"fidelities repeat: {fids}")
    object.__setattr__(self, "fidelities", tuple(sorted(fids, key=fidelity_rank)))
    object.__setattr__(self, "costs", types.MappingProxyType(dict(self.costs)))

  @property
  def top(self) -> str:
    """The fidelity results are ranked by."""
    return self.fidelities[-1]

  @property
  def family(self) -> str:
    return self.space.family


class DefaultError(ValueError):
  """The workload's expert default is not a valid candidate of the space."""


def expert_default(space: SearchSpace, workload: Any) -> Candidate:
  """The workload's expert default configuration as a valid candidate of
  `space`; raises DefaultError naming what is wrong with it."""
  try:
    cand = space.make(workload.default_values)
  except ValueError as e:
    raise DefaultError(f"the default configuration of workload {workload.name!r}: {e}") from e
  viol = space.validate(cand)
  if viol:
    raise DefaultError(f"the default configuration of workload {workload.name!r} is not in space "
                       f"{space.name!r}: " + "; ".join(str(v) for v in viol))
  return cand
