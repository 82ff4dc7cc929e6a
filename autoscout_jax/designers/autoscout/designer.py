"""AutoScoutDesigner: surrogate-guided hybrid search over a conditional space.

Where it sits: `search.run_search` calls `suggest(n)` / `update(ms)` like
any designer. Each round:

1. refit the fused multi-fidelity surrogate (surrogate.py) if new data
   arrived, and re-rank the knobs by importance (priority.py);
2. propose: the sparse arm moves the structure around the incumbents
   (sparse.py), the dense arm relaxes the incumbents' dense knobs by
   gradient through the surrogate and rounds back to valid points
   (dense.py); one vectorized prediction scores every proposal;
3. spend: top-fidelity slots go to the arm the bandit picks (bandit.py),
   each taking that arm's candidate with the highest expected improvement
   per expected device-second; while a cheap fidelity is trusted, a
   candidate is screened there before it may be profiled, and the other
   slots screen the most promising unscreened proposals (fidelity.py);
4. on update, pay the arm with the marginal gain its candidate delivered
   and re-check each cheap fidelity's recent error against the top one.

Invariants: only valid candidates are suggested (every source goes through
the space's own moves, sampling or rounding); no (candidate, fidelity)
pair is ever asked twice; everything is a function of the seed and the
measurements told, in order (no clocks, no hash-order iteration), so a
resumed run that replays its store gets the same suggestions.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

import surrogates
from autoscout_jax.designers.autoscout import priority as priority_lib
from autoscout_jax.designers.autoscout import sparse as sparse_lib
from autoscout_jax.designers.autoscout.acquisition import Scorer
from autoscout_jax.designers.autoscout.bandit import Bandit
from autoscout_jax.designers.autoscout.features import SCREEN, Observations, knob_roles
from autoscout_jax.designers.autoscout.fidelity import FidelityPlan
from autoscout_jax.designers.autoscout.proposals import Proposer
from autoscout_jax.designers.autoscout.ranked import CheapOrder
from autoscout_jax.designers.autoscout.surrogate import FusedSurrogate, SurrogateSpec
from autoscout_jax.designers.base import Designer
from autoscout_jax.measurement import Measurement
from autoscout_jax.space import Candidate, SearchSpace

GAIN_SCALE = 0.05  # a 5 % throughput gain earns an arm the full reward
P_MIN = 0.15  # below this predicted feasibility a candidate is not profiled
MIN_EI = 0.005  # expected log gain below which a screened candidate waits


class AutoScoutDesigner(Designer):
  """See the module docstring.

  Args:
    space, seed: as for every designer.
    fidelities: the fidelities this run has (e.g. ("analytic", "profile"));
      None: only the loop's top one, asked without a hint.
    costs: nominal device-seconds per measurement and fidelity, used until
      measured costs are known.
    dense_relaxation, prioritize, cheap_fidelities, bandit: switch off one
      part each (the ablations autoscout_no_dense, _no_priority, _top_only,
      _fixed_split).
    screens_per_top: cheap screens per profile while a cheap fidelity is
      fully trusted (scaled down with trust).
    extra_screens: cheap screens a round may add beyond n (0 keeps
      suggest(n) at n candidates; harnesses where rounds are scarce raise it).
    init_samples: space-filling top-fidelity picks before the surrogate
      leads, when no cheap fidelity can screen.
    mape_threshold: a cheap fidelity's recent calibrated error above this is
      down-weighted, above twice this bypassed.
    kappa: optimism of screening and relaxation (std multiples).
    dense_knobs: override which knobs are relaxed (default: knob_roles).
    warm_start: a SurrogateState trained on other workloads over the same
      encoding; starts the fits and seeds the knob ordering.
    prior_importance: knob -> score, seeds the ordering by hand.
    surrogate: size of the ensemble and of its training.
    pool_samples: uniform samples of the space added to each round's pool.
    initial: candidates to look at first (e.g. the workload's expert
      default): screened first when a cheap fidelity can, else profiled.
    stop_after: while a cheap fidelity gates profiling, the search ends
      (suggest returns []) after this many rounds in which no screened
      candidate promised a gain worth a profile, without the best improving
      in between: it has converged, and the rest of the budget is saved.
      None: never stop.
    acquisition: how top-fidelity slots pick within an arm: "thompson" (each
      slot maximizes one ensemble member, rotating) or "ei" (expected
      improvement per device-second for every slot).
  """

  def __init__(self, space: SearchSpace, seed: int = 0, fidelities: Sequence[str] | None = None,
               costs: Mapping[str, float] | None = None, *, dense_relaxation: bool = True,
               prioritize: bool = True, cheap_fidelities: bool = True, bandit: bool = True,
               screens_per_top: float = 3.0, extra_screens: int = 0, init_samples: int = 3,
               mape_threshold: float = 0.15, kappa: float = 1.0,
               dense_knobs: Sequence[str] | None = None,
               warm_start: surrogates.SurrogateState | None = None,
               prior_importance: Mapping[str, float] | None = None,
               surrogate: SurrogateSpec = SurrogateSpec(), pool_samples: int = 1024,
               acquisition: str = "thompson", initial: Sequence[Candidate] = (),
               stop_after: int | None = 24, cheap_order: bool = True, cheap_order_max: int = 25_000,
               residual_warm: Mapping[str, Any] | None = None):
    super().__init__(space, seed)
    if min(screens_per_top, extra_screens, init_samples, pool_samples, stop_after or 0) < 0:
      raise ValueError("screens_per_top, extra_screens, init_samples, pool_samples and stop_after "
                       "must be >= 0")
    if acquisition not in ("thompson", "ei"):
      raise ValueError(f"acquisition must be 'thompson' or 'ei', got {acquisition!r}")
    self.acquisition = acquisition
    self.plan = FidelityPlan(fidelities, costs, use_cheap=cheap_fidelities,
                             threshold=mape_threshold)
    self.roles = knob_roles(space, dense_knobs)
    self.dense_relaxation = dense_relaxation and bool(self.roles.dense)
    self.screens_per_top, self.extra_screens = float(screens_per_top), int(extra_screens)
    self.init_samples, self.kappa, self.pool_samples = init_samples, kappa, pool_samples
    self._rng = np.random.default_rng(seed)
    self._spec, self._warm = surrogate, warm_start
    self.obs = Observations(space, self.plan.model_fidelities)
    self.surr = FusedSurrogate(space.width, len(self.plan.model_fidelities), seed, surrogate,
                               warm_start)
    if warm_start is not None and prior_importance is None:
      prior_importance = self._warm_importance(warm_start)
    self.prio = priority_lib.Priorities(space.names, prior_importance, enabled=prioritize)
    arms = ("sparse", "dense") if self.dense_relaxation else ("sparse",)
    self.bandit = Bandit(arms, fixed_split=None if bandit else {a: 1.0 for a in arms})
    self.proposer = Proposer(space, self.roles, self.prio, self._rng, self.dense_relaxation,
                             kappa, pool_samples)
    self._asked: dict[str, set[Candidate]] = {}  # fidelity -> candidates asked there
    self._failed: dict[str, set[Candidate]] = {}  # fidelity -> candidates that failed there
    self._origin: dict[Candidate, str] = {}
    self._pulled: dict[Candidate, str] = {}
    self.scorer = Scorer(self.obs, self.surr, self.plan, kappa)
    self._fit_mark: tuple | None = None
    self._credit = 0.0
    self._initial_todo = []
    for c in initial:
      viol = space.validate(c)
      if viol:
        raise ValueError(f"initial candidate {c.short()} is invalid: " + "; ".join(map(str, viol)))
      self._initial_todo.append(Candidate.of(c.values))
    self._dry_rounds = 0
    self._dry_since_best = 0
    self.stop_after = stop_after
    self.rounds = 0
    # Where a cheap fidelity can score the whole space, the cheap-order stage
    # (ranked.py) leads: cheap_topk's order, left where the learned residual
    # says the cheap fidelity is wrong.
    fids = tuple(fidelities or ())
    self.ranked = None
    if cheap_order and cheap_fidelities and CheapOrder.applies(space, fids, cheap_order_max):
      self.ranked = CheapOrder(space, fids[0], fids[-1], warm=residual_warm)

  # --- tell -----------------------------------------------------------------
  def update(self, measurements: Sequence[Measurement]) -> None:
    ms = list(measurements)
    if self.ranked is not None:
      self.ranked.update(ms)
      return
    if not self.plan.named and not self.obs.rows:
      self._adopt_top(ms)
    before = self.obs.best_top()
    best = before.y if before is not None else None
    for r in self.obs.add(ms):
      if not r.feasible:
        self._failed.setdefault(r.fidelity, set()).add(r.candidate)
      verdict = r.fidelity == self.obs.top or (r.fidelity == SCREEN and not r.feasible)
      if not verdict:
        continue
      arm = self._pulled.pop(r.candidate, None)
      self.scorer.observe(r)
      gain = 0.0
      if r.feasible and r.fidelity == self.obs.top:
        gain = 1.0 if best is None else max(0.0, r.y - best) / GAIN_SCALE
        if best is None or r.y > best:
          self._dry_since_best = 0
        best = r.y if best is None else max(best, r.y)
      if arm is not None:
        self.bandit.reward(arm, gain)
    self.plan.refresh(self.obs)

  def _adopt_top(self, ms: Sequence[Measurement]) -> None:
    """Not told the fidelities: the top one is whatever answers our hint-less
    suggestions (anything but the loop's compile screen)."""
    fids = [m.fidelity for m in ms if m.fidelity != SCREEN]
    if fids and fids[-1] != self.plan.top:
      self.plan = FidelityPlan((fids[-1],), self.plan.costs, use_cheap=False,
                               threshold=self.plan.threshold)
      self.plan.named = False
      self.obs = Observations(self.space, self.plan.model_fidelities)
      self.scorer = Scorer(self.obs, self.surr, self.plan, self.kappa)

  # --- ask ------------------------------------------------------------------
  def suggest(self, n: int) -> list[Candidate]:
    if n <= 0:
      return []
    self.rounds += 1
    if self.ranked is not None:
      return self.ranked.suggest(n)
    self._maybe_refit()
    top = self.plan.top
    trusted, gates = self.plan.trusted(), self.plan.gates()
    gate = gates[-1] if gates else None
    done_top = self._done(top)
    verdicts = len(self.obs.done.get(top, ()))
    if not self.surr.trained or (not trusted and verdicts < self.init_samples):
      return self._initial(n, trusted)
    incs, screened = Proposer.incumbents(self.obs, self.scorer, gate)
    key = "screen" if gate is not None else "gain"
    lists = self.proposer.round(incs, self.surr.state, lambda cs: self.scorer.scores(cs)[key],
                                done_top)
    for arm in ("dense", "sparse"):
      for c in lists.get(arm, []):
        self._origin.setdefault(c, arm)
    union = list(dict.fromkeys([c for arm in lists.values() for c in arm] + screened))
    if not union:
      return self._initial(n, trusted)
    sc = self.scorer.scores(union)
    pos = {c: i for i, c in enumerate(union)}
    # Top-fidelity candidates: screened at the gate (when one exists), not
    # known to fail anywhere trusted, likely feasible.
    failed = set().union(*(self._failed.get(f, set()) for f in trusted))
    gated = {c for c in screened} if gate is not None else None
    ok = [c for c in union if c not in done_top and c not in failed
          and (gated is None or c in gated)]
    ok = [c for c in ok if sc["p"][pos[c]] >= P_MIN] or ok
    if gate is not None:
      by_arm = {a: [c for c in ok if self._origin.get(c, "sparse") == a] for a in self.bandit.arms}
    else:
      okset = set(ok)
      by_arm = {a: [c for c in lists.get(a, []) if c in okset] for a in self.bandit.arms}
    for a in by_arm:
      by_arm[a].sort(key=lambda c: -sc["gain"][pos[c]])
    eligible = sum(len(v) for v in by_arm.values())
    if gate is not None:
      # While screening is cheap and trusted, profile only what promises a
      # real gain; after a few rounds without one, profile the best anyway
      # while the cheap fidelity's agreement with the top one is still
      # being established (a full window of pairs).
      worth = any(sc["ei"][pos[c]] >= MIN_EI for v in by_arm.values() for c in v)
      checking = self.plan.errors[gate].pairs < self.plan.window
      if worth or (checking and self._dry_rounds >= 4):
        self._dry_rounds = 0
      else:
        eligible = 0
        self._dry_rounds += 1
        self._dry_since_best += 1
        if self.stop_after is not None and self._dry_since_best > self.stop_after:
          return []  # converged: screens keep finding nothing worth a profile
    picks = self._pick_top(self._split(n, eligible, trusted), by_arm, union, sc, pos, n)
    out = [self._ask(c, top) for c in picks]
    n_screen = n - len(picks) + (self.extra_screens if trusted else 0)
    focus = self._focus(incs)
    out += self._screens(n_screen, trusted, union, sc, pos, lists["global"], focus)
    if not out and ok:  # nothing left to screen: profile instead
      out.append(self._ask(max(ok, key=lambda c: sc["gain"][pos[c]]), top))
    if not out:  # the neighbourhoods are exhausted: fall back to fresh samples
      out = self._initial(n, trusted)
    return out

  def _pick_top(self, n_top: int, by_arm, union, sc, pos, n: int) -> list[Candidate]:
    members = None
    if self.acquisition == "thompson" and n_top:
      # Each slot follows one ensemble member (a posterior draw), rotating:
      # a batch spreads over the members' disagreements instead of piling
      # onto one optimistic guess. Feasibility and cost weigh in as in EI.
      members = self.scorer.draws(union, sc)
    picks: list[Candidate] = []
    taken: set[Candidate] = set()
    structures: set[tuple] = set()

    def fresh(c: Candidate) -> bool:
      # One profile per structure and batch: the rest of a batch explores.
      return c not in taken and self._structure(c) not in structures

    for _ in range(n_top):
      allowed = [a for a in self.bandit.arms if any(fresh(c) for c in by_arm[a])]
      if not allowed:
        structures.clear()
        allowed = [a for a in self.bandit.arms if any(fresh(c) for c in by_arm[a])]
        if not allowed:
          break
      arm = self.bandit.choose(allowed)
      if members is not None:
        k = (self.rounds * n + len(picks)) % members.shape[0]
        cand = max((c for c in by_arm[arm] if fresh(c)), key=lambda c: members[k, pos[c]])
      else:
        cand = next(c for c in by_arm[arm] if fresh(c))
      taken.add(cand)
      structures.add(self._structure(cand))
      self._pulled[cand] = arm
      self.scorer.note_pick(cand, sc, pos[cand])
      picks.append(cand)
    return picks

  def _structure(self, cand: Candidate) -> tuple:
    return tuple((n, cand.get(n)) for n in self.roles.structural)

  def _done(self, fidelity: str) -> set[Candidate]:
    """Candidates asked or measured at `fidelity` (never asked again)."""
    return self._asked.setdefault(fidelity, set()) | self.obs.done.get(fidelity, set())

  def _ask(self, cand: Candidate, fidelity: str) -> Candidate:
    self._asked.setdefault(fidelity, set()).add(cand)
    return cand.at(self.plan.hint(fidelity))

  def _split(self, n: int, eligible: int, trusted: Sequence[str]) -> int:
    """How many of n slots go to the top fidelity; the rest (and the extra
    screens) screen. A credit counter keeps screens per profile at least
    screens_per_top x trust."""
    ratio = self.screens_per_top * max((self.plan.trust(f) for f in trusted), default=0.0)
    if ratio <= 0:
      return min(n, eligible)
    tops = min(n, eligible, int(self._credit))
    self._credit += (n - tops + self.extra_screens) / ratio - tops
    return tops

  def _initial(self, n: int, trusted: Sequence[str]) -> list[Candidate]:
    """Before the surrogate can lead: the given initial candidates, then
    space-filling picks (maximin in the encoding), screened cheaply when a
    cheap fidelity exists."""
    fid = trusted[0] if trusted else self.plan.top
    k = n + (self.extra_screens if trusted else 0)
    done = self._done(fid)
    out = [self._ask(c, fid) for c in self._initial_todo[:k] if c not in done]
    self._initial_todo = self._initial_todo[k:]
    done = self._done(fid)
    pool = [c for c in self.proposer.sample(max(64, 4 * k)) if c not in done]
    known = [r.candidate for r in self.obs.rows] + [c for c in out]
    x_known, _ = self.obs.encode(known)
    x, _ = self.obs.encode(pool)
    picks = sparse_lib.maximin(pool, x_known, x, k - len(out))
    return out + [self._ask(pool[i], fid) for i in picks]

  # --- the surrogate ----------------------------------------------------------
  def _maybe_refit(self) -> None:
    excluded = tuple(self.plan.bypassed())
    counts = self.obs.counts()
    top_n = counts.get(self.obs.top, 0) + counts.get(SCREEN, 0)
    cheap_n = sum(counts.get(f, 0) for f in self.plan.cheap if f not in excluded)
    if self._fit_mark is not None:
      old_top, old_cheap, old_ex = self._fit_mark
      if (top_n == old_top and old_ex == excluded
          and cheap_n < max(old_cheap * 1.25, old_cheap + 8)):
        return
    data = self.obs.to_data(exclude=excluded)
    if data is None or not np.any(np.asarray(data.feasible) > 0):
      return
    self.surr.fit(data)
    self._fit_mark = (top_n, cheap_n, excluded)
    self._refresh_importance()

  def _refresh_importance(self) -> None:
    cands = list(dict.fromkeys(r.candidate for r in self.obs.rows))[-256:]
    if len(cands) < 8:
      cands += [c for c in self.proposer.sample(64) if c not in cands]
    x, act = self.obs.encode(cands)
    raw = priority_lib.permutation_importance(
        self.space, lambda a, b: self.surr.predict(a, b), x, act,
        np.random.default_rng(self.seed * 31 + self.surr.fits))
    self.prio.set_learned(raw, evidence=len(self.obs.top_rows()))

  def _warm_importance(self, state: surrogates.SurrogateState) -> dict[str, float]:
    rng = np.random.default_rng(self.seed + 1)
    cands = list(dict.fromkeys(self.space.sample(rng, 128)))
    x, act = self.obs.encode(cands)
    return priority_lib.permutation_importance(
        self.space, lambda a, b: surrogates.predict(state, a, b), x, act, rng)

  # --- screening --------------------------------------------------------------
  def _focus(self, incs: Sequence[Candidate]) -> Candidate | None:
    """The best candidate known: profiled, or screened at a gate."""
    if not incs:
      return None
    mu = self.scorer.scores(incs)["mu"]
    for i, c in enumerate(incs):
      r = self.obs.top_outcome(c)
      if r is not None:
        mu[i] = r.y if r.feasible else -np.inf
    return incs[int(np.argmax(mu))]

  def _screens(self, k: int, trusted: Sequence[str], union: Sequence[Candidate],
               sc: Mapping[str, np.ndarray], pos: Mapping[Candidate, int],
               glob: Sequence[Candidate], focus: Candidate | None) -> list[Candidate]:
    """k cheap screens at the lowest trusted level (each higher level instead
    promotes the best candidates screened at the level below). Slots rotate
    over three sources: the one-move neighbourhood of the best candidate
    known so far, in the surrogate's optimistic order (a screen is nearly
    free, so the neighbourhood is worth covering: a local search on the
    cheap fidelity); the whole pool in that order; and a uniform sample, so
    the surrogate keeps seeing the whole space."""
    if k <= 0 or not trusted:
      return []
    out: list[Candidate] = []
    done_top = self._done(self.plan.top)
    order = np.argsort(-sc["screen"], kind="stable")
    ranked = [union[i] for i in order if union[i] not in done_top]
    local = [c for c in (self.proposer.neigh(focus) if focus is not None else [])
             if c in pos and c not in done_top]
    local.sort(key=lambda c: -sc["screen"][pos[c]])
    for slot in range(k):
      level = trusted[slot % len(trusted)]
      below = trusted[trusted.index(level) - 1] if trusted.index(level) > 0 else None
      done = self._done(level)
      if below is None and slot % 4 == 3:
        pool = [c for c in glob if c not in done]
        if pool:
          out.append(self._ask(pool[int(self._rng.integers(len(pool)))], level))
          continue
      source = local + ranked if below is None and slot % 2 == 0 else ranked
      for c in source:
        if c in done:
          continue
        if below is not None:
          r = self.obs.get(c, below)
          if r is None or not r.feasible:
            continue
        out.append(self._ask(c, level))
        break
    return out

  # --- reporting ------------------------------------------------------------
  @property
  def importances(self) -> dict[str, float]:
    """Knob -> importance (sums to 1), for TensorBoard and the report."""
    return self.prio.scores

  def summary(self) -> dict[str, Any]:
    return {
        "importances": self.importances,
        "importance_source": self.prio.source,
        "fidelity_errors": self.plan.report(),
        "bypassed": self.plan.bypassed(),
        "bandit_shares": self.bandit.shares(),
        "bandit_means": self.bandit.means(),
        "measurements": dict(self.obs.counts()),
        "surrogate_fits": self.surr.fits,
        "rounds": self.rounds,
    }

  def scalars(self) -> dict[str, float]:
    """Flat, TensorBoard-ready numbers (`writer.write_scalars(step, ...)`)."""
    out = {f"autoscout/importance/{k}": v for k, v in self.importances.items()}
    for f, e in self.plan.errors.items():
      out[f"autoscout/trust/{f}"] = e.trust
      if e.error is not None:
        out[f"autoscout/fidelity_error/{f}"] = e.error
    out.update({f"autoscout/bandit_share/{a}": v for a, v in self.bandit.shares().items()})
    return {k: float(v) for k, v in out.items() if v is not None and math.isfinite(v)}
