"""The budget splitter: a discounted-UCB bandit over the search's arms.

Where it sits: each top-fidelity slot of a suggestion round asks
`choose()` which arm proposes the candidate (sparse structure moves or
dense relaxation); when the measurement comes back, `reward(arm, r)` is
paid with the marginal gain that candidate delivered (how much it raised
the best throughput, in log units, scaled to [0, 1]). Old rewards fade
(discount) because what pays changes during a search: structure moves
early, dense refinement once the structure is right.

Pending pulls (proposed, not yet measured) count as pulls without reward,
so one batch spreads over the arms the way UCB would spread sequential
pulls. Deterministic: ties go to the first arm.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence


class Bandit:

  def __init__(self, arms: Sequence[str], discount: float = 0.9, explore: float = 0.5,
               fixed_split: Mapping[str, float] | None = None):
    if not arms:
      raise ValueError("a bandit needs at least one arm")
    if not 0.0 < discount <= 1.0:
      raise ValueError(f"bandit discount must be in (0, 1], got {discount}")
    self.arms = tuple(arms)
    self.discount = discount
    self.explore = explore
    self.fixed_split = None
    if fixed_split is not None:
      unknown = sorted(set(fixed_split) - set(self.arms))
      if unknown or any(v < 0 for v in fixed_split.values()) or sum(fixed_split.values()) <= 0:
        raise ValueError(f"fixed_split {dict(fixed_split)} must give non-negative shares "
                         f"to the arms {self.arms}")
      tot = sum(fixed_split.values())
      self.fixed_split = {a: fixed_split.get(a, 0.0) / tot for a in self.arms}
    self.n = {a: 0.0 for a in self.arms}  # discounted pulls
    self.s = {a: 0.0 for a in self.arms}  # discounted reward sums
    self.pending = {a: 0 for a in self.arms}
    self.total = {a: 0 for a in self.arms}  # all pulls ever (for shares)
    self.paid = {a: 0.0 for a in self.arms}  # undiscounted rewards ever

  def choose(self, allowed: Sequence[str] | None = None) -> str:
    """The arm for the next slot (and records it as pending)."""
    arms = [a for a in self.arms if allowed is None or a in allowed]
    if not arms:
      raise ValueError("no arm allowed")
    if self.fixed_split is not None:
      # Keep realised shares closest to the fixed split.
      tot = sum(self.total[a] for a in arms) + 1
      arm = max(arms, key=lambda a: self.fixed_split[a] * tot - self.total[a])
    else:
      arm = max(arms, key=self._index)
    self.pending[arm] += 1
    self.total[arm] += 1
    return arm

  def _index(self, arm: str) -> float:
    n = self.n[arm] + self.pending[arm]
    if n <= 0:
      return math.inf
    tot = sum(self.n[a] + self.pending[a] for a in self.arms)
    return self.s[arm] / n + self.explore * math.sqrt(math.log(max(tot, 1.0) + 1.0) / n)

  def reward(self, arm: str, r: float) -> None:
    """Pays a pull of `arm` (r is clipped to [0, 1])."""
    if arm not in self.n:
      raise ValueError(f"unknown arm {arm!r}; arms are {self.arms}")
    r = min(1.0, max(0.0, float(r)))
    for a in self.arms:
      self.n[a] *= self.discount
      self.s[a] *= self.discount
    self.n[arm] += 1.0
    self.s[arm] += r
    self.paid[arm] += r
    if self.pending[arm] > 0:
      self.pending[arm] -= 1

  def shares(self) -> dict[str, float]:
    tot = sum(self.total.values())
    return {a: (self.total[a] / tot if tot else 0.0) for a in self.arms}

  def means(self) -> dict[str, float]:
    return {a: (self.s[a] / self.n[a] if self.n[a] > 0 else 0.0) for a in self.arms}
