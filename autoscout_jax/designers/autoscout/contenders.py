"""Re-measuring the top contenders when their difference is within the noise.

Where it sits: `AutoScoutDesigner` feeds every top-fidelity measurement to
a `Contenders` and, each round, weighs `offer()` (the best re-measurement
and what it is worth) against the expected improvement of profiling
something new; the cheap-order stage (ranked.py) does the same, and neither
stops while a re-measurement is still worth its threshold. A re-measurement
is asked as `candidate.again(r)` (r = how many times it was measured
before), which the search loop stores and charges as a new measurement;
the loop's answer then decides on all of a candidate's repeats
(`measurement.Repeats`: the lower median), so the pick is not one lucky
repeat.

The value of a re-measurement, in log throughput: the incumbent A (best
lower median) against each of the next `CHALLENGERS` candidates B by score,
with the difference of their mean log throughputs d ~ N(observed, s^2),
s^2 = sigma^2 (1/n_A + 1/n_B): the expected loss of keeping A is
E[max(0, -d)] = s phi(delta/s) - delta Phi(-delta/s); one more measurement
of the less-measured of the pair shrinks s to s', and the offer is that
loss x (1 - s'/s) for the pair where it is largest. sigma is the measured
noise: the pooled standard deviation of log throughput over the candidates
measured more than once, shrunk toward `prior_noise` with `PRIOR_DOF`
pseudo-degrees of freedom (a table that repeats itself exactly teaches
sigma ~ 0 and the offers fade). Budget: a candidate is measured at most
`max_repeats` times, and re-measurements are at most `share` of this
run's top-fidelity measurements (counting the ones they would add).
"""

from __future__ import annotations

import math
from typing import Sequence

from autoscout_jax.measurement import Measurement, Repeats
from autoscout_jax.space import Candidate

CHALLENGERS = 3  # candidates after the incumbent that may contest it
PRIOR_DOF = 1.0  # pseudo-degrees of freedom of the prior noise


def _phi(z: float) -> float:
  return math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


def _Phi(z: float) -> float:
  return 0.5 * math.erfc(-z / math.sqrt(2))


def expected_loss(delta: float, s: float) -> float:
  """E[max(0, -d)] for d ~ N(delta, s^2): what keeping the apparent leader
  costs in expectation when the runner-up is truly better."""
  if s <= 0:
    return max(0.0, -delta)
  z = delta / s
  return s * _phi(z) - delta * _Phi(-z)


class Contenders:
  """See module docstring."""

  def __init__(self, top: str, max_repeats: int = 3, share: float = 0.25, prior_noise: float = 0.03):
    if max_repeats < 1 or not 0 <= share <= 1 or prior_noise <= 0:
      raise ValueError(f"Contenders: max_repeats >= 1, 0 <= share <= 1, prior_noise > 0; got "
                       f"{max_repeats}, {share}, {prior_noise}")
    self.top = top
    self.max_repeats = max_repeats
    self.share = share
    self.prior_noise = prior_noise
    self.book = Repeats(top)
    self.cands: dict[str, Candidate] = {}
    self.asked: dict[str, int] = {}  # key -> measurements asked (first + repeats), incl. in flight
    self.repeats_asked = 0

  def update(self, measurements: Sequence[Measurement]) -> None:
    for m in measurements:
      if self.book.add(m):
        key = m.candidate.key
        self.cands.setdefault(key, Candidate.of(m.candidate.values))
        self.asked[key] = max(self.asked.get(key, 0), self.book.count(key))

  def _logs(self, key: str) -> list[float]:
    return [math.log(m.objective) for m in self.book.by_key.get(key, ()) if m.objective is not None]

  def noise(self) -> float:
    ss, dof = 0.0, 0
    for key in self.book.by_key:
      ys = self._logs(key)
      if len(ys) >= 2 and key not in self.book.failed:
        mu = sum(ys) / len(ys)
        ss += sum((y - mu) ** 2 for y in ys)
        dof += len(ys) - 1
    return math.sqrt((PRIOR_DOF * self.prior_noise ** 2 + ss) / (PRIOR_DOF + dof))

  def offer(self) -> tuple[Candidate | None, float]:
    """The re-measurement worth most now and its value (expected log
    throughput it saves); (None, 0) when none is allowed or in the noise."""
    best = self.book.best
    if best is None:
      return None, 0.0
    first = sum(1 for k in self.book.by_key)
    if self.repeats_asked + 1 > self.share * (first + self.repeats_asked + 1):
      return None, 0.0
    a = best.candidate.key
    ranked = sorted((k for k in self.book.by_key if k != a and self.book.score(k) is not None),
                    key=lambda k: -self.book.score(k).objective)[:CHALLENGERS]
    sigma = self.noise()
    ya = self._logs(a)
    out, value = None, 0.0
    for b in ranked:
      yb = self._logs(b)
      na, nb = len(ya), len(yb)
      delta = sum(ya) / na - sum(yb) / nb
      s = sigma * math.sqrt(1 / na + 1 / nb)
      # the less-measured of the pair (the incumbent on a tie), if it may be measured again
      pick = a if na <= nb else b
      if self.asked.get(pick, 0) >= self.max_repeats or self.asked.get(pick, 0) > self.book.count(pick):
        pick = b if pick == a else a
        if self.asked.get(pick, 0) >= self.max_repeats or self.asked.get(pick, 0) > self.book.count(pick):
          continue
      na2, nb2 = (na + 1, nb) if pick == a else (na, nb + 1)
      s2 = sigma * math.sqrt(1 / na2 + 1 / nb2)
      v = expected_loss(delta, s) * (1 - s2 / s)
      if v > value:
        out, value = self.cands[pick], v
    return out, value

  def ask(self, cand: Candidate, fidelity: str) -> Candidate:
    """Records the re-measurement of `cand` and returns it as the loop wants it."""
    key = cand.key
    r = self.asked.get(key, self.book.count(key))
    self.asked[key] = r + 1
    self.repeats_asked += 1
    return cand.at(fidelity).again(r)

  def propose(self, explore: float, threshold: float, fidelity: str) -> Candidate | None:
    """The re-measurement to ask now, if its value is at least `threshold`
    and more than `explore` (the best expected gain of a new profile)."""
    cand, value = self.offer()
    if cand is None or value < threshold or value <= explore:
      return None
    return self.ask(cand, fidelity)
