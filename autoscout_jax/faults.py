"""Injected faults: a test tool for the search's failure handling.

Where it sits: gin macro `FAULTS` (gin/runs/search.gin) ->
`experiment.run_experiment(faults=...)` -> `parse_faults` checks it against
the run's fidelities and space, and `local/injector.apply_faults` hands each
evaluator the rules of its fidelity. This module holds the rules only (it
imports nothing that runs a child). The local evaluators (F2, F3) act a
fault out inside their own JAX child (local/child.py); any other evaluator
(the simulators) is wrapped in `local/injector.FaultInjector`, which runs each faulted candidate in a bare
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
from typing import Any, Mapping, Sequence

from autoscout_jax.child_protocol import FAULT_KINDS

__all__ = ["FAULT_KINDS", "Fault", "FaultError", "fault_for", "faults_by_key", "parse_faults"]


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
