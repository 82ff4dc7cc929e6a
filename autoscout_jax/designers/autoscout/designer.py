"""AutoScoutDesigner: surrogate-guided hybrid search over a conditional space.

Where it sits: built as `AutoScoutDesigner(problem, seed, config)` (the
run's Problem: space, fidelities, costs, default; the settings in
config.py), then `search.run_search` calls `suggest(n)` / `update(ms)` like
any designer. Each round is a pipeline over the package's modules:

0. refit the fused multi-fidelity surrogate (surrogate.py) if new data
   arrived, and re-rank the knobs by importance (priority.py);
1. propose: the sparse arm moves the structure around the incumbents
   (sparse.py), the dense arm relaxes the incumbents' dense knobs by
   gradient through the surrogate and rounds back to valid points
   (dense.py, proposals.py);
2. score: one vectorized prediction scores every proposal (acquisition.py);
3. allocate: top-fidelity slots go to the arm the bandit picks (bandit.py),
   each taking that arm's candidate with the highest expected improvement
   per expected device-second; while a cheap fidelity is trusted, a
   candidate is screened there before it may be profiled (fidelity.py);
4. screen: the other slots screen the most promising unscreened proposals
   (screening.py);
5. on update, pay the arm with the marginal gain its candidate delivered
   and re-check each cheap fidelity's recent error against the top one.

Before allocating, a round may instead re-measure a top contender whose
lead is within the measured noise (contenders.py), asked as
`candidate.again(r)`, when that is worth more than any new profile.

Invariants: only valid candidates are suggested (every source goes through
the space's own moves, sampling or rounding); no (candidate, fidelity,
repeat) is ever asked twice; everything is a function of the seed and the
measurements told, in order (no clocks, no hash-order iteration), so a
resumed run that replays its store gets the same suggestions.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

import surrogates
from autoscout_jax.designers.autoscout import priority as priority_lib
from autoscout_jax.designers.autoscout import screening
from autoscout_jax.designers.autoscout import sparse as sparse_lib
from autoscout_jax.designers.autoscout.acquisition import Scorer
from autoscout_jax.designers.autoscout.bandit import Bandit
from autoscout_jax.designers.autoscout.config import AutoScoutConfig, SearchState
from autoscout_jax.designers.autoscout.contenders import Contenders
from autoscout_jax.designers.autoscout.features import SCREEN, Observations, failed_screen, knob_roles
from autoscout_jax.designers.autoscout.fidelity import FidelityPlan
from autoscout_jax.designers.autoscout.proposals import Pool, Proposer
from autoscout_jax.designers.autoscout.ranked import CheapOrder
from autoscout_jax.designers.autoscout.surrogate import FusedSurrogate
from autoscout_jax.designers.base import Designer
from autoscout_jax.measurement import Measurement
from autoscout_jax.problem import Problem
from autoscout_jax.space import Candidate

GAIN_SCALE = 0.05  # a 5 % throughput gain earns an arm the full reward
P_MIN = 0.15  # below this predicted feasibility a candidate is not profiled
MIN_EI = 0.005  # expected log gain below which a screened candidate waits


class AutoScoutDesigner(Designer):
  """See the module docstring.

  Args:
    problem, seed: as for every designer; the problem's fidelities are the
      run's (the loop's compile screen among them is left to the loop), its
      costs the nominal device-seconds per fidelity until measured ones are
      known, its default the first candidate when `config.start_from_default`.
    config: the settings (config.py).
    warm_start: a SurrogateState trained on other workloads over the same
      encoding; starts the fits and seeds the knob ordering.
    initial: candidates to look at first (after the default, if any).
    residual_warm: the cheap-order stage's rows from other workloads
      (`CheapOrder.export()` of their runs, e.g. loaded from WARM_START).
  """

  def __init__(self, problem: Problem, seed: int = 0, config: AutoScoutConfig = AutoScoutConfig(), *,
               warm_start: surrogates.SurrogateState | None = None,
               initial: Sequence[Candidate] = (), residual_warm: Mapping[str, Any] | None = None):
    super().__init__(problem, seed)
    space, cfg = self.space, config
    self.config = cfg
    self.plan = FidelityPlan(problem.fidelities, problem.costs, use_cheap=cfg.cheap_fidelities,
                             threshold=cfg.mape_threshold)
    self.roles = knob_roles(space, cfg.dense_knobs)
    self.dense_relaxation = cfg.dense_relaxation and bool(self.roles.dense)
    self._rng = np.random.default_rng(seed)
    self.obs = Observations(space, self.plan.model_fidelities)
    self.surr = FusedSurrogate(space.width, len(self.plan.model_fidelities), seed, cfg.surrogate,
                               warm_start)
    prior = cfg.prior_importance
    if warm_start is not None and prior is None:
      prior = priority_lib.warm_importance(space, self.obs.encode, warm_start, seed)
    self.prio = priority_lib.Priorities(space.names, prior, enabled=cfg.prioritize)
    arms = ("sparse", "dense") if self.dense_relaxation else ("sparse",)
    self.bandit = Bandit(arms, fixed_split=None if cfg.bandit else {a: 1.0 for a in arms})
    self.proposer = Proposer(space, self.roles, self.prio, self._rng, self.dense_relaxation,
                             cfg.kappa, cfg.pool_samples)
    self.scorer = Scorer(self.obs, self.surr, self.plan, cfg.kappa)
    self.state = SearchState()
    first = ((problem.default,) if cfg.start_from_default and problem.default is not None else ())
    for c in first + tuple(initial):
      viol = space.validate(c)
      if viol:
        raise ValueError(f"initial candidate {c.short()} is invalid: " + "; ".join(map(str, viol)))
      self.state.initial_todo.append(Candidate.of(c.values))
    # Where the cheapest fidelity can score the whole space, the cheap-order
    # stage leads: cheap_topk's order, left where the learned residual says
    # the cheap fidelity is wrong (ranked.py).
    fids = tuple(self.plan.cheap) + (self.plan.top,)
    self.contenders = (Contenders(self.plan.top, cfg.max_repeats, cfg.repeat_share, cfg.repeat_noise)
                       if cfg.remeasure else None)
    self.ranked = None
    if cfg.cheap_order and cfg.cheap_fidelities and CheapOrder.applies(space, fids, cfg.cheap_order_max):
      self.ranked = CheapOrder(space, fids[0], fids[-1], stop_gain=cfg.cheap_order_stop_gain,
                               warm=residual_warm, first=self.state.initial_todo,
                               contenders=self.contenders)

  def export_warm(self) -> dict[str, Any] | None:
    """The cheap-order stage's training rows (for another workload's warm
    start; experiment.py saves them in the workdir), or None."""
    return self.ranked.export() if self.ranked is not None else None

  @property
  def rounds(self) -> int:
    return self.state.rounds

  # --- tell -----------------------------------------------------------------
  def update(self, measurements: Sequence[Measurement]) -> None:
    if self.contenders is not None:
      self.contenders.update(measurements)
    if self.ranked is not None:
      self.ranked.update(measurements)
      # the ranked stage decides alone; the fidelity plan still tracks how far
      # each cheap fidelity is from profiling (summary, scalars)
      self.obs.add(measurements)
      self.plan.refresh(self.obs)
      return
    st = self.state
    before = self.obs.best_top()
    best = before.y if before is not None else None
    for r in self.obs.add(measurements):
      if not r.feasible:
        st.failed.setdefault(r.fidelity, set()).add(r.candidate)
      verdict = r.fidelity == self.obs.top or failed_screen(r)
      if not verdict:
        continue
      arm = st.pulled.pop(r.candidate, None)
      self.scorer.observe(r)
      gain = 0.0
      if r.feasible and r.fidelity == self.obs.top:
        gain = 1.0 if best is None else max(0.0, r.y - best) / GAIN_SCALE
        if best is None or r.y > best:
          st.dry_since_best = 0
        best = r.y if best is None else max(best, r.y)
      if arm is not None:
        self.bandit.reward(arm, gain)
    self.plan.refresh(self.obs)

  # --- ask: propose -> score -> allocate -> screen ----------------------------
  def suggest(self, n: int) -> list[Candidate]:
    if n <= 0:
      return []
    self.state.rounds += 1
    if self.ranked is not None:
      return self.ranked.suggest(n)
    self._maybe_refit()
    trusted, gates = self.plan.trusted(), self.plan.gates()
    gate = gates[-1] if gates else None
    verdicts = len(self.obs.done.get(self.plan.top, ()))
    if not self.surr.trained or (not trusted and verdicts < self.config.init_samples):
      return self._initial(n, trusted)
    pool = self._propose(gate)
    if not pool.union:
      return self._initial(n, trusted)
    sc = self.scorer.scores(pool.union)
    pos = {c: i for i, c in enumerate(pool.union)}
    again = self._remeasure(pool, sc)
    if again is not None:
      return [again]
    allocated = self._allocate(n, pool, sc, pos, trusted, gate)
    if allocated is None:
      again = self._remeasure(pool, sc, converged=True)
      return [again] if again is not None else []  # converged: nothing worth a profile
    picks, ok = allocated
    out = [self._ask(c, self.plan.top) for c in picks]
    n_screen = n - len(picks) + (self.config.extra_screens if trusted else 0)
    best = screening.focus(pool.incumbents, self.scorer, self.obs)
    near = self.proposer.neigh(best) if best is not None and n_screen > 0 and trusted else []
    out += screening.screens(n_screen, trusted, pool.union, sc, pos, pool.lists["global"], near,
                             self.obs, self.plan.top, self._rng, self._done, self._ask)
    if not out and ok:  # nothing left to screen: profile instead
      out.append(self._ask(max(ok, key=lambda c: sc["gain"][pos[c]]), self.plan.top))
    if not out:  # the neighbourhoods are exhausted: fall back to fresh samples
      out = self._initial(n, trusted)
    return out

  def _remeasure(self, pool: Pool, sc: Mapping[str, np.ndarray], converged: bool = False) -> Candidate | None:
    """A top contender to measure again (contenders.py), when worth more than
    any new proposal's expected improvement x P(feasible)."""
    if self.contenders is None:
      return None
    done_top = self._done(self.plan.top)
    fresh = [i for i, c in enumerate(pool.union) if c not in done_top]
    explore = 0.0 if converged or not fresh else float(np.max((sc["ei"] * sc["p"])[fresh]))
    again = self.contenders.propose(explore, self.config.cheap_order_stop_gain, self.plan.top)
    self.state.remeasured += again is not None
    return again

  def _propose(self, gate: str | None) -> Pool:
    """Sparse moves and dense relaxations around the incumbents, plus a
    uniform sample of the space (proposals.py)."""
    done_top = self._done(self.plan.top)
    incs, screened = Proposer.incumbents(self.obs, self.scorer, gate)
    key = "screen" if gate is not None else "gain"
    lists = self.proposer.round(incs, self.surr.state, lambda cs: self.scorer.scores(cs)[key],
                                done_top)
    for arm in ("dense", "sparse"):
      for c in lists.get(arm, []):
        self.state.origin.setdefault(c, arm)
    union = list(dict.fromkeys([c for arm in lists.values() for c in arm] + screened))
    return Pool(incs, screened, lists, union)

  def _allocate(self, n: int, pool: Pool, sc: Mapping[str, np.ndarray],
                pos: Mapping[Candidate, int], trusted: Sequence[str], gate: str | None):
    """The top-fidelity picks of this round and the candidates eligible for
    one; None when the search has converged."""
    st = self.state
    done_top = self._done(self.plan.top)
    # Top-fidelity candidates: screened at the gate (when one exists), not
    # known to fail anywhere trusted, likely feasible.
    failed = set().union(*(st.failed.get(f, set()) for f in trusted))
    gated = set(pool.screened) if gate is not None else None
    ok = [c for c in pool.union if c not in done_top and c not in failed
          and (gated is None or c in gated)]
    ok = [c for c in ok if sc["p"][pos[c]] >= P_MIN] or ok
    if gate is not None:
      by_arm = {a: [c for c in ok if st.origin.get(c, "sparse") == a] for a in self.bandit.arms}
    else:
      okset = set(ok)
      by_arm = {a: [c for c in pool.lists.get(a, []) if c in okset] for a in self.bandit.arms}
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
      if worth or (checking and st.dry_rounds >= 4):
        st.dry_rounds = 0
      else:
        eligible = 0
        st.dry_rounds += 1
        st.dry_since_best += 1
        stop = self.config.stop_after
        if stop is not None and st.dry_since_best > stop:
          return None
    picks = self._pick_top(self._split(n, eligible, trusted), by_arm, pool.union, sc, pos, n)
    return picks, ok

  def _pick_top(self, n_top: int, by_arm, union, sc, pos, n: int) -> list[Candidate]:
    members = None
    if self.config.acquisition == "thompson" and n_top:
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
      self.state.pulled[cand] = arm
      self.scorer.note_pick(cand, sc, pos[cand])
      picks.append(cand)
    return picks

  def _structure(self, cand: Candidate) -> tuple:
    return tuple((n, cand.get(n)) for n in self.roles.structural)

  def _done(self, fidelity: str) -> set[Candidate]:
    """Candidates asked or measured at `fidelity` (never asked again)."""
    return self.state.asked.setdefault(fidelity, set()) | self.obs.done.get(fidelity, set())

  def _ask(self, cand: Candidate, fidelity: str) -> Candidate:
    self.state.asked.setdefault(fidelity, set()).add(cand)
    return cand.at(fidelity)

  def _split(self, n: int, eligible: int, trusted: Sequence[str]) -> int:
    """How many of n slots go to the top fidelity; the rest (and the extra
    screens) screen. A credit counter keeps screens per profile at least
    screens_per_top x trust."""
    st = self.state
    ratio = self.config.screens_per_top * max((self.plan.trust(f) for f in trusted), default=0.0)
    if ratio <= 0:
      return min(n, eligible)
    tops = min(n, eligible, int(st.credit))
    st.credit += (n - tops + self.config.extra_screens) / ratio - tops
    return tops

  def _initial(self, n: int, trusted: Sequence[str]) -> list[Candidate]:
    """Before the surrogate can lead: the given initial candidates, then
    space-filling picks (maximin in the encoding), screened cheaply when a
    cheap fidelity exists."""
    fid = trusted[0] if trusted else self.plan.top
    st = self.state
    k = n + (self.config.extra_screens if trusted else 0)
    done = self._done(fid)
    out = [self._ask(c, fid) for c in st.initial_todo[:k] if c not in done]
    st.initial_todo = st.initial_todo[k:]
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
    if self.state.fit_mark is not None:
      old_top, old_cheap, old_ex = self.state.fit_mark
      if (top_n == old_top and old_ex == excluded
          and cheap_n < max(old_cheap * 1.25, old_cheap + 8)):
        return
    data = self.obs.to_data(exclude=excluded)
    if data is None or not np.any(np.asarray(data.feasible) > 0):
      return
    self.surr.fit(data)
    self.state.fit_mark = (top_n, cheap_n, excluded)
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
        "rounds": self.state.rounds,
        "remeasured": self.state.remeasured + (self.ranked.remeasured if self.ranked is not None else 0),
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
