"""Random search: uniform samples of valid candidates, never repeating one.

Where it sits: a `designers.base.Designer` (gin/designers/random.gin binds
it as DESIGNER; bench/peers.py registers it for scoutbench, where it is the
floor every other designer must clear); top fidelity only, no learning.
"""

from __future__ import annotations

import numpy as np

from autoscout_jax.designers.base import Designer
from autoscout_jax.problem import Problem
from autoscout_jax.space import Candidate


class RandomSearch(Designer):

  def __init__(self, problem: Problem, seed: int = 0, max_draws: int = 200):
    super().__init__(problem, seed)
    self._rng = np.random.default_rng(seed)
    self._given: set[Candidate] = set()
    self._max_draws = max_draws

  def suggest(self, n: int) -> list[Candidate]:
    out: list[Candidate] = []
    for _ in range(self._max_draws):
      if len(out) == n:
        break
      for c in self.space.sample(self._rng, n - len(out)):
        if c not in self._given:
          self._given.add(c)
          out.append(c)
    return out
