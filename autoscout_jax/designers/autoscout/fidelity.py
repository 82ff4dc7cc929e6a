"""Fidelity orchestration: which fidelity a suggestion goes to, how much the
cheap ones are trusted, and what a top-fidelity measurement will cost.

Where it sits: the designer asks `FidelityPlan` each round which cheap
fidelities are trusted (screen with them, learn from them), whether a
candidate must be screened before it may be profiled, and the expected
device-seconds of profiling a candidate (the denominator of "expected gain
per device-second"). `refresh(observations)` re-reads the measurements
after every update.

Trust (the AutoScout paper's MAPE switch): for every candidate measured at
both a cheap fidelity and the top one, compare the two throughputs. The
error over the most recent `window` pairs is the mean absolute percentage
error after removing the median log offset between them (a constant
offset does not mislead a search, and the surrogate's per-fidelity bias
learns it), plus the rate at which they disagree on feasibility. Below
`threshold` the fidelity is fully trusted; between one and two thresholds
it is down-weighted (fewer screens, no longer a gate before profiling);
past two thresholds it is bypassed (no screens, and its rows leave the
surrogate's training set) until its recent error comes back down.

The compile fidelity (F2) is not a screen this module schedules: the loop
already compiles every candidate before profiling it.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

from autoscout_jax.measurement import FIDELITIES, fidelity_rank
from autoscout_jax.designers.autoscout.features import SCREEN, Observations, failed_screen


@dataclasses.dataclass(frozen=True)
class FidelityError:
  pairs: int
  mape: float | None  # raw mean absolute percentage error of throughput
  calibrated_mape: float | None  # after removing the median log offset
  feasibility_disagreement: float | None
  kendall_tau: float | None  # rank agreement over pairs feasible at both
  offset: float | None  # median log(top / cheap) throughput over those pairs
  error: float | None  # what trust is computed from
  trust: float


class FidelityPlan:

  def __init__(self, fidelities: Sequence[str], costs: Mapping[str, float] | None = None,
               use_cheap: bool = True, threshold: float = 0.15, window: int = 8,
               min_pairs: int = 3):
    fids = tuple(fidelities)
    if not fids:
      raise ValueError("the autoscout designer needs the run's fidelities")
    for f in fids:
      if f not in FIDELITIES:
        raise ValueError(f"unknown fidelity {f!r} for the autoscout designer; known: {FIDELITIES}")
    if len(set(fids)) != len(fids):
      raise ValueError(f"fidelities repeat: {fids}")
    self.top = max(fids, key=fidelity_rank)
    cheap = sorted((f for f in fids if f != self.top and f != SCREEN), key=fidelity_rank)
    self.cheap = tuple(cheap) if use_cheap else ()
    self.model_fidelities = self.cheap + (self.top,)
    self.costs = {f: float(c) for f, c in (costs or {}).items()}
    for f, c in self.costs.items():
      if f not in FIDELITIES or not c >= 0:
        raise ValueError(f"cost of fidelity {f!r} must be a non-negative number of "
                         f"device-seconds, got {c}")
    if threshold <= 0 or window < 1 or min_pairs < 1:
      raise ValueError("threshold must be > 0 and window, min_pairs >= 1")
    self.threshold, self.window, self.min_pairs = threshold, window, min_pairs
    self.errors: dict[str, FidelityError] = {
        f: FidelityError(0, None, None, None, None, None, None, 1.0) for f in self.cheap}
    self._cost_fit: tuple[float, float, float] | None = None  # a, b, y_ref
    self._mean_cost: dict[str, float] = {}

  # --- trust ------------------------------------------------------------------
  def trust(self, fidelity: str) -> float:
    return self.errors[fidelity].trust if fidelity in self.errors else 0.0

  def trusted(self) -> list[str]:
    """Cheap fidelities still in use (trust > 0), cheapest first."""
    return [f for f in self.cheap if self.trust(f) > 0.0]

  def bypassed(self) -> list[str]:
    return [f for f in self.cheap if self.trust(f) <= 0.0]

  def gates(self) -> list[str]:
    """Trusted enough that a candidate is screened there before profiling."""
    return [f for f in self.cheap if self.trust(f) >= 0.5]

  def refresh(self, obs: Observations) -> None:
    self._refresh_trust(obs)
    self._refresh_costs(obs)

  def _refresh_trust(self, obs: Observations) -> None:
    verdicts = []  # (candidate, top row) in arrival order
    seen = set()
    for r in obs.rows:
      if r.candidate in seen:
        continue
      if r.fidelity == obs.top or failed_screen(r):
        seen.add(r.candidate)
        verdicts.append((r.candidate, r))
    for f in self.cheap:
      pairs = [(obs.get(c, f), t) for c, t in verdicts if obs.has(c, f)]
      pairs = pairs[-self.window:]
      self.errors[f] = self._error(pairs)

  def _error(self, pairs) -> FidelityError:
    n = len(pairs)
    if n == 0:
      return FidelityError(0, None, None, None, None, None, None, 1.0)
    disagree = float(np.mean([c.feasible != t.feasible for c, t in pairs]))
    both = [(c.y, t.y) for c, t in pairs if c.feasible and t.feasible]
    mape = cal = tau = off = None
    if both:
      yc, yt = np.array(both).T
      mape = float(np.mean(np.abs(np.exp(yc - yt) - 1.0)))
      off = float(np.median(yt - yc))
      cal = float(np.mean(np.abs(np.exp(yc + off - yt) - 1.0)))
      if len(both) >= self.min_pairs + 1:
        tau = kendall_tau(yc, yt)
    if n < self.min_pairs:
      return FidelityError(n, mape, cal, disagree, tau, off, None, 1.0)
    # A fidelity that ranks the candidates it promoted backwards misleads
    # even when its numbers are close (the promoted ones are close to each
    # other): anti-correlation counts as error on top of the MAPE.
    err = (cal or 0.0) + disagree + max(0.0, -(tau or 0.0))
    trust = float(np.clip((2 * self.threshold - err) / self.threshold, 0.0, 1.0))
    return FidelityError(n, mape, cal, disagree, tau, off, err, trust)

  # --- costs ------------------------------------------------------------------
  def _refresh_costs(self, obs: Observations) -> None:
    sums: dict[str, list[float]] = {}
    for r in obs.rows:
      sums.setdefault(r.fidelity, []).append(r.cost_s)
    self._mean_cost = {f: float(np.mean(v)) for f, v in sums.items()}
    top = [r for r in obs.rows if r.fidelity == obs.top and r.feasible and r.cost_s > 0]
    self._cost_fit = None
    if len(top) >= 3:
      y = np.array([r.y for r in top])
      c = np.array([r.cost_s for r in top])
      y_ref = float(y.max())
      t = np.exp(y_ref - y)  # step time relative to the fastest seen
      a_mat = np.stack([np.ones_like(t), t], 1)
      (a, b), *_ = np.linalg.lstsq(a_mat, c, rcond=None)
      if a >= 0 and b >= 0 and np.isfinite(a) and np.isfinite(b):
        self._cost_fit = (float(a), float(b), y_ref)

  def cost(self, fidelity: str) -> float:
    """Typical device-seconds of one measurement at `fidelity`."""
    if fidelity in self._mean_cost:
      return max(self._mean_cost[fidelity], 1e-9)
    if fidelity in self.costs:
      return max(self.costs[fidelity], 1e-9)
    return 1.0 if fidelity == self.top else 1e-3

  def top_cost(self, mu: np.ndarray) -> np.ndarray:
    """Expected device-seconds of profiling candidates with predicted log
    throughput `mu`: profiling time grows with step time on top of a fixed
    launch/compile part, both learned from the profiles so far."""
    mu = np.asarray(mu, np.float64)
    if self._cost_fit is None:
      return np.full(mu.shape, self.cost(self.top))
    a, b, y_ref = self._cost_fit
    t = np.exp(np.clip(y_ref - mu, -5.0, 5.0))
    return np.maximum(a + b * t, 1e-9)

  def report(self) -> dict[str, dict[str, float | None]]:
    return {f: dataclasses.asdict(e) for f, e in self.errors.items()}


def kendall_tau(a: np.ndarray, b: np.ndarray) -> float:
  """Kendall's tau-a of two equally long vectors (ties count as 0)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  da = np.sign(a[:, None] - a[None, :])
  db = np.sign(b[:, None] - b[None, :])
  n = len(a)
  pairs = n * (n - 1)
  return float((da * db).sum() / pairs) if pairs else 0.0
