"""Whether a candidate will run: the cheap-order stage's probability that a
candidate fits in memory and, for serving, meets its SLOs, corrected by
what profiles measured.

Where it sits: ranked.py (the cheap-order stage) calls `capacity`,
`p_memory` and `p_slo` (with `margin_columns` / `margin_residuals`) once
per round from `CheapOrder.scores`, with the screens' arrays and the
profiles' residuals it gathered; the product multiplies each candidate's
expected improvement and enters its corrected estimate as a log. Arrays only, on the GPs of residual.py.

Memory: the cheap peak memory times a residual GP learned from profiled
peak memory (a failed profile is a pseudo-observation just above the
limit). The residual's constant part (the cheap memory model off by one
factor everywhere) is a bias under its own prior (`MEM_BIAS_SD`),
integrated out as the value residual's is, so one out-of-memory profile
moves every candidate's verdict only by what one point supports. SLOs: per
latency SLO (TTFT, TPOT), the screen's log margin (log SLO / predicted
latency) stands before `residual.FEW` profiles; then it is corrected by
that margin's own residual (screened minus measured log margin) once that
many profiles measured that latency, else by the value residual (a
candidate slower than screened has longer latencies); the probability of
meeting the SLOs is the product over the latencies. Each latency's model
error is learned from its own margin on every profile, so a TTFT model
that errs shows even where TPOT is the latency that binds.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from autoscout_jax.designers.autoscout import residual

MEM_BIAS_SD = 0.1  # prior sd of the cheap fidelity's constant memory bias: memory models are ~10 % off
MEM_PRIOR_SD = 0.06  # the cheap fidelity's memory model before any profile: its own verdict, nearly
MEM_NOISE = 0.01  # a profile's peak memory is measured to about 1 %
# a serving measurement's log margin per latency SLO (targets/serving.log_margins);
# `slo_log_margin`, their minimum, stands in for them where a screen has only it
LATENCY_MARGINS = ("ttft_log_margin", "tpot_log_margin")


def capacity(mem: np.ndarray, ok: np.ndarray, oom: np.ndarray, profile_ran_out: bool) -> float | None:
  """The memory limit the cheap fidelity applies, bracketed by its largest
  feasible and smallest out-of-memory peak. Without an out-of-memory
  screen the limit is unknown (anywhere above the largest feasible peak):
  None, so no candidate is marked down for using the most memory, until a
  profile runs out of memory (then the largest feasible peak is the
  limit's best bound)."""
  lo = np.nanmax(mem[ok]) if np.isfinite(mem[ok]).any() else None
  hi = np.nanmin(mem[oom]) if oom.any() and np.isfinite(mem[oom]).any() else None
  if hi is None and not profile_ran_out:
    return None
  if lo is None or hi is None:
    return hi or lo
  return float(math.sqrt(lo * hi)) if hi > lo else float(hi)


def p_memory(x: np.ndarray, mem: np.ndarray, cap: float, mem_i: Sequence[int], mem_r: Sequence[float],
             warm: tuple[np.ndarray, np.ndarray], warm_noise: float, add_idx: np.ndarray,
             additives: Sequence[float]) -> np.ndarray:
  """P(peak memory <= `cap`) per candidate, NaN where the screen gave no
  peak: the cheap peak `mem` times exp(memory residual), the residual's GP
  fitted on the profiles `mem_i` (log profiled / screened peak `mem_r`)
  plus other workloads' rows `warm` (features, centred residuals)."""
  xm, ym = warm
  ones = np.ones((len(x), 1))
  idx = list(mem_i)
  gp = residual.fit(np.vstack([x[idx], xm]) if len(xm) else x[idx],
                    np.concatenate([np.array(mem_r, np.float64), ym]),
                    np.concatenate([np.full(len(idx), MEM_NOISE), np.full(len(ym), warm_noise)]),
                    amplitudes=residual.MEMORY_AMPLITUDES, prior=MEM_PRIOR_SD, own=len(idx),
                    h=np.vstack([ones[idx], np.zeros((len(ym), 1))]), hsd=(MEM_BIAS_SD,),
                    add_idx=add_idx, additives=additives)
  mm, sm = gp.predict(x, ones)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(np.isfinite(mem), residual.normal_cdf((math.log(cap) - np.log(mem) - mm) / np.maximum(sm, 1e-3)),
                    np.nan)


def margin_columns(screens: Sequence[Any]) -> tuple[tuple[str, ...], np.ndarray]:
  """(the margin keys, [N, K] log margins) of the screens (measurements or
  None, one per candidate): one column per latency SLO where the screens
  give them, else `slo_log_margin` alone; NaN where a screen has none."""
  extras = [(m.metrics.extra or {}) if m is not None else {} for m in screens]
  keys = LATENCY_MARGINS if any(k in e for e in extras for k in LATENCY_MARGINS) else ("slo_log_margin",)
  out = np.full((len(extras), len(keys)), np.nan)
  for i, e in enumerate(extras):
    for k, key in enumerate(keys):
      if e.get(key) is not None:
        out[i, k] = float(e[key])
  return keys, out


def margin_residuals(profiles: Mapping[str, Any], index: Mapping[str, int], keys: Sequence[str],
                     margins: np.ndarray) -> list[tuple[list[int], np.ndarray]]:
  """Per margin column: (candidate indices, screened - measured log margin)
  of the profiles (by candidate key) that measured that latency (a miss
  included)."""
  out = []
  for k, name in enumerate(keys):
    idx, r = [], []
    for key, m in profiles.items():
      i = index.get(key)
      got = (m.metrics.extra or {}).get(name)
      if i is not None and got is not None and np.isfinite(margins[i, k]):
        idx.append(i)
        r.append(float(margins[i, k]) - float(got))
    out.append((idx, np.array(r, np.float64)))
  return out


def p_slo(x: np.ndarray, margins: np.ndarray, hall: np.ndarray, residuals: Sequence[tuple[list[int], np.ndarray]],
          profiled: int, value_mu: np.ndarray, value_sd: np.ndarray, fit: Mapping[str, Any]) -> np.ndarray:
  """P(meets its SLOs) per candidate: the product over the screen's log
  margins (`margins` [N, K]: one column per latency SLO, NaN where the
  screen has none; 1 where no column has one). Per column: the screen's
  verdict before `residual.FEW` profiles; then its log margin corrected by
  that margin's own residual (`residuals[k]`: the profiles that measured
  that latency, screened - measured margin), fitted with `fit` (the value
  residual's GP settings and its own constant bias) when there are that
  many, else by the value residual (`value_mu`, `value_sd`) of the
  `profiled` ones (a candidate slower than screened has longer latencies)."""
  out = np.ones(len(margins))
  for k in range(margins.shape[1]):
    margin = margins[:, k]
    has = np.isfinite(margin)
    if not has.any():
      continue
    idx, r = residuals[k]
    if len(idx) >= residual.FEW:
      gp = residual.fit(x[list(idx)], r, own=len(idx), h=hall[list(idx), :1], **fit)
      mu, sd = gp.predict(x, hall[:, :1])
      p = residual.normal_cdf((margin - mu) / np.maximum(sd, 0.02))
    elif profiled >= residual.FEW:
      p = residual.normal_cdf((margin - value_mu) / np.maximum(value_sd, 0.02))
    else:
      p = np.where(margin < 0, 0.0, 1.0)
    out = out * np.where(has, p, 1.0)
  return out
