"""Designer interface (ask/tell): designers suggest, the loop evaluates.

Where it sits: a designer factory is called once per run as
`designer_fn(problem, seed)` with the run's `Problem` (space, fidelities,
costs, expert default: nothing to guess). `search.run_search` calls `suggest(n)`, routes each candidate
to the evaluator of the fidelity it names (None: the top fidelity), and
hands every resulting measurement (also failures and invalid suggestions)
back through `update`. Designers never evaluate and hold no storage; a
resumed run replays their suggestions against the store, so a designer must
be deterministic given its seed and the measurements it was told.
"""

from __future__ import annotations

import abc
from typing import Any, Sequence

from autoscout_jax.measurement import Measurement
from autoscout_jax.problem import Problem
from autoscout_jax.space import Candidate


class Designer(abc.ABC):

  def __init__(self, problem: Problem, seed: int = 0):
    self.problem = problem
    self.space = problem.space
    self.seed = seed

  @abc.abstractmethod
  def suggest(self, n: int) -> list[Candidate]:
    """Up to n candidates; an empty list means the designer is done."""

  def update(self, measurements: Sequence[Measurement]) -> None:
    """Learn from measurements of earlier suggestions (default: nothing)."""
    del measurements

  # Reporting hooks: the loop writes `scalars()` to TensorBoard after every
  # round and puts `summary()` in the final report (JSON-serializable; a
  # designer that learns knob importances reports them under "importances",
  # knob -> share, summing to 1).
  def scalars(self) -> dict[str, float]:
    """Flat numbers for TensorBoard, tag -> value (default: none)."""
    return {}

  def summary(self) -> dict[str, Any]:
    """What the designer learned, for the final report (default: nothing)."""
    return {}
