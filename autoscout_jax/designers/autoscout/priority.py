"""Knob prioritization: which knobs matter for this workload.

Where it sits: after each surrogate refit the designer calls
`permutation_importance` on the candidates it knows (measured and pooled);
`Priorities` blends that with a prior ordering (from a warm-start
surrogate trained on other workloads, or given by hand) and hands the
search an importance per knob: sparse.py moves important knobs first and
combines them in two-knob moves, dense.py relaxes only the dense knobs
that matter; with a warm start, the designer's first ordering comes from
`warm_importance` on the other workloads' surrogate. The scores are exposed (dict knob -> score, summing to 1) for
TensorBoard and the final report.

Importance of a knob = how much the surrogate's prediction changes when
the knob's encoded slice is shuffled across the reference candidates
where it is active (permutation importance grouped by knob): the mean
absolute change of predicted log throughput plus that of the log
feasibility odds. Unlike |d mean / dx| it treats one-hot categoricals,
booleans and product-group axes the same way as ordinals.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

import surrogates

from autoscout_jax.space import SearchSpace

_MIN_ROWS = 4  # fewer active rows than this: no evidence either way


def permutation_importance(space: SearchSpace, predict, x: np.ndarray, active: np.ndarray,
                           rng: np.random.Generator) -> dict[str, float]:
  """Raw (unnormalized) importance per knob. `predict(x, active)` returns a
  surrogates Prediction; all shuffled copies go through one call."""
  names, blocks, rows_of = [], [], []
  for k in space.knobs:
    sl = space.knob_slice(k.name)
    rows = np.flatnonzero(active[:, sl.start] > 0)
    if rows.size < _MIN_ROWS:
      continue
    xp = x[rows].copy()
    perm = rng.permutation(rows.size)
    if np.all(perm == np.arange(rows.size)):
      perm = np.roll(perm, 1)
    xp[:, sl] = x[rows][perm][:, sl]
    names.append(k.name)
    blocks.append(xp)
    rows_of.append(rows)
  out = {k.name: 0.0 for k in space.knobs}
  if not names:
    return out
  base = predict(x, active)
  xs = np.concatenate(blocks)
  acts = np.concatenate([active[r] for r in rows_of])
  pert = predict(xs, acts)
  t0, p0 = np.asarray(base.log_time_mean), np.asarray(base.feasible_prob)
  t1, p1 = np.asarray(pert.log_time_mean), np.asarray(pert.feasible_prob)
  off = 0
  for name, rows in zip(names, rows_of):
    sl = slice(off, off + rows.size)
    off += rows.size
    dt = np.abs(t1[sl] - t0[rows])
    dp = np.abs(_logit(p1[sl]) - _logit(p0[rows]))
    # Scaled by how often the knob is active: a knob that exists in a tenth
    # of the space matters less to the search than one that always exists.
    out[name] = float(np.mean(dt + 0.25 * dp)) * rows.size / x.shape[0]
  return out


def _logit(p: np.ndarray) -> np.ndarray:
  p = np.clip(p, 1e-4, 1 - 1e-4)
  return np.log(p / (1 - p))


def normalize(scores: Mapping[str, float], names: Sequence[str]) -> dict[str, float]:
  vals = np.array([max(0.0, float(scores.get(n, 0.0))) for n in names])
  tot = vals.sum()
  if not np.isfinite(tot) or tot <= 0:
    return {n: 1.0 / len(names) for n in names}
  return {n: float(v / tot) for n, v in zip(names, vals)}


class Priorities:
  """Current knob importances: a prior blended with what the surrogate says.

  With `enabled=False` (the no-prioritization ablation) every knob weighs
  the same. `prior_weight` is how many top-fidelity measurements the prior
  is worth: it fades as this workload's own evidence accumulates.
  """

  def __init__(self, names: Sequence[str], prior: Mapping[str, float] | None = None,
               prior_weight: float = 4.0, enabled: bool = True):
    self.names = tuple(names)
    if prior is not None:
      unknown = sorted(set(prior) - set(self.names))
      if unknown:
        raise ValueError(f"prior importance names unknown knobs {unknown}; "
                         f"knobs are {list(self.names)}")
    self.prior = normalize(prior, self.names) if prior else None
    self.prior_weight = prior_weight
    self.enabled = enabled
    self.learned: dict[str, float] | None = None
    self.evidence = 0.0

  def set_learned(self, scores: Mapping[str, float], evidence: float) -> None:
    self.learned = normalize(scores, self.names)
    self.evidence = float(evidence)

  @property
  def scores(self) -> dict[str, float]:
    uniform = {n: 1.0 / len(self.names) for n in self.names}
    if not self.enabled:
      return uniform
    if self.learned is None:
      return dict(self.prior) if self.prior else uniform
    if self.prior is None:
      return dict(self.learned)
    w = self.prior_weight / (self.prior_weight + self.evidence)
    return normalize({n: w * self.prior[n] + (1 - w) * self.learned[n] for n in self.names},
                     self.names)

  @property
  def source(self) -> str:
    """Where `scores` come from: 'learned' (from the surrogate, blended with
    any prior), 'prior', or 'uniform' (disabled, or nothing learned yet)."""
    if not self.enabled or (self.learned is None and not self.prior):
      return "uniform"
    return "prior" if self.learned is None else "learned"

  def ranked(self, among: Sequence[str] | None = None) -> list[str]:
    """Knob names, most important first (ties: declaration order)."""
    s = self.scores
    pool = [n for n in self.names if among is None or n in among]
    return sorted(pool, key=lambda n: -s[n])

  def top(self, k: int, among: Sequence[str] | None = None) -> list[str]:
    return self.ranked(among)[:k]

  def weight(self, name: str) -> float:
    return self.scores.get(name, 0.0)


def warm_importance(space: SearchSpace, encode, state, seed: int) -> dict[str, float]:
  """Knob importances of a surrogate trained on other workloads (a warm
  start's SurrogateState), by permutation over 128 samples of this space
  (`encode`: candidates -> (features, active mask))."""
  rng = np.random.default_rng(seed + 1)
  cands = list(dict.fromkeys(space.sample(rng, 128)))
  x, act = encode(cands)
  return permutation_importance(space, lambda a, b: surrogates.predict(state, a, b), x, act, rng)
