"""Exhaustive search: every valid candidate of a finite space, in a seeded
random order (so a budget cut short is still an unbiased sample).

Where it sits: a `designers.base.Designer` (gin/designers/exhaustive.gin
binds it as DESIGNER; bench/peers.py registers it for scoutbench); it asks
for the top fidelity only and learns nothing from measurements.
"""

from __future__ import annotations

import numpy as np

from autoscout_jax.designers.base import Designer
from autoscout_jax.problem import Problem
from autoscout_jax.space import Candidate


class ExhaustiveSearch(Designer):

  def __init__(self, problem: Problem, seed: int = 0, shuffle: bool = True):
    super().__init__(problem, seed)
    self._pool = self.space.enumerate()
    if shuffle:
      order = np.random.default_rng(seed).permutation(len(self._pool))
      self._pool = [self._pool[i] for i in order]
    self._next = 0

  def suggest(self, n: int) -> list[Candidate]:
    out = self._pool[self._next:self._next + n]
    self._next += len(out)
    return out
