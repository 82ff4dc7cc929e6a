"""Measurements + space -> the arrays the learned surrogate trains on: the
one path, for the designer, the tools and the tests.

Where it sits in the data flow::

    store / evaluators ──► [Measurement] ──► row(space, m)  (a typed Row)
        ──► to_data(space, candidates, fidelity index, log time, feasible, log mem)
        ──► surrogates.SurrogateData (features, active mask, fidelity index,
            log step time, log peak memory, feasible) ──► surrogates.fit

Two callers choose rows and targets, then share `row` and `to_data`:
- the AutoScout designer remembers every measurement it is told as a `Row`
  (`designers/autoscout/features.Observations`: target -log tokens/s, screen
  verdicts folded into the top fidelity, a row cap) and encodes with
  `to_data`;
- `to_arrays` is the stateless path for everything else (benchmarks,
  offline fits on a store): rows are the measurements themselves, the target
  is log step time, and a fidelity that measures no time (F2 compile) gets
  one from a caller's `step_time` rule.

`to_arrays` row rules, in order:
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

import dataclasses
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


@dataclasses.dataclass(frozen=True)
class Row:
  """One measurement, typed: its candidate (as a candidate of the space) and
  what a surrogate learns from it."""

  candidate: Candidate
  fidelity: str
  y: float | None  # log tokens/s (None when infeasible or unmeasured)
  log_mem: float | None
  feasible: bool  # it ran and has a throughput
  failure_kind: str | None
  cost_s: float


def row(space: SearchSpace, m: Measurement) -> Row:
  """`m` as a Row of `space` (its candidate re-parsed by the space)."""
  cand = space.from_json(m.candidate.to_json())
  met = m.metrics
  y = None
  if met.feasible:
    if met.tokens_per_s is not None and met.tokens_per_s > 0:
      y = math.log(met.tokens_per_s)
    elif met.step_time_s is not None and met.step_time_s > 0:
      y = -math.log(met.step_time_s)  # only ever used if no evaluator gives tokens/s
  log_mem = _log_positive(met.peak_mem_bytes)
  return Row(cand, m.fidelity, y, None if math.isnan(log_mem) else log_mem,
             bool(met.feasible and y is not None), met.failure_kind, float(m.cost_s))


def to_data(space: SearchSpace, candidates: Sequence[Candidate], fidelity: Sequence[int],
            log_time: Sequence[float], feasible: Sequence[float], log_mem: Sequence[float], *,
            prior: Sequence[float] | None = None,
            encode: Callable[[Sequence[Candidate]], tuple[np.ndarray, np.ndarray]] | None = None
            ) -> surrogates.SurrogateData:
  """The surrogate's arrays of row-aligned values (NaN where a target is
  unknown). `encode` (default `space.encode`) may be a caching encoder of
  the same space."""
  x, active = (encode or space.encode)(list(candidates))
  return surrogates.make_data(
      x, active, np.asarray(fidelity, np.int32), np.asarray(log_time, np.float32),
      np.asarray(feasible, np.float32), log_mem=np.asarray(log_mem, np.float32),
      prior=np.asarray(prior, np.float32) if prior is not None else None,
      feature_names=space.feature_names())


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
    r = row(space, m)
    cand = r.candidate
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
    log_m.append(math.nan if r.log_mem is None else r.log_mem)
    feas.append(1.0 if ok else 0.0)
  return to_data(space, cands, fid, log_t, feas, log_m, prior=pri if prior is not None else None)
