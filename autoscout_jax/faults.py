"""Injected faults: a test tool for the search's failure handling.

Where it sits: gin macro `FAULTS` (gin/runs/search.gin) ->
`experiment.run_experiment(faults=...)` -> `parse_faults` checks it against
the run's fidelities and space, and `apply_faults` hands each evaluator the
rules of its fidelity. The local evaluators (F2, F3) act a fault out inside
their own JAX child (local/child.py); any other evaluator (the simulators)
is wrapped in `FaultInjector`, which runs each faulted candidate in a bare
child process (child_protocol.py run by path) under the same parent machinery
(local/runner.py), so every fault is a real process that crashes, hangs,
runs out of memory, is OOM-killed or prints garbage.

    FAULTS = [({'remat_policy': 'full'}, 'profile', 'hang'),
              ({}, 'compile', 'crash')]

Each rule is `(pattern, fidelity, kind)`: `pattern` a dict of knob values a
candidate must all match (`{}` matches every candidate), `fidelity` one of
the run's, `kind` one of FAULT_KINDS. The first matching rule wins. What a
fault becomes: crash -> 'crash', hang -> 'timeout' (at the evaluator's
timeout), oom and oom_kill -> 'oom', garbage -> 'crash'; the stored
measurement's provenance names the injected kind (`injected_fault`).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any, Mapping, Sequence

from autoscout_jax import child_protocol
from autoscout_jax.child_protocol import FAULT_KINDS
from autoscout_jax.evaluator import Evaluator
from autoscout_jax.local.runner import run_candidates
from autoscout_jax.measurement import Measurement

__all__ = ["FAULT_KINDS", "Fault", "FaultError", "FaultInjector", "apply_faults", "fault_for",
           "parse_faults"]


class FaultError(ValueError):
  """A FAULTS entry that cannot be right (unknown kind, fidelity or knob)."""


@dataclasses.dataclass(frozen=True)
class Fault:
  pattern: tuple[tuple[str, Any], ...]
  fidelity: str
  kind: str

  def matches(self, values: Mapping[str, Any], fidelity: str) -> bool:
    return fidelity == self.fidelity and all(k in values and values[k] == v for k, v in self.pattern)

  def to_json(self) -> list[Any]:
    return [dict(self.pattern), self.fidelity, self.kind]


def parse_faults(spec: Sequence[Any], fidelities: Sequence[str], space: Any = None) -> tuple[Fault, ...]:
  """FAULTS as gin gives it -> Faults; raises FaultError naming the bad entry."""
  out = []
  for i, entry in enumerate(spec or ()):
    where = f"FAULTS[{i}] = {entry!r}"
    if not isinstance(entry, (tuple, list)) or len(entry) != 3:
      raise FaultError(f"{where}: each fault is a (pattern, fidelity, kind) tuple")
    pattern, fidelity, kind = entry
    if not isinstance(pattern, Mapping):
      raise FaultError(f"{where}: the pattern must be a dict of knob values ({{}} matches all)")
    if kind not in FAULT_KINDS:
      raise FaultError(f"{where}: unknown kind {kind!r}; known: {', '.join(FAULT_KINDS)}")
    if fidelity not in fidelities:
      raise FaultError(f"{where}: fidelity {fidelity!r} is not one of this run's: {', '.join(fidelities)}")
    if space is not None:
      knobs = {k.name: k for k in space.knobs}
      for name, value in pattern.items():
        if name not in knobs:
          raise FaultError(f"{where}: unknown knob {name!r}; knobs: {', '.join(knobs)}")
        if not knobs[name].contains(value):
          raise FaultError(f"{where}: {name}={value!r} is outside the knob's domain")
    out.append(Fault(tuple(sorted(pattern.items())), fidelity, kind))
  return tuple(out)


def fault_for(faults: Sequence[Fault], values: Mapping[str, Any], fidelity: str) -> str | None:
  """The kind of the first rule the candidate matches at `fidelity`, or None."""
  for f in faults:
    if f.matches(values, fidelity):
      return f.kind
  return None


def faults_by_key(candidates: Sequence[Any], by_key: Mapping[str, str], rules: Sequence[Fault],
                  fidelity: str) -> dict[str, str]:
  """Candidate key -> fault kind for a batch: an explicit `by_key` entry, else the first rule matched."""
  out = {}
  for c in candidates:
    kind = by_key.get(c.key) or fault_for(rules, c.values, fidelity)
    if kind:
      out[c.key] = kind
  return out


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

