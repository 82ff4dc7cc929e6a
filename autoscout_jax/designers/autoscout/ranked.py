"""The cheap-order stage of the AutoScout designer: start from the cheap
fidelity's order, leave it exactly where the learned residual says it is wrong.

Where it sits: `AutoScoutDesigner.suggest` hands the round to this stage
when the problem offers a cheap fidelity below the top one and the space
is small enough to screen whole (`CheapOrder.applies`); otherwise the
designer's sparse/dense search runs as before. The stage keeps its own
state (screens, profiles, the two residual models of residual.py) and never
asks for a (candidate, fidelity) twice.

What it does, and why it cannot start worse than `cheap_topk` (profile in
descending cheap order):
1. screen every candidate once at the cheapest fidelity (what cheap_topk
   pays);
2. profile the cheap argmax first (cheap_topk's first profile);
3. from then on, profile the candidate of highest corrected estimate:
   cheap log throughput - the residual model's mean + log(probability of
   running). The residual (cheap log throughput - profiled log throughput)
   is a GP with two linear terms integrated out under their priors: the
   cheap fidelity's constant bias (sd `BIAS_SD`: a simulator may be off by
   a constant factor, which never reorders) and a slope on the cheap log
   value relative to the cheap best (the cheap fidelity may compress,
   stretch or even invert its own order); the kernel over knob values,
   breakdown shares and workload descriptors carries the rest, part of it
   (`ADDITIVES`, by likelihood) a sum over single knobs, so one knob's
   effect (a tensor-parallel degree whose kernels run faster than the cheap
   model says) carries over to configurations never profiled. With no
   structure in the residual the order IS the cheap order, and it is left
   only where the model is `DEPART_Z` posterior sds sure the departure
   beats the next candidate in cheap order (what the two share, the bias
   first, cancels in that difference); a candidate the cheap fidelity rules
   out is never a departure before `residual.FEW` profiles measured that
   fidelity's error. The noise on a profile is chosen with the other
   hyperparameters once there are `residual.FEW` profiles (a noisy host
   measures 10-30 %). The probability of running (running.py) corrects
   the cheap peak memory and SLO margins by their own residuals, so a
   candidate the cheap fidelity rules out becomes worth a profile once
   profiles show it is pessimistic there; a profiled SLO miss enters the
   value residual with the throughput it measured (without one, as a
   pseudo-observation just beyond its margin). A candidate is worth its
   chance of running per expected cost, P / (P + (1 - P) phi), with phi
   the measured cost of a failed profile over one that ran
   (`failure_cost_ratio`): an out-of-memory trial pays only its launch, so
   a doubtful candidate that may be the best is not given up as readily as
   when failing costs a full profile;
4. re-measure a top contender (contenders.py) when that is worth more
   than any new profile's expected improvement and at least `stop_gain`;
   a candidate's residual is learned from its lower-median repeat;
5. once the corrected order's next candidate is worth less than
   `stop_gain` while some candidate is worth more (far from every profile,
   or ruled out by the cheap fidelity), profile the one of highest expected
   improvement x probability of running instead;
   after `ANCHOR_AFTER` departures in a row that did not beat the best
   profile, the next profile is the cheap order's next candidate the model
   expects to run (P >= 1/2): a residual learned from a few profiles can
   bury the optimum under one unlucky neighbour, and the cheap order is
   walked down at least once every `ANCHOR_AFTER` + 1 profiles while the
   departures do not pay;
6. stop only when the expected improvement (x probability of running) of
   every unprofiled candidate, the ones the cheap fidelity rules out
   included, and the value of every allowed re-measurement are below
   `stop_gain` (log throughput), and never before `residual.FEW`
   successful profiles of this workload.
Warm start: `warm` rows (features by name, centred residuals) from other
workloads join the GPs' data as weaker evidence (noise `WARM_NOISE`); the
first profile is the cheap argmax all the same; `export()` gives this
run's rows.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from autoscout_jax.designers.autoscout import residual, running
from autoscout_jax.designers.autoscout.contenders import Contenders
from autoscout_jax.measurement import Measurement
from autoscout_jax.space import Candidate, SearchSpace

VALUE_NOISE = 0.1  # log-normal noise assumed on one profile before there are FEW of them
NOISES = (0.03, 0.1, 0.25)  # then chosen by marginal likelihood: a noisy host measures 10-30 %
BIAS_SD = 1.0  # prior sd of the cheap fidelity's constant log bias: a simulator may be off by e^1
SLOPE_SD = (0.3, 1.0)  # prior sd of the residual's slope on the cheap log value (first: before FEW)
ADDITIVES = (0.0, 0.5, 0.8)  # share of the kernel that is additive over single knobs (by likelihood)
# the residual's scale, by likelihood, but never below 0.2: profiles that all
# sit on one plateau of the space say nothing about how wrong the cheap
# fidelity is on structures never profiled, and simulators are 10-30 % off
# between structures on runs they were not fitted to (issue 12's validation)
VALUE_AMPLITUDES = (0.2, 0.4, 0.8)
WARM_NOISE = 0.1  # rows from other workloads: weaker evidence than this workload's own profiles
DEPART_Z = 1.0  # leave the cheap order when the model is >= 84 % sure the departure is better
# after this many departures in a row that did not beat the best profile, the
# next profile is the cheap order's next candidate the model expects to run:
# a residual learned from a few profiles can bury the optimum (one unlucky
# neighbour), and this bounds how far the search falls behind cheap_topk
ANCHOR_AFTER = 4


def failure_cost_ratio(profiles: Iterable[Measurement]) -> float:
  """The median cost of a failed profile over that of one that ran, from a
  run's own profiles, clipped to [0.02, 1]; 1 until both kinds were paid. An
  out-of-memory trial fails at its first step and pays only its launch and
  compile; a missed SLO is measured in full (ratio ~1)."""
  bad = [m.cost_s for m in profiles if m.objective is None and m.cost_s > 0]
  good = [m.cost_s for m in profiles if m.objective is not None and m.cost_s > 0]
  if not bad or not good:
    return 1.0
  return float(np.clip(np.median(bad) / np.median(good), 0.02, 1.0))


class CheapOrder:
  """See module docstring."""

  def __init__(self, space: SearchSpace, cheap: str, top: str, stop_gain: float = 0.001,
               warm: Mapping[str, Any] | None = None, first: Sequence[Candidate] = (),
               contenders: Contenders | None = None):
    self.space, self.cheap, self.top = space, cheap, top
    self.stop_gain = stop_gain
    self.candidates = space.enumerate()
    self.index = {c.key: i for i, c in enumerate(self.candidates)}
    self.screens: dict[str, Measurement] = {}
    self.profiles: dict[str, Measurement] = {}
    self.asked: set[str] = set()
    self._asked = np.zeros(len(self.candidates), bool)  # `asked` by candidate index, for vector masks
    self.warm = warm or {}
    self._x: np.ndarray | None = None
    self.names: list[str] = list(self.warm.get("names", []))
    self.last_scores: dict[str, float] = {}
    self.departures = 0  # profiles that were not the next one in cheap order
    self._screen_asked = False
    self._first = [Candidate.of(c.values) for c in first]  # screened first (e.g. the expert default)
    self.contenders = contenders  # fed by the designer; None: never re-measure
    self.remeasured = 0
    self._streak = 0  # departures in a row since the best profile last improved (or the last anchor)
    self._best_seen = -math.inf
    self.anchors = 0  # profiles taken from the cheap order by the ANCHOR_AFTER rule

  @staticmethod
  def applies(space: SearchSpace, fidelities: Sequence[str], max_candidates: int) -> bool:
    if len(fidelities) < 2 or not space.is_finite():
      return False
    if hasattr(space, "table"):  # a simulator space counts its valid points in one vectorized pass
      size = space.size()
    else:
      found = space._enumerated_if_small(max_candidates)  # None when much larger
      size = len(found) if found is not None else max_candidates + 1
    return 0 < size <= max_candidates

  # --- bookkeeping --------------------------------------------------------------
  def update(self, measurements: Sequence[Measurement]) -> None:
    for m in measurements:
      key = Candidate.of(m.candidate.values).key
      if m.fidelity == self.cheap:
        self.screens[key] = m
      elif m.fidelity == self.top:
        self._ask(key)
        if m.objective is not None and m.objective > self._best_seen:
          self._best_seen = float(m.objective)
          self._streak = 0
        book = self.contenders.book if self.contenders is not None else None
        if book is None or key not in book.by_key or key not in self.profiles:
          self.profiles.setdefault(key, m)
        elif key in book.failed:  # a failed repeat: the candidate counts as failed
          self.profiles[key] = next(x for x in book.by_key[key] if not x.feasible)
        else:
          self.profiles[key] = book.score(key) or self.profiles[key]

  def suggest(self, n: int) -> list[Candidate]:
    if not self._screen_asked:
      self._screen_asked = True
      head = [c for c in self._first if c.key in self.index]
      keys = {c.key for c in head}
      return [c.at(self.cheap) for c in head + [c for c in self.candidates if c.key not in keys]
              if c.key not in self.screens]
    score = self.scores()
    left = ~self._asked  # every profiled key was asked first
    own = sum(m.objective is not None for m in self.profiles.values())
    explore = float(np.max(self._gain[left])) if left.any() else 0.0
    out = []
    again = self.contenders.propose(explore, self.stop_gain, self.top) if self.contenders is not None else None
    if again is not None:
      out.append(again)
      self.remeasured += 1
      if len(out) >= n or not left.any():
        return out
    if own >= residual.FEW and explore < self.stop_gain and not out:
      return []  # nothing left is worth a profile (the ruled-out ones included) or a re-measurement
    order = list(np.argsort(-np.where(left, score, -np.inf), kind="stable"))
    by_gain = own >= residual.FEW and bool(order) and self._gain[order[0]] < self.stop_gain <= explore
    if by_gain:
      # the corrected order's next candidate is not worth a profile, yet some
      # candidate is (far from every profile, or ruled out by the cheap
      # fidelity): go where the expected improvement is, rather than stop
      order = list(np.argsort(-np.where(left, self._gain, -np.inf), kind="stable"))
    cheap_next = self._cheap_next()
    # the corrected order leaves the cheap order only where the model is
    # DEPART_Z sure of the departure, after FEW profiles as before them
    if (cheap_next is not None and order and (self._own < residual.FEW or not by_gain)
        and self.candidates[int(order[0])].key != cheap_next):
      j = self.index[cheap_next]
      if not self._departure_sure(int(order[0]), j):
        order.remove(j)
        order.insert(0, j)  # the evidence against the cheap order is not yet strong enough
    anchor = self._anchor() if self._own >= residual.FEW and self._streak >= ANCHOR_AFTER else None
    if anchor is not None:
      order.remove(anchor)
      order.insert(0, anchor)
      self.anchors += 1
      self._streak = 0
    for i in order:
      c = self.candidates[int(i)]
      if not left[i] or c.key in self.asked:
        continue
      if not out and cheap_next is not None and c.key != cheap_next and i != anchor:
        self.departures += 1
        self._streak += 1
      elif not out:
        self._streak = 0  # the cheap order's own next candidate (or the anchor) breaks the row
      out.append(c.at(self.top))
      self._ask(c.key)
      if len(out) >= n:
        break
    return out

  def _anchor(self) -> int | None:
    """The unasked candidate of highest cheap objective that the model
    expects to run (P(runs) >= 1/2: the feasibility model is trusted here,
    the value residual is not); None when there is none."""
    obj = np.where(~self._asked & (self._pfeas >= 0.5), self._objective, np.nan)
    return int(np.nanargmax(obj)) if np.isfinite(obj).any() else None

  def _departure_sure(self, i: int, j: int) -> bool:
    """Whether the model is at least `DEPART_P` sure that candidate `i`
    (its pick) beats `j` (the next one in cheap order): the difference of
    their corrected estimates (log probability of running included) against
    the posterior sd of the difference of their residuals, in which what
    they share (the cheap fidelity's bias, most of the slope's uncertainty)
    cancels. A near-tie in the cheap order is left to the cheap order."""
    if not math.isfinite(self._score[j]):
      return True
    if not self._ok[i] and self._own < residual.FEW:
      return False  # the cheap fidelity's verdict is overruled only once profiles measured its error
    delta = float(self._score[i] - self._score[j])
    _, sd = self._gp.difference(self._x[i], self._hall[i], self._x[j], self._hall[j])
    return delta >= DEPART_Z * sd

  def _ask(self, key: str) -> None:
    self.asked.add(key)
    i = self.index.get(key)
    if i is not None:
      self._asked[i] = True

  def _cheap_next(self) -> str | None:
    """The next candidate in cheap order (cheap_topk's next profile): the
    unasked one of highest cheap objective, the first in space order on a tie."""
    self._screen_arrays()
    obj = np.where(self._asked, np.nan, self._objective)
    if not np.isfinite(obj).any():
      return None
    return self.candidates[int(np.nanargmax(obj))].key

  # --- the models -------------------------------------------------------------------
  def _features(self) -> np.ndarray:
    if self._x is None:
      choices = {k.name: tuple(k.finite_values() or ()) for k in self.space.knobs}
      self._choices = choices
      screens = [self.screens.get(c.key) for c in self.candidates]
      steps = self._screen_arrays()[0]
      # the cheap log throughput relative to the cheap best: lets the GP learn
      # a cheap fidelity whose order itself is wrong (even one that ranks backwards)
      rel = np.nanmin(steps) / steps if np.isfinite(steps).any() else np.ones(len(steps))
      extra = [{"cheap:log_rel": float(np.log(r)) / 3.0} if np.isfinite(r) else {} for r in rel]
      self._x = residual.features(self.candidates, screens, self.space.facts, self.names, choices, extra)
      # the knobs' own columns (not the breakdown shares, descriptors or cheap value): the additive kernel's
      self._knob_idx = np.array([j for j, k in enumerate(self.names) if ":" not in k], dtype=int)
    return self._x

  def _screen_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if getattr(self, "_arrays", None) is not None and len(self.screens) == self._arrays[0]:
      return self._arrays[1]
    n = len(self.candidates)
    step, mem, ok = np.full(n, np.nan), np.full(n, np.nan), np.zeros(n, bool)
    self._margin = np.full(n, np.nan)  # the screen's log SLO margin (serving), NaN without one
    self._objective = np.full(n, np.nan)  # the screen's objective, NaN where it has none
    self._oom = np.zeros(n, bool)  # the screen says: out of memory
    per_step = self._tokens_per_step()
    for i, c in enumerate(self.candidates):
      m = self.screens.get(c.key)
      s = residual.inverse_value(m, per_step)
      if s:
        step[i] = s
      if m is not None and m.metrics.peak_mem_bytes:
        mem[i] = m.metrics.peak_mem_bytes
      ok[i] = m is not None and m.objective is not None
      if ok[i]:
        self._objective[i] = float(m.objective)
      self._oom[i] = m is not None and m.metrics.failure_kind == "oom"
    self._margin_keys, self._margins = running.margin_columns([self.screens.get(c.key) for c in self.candidates])
    if np.isfinite(self._margins).any():  # the binding latency's margin (slo_log_margin)
      self._margin = np.min(np.where(np.isfinite(self._margins), self._margins, np.inf), axis=1)
      self._margin[np.isinf(self._margin)] = np.nan
    self._arrays = (len(self.screens), (step, mem, ok))
    return step, mem, ok

  def _tokens_per_step(self) -> float | None:
    """Tokens per step time of the cheap fidelity's feasible screens (the
    median): converts the step time of a screen without a throughput (one
    it calls out of memory) into an inverse throughput. For training it is
    the workload's tokens per step; a serving screen's step time is its
    TPOT, which is no inverse throughput."""
    both = [m.metrics.tokens_per_s * m.metrics.step_time_s for m in self.screens.values()
            if m.metrics.tokens_per_s and m.metrics.step_time_s]
    return float(np.median(both)) if both else None

  def scores(self) -> np.ndarray:
    """Expected log-throughput improvement x probability of running, per candidate."""
    x = self._features()
    step, mem, ok = self._screen_arrays()
    n = len(self.candidates)
    logv = -np.log(np.where(np.isfinite(step), step, np.nan))
    prof_i, prof_r, prof_best = [], [], -math.inf
    mem_i, mem_r = [], []
    slo_i, slo_r = [], []
    cap = running.capacity(mem, ok, self._oom, any(m.metrics.failure_kind == "oom" for m in self.profiles.values()))
    for key, m in self.profiles.items():
      i = self.index.get(key)
      if i is None or not np.isfinite(step[i]):
        continue
      if m.objective:
        r = -math.log(m.objective) - math.log(step[i])
        prof_i.append(i)
        prof_r.append(r)
        prof_best = max(prof_best, math.log(m.objective))
        if m.metrics.peak_mem_bytes and np.isfinite(mem[i]):
          mem_i.append(i)
          mem_r.append(math.log(m.metrics.peak_mem_bytes / mem[i]))
      elif m.metrics.failure_kind == "slo" and (m.metrics.extra or {}).get("tokens_per_s_per_device"):
        # missed its SLO but measured its throughput: as good a value observation as any
        slo_i.append(i)
        slo_r.append(-math.log(float(m.metrics.extra["tokens_per_s_per_device"])) - math.log(step[i]))
      elif m.metrics.failure_kind == "slo" and np.isfinite(self._margin[i]):
        # missed its SLO: it is at least that much slower than the screen said
        slo_i.append(i)
        slo_r.append(max(float(self._margin[i]), 0.0) + 0.05)
      elif m.metrics.failure_kind == "oom" and cap and np.isfinite(mem[i]):
        mem_i.append(i)
        mem_r.append(max(0.0, math.log(cap / mem[i])) + 0.05)
    # residual r = cheap log throughput - profiled log throughput, modelled as
    # b + slope z + g(x) + noise: b the cheap fidelity's constant bias (a
    # constant factor never reorders), slope x z with z the cheap log value
    # relative to the cheap best (slope 1: the cheap order says nothing; > 1: it
    # ranks backwards), g a GP over knobs, breakdown shares and descriptors.
    # b and the slope are integrated out under their priors, so a far-down
    # candidate's uncertainty grows with the slope's, and what the first
    # profiles show moves the bias before it moves the order.
    top_v = float(np.nanmax(logv[ok])) if (ok & np.isfinite(logv)).any() else 0.0
    z = np.where(np.isfinite(logv), logv - top_v, 0.0)
    hall = np.stack([np.ones(n), z], axis=1)
    xw, yw = self._warm_rows("value")
    own = len(prof_i) + len(slo_i)
    xs = np.vstack([x[prof_i + slo_i], xw]) if len(xw) else x[prof_i + slo_i]
    hs = np.vstack([hall[prof_i + slo_i], np.zeros((len(yw), 2))])
    gp = residual.fit(xs, np.concatenate([np.array(prof_r + slo_r, np.float64), yw]),
                      np.concatenate([np.full(own, VALUE_NOISE), np.full(len(yw), WARM_NOISE)]),
                      own=own, h=hs, hsd=(BIAS_SD, SLOPE_SD[0]), hsd_grid=[(BIAS_SD, v) for v in SLOPE_SD],
                      noises=NOISES, add_idx=self._knob_idx, additives=ADDITIVES, amplitudes=VALUE_AMPLITUDES)
    mu_r, sd = gp.predict(x, hall)
    w = gp.weights() if own else np.zeros(2)
    mean_r, slope = (float(w[0]), float(w[1])) if len(w) == 2 else (0.0, 0.0)
    rc = np.array(prof_r, np.float64) - (mean_r + slope * z[prof_i] if own else 0.0)
    mu = logv - mu_r
    runs = ok | np.isfinite(self._margin)  # the screen times it (a predicted SLO miss included)
    pfeas = np.where(runs, 1.0, 0.0)
    if cap is not None and np.isfinite(mem).any():
      pmem = running.p_memory(x, mem, cap, mem_i, mem_r, self._warm_rows("memory"), WARM_NOISE,
                              self._knob_idx, ADDITIVES)
      pfeas = np.where(np.isfinite(pmem), pmem, pfeas)
    margin_r = running.margin_residuals(self.profiles, self.index, self._margin_keys, self._margins)
    pfeas = pfeas * running.p_slo(x, self._margins, hall, margin_r, len(prof_i), mu_r, sd,
                                  dict(noise=VALUE_NOISE, hsd=(BIAS_SD,), noises=NOISES, add_idx=self._knob_idx,
                                       additives=ADDITIVES, amplitudes=VALUE_AMPLITUDES))
    failed = {self.index[k] for k, m in self.profiles.items() if m.objective is None and k in self.index}
    pfeas[list(failed)] = 0.0
    # improvement over the incumbent's posterior mean, not its best noisy
    # observation (the maximum of noisy repeats overstates it, which would
    # make every remaining candidate look worthless on a noisy host)
    best = float(np.max(mu[prof_i])) if prof_i and np.isfinite(mu[prof_i]).all() else (
        prof_best if math.isfinite(prof_best) else (np.nanmax(mu[ok]) if ok.any() else 0.0))
    # a profile that fails (out of memory at the first step) costs only its
    # launch, a fraction `phi` of one that runs: what a candidate is worth is
    # its chance of running per expected cost, P / (P + (1 - P) phi), in
    # units of one profile that runs (phi = 1 until a failure was paid)
    phi = failure_cost_ratio(self.profiles.values())
    pworth = pfeas / (pfeas + (1.0 - pfeas) * phi)  # phi >= 0.02: never 0 / 0
    self._gain = np.where(np.isfinite(mu), residual.expected_improvement(mu, sd, best) * pworth, 0.0)
    if not self.profiles:
      # before any profile: the cheap order, warm start or not (cheap_topk's first profile)
      score = np.where(ok & np.isfinite(logv), logv, -np.inf)
    else:
      # the cheap order, corrected where the residual has shown structure
      score = np.where(np.isfinite(mu), mu + np.log(np.maximum(pworth, 1e-9)), -np.inf)
    self._gp, self._mean_r, self._pfeas, self._score, self._hall = gp, mean_r, pfeas, score, hall
    self._ok, self._own = ok, len(prof_i)
    self.slope = slope
    self._rows = (x[prof_i], rc, x[mem_i], np.array(mem_r) - (np.mean(mem_r) if mem_r else 0))
    return score

  # --- warm start -------------------------------------------------------------------
  def _warm_rows(self, kind: str) -> tuple[np.ndarray, np.ndarray]:
    rows = self.warm.get(kind) or []
    width = len(self.names)
    if not rows:
      return np.zeros((0, width)), np.zeros(0)
    xs = np.zeros((len(rows), width))
    for j, (feats, _) in enumerate(rows):
      for k, v in feats.items():
        if k in self.names:
          xs[j, self.names.index(k)] = v
    return xs, np.array([y for _, y in rows], np.float64)

  def export(self) -> dict[str, Any]:
    """This run's training rows, by feature name, for another workload's warm start."""
    if not self.profiles or not self.screens:
      return {"names": list(self.names), "value": [], "memory": []}
    self.scores()
    xv, yv, xm, ym = self._rows

    def rows(x, y):
      return [({k: float(v) for k, v in zip(self.names, r) if v}, float(t)) for r, t in zip(x, y)]

    return {"names": list(self.names), "value": rows(xv, yv), "memory": rows(xm, ym)}
