"""The search loop: suggest -> validate -> route by fidelity -> store -> update.

Where it sits: `experiment.run_experiment` builds the run's `Problem`, the
designer and the evaluators and calls `run_search`. Each round the designer suggests candidates; each candidate
names the fidelity it wants (None: the top one available). A candidate with
a constraint violation never reaches an evaluator: the designer gets an
`invalid` measurement back at no cost. Cheaper "screen" fidelities (F2
compile by default) run first when the candidate is headed for a more
expensive one; if the screen says it cannot run (OOM, compile error), the
expensive fidelity is not paid for.

Every new measurement is appended to the store before anyone sees it. A
candidate already in the store is not measured again: on a resumed run the
designer's (deterministic) suggestions are replayed against the store and
charged their recorded cost, so the budget trajectory and the final answer
are those of an uninterrupted run. The one way to pay twice for a
(candidate, fidelity) is to ask for it on purpose: a candidate carrying a
repeat hint r > 0 (`Candidate.again(r)`) is its r-th re-measurement, stored
and charged under its own key (a screen in front of it is not repeated).
The answer (`best`) decides on all of a candidate's repeats
(`measurement.Repeats`: the lower median; a candidate with a failed repeat
never wins).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, Sequence

from autoscout_jax.designers.base import Designer
from autoscout_jax.evaluator import Evaluator, settings_key
from autoscout_jax.executors import Executor, SerialExecutor
from autoscout_jax.measurement import INVALID, Measurement, Metrics, Repeats, fidelity_rank
from autoscout_jax.problem import Problem
from autoscout_jax.progress import Progress
from autoscout_jax.space import Candidate
from autoscout_jax.store import MeasurementStore
from autoscout_jax.tracking import TrialLog
from autoscout_jax.writers import Writer


@dataclasses.dataclass
class RoundStats:
  round: int
  suggested: int = 0
  valid: int = 0
  invalid: int = 0
  infeasible: int = 0  # OOM
  failed: int = 0  # compile error, crash, timeout
  new_measurements: int = 0
  cached: int = 0
  cost_s: float = 0.0


@dataclasses.dataclass
class SearchResult:
  best: Measurement | None
  default: Measurement | None
  top_fidelity: str
  cost_s: float
  rounds: list[RoundStats]
  measurements: list[Measurement]  # every outcome this run handed to the designer
  curve: list[tuple[float, float]]  # (cumulative cost, best objective so far)
  stop_reason: str
  designer_summary: dict[str, Any] = dataclasses.field(default_factory=dict)  # Designer.summary()
  rounds_of: list[int] = dataclasses.field(default_factory=list)  # round of each measurement (0: default)
  best_round: int | None = None  # the round that found the best
  wall_s: float = 0.0

  @property
  def speedup_vs_default(self) -> float | None:
    if self.best is None or self.default is None or self.default.objective is None:
      return None
    return self.best.objective / self.default.objective

  def top(self, k: int = 5) -> list[Measurement]:
    """The k best candidates at the top fidelity, each by its lower-median
    repeat (candidates with a failed repeat left out), best first."""
    book = Repeats(self.top_fidelity)
    for m in self.measurements:
      book.add(m)
    ranked = [m for m in (book.score(key) for key in book.by_key) if m is not None]
    ranked.sort(key=lambda m: -m.objective)  # stable: the first measured wins a tie
    return ranked[:k]


def _invalid(cand: Candidate, fidelity: str, violations, wk: str, ck: str) -> Measurement:
  msg = "; ".join(str(v) for v in violations)
  return Measurement(cand, fidelity, Metrics.failed(INVALID, msg), 0.0, wk, ck)


class _Router:
  """Looks measurements up in the store, evaluates what is missing in one
  batch per fidelity, and charges each (candidate, fidelity, repeat) once per run."""

  def __init__(self, problem: Problem, evaluators: Mapping[str, Evaluator], store: MeasurementStore,
               executor: Executor):
    self.problem = problem
    workload, cluster = problem.workload, problem.cluster
    self.evaluators = evaluators
    self.store = store
    self.executor = executor
    self.wk, self.ck = workload.key, cluster.key
    self.charged: set[tuple[str, str, int]] = set()
    self.settings = {f: settings_key(e) for f, e in evaluators.items()}

  def measure(self, cands: Sequence[Candidate], fidelity: str, stats: RoundStats) -> list[Measurement]:
    out: dict[int, Measurement] = {}
    todo: list[int] = []
    first: dict[tuple[str, int], int] = {}  # a (candidate, repeat) asked twice in one batch is measured once
    dup: dict[int, int] = {}
    for i, c in enumerate(cands):
      m = self.store.get(self.wk, self.ck, c.key, fidelity, self.settings[fidelity], c.repeat)
      if m is not None:
        out[i] = m
        stats.cached += 1
      elif (c.key, c.repeat) in first:
        dup[i] = first[(c.key, c.repeat)]
      else:
        first[(c.key, c.repeat)] = i
        todo.append(i)
    if todo:
      def arrived(idx: Sequence[int], ms: Sequence[Measurement]) -> None:
        # Stored as each chunk arrives (a killed run keeps what finished).
        for j, m in zip(idx, ms):
          i = todo[j]
          m = dataclasses.replace(m, candidate=Candidate.of(cands[i].values), fidelity=fidelity,
                                  workload_key=self.wk, cluster_key=self.ck,
                                  settings_key=self.settings[fidelity], repeat=cands[i].repeat)
          self.store.append(m)
          out[i] = m
          stats.new_measurements += 1

      self.executor.evaluate(self.evaluators[fidelity], self.problem, [cands[i] for i in todo], arrived)
      missing = [i for i in todo if i not in out]
      if missing:
        raise RuntimeError(f"evaluator {fidelity!r} returned no measurement for {len(missing)} candidates")
    for i, j in dup.items():
      out[i] = out[j]
      stats.cached += 1
    result = [out[i] for i in range(len(cands))]
    for m in result:
      tag = (m.candidate.key, fidelity, m.repeat)
      if tag not in self.charged:
        self.charged.add(tag)
        stats.cost_s += m.cost_s
    return result


def run_search(problem: Problem, designer: Designer, evaluators: Mapping[str, Evaluator],
               store: MeasurementStore, *, budget_s: float = math.inf, batch_size: int = 4,
               max_rounds: int = 100, screen_fidelities: Sequence[str] = ("compile",),
               writer: Writer | None = None, compare_default: bool = True,
               on_round_end: Callable[[RoundStats, "SearchResult"], None] | None = None,
               progress: Callable[[str], None] | None = None,
               executor: Executor | None = None) -> SearchResult:
  """Runs the search; `problem.default` (when set and `compare_default`) is
  measured first at the top fidelity."""
  if not evaluators:
    raise ValueError("run_search needs at least one evaluator")
  for f in evaluators:
    fidelity_rank(f)
  if set(evaluators) != set(problem.fidelities):
    raise ValueError(f"the evaluators' fidelities {sorted(evaluators)} are not the problem's "
                     f"{list(problem.fidelities)}")
  space = problem.space
  top = problem.top
  default = problem.default if compare_default else None
  screens = [f for f in screen_fidelities if f in evaluators and f != top]
  router = _Router(problem, evaluators, store, executor or SerialExecutor())
  log = TrialLog(writer or Writer(), space, list(problem.fidelities), top)
  clock = Progress(progress or (lambda line: None), max_rounds, budget_s)

  result = SearchResult(None, None, top, 0.0, [], [], [], "")
  answer = Repeats(top)  # the best candidate so far, on all its repeats
  # On resume the first rounds replay the store: the run that measured them
  # wrote their TensorBoard steps, so they are written again only from the
  # first round that measures something new (no duplicate steps). The
  # HParams sessions are written at the end, for every trial either way.
  replaying = [len(store) > 0]

  def process(cands: Sequence[Candidate], stats: RoundStats) -> list[Measurement]:
    """Outcome per candidate: the invalid marker, a failing screen, or the
    measurement at the requested fidelity."""
    outcome: dict[int, Measurement] = {}
    by_fid: dict[str, list[int]] = {}
    for c in cands:
      if (c.fidelity or top) not in evaluators:
        raise ValueError(f"designer asked for fidelity {c.fidelity!r}; available: {sorted(evaluators)}")
    # one vectorized check of the batch (a cheap screen may ask for the whole space at once)
    for i, (c, viol) in enumerate(zip(cands, space.validate_many(cands))):
      fid = c.fidelity or top
      if viol:
        outcome[i] = _invalid(c, fid, viol, router.wk, router.ck)
        stats.invalid += 1
        continue
      stats.valid += 1
      by_fid.setdefault(fid, []).append(i)
    extra: list[Measurement] = []
    for fid, idx in sorted(by_fid.items(), key=lambda kv: fidelity_rank(kv[0])):
      alive = list(idx)
      for s in screens:
        if fidelity_rank(s) >= fidelity_rank(fid) or not alive:
          continue
        ms = router.measure([cands[i].again(0) for i in alive], s, stats)
        keep = []
        for i, m in zip(alive, ms):
          if m.feasible:
            keep.append(i)
            extra.append(m)
          else:
            outcome[i] = m
        alive = keep
      if alive:
        for i, m in zip(alive, router.measure([cands[i] for i in alive], fid, stats)):
          outcome[i] = m
    ordered = [outcome[i] for i in range(len(cands))]
    for m in ordered:
      if m.metrics.failure_kind == "oom":
        stats.infeasible += 1
      elif m.metrics.failure_kind not in (None, INVALID):
        stats.failed += 1
    return extra + ordered

  def account(ms: Sequence[Measurement], stats: RoundStats, is_default: bool = False) -> None:
    if stats.new_measurements:
      replaying[0] = False
    log.quiet = replaying[0]
    result.cost_s += stats.cost_s
    result.measurements.extend(ms)
    for m in ms:
      result.rounds_of.append(stats.round)
      log.trial(m, stats.round, is_default=is_default and m is ms[-1])
      before = result.best
      if answer.add(m) and answer.best is not None and (
          before is None or answer.best.candidate != before.candidate):
        result.best_round = stats.round
      result.best = answer.best
    if result.best is not None:
      result.curve.append((result.cost_s, result.best.objective))

  if default is not None:
    stats = RoundStats(0, suggested=1)
    ms = process([default.at(top)], stats)
    result.default = ms[-1]
    account(ms, stats, is_default=True)
    designer.update(ms)
    log.round(stats, designer.scalars())

  stop = "max_rounds"
  for r in range(1, max_rounds + 1):
    if result.cost_s >= budget_s:
      stop = "budget"
      break
    cands = designer.suggest(batch_size)
    if not cands:
      stop = "designer_done"
      break
    stats = RoundStats(r, suggested=len(cands))
    ms = process(cands, stats)
    account(ms, stats)
    designer.update(ms)
    result.rounds.append(stats)
    log.round(stats, designer.scalars())
    clock.round(stats, result.best.objective if result.best else None,
                result.default.objective if result.default else None, result.best_round,
                result.cost_s)
    if on_round_end is not None:
      on_round_end(stats, result)
  result.stop_reason = stop
  result.designer_summary = designer.summary()
  log.finish(result.designer_summary.get("importances")
              if result.designer_summary.get("importance_source") != "uniform" else None)
  result.wall_s = clock.elapsed_s
  return result
