"""Candidate: one point of a search space, the value that flows from designers
to evaluators and into the store.

Where it sits: made by SearchSpace (space.py: sample, enumerate, make) and
designers, checked by `space.validate`, evaluated by evaluators, stored by
its `key` in the store (store.py) and replayed from it on resume.

Frozen, hashable and JSON round-trippable. Only active knobs carry values.
A candidate may name the fidelity it should be evaluated at and, for a
deliberate re-measurement, its repeat index (0 is the first measurement;
repeat r > 0 is a new measurement of the same point at the same fidelity):
hints from the designer to the loop, not part of its identity.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from typing import Any, Mapping

from autoscout_jax.space.knobs import Value


@dataclasses.dataclass(frozen=True)
class Candidate:
  items: tuple[tuple[str, Value], ...]
  fidelity: str | None = dataclasses.field(default=None, compare=False)
  repeat: int = dataclasses.field(default=0, compare=False)

  @classmethod
  def of(cls, values: Mapping[str, Value], fidelity: str | None = None) -> "Candidate":
    return cls(tuple(sorted(values.items())), fidelity)

  def __getitem__(self, name: str) -> Value:
    for k, v in self.items:
      if k == name:
        return v
    raise KeyError(name)

  def get(self, name: str, default: Any = None) -> Any:
    for k, v in self.items:
      if k == name:
        return v
    return default

  def __contains__(self, name: str) -> bool:
    return any(k == name for k, _ in self.items)

  @property
  def values(self) -> dict[str, Value]:
    return dict(self.items)

  def at(self, fidelity: str | None) -> "Candidate":
    """The same point with a fidelity hint for the loop (the repeat hint kept)."""
    return Candidate(self.items, fidelity, self.repeat)

  def again(self, repeat: int) -> "Candidate":
    """The same point (and fidelity hint), asked as its `repeat`-th
    re-measurement: the loop measures and charges it as a new measurement."""
    if repeat < 0:
      raise ValueError(f"a repeat index is >= 0, got {repeat}")
    return Candidate(self.items, self.fidelity, int(repeat))

  def replace(self, **changes: Value) -> "Candidate":
    vals = self.values
    vals.update(changes)
    return Candidate.of(vals, self.fidelity)

  def to_json(self) -> dict[str, Value]:
    return self.values

  @classmethod
  def from_json(cls, data: Mapping[str, Any]) -> "Candidate":
    return cls.of(dict(data))

  @functools.cached_property
  def key(self) -> str:
    """Stable across processes and Python versions (sorted JSON digest).
    Computed once per instance (loops over whole spaces ask it often); the
    cache lives outside the dataclass fields, so equality is unchanged."""
    blob = json.dumps(self.values, sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(blob.encode()).hexdigest()[:16]

  def short(self) -> str:
    return " ".join(f"{k}={v}" for k, v in self.items)
