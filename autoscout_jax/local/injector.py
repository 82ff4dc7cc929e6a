"""Injected faults acted out in real child processes (a test tool; the
rules are faults.py's).

Where it sits: `experiment.run_experiment` calls `apply_faults` with the
rules `faults.parse_faults` checked. An evaluator whose own child acts
faults out (the local ones: `with_faults`, runner.ChildFaults) gets a copy
with its fidelity's rules; any other (the simulators) is wrapped in
`FaultInjector`, which runs each faulted candidate in a bare child
(child_protocol.py run by path) under local/runner.py's parent machinery.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Mapping, Sequence

from autoscout_jax import child_protocol
from autoscout_jax.evaluator import Evaluator
from autoscout_jax.faults import Fault, fault_for
from autoscout_jax.local.runner import run_candidates
from autoscout_jax.measurement import Measurement


class FaultInjector(Evaluator):
  """Wraps an evaluator without a child of its own: faulted candidates are
  acted out by a bare child with timeout `timeout_s`, the rest go to
  `inner`. A faulted candidate costs what the inner evaluator charges a
  candidate (`charge_s`) where it has a fixed charge, else its wall time."""

  def __init__(self, inner: Evaluator, faults: Sequence[Fault], timeout_s: float):
    self.inner = inner
    self.fidelity = inner.fidelity
    self.faults = tuple(f for f in faults if f.fidelity == inner.fidelity)
    self.timeout_s = float(timeout_s)

  def settings(self) -> dict[str, Any]:
    return {**self.inner.settings(), "faults": [f.to_json() for f in self.faults]}

  def use_workdir(self, workdir: str, problem: Any) -> None:
    use = getattr(self.inner, "use_workdir", None)
    if use is not None:
      use(workdir, problem)

  def check_fits(self, workload: Any, cluster: Any) -> str | None:
    check = getattr(self.inner, "check_fits", None)
    return check(workload, cluster) if check is not None else None

  def evaluate(self, problem: Any, candidates: Sequence[Any]) -> list[Measurement]:
    workload, cluster = problem.workload, problem.cluster
    kinds = [fault_for(self.faults, c.values, self.fidelity) for c in candidates]
    clean = [i for i, k in enumerate(kinds) if k is None]
    out: dict[int, Measurement] = {}
    if clean:
      for i, m in zip(clean, self.inner.evaluate(problem, [candidates[i] for i in clean])):
        out[i] = m
    faulted = [i for i, k in enumerate(kinds) if k is not None]
    if faulted:
      items = [{"index": i, "key": candidates[i].key, "values": dict(candidates[i].values)}
               for i in faulted]
      request = {"faults": {candidates[i].key: kinds[i] for i in faulted}}
      argv = [sys.executable, "-I", "-S", child_protocol.__file__]
      outcomes = run_candidates(request, items, dict(os.environ), self.timeout_s,
                                startup_timeout_s=max(30.0, self.timeout_s), argv=argv)
      charge = getattr(self.inner, "charge_s", None)
      for i in faulted:
        o = outcomes[i]
        out[i] = o.measurement(candidates[i], self.fidelity, workload, cluster,
                               charge if charge is not None else o.wall_s, {"injected_fault": kinds[i]})
    return [out[i] for i in range(len(candidates))]


def apply_faults(evaluators: Mapping[str, Evaluator], faults: Sequence[Fault],
                 timeout_s: float) -> dict[str, Evaluator]:
  """Each evaluator with the rules of its fidelity: a copy given the rules
  where it acts faults out itself (`with_faults`), else wrapped."""
  out: dict[str, Evaluator] = {}
  for fid, ev in evaluators.items():
    mine = [f for f in faults if f.fidelity == fid]
    if not mine:
      out[fid] = ev
    elif hasattr(ev, "with_faults"):
      out[fid] = ev.with_faults(mine)
    else:
      out[fid] = FaultInjector(ev, mine, timeout_s)
  return out

