"""The cheap fidelity's error as a function of the configuration: a small
Gaussian process on the residual log(step time profiled / step time
screened), and one on the memory residual log(peak memory profiled / peak
memory screened), which decides how likely a candidate the cheap fidelity
calls out of memory is to run after all.

Where it sits: ranked.py (the cheap-order stage of the AutoScout designer)
calls `features` for every screened candidate, `fit` on the profiled ones
(plus warm-start rows from other workloads), and `predict` for all of them
in one vectorized call. Arrays only; no jax (a few dozen training points).

Features are physical and shared by every workload of a family, so a model
fitted on one workload transfers to another: log2 of each numeric knob
except the parallel degrees (`*_parallel_size`), which are categories (one
indicator per degree: a degree's kernels and collectives run well or badly
on their own, so a trend seen at tp 1-2 says nothing about tp 4, and a
degree never profiled keeps the prior), booleans and categorical one-hots,
the screen's breakdown as shares of its step time (bubble,
tensor/pipeline/data-parallel communication, recompute),
and workload descriptors (log2 of layers, heads, sequence, global batch,
devices, node size) from the space's facts, and the cheap log throughput
relative to the cheap best (so a cheap order that is itself wrong can be
learned). Each workload's own mean
residual is its GP mean (a constant bias never reorders candidates); the
kernel carries the structure.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any, Mapping, Sequence

import numpy as np

BREAKDOWN_SHARES = ("bubble_s", "tp_comm_s", "pp_comm_s", "dp_comm_s", "cp_comm_s", "ep_comm_s", "recompute_s")
FACTS = ("layers", "heads", "seq_len", "global_batch", "num_devices", "node_size")
LENGTHSCALES = (0.25, 0.5, 1.0)  # one knob doubled moves a feature by 1/3
FEW = 6  # below this many points the grid is not searched: the prior (0.5, 0.2) holds
AMPLITUDES = (0.1, 0.2, 0.4)  # the cheap fidelity is not trusted to better than 10 % away from data
MEMORY_AMPLITUDES = (0.02, 0.05, 0.1, 0.2)


def knob_features(values: Mapping[str, Any], choices: Mapping[str, Sequence[Any]]) -> dict[str, float]:
  """Name -> number for one configuration (absent knobs: 0, as 'inactive');
  a parallel degree is a category (`name=value`: 1), see the module docstring."""
  out: dict[str, float] = {}
  for name, doms in choices.items():
    v = values.get(name)
    if v is None:
      continue
    if isinstance(v, bool):
      out[name] = float(v)
    elif isinstance(v, (int, float)) and name.endswith("_parallel_size"):
      out[f"{name}={v}"] = 1.0
    elif isinstance(v, (int, float)):
      out[name] = math.log2(v) / 3.0 if v > 0 else 0.0
    else:
      out[f"{name}={v}"] = 1.0
  return out


def features(cands: Sequence[Any], screens: Sequence[Any], facts: Mapping[str, Any], names: list[str],
             choices: Mapping[str, Sequence[Any]], extra: Sequence[Mapping[str, float]] = ()) -> np.ndarray:
  """[N, F] features; `names` is extended in place with any new feature
  name (so columns are stable across calls and workloads)."""
  rows = []
  desc = {f"fact:{k}": math.log2(float(facts[k])) / 3.0 for k in FACTS
          if isinstance(facts.get(k), (int, float)) and facts[k] > 0}
  for j, (c, m) in enumerate(zip(cands, screens)):
    f = knob_features(c.values, choices)
    if j < len(extra):
      f.update(extra[j])
    step = screen_step(m)
    bd = (m.metrics.breakdown or {}) if m is not None else {}
    if step:
      for k in BREAKDOWN_SHARES:
        if bd.get(k) is not None:
          f["share:" + k] = 2.0 * float(bd[k]) / step
    f.update(desc)
    rows.append(f)
    for k in f:
      if k not in names:
        names.append(k)
  x = np.zeros((len(rows), len(names)))
  for i, f in enumerate(rows):
    for k, v in f.items():
      x[i, names.index(k)] = v
  return x


def screen_step(m) -> float | None:
  """The screen's step time; for a candidate it calls out of memory, the
  sum of its breakdown (the simulator times it all the same)."""
  if m is None:
    return None
  if m.metrics.step_time_s:
    return float(m.metrics.step_time_s)
  bd = m.metrics.breakdown or {}
  total = sum(float(v) for v in bd.values() if v is not None)
  return total if total > 0 else None


@dataclasses.dataclass(frozen=True)
class GP:
  """A fitted GP on residuals: x [n, F], alpha, the Cholesky factor,
  hyperparameters, and optional linear terms: basis columns `h` [n, p]
  (e.g. a constant and the centred cheap log value) whose weights have
  independent N(0, `hsd`^2) priors, integrated out (the kernel gains
  h diag(hsd^2) h')."""

  x: np.ndarray
  alpha: np.ndarray
  chol: np.ndarray
  lengthscale: float
  amplitude: float
  noise: float
  h: np.ndarray | None = None
  hsd: np.ndarray | None = None
  additive: float = 0.0  # share of the kernel that is a sum over single features (`add_idx`)
  add_idx: np.ndarray | None = None

  def _k(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return _kern(a, b, self.lengthscale, self.amplitude, self.additive, self.add_idx)

  def predict(self, xq: np.ndarray, hq: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Residual mean and standard deviation at `xq` (basis `hq` when the
    GP has linear terms)."""
    lin = self.h is not None and hq is not None
    prior_var = self.amplitude ** 2 + (np.sum((hq * self.hsd) ** 2, axis=1) if lin else 0.0)
    if len(self.x) == 0:
      return np.zeros(len(xq)), np.sqrt(np.broadcast_to(prior_var, (len(xq),)))
    k = self._k(xq, self.x)
    if lin:
      k = k + (hq * self.hsd ** 2) @ self.h.T
    mu = k @ self.alpha
    v = np.linalg.solve(self.chol, k.T)
    var = np.maximum(prior_var - np.sum(v * v, axis=0), 1e-10)
    return mu, np.sqrt(var)

  def difference(self, xa: np.ndarray, ha: np.ndarray | None, xb: np.ndarray, hb: np.ndarray | None
                 ) -> tuple[float, float]:
    """Posterior mean and standard deviation of residual(a) - residual(b)
    for two points (what they share, e.g. the bias, cancels)."""
    xq = np.stack([xa, xb])
    hq = None if ha is None or hb is None else np.stack([ha, hb])
    lin = self.h is not None and hq is not None
    kqq = self._k(xq, xq)
    if lin:
      kqq = kqq + (hq * self.hsd ** 2) @ hq.T
    if len(self.x) == 0:
      mu, cov = np.zeros(2), kqq
    else:
      k = self._k(xq, self.x)
      if lin:
        k = k + (hq * self.hsd ** 2) @ self.h.T
      mu = k @ self.alpha
      v = np.linalg.solve(self.chol, k.T)
      cov = kqq - v.T @ v
    var = max(float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]), 1e-12)
    return float(mu[0] - mu[1]), math.sqrt(var)

  def weights(self) -> np.ndarray:
    """Posterior mean of the linear terms' weights (zeros without them)."""
    if self.h is None or len(self.x) == 0:
      return np.zeros(0 if self.hsd is None else len(self.hsd))
    return (self.hsd ** 2) * (self.h.T @ self.alpha)


def _kern(a: np.ndarray, b: np.ndarray, ls: float, amp: float, additive: float = 0.0,
          idx: np.ndarray | None = None) -> np.ndarray:
  """amp^2 x ((1 - additive) x RBF over all features + additive x the mean
  over the features `idx` of a one-feature RBF): the additive part lets one
  knob's effect (a tensor-parallel degree whose kernels run faster than the
  cheap model says, a recompute mode whose memory it underrates) carry over
  to configurations that differ in every other knob."""
  k = _rbf(a, b, ls, amp)
  if additive <= 0.0 or idx is None or len(idx) == 0:
    return k
  add = np.zeros((len(a), len(b)))
  for d in idx:
    add += np.exp(-0.5 * (a[:, d, None] - b[None, :, d]) ** 2 / ls ** 2)
  return (1.0 - additive) * k + additive * amp ** 2 * add / len(idx)


def _rbf(a: np.ndarray, b: np.ndarray, ls: float, amp: float) -> np.ndarray:
  d2 = np.sum(a * a, 1)[:, None] + np.sum(b * b, 1)[None, :] - 2 * a @ b.T
  return amp ** 2 * np.exp(-0.5 * np.maximum(d2, 0.0) / ls ** 2)


def fit(x: np.ndarray, y: np.ndarray, noise: float | np.ndarray, amplitudes: Sequence[float] = AMPLITUDES,
        prior: float = 0.2, own: int | None = None, h: np.ndarray | None = None,
        hsd: Sequence[float] | None = None, hsd_grid: Sequence[Sequence[float]] = (),
        noises: Sequence[float] = (), add_idx: np.ndarray | None = None,
        additives: Sequence[float] = (0.0,)) -> GP:
  """GP on residuals `y`; lengthscale and amplitude by marginal likelihood
  over a small grid once there are `FEW` points (before, the prior:
  lengthscale 0.5, amplitude `prior`): a handful of points cannot support
  more. `noise` may be per point (warm-start rows from other workloads are
  weaker evidence); `own` counts this workload's points (the grid is
  searched once they reach `FEW`). Linear terms: basis `h` [n, p] with
  prior weight sds `hsd` (alternatives `hsd_grid`, searched with the rest);
  `noises`: alternative noise levels for this workload's own points (the
  first `own` rows), searched with the rest. `additives`: shares of the
  additive kernel over the features `add_idx` (searched once there are
  `FEW` points; before, the first)."""
  n = len(y)
  noise = np.broadcast_to(np.asarray(noise, np.float64), (n,)).copy()
  if n == 0:
    return GP(x, np.zeros(0), np.zeros((0, 0)), 0.5, prior, 0.0, h, None if hsd is None else np.asarray(hsd, float))
  best = None
  few = (n if own is None else own) < FEW
  n_own = n if own is None else own
  hgrid = [np.asarray(hsd, float)] if hsd is not None else [None]
  if not few and hsd_grid:
    hgrid = [np.asarray(g, float) for g in hsd_grid]
  ngrid = [None] if few or not noises else list(noises)
  agrid = list(additives[:1]) if few or add_idx is None else list(additives)
  kernels = {}
  for ls, amp, ad, hs, nz in itertools.product((0.5,) if few else LENGTHSCALES, (prior,) if few else amplitudes,
                                               agrid, hgrid, ngrid):
    if (ls, amp, ad) not in kernels:
      kernels[(ls, amp, ad)] = _kern(x, x, ls, amp, ad, add_idx)
    nvec = noise.copy()
    if nz is not None:
      nvec[:n_own] = nz
    k = kernels[(ls, amp, ad)] + np.diag(nvec ** 2 + 1e-8)
    if h is not None and hs is not None:
      k = k + (h * hs ** 2) @ h.T
    try:
      chol = np.linalg.cholesky(k)
    except np.linalg.LinAlgError:
      continue
    alpha_ = np.linalg.solve(chol.T, np.linalg.solve(chol, y))
    nll = 0.5 * y @ alpha_ + np.sum(np.log(np.diag(chol)))
    if best is None or nll < best[0]:
      best = (nll, ls, amp, chol, alpha_, hs, nvec, ad)
  if best is None:
    return GP(x[:0], np.zeros(0), np.zeros((0, 0)), 0.5, prior, 0.0)
  _, ls, amp, chol, alpha_, hs, nvec, ad = best
  return GP(x, alpha_, chol, ls, amp, float(np.max(nvec[:n_own])) if n_own else float(np.max(nvec)),
            h if hs is not None else None, hs, ad, add_idx)


def normal_cdf(z: np.ndarray) -> np.ndarray:
  return 0.5 * (1.0 + _erf(z / math.sqrt(2.0)))


def _erf(x: np.ndarray) -> np.ndarray:
  # Abramowitz-Stegun 7.1.26 (|error| < 1.5e-7): no scipy in the designer's path
  t = 1.0 / (1.0 + 0.3275911 * np.abs(x))
  y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t \
      * np.exp(-x * x)
  return np.sign(x) * y


def expected_improvement(mu: np.ndarray, sd: np.ndarray, best: float) -> np.ndarray:
  """EI of maximizing `mu` (log throughput) over `best`."""
  sd = np.maximum(sd, 1e-9)
  z = (mu - best) / sd
  return (mu - best) * normal_cdf(z) + sd * np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


def inverse_value(m, per_step: float | None) -> float | None:
  """1 / the screen's throughput (the objective; not its step time: a
  serving candidate's step time is its TPOT, shortest at the smallest batch,
  where throughput is lowest); for a screen without one, its step time over
  `per_step`."""
  if m is None:
    return None
  if m.metrics.tokens_per_s:
    return 1.0 / float(m.metrics.tokens_per_s)
  tps = (m.metrics.extra or {}).get("tokens_per_s_per_device")
  if m.metrics.failure_kind == "slo" and tps:  # a predicted SLO miss is timed all the same
    return 1.0 / float(tps)
  s = screen_step(m)
  return s / per_step if s and per_step else None
