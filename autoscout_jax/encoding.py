"""Measurements + space -> the arrays the learned surrogate trains on.

Where it sits in the data flow::

    store / evaluators ──► [Measurement] ──► to_arrays(ms, space, fidelities)
        ──► surrogates.SurrogateData (features, active mask, fidelity index,
            log step time, log peak memory, feasible) ──► surrogates.fit

The AutoScout designer keeps its own table of what it was told
(`designers/autoscout/features.Observations`, target -log tokens/s, screen
verdicts folded into the top fidelity). This module is the stateless path
for everything else (benchmarks, offline fits on a store): rows are the
measurements themselves, the target is log step time, and a fidelity that
measures no time (F2 compile) gets one from a caller's `step_time` rule.

Row rules, in order:
- measurements at a fidelity not in `fidelities` are left out;
- 'invalid' measurements are left out: they never ran, and a candidate the
  space rejects is not something the model has to rank;
- other failures (OOM, compile error, crash, timeout) are rows with
  feasible 0 and log time NaN; their memory is kept when it was measured
  (an OOM verdict usually comes with the bytes it needed);
- repeated measurements of a candidate are separate rows (repeats teach
  the ensemble the noise).
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import numpy as np

import surrogates
from autoscout_jax.measurement import FIDELITIES, INVALID, Measurement
from autoscout_jax.space import Candidate, SearchSpace

# A rule giving a feasible measurement's step time in seconds (None: unknown).
StepTime = Callable[[Measurement], "float | None"]


def measured_step_time(m: Measurement) -> float | None:
  """The default rule: the measured step time (None when not recorded)."""
  met = m.metrics
  if met.step_time_s is not None and met.step_time_s > 0:
    return float(met.step_time_s)
  return None


def _check_fidelities(fidelities: Sequence[str]) -> tuple[str, ...]:
  fids = tuple(fidelities)
  if not fids:
    raise ValueError("to_arrays needs at least one fidelity (cheapest first, top last)")
  unknown = [f for f in fids if f not in FIDELITIES]
  if unknown:
    raise ValueError(f"unknown fidelity name(s) {unknown}; known: {list(FIDELITIES)}")
  if len(set(fids)) != len(fids):
    raise ValueError(f"fidelities must be distinct, got {list(fids)}")
  return fids


def select(measurements: Sequence[Measurement], fidelities: Sequence[str]) -> list[Measurement]:
  """The measurements that become rows, in row order (see the module rules)."""
  fids = set(_check_fidelities(fidelities))
  return [m for m in measurements
          if m.fidelity in fids and m.metrics.failure_kind != INVALID]


def _log_positive(v: float | None) -> float:
  return math.log(v) if v is not None and math.isfinite(v) and v > 0 else math.nan


def to_arrays(measurements: Sequence[Measurement], space: SearchSpace,
              fidelities: Sequence[str], *, step_time: Mapping[str, StepTime] | None = None,
              prior: Mapping[Candidate, float] | None = None) -> surrogates.SurrogateData:
  """Encodes `select(measurements, fidelities)` as surrogate data.

  Args:
    measurements: from a store or evaluators, any fidelities, any order.
    space: the space the candidates belong to; `space.encode` gives the
      features and the active mask.
    fidelities: the fidelities the model distinguishes, cheapest first; a
      row's fidelity index is its position here.
    step_time: {fidelity: rule} for fidelities whose measurements carry no
      step time (F2 compile: e.g. a roofline estimate from its flops and
      bytes); other fidelities use `metrics.step_time_s`.
    prior: {candidate: log step time of the cheapest simulator}, required
      for every row's candidate when given (the `prior` model input).

  Raises:
    ValueError: unknown or repeated fidelity names; no row left; a
      candidate with knobs the space lacks; a feasible row without a step
      time; a row whose candidate has no prior.
  """
  fids = _check_fidelities(fidelities)
  rules = dict(step_time or {})
  unknown_rules = sorted(set(rules) - set(fids))
  if unknown_rules:
    raise ValueError(f"step_time rules for fidelities {unknown_rules} that are not among "
                     f"the model fidelities {list(fids)}")
  rows = select(measurements, fids)
  if not rows:
    have = sorted({m.fidelity for m in measurements})
    raise ValueError(f"no measurement to encode: none of the {len(measurements)} measurements "
                     f"(fidelities {have}) is a non-invalid one at fidelities {list(fids)}")
  index = {f: i for i, f in enumerate(fids)}
  known = set(space.names)
  cands, fid, log_t, log_m, feas, pri = [], [], [], [], [], []
  for i, m in enumerate(rows):
    cand = space.from_json(m.candidate.to_json())
    extra = sorted(set(cand.values) - known)
    if extra:
      raise ValueError(f"measurement {i} ({m.fidelity}) has knob(s) {extra} that space "
                       f"{space.name!r} lacks; was it measured in another space?")
    ok = bool(m.metrics.feasible)
    t = math.nan
    if ok:
      secs = rules.get(m.fidelity, measured_step_time)(m)
      if secs is None or not math.isfinite(secs) or secs <= 0:
        raise ValueError(
            f"measurement {i} ({m.fidelity}, candidate {cand.short()}) is feasible but has no "
            f"positive step time (got {secs}); give a step_time rule for fidelity "
            f"{m.fidelity!r}")
      t = math.log(secs)
    if prior is not None:
      if cand not in prior:
        raise ValueError(f"measurement {i}: no prior (cheapest simulator's log step time) "
                         f"for candidate {cand.short()}")
      pri.append(float(prior[cand]))
    cands.append(cand)
    fid.append(index[m.fidelity])
    log_t.append(t)
    log_m.append(_log_positive(m.metrics.peak_mem_bytes))
    feas.append(1.0 if ok else 0.0)
  x, active = space.encode(cands)
  return surrogates.make_data(
      x, active, np.asarray(fid, np.int32), np.asarray(log_t, np.float32),
      np.asarray(feas, np.float32), log_mem=np.asarray(log_m, np.float32),
      prior=np.asarray(pri, np.float32) if prior is not None else None,
      feature_names=space.feature_names())


def encode_pool(space: SearchSpace, candidates: Sequence[Candidate],
                prior: Mapping[Candidate, float] | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
  """(x, active, prior or None) of unmeasured candidates, for `surrogates.predict`."""
  x, active = space.encode(list(candidates))
  if prior is None:
    return x, active, None
  missing = [c.short() for c in candidates if c not in prior]
  if missing:
    raise ValueError(f"no prior for {len(missing)} pool candidate(s), e.g. {missing[0]}")
  return x, active, np.asarray([prior[c] for c in candidates], np.float32)
