"""Scores for candidate pools: what a profile is expected to gain, per
device-second, from the surrogate and from cheap measurements already made.

Where it sits: the designer hands every pool (sparse neighbourhoods,
relaxed points, screened candidates) to `Scorer.scores` -- one vectorized
surrogate prediction -- and picks by its columns:

- `gain`: expected improvement of log throughput over the best profiled
  so far, times P(feasible), divided by the expected profiling cost
  (fidelity.FidelityPlan.top_cost): the top fidelity's currency;
- `draws`: one column per ensemble member (a posterior draw) with the same
  feasibility and cost terms, for Thompson sampling;
- `screen`: an optimistic score (mean + kappa std) for choosing what to
  screen cheaply; feasibility only counts below P = 0.3, because a screen
  that finds a failure is nearly free and teaches the model where failures
  are.

Evidence from screens: a candidate measured at a trusted cheap fidelity
already has a number. Its predicted top throughput becomes that number
plus the surrogate's predicted difference between the two fidelities at
that candidate (the learned correction of the cheap fidelity), blended
with the surrogate's own top prediction by the fidelity's trust, so
profiling goes to the screened candidate that measured best, corrected
where the cheap fidelity is known to be off, rather than to the
surrogate's smoothed guess of it.

Calibration: a small ensemble fit to a few clustered points is
overconfident away from them. Each profile of a candidate picked on the
surrogate alone tests the prediction it was picked by; the RMS of those
standardized errors (the recent ones) scales the ensemble std.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from autoscout_jax.designers.autoscout.features import Observations
from autoscout_jax.encoding import Row
from autoscout_jax.designers.autoscout.fidelity import FidelityPlan
from autoscout_jax.designers.autoscout.surrogate import (NOISE_STD, FusedSurrogate,
                                                         expected_improvement, throughput_stats)
from autoscout_jax.space import Candidate

_UNKNOWN_SCREEN_ERROR = 0.1  # log-std of a screen's error before any pair is seen


class Scorer:

  def __init__(self, obs: Observations, surr: FusedSurrogate, plan: FidelityPlan,
               kappa: float = 1.0):
    self.obs, self.surr, self.plan, self.kappa = obs, surr, plan, kappa
    self._z: list[float] = []
    self._picked: dict[Candidate, tuple[float, float]] = {}

  @property
  def std_scale(self) -> float:
    z = self._z[-10:]
    if len(z) < 2:
      return 2.0
    return float(np.clip(np.sqrt(np.mean(np.square(z))), 1.0, 10.0))

  def note_pick(self, cand: Candidate, sc: dict[str, np.ndarray], i: int) -> None:
    """Remember the surrogate-only prediction a profile was chosen by."""
    if sc["w"][i] == 0.0:
      self._picked[cand] = (float(sc["mu_model"][i]), float(sc["sd_raw"][i]))

  def observe(self, row: Row) -> None:
    pred = self._picked.pop(row.candidate, None)
    if pred is not None and row.feasible and row.fidelity == self.obs.top:
      self._z.append((row.y - pred[0]) / max(pred[1], 1e-6))

  def _evidence(self, cands: Sequence[Candidate], x: np.ndarray, act: np.ndarray,
                mu_model: np.ndarray):
    """Per candidate: the top-fidelity value its best trusted screen implies
    (the screen's measurement plus the surrogate's predicted difference
    between the top fidelity and that one, at this candidate: the learned
    correction of the cheap fidelity, which may differ by structure), the
    weight of that evidence (the fidelity's trust), its error, the fidelity
    index it came from (-1: none) and the screen's measurement itself."""
    n = len(cands)
    val, w, measured = np.zeros(n), np.zeros(n), np.zeros(n)
    err, level = np.full(n, _UNKNOWN_SCREEN_ERROR), np.full(n, -1)
    for f in reversed(self.plan.trusted()):  # the most trusted level first
      e = self.plan.errors[f]
      rows = [(i, self.obs.get(c, f)) for i, c in enumerate(cands) if w[i] == 0.0]
      rows = [(i, r) for i, r in rows if r is not None and r.feasible]
      if not rows:
        continue
      idx = np.array([i for i, _ in rows])
      yc = np.array([r.y for _, r in rows])
      mu_f, _, _ = throughput_stats(self.surr.predict(x[idx], act[idx], self.obs.index[f]))
      val[idx] = yc + (mu_model[idx] - mu_f)
      measured[idx] = yc
      w[idx] = e.trust
      err[idx] = max(e.calibrated_mape or _UNKNOWN_SCREEN_ERROR, NOISE_STD)
      level[idx] = self.obs.index[f]
    return val, w, err, level, measured

  def scores(self, cands: Sequence[Candidate]) -> dict[str, np.ndarray]:
    x, act = self.obs.encode(cands)
    mu_model, sd_raw, p = throughput_stats(self.surr.predict(x, act))
    sd_model = sd_raw * self.std_scale
    val, w, err, level, measured = self._evidence(cands, x, act, mu_model)
    mu = w * val + (1 - w) * mu_model
    sd = np.sqrt(np.square(w * err) + np.square((1 - w) * sd_model))
    p_eff = w + (1 - w) * p  # a trusted screen ran it: feasible
    best = self.obs.best_top()
    ref = best.y if best is not None else float(np.max(mu))
    cost = self.plan.top_cost(mu)
    ei = expected_improvement(mu, sd, ref)
    gain = ei * p_eff / cost
    screen = mu_model + self.kappa * sd_model + np.log(np.clip(p / 0.3, 1e-6, 1.0))
    return {"mu": mu, "sd": sd, "mu_model": mu_model, "sd_raw": sd_raw, "p": p_eff,
            "w": w, "val": val, "level": level, "measured": measured, "ei": ei, "gain": gain,
            "screen": screen, "cost": cost}

  def draws(self, cands: Sequence[Candidate], sc: dict[str, np.ndarray]) -> np.ndarray:
    """f64[K, N] Thompson scores: each member's log throughput (blended with
    screen evidence like the mean), + log P(feasible) - log cost."""
    x, act = self.obs.encode(cands)
    members = self.surr.member_log_throughput(x, act)
    blended = members.copy()
    for fi in np.unique(sc["level"][sc["level"] >= 0]):
      idx = np.flatnonzero(sc["level"] == fi)
      cheap = self.surr.member_log_throughput(x[idx], act[idx], int(fi))
      # Each member corrects the screen with its own fidelity difference.
      blended[:, idx] = sc["measured"][idx][None] + (members[:, idx] - cheap)
    w = sc["w"][None]
    members = w * blended + (1 - w) * members
    return members + np.log(np.maximum(sc["p"], 1e-6))[None] - np.log(sc["cost"])[None]
