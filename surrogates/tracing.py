"""Trace counters for the jitted entry points of the surrogate.

Where it sits in the data flow: beside it. Each jitted function calls
`count_trace(name)` in its Python body, which runs only when JAX traces
(i.e. compiles for a new shape/static argument). Tests read the counters to
prove that growing data within one padded bucket does not recompile.
"""

from __future__ import annotations

import collections

_COUNTS: collections.Counter[str] = collections.Counter()


def count_trace(name: str) -> None:
  """Records one trace of the jitted function `name` (call at trace time)."""
  _COUNTS[name] += 1


def trace_counts() -> dict[str, int]:
  """A snapshot of how many times each jitted function has been traced."""
  return dict(_COUNTS)
