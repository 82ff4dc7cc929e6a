"""Knob declarations: the leaves of the hierarchical search space.

Where it sits: `SearchSpace` (space/space.py) is built from these. Each knob
knows its domain, its default, the condition under which it exists, and how
it maps to and from the fixed-width float encoding the surrogate sees.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence, Union

Value = Union[bool, int, float, str]


@dataclasses.dataclass(frozen=True)
class When:
  """A knob is active only when `parent` is active and takes one of `values`."""

  parent: str
  values: tuple[Value, ...]

  def __init__(self, parent: str, values: Sequence[Value] | Value):
    if isinstance(values, (list, tuple, set, frozenset)):
      vals = tuple(values)
    else:
      vals = (values,)
    object.__setattr__(self, "parent", parent)
    object.__setattr__(self, "values", vals)

  def holds(self, assigned: dict[str, Value]) -> bool:
    return self.parent in assigned and assigned[self.parent] in self.values

  def describe(self) -> str:
    vals = ", ".join(repr(v) for v in self.values)
    return f"{self.parent} in ({vals})"


@dataclasses.dataclass(frozen=True)
class Knob:
  """Base class. `when` lists conditions that must all hold for activity."""

  name: str
  default: Any = None
  when: tuple[When, ...] = ()
  doc: str = ""

  # --- domain -------------------------------------------------------------
  def finite_values(self) -> tuple[Value, ...] | None:
    """All values for a finite domain; None for a continuous one."""
    raise NotImplementedError

  def contains(self, value: Any) -> bool:
    raise NotImplementedError

  def coerce(self, value: Any) -> Value:
    """Turns a JSON-decoded value into the knob's Python type."""
    return value

  # --- encoding -----------------------------------------------------------
  @property
  def width(self) -> int:
    return 1

  def encode(self, value: Value) -> list[float]:
    raise NotImplementedError

  def decode(self, feats: Sequence[float]) -> Value:
    """Nearest domain value to a (possibly relaxed) feature slice."""
    raise NotImplementedError

  # --- local moves --------------------------------------------------------
  def neighbours(self, value: Value) -> list[Value]:
    raise NotImplementedError

  def is_active(self, assigned: dict[str, Value]) -> bool:
    return all(c.holds(assigned) for c in self.when)


@dataclasses.dataclass(frozen=True)
class Categorical(Knob):
  choices: tuple[Value, ...] = ()

  def __post_init__(self):
    if not self.choices:
      raise ValueError(f"knob {self.name!r}: a categorical knob needs choices")
    if self.default is None:
      object.__setattr__(self, "default", self.choices[0])
    if self.default not in self.choices:
      raise ValueError(f"knob {self.name!r}: default {self.default!r} not in {self.choices}")

  def finite_values(self):
    return self.choices

  def contains(self, value):
    return value in self.choices

  @property
  def width(self):
    return len(self.choices)

  def encode(self, value):
    return [1.0 if c == value else 0.0 for c in self.choices]

  def decode(self, feats):
    best = max(range(len(self.choices)), key=lambda i: feats[i])
    return self.choices[best]

  def neighbours(self, value):
    return [c for c in self.choices if c != value]


@dataclasses.dataclass(frozen=True)
class Boolean(Knob):

  def __post_init__(self):
    if self.default is None:
      object.__setattr__(self, "default", False)

  def finite_values(self):
    return (False, True)

  def contains(self, value):
    return isinstance(value, bool)

  def coerce(self, value):
    return bool(value)

  def encode(self, value):
    return [1.0 if value else 0.0]

  def decode(self, feats):
    return bool(feats[0] >= 0.5)

  def neighbours(self, value):
    return [not value]


@dataclasses.dataclass(frozen=True)
class Ordinal(Knob):
  """An ordered set of numbers (e.g. powers of two). Encoded on a log scale
  when all values are positive and `log` is set, so relaxation moves evenly
  between 1, 2, 4, 8."""

  values: tuple[float, ...] = ()
  log: bool = True

  def __post_init__(self):
    if not self.values:
      raise ValueError(f"knob {self.name!r}: an ordinal knob needs values")
    vals = tuple(sorted(self.values))
    if len(set(vals)) != len(vals):
      raise ValueError(f"knob {self.name!r}: ordinal values repeat: {self.values}")
    object.__setattr__(self, "values", vals)
    if self.log and vals[0] <= 0:
      object.__setattr__(self, "log", False)
    if self.default is None:
      object.__setattr__(self, "default", vals[0])
    if self.default not in vals:
      raise ValueError(f"knob {self.name!r}: default {self.default!r} not in {vals}")

  def _scale(self, v: float) -> float:
    lo, hi = self.values[0], self.values[-1]
    if lo == hi:
      return 0.0
    if self.log:
      return (math.log(v) - math.log(lo)) / (math.log(hi) - math.log(lo))
    return (v - lo) / (hi - lo)

  def finite_values(self):
    return self.values

  def contains(self, value):
    return not isinstance(value, bool) and value in self.values

  def coerce(self, value):
    for v in self.values:
      if v == value:
        return v
    return value

  def encode(self, value):
    return [self._scale(value)]

  def decode(self, feats):
    return min(self.values, key=lambda v: abs(self._scale(v) - feats[0]))

  def neighbours(self, value):
    i = self.values.index(value)
    return [self.values[j] for j in (i - 1, i + 1) if 0 <= j < len(self.values)]


@dataclasses.dataclass(frozen=True)
class IntRange(Ordinal):
  """Integers low..high (inclusive) in steps of `step`; linear encoding."""

  low: int = 0
  high: int = 0
  step: int = 1

  def __init__(self, name, low, high, step=1, default=None, when=(), doc="", log=False):
    if high < low or step < 1:
      raise ValueError(f"knob {name!r}: empty integer range {low}..{high} step {step}")
    object.__setattr__(self, "low", int(low))
    object.__setattr__(self, "high", int(high))
    object.__setattr__(self, "step", int(step))
    super().__init__(name=name, default=default, when=tuple(when), doc=doc,
                     values=tuple(range(int(low), int(high) + 1, int(step))), log=log)

  def coerce(self, value):
    return int(value)


@dataclasses.dataclass(frozen=True)
class Float(Knob):
  low: float = 0.0
  high: float = 1.0
  log: bool = False

  def __post_init__(self):
    if not self.high > self.low:
      raise ValueError(f"knob {self.name!r}: float range needs high > low")
    if self.log and self.low <= 0:
      raise ValueError(f"knob {self.name!r}: a log-scale float needs low > 0")
    if self.default is None:
      object.__setattr__(self, "default", self.low)

  def _fwd(self, v):
    if self.log:
      return (math.log(v) - math.log(self.low)) / (math.log(self.high) - math.log(self.low))
    return (v - self.low) / (self.high - self.low)

  def _inv(self, u):
    u = min(1.0, max(0.0, float(u)))
    if self.log:
      return math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
    return self.low + u * (self.high - self.low)

  def finite_values(self):
    return None

  def contains(self, value):
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and self.low <= value <= self.high)

  def coerce(self, value):
    return float(value)

  def encode(self, value):
    return [self._fwd(value)]

  def decode(self, feats):
    return self._inv(feats[0])

  def neighbours(self, value):
    u = self._fwd(value)
    return [self._inv(x) for x in (u - 0.1, u + 0.1) if 0.0 <= x <= 1.0]

  def sample_unit(self, u: float) -> float:
    return self._inv(u)
