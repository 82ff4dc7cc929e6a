"""Replaying a truth table through the ordinary search loop.

Where it sits: runner.py plugs a `ReplayEvaluator` into `search.run_search`
as the top ("profile") fidelity of a benchmark task, next to the task's
cheap evaluators wrapped in `FixedCostEvaluator`. The loop charges each
(candidate, fidelity, repeat index) once per run, by the measurement's
`cost_s`, which for a replay is the recorded cost of the repeat served: a
designer's deliberate re-measurement (a candidate asked with `again(r)`)
gets another recorded repeat and pays for it. Designers see
nothing but what the loop hands them, so never an unpaid evaluation.

`MemoryStore` stands in for the on-disk store: a benchmark run is cheap to
repeat and thousands of them would otherwise fsync a line per measurement.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from typing import Iterator, Sequence

from autoscout_jax.bench.truth import TruthTable
from autoscout_jax.evaluator import Evaluator
from autoscout_jax.measurement import CRASH, Measurement, Metrics
from autoscout_jax.problem import Problem
from autoscout_jax.space import Candidate


def repeat_index(seed: int, cand: Candidate, repeats: int, again: int = 0) -> int:
  """Which recorded repeat a run with this seed gets for this candidate's
  `again`-th measurement (0: the first; the loop passes the candidate's
  repeat hint): fixed per (seed, candidate, again), independent of the order
  of asking. The first is a seeded pick; re-measurement r serves the next
  recorded repeats in turn, so the first R measurements of a candidate are
  its R distinct recorded repeats (beyond R they come round again)."""
  h = hashlib.sha1(f"{seed}:{cand.key}".encode()).digest()
  return (int.from_bytes(h[:8], "little") + again) % repeats


class ReplayEvaluator(Evaluator):
  """Serves one recorded repeat per measurement (`repeat_index`); `served`
  logs every (candidate key, recorded repeat, cost_s) handed out, in order."""

  def __init__(self, table: TruthTable, seed: int, fidelity: str = "profile"):
    self.table = table
    self.seed = seed
    self.fidelity = fidelity
    self.served: list[tuple[str, int, float]] = []

  def evaluate(self, problem: Problem, candidates: Sequence[Candidate]) -> list[Measurement]:
    return [self._one(problem.workload, problem.cluster, c) for c in candidates]

  def _one(self, workload, cluster, cand: Candidate) -> Measurement:
    t = self.table
    again = int(getattr(cand, "repeat", 0))
    cand = Candidate.of(cand.values)
    i = t.index.get(cand)
    prov = {"replay": t.task, "source_fidelity": t.source_fidelity}
    if i is None:
      # Valid in the space but absent from the truth: the table is stale.
      # build_task refuses such tables, so this is a guard, not a path.
      metrics = Metrics.failed(CRASH, f"candidate not in the truth table of task {t.task!r}")
      return Measurement(cand, self.fidelity, metrics, 0.0, workload.key, cluster.key, provenance=prov)
    r = repeat_index(self.seed, cand, t.repeats, again)
    cost = float(t.cost_s[i, r])
    kind = t.failure_kind[i][r]
    if kind is None:
      step = float(t.step_time_s[i, r])
      extra = dict(t.extra[i][r]) if t.extra is not None else {}
      mem = t.peak_mem_bytes[i, r] if t.peak_mem_bytes is not None else math.nan
      metrics = Metrics(True, step_time_s=step, tokens_per_s=float(t.tokens_per_s[i, r]),
                        peak_mem_bytes=float(mem) if math.isfinite(mem) else None, extra=extra)
    else:
      extra = dict(t.extra[i][r]) if t.extra is not None else {}
      metrics = Metrics.failed(kind, f"recorded {kind} (repeat {r})", extra=extra)
    self.served.append((cand.key, r, cost))
    return Measurement(cand, self.fidelity, metrics, cost, workload.key, cluster.key, wall_s=0.0,
                       wallclock=0.0, provenance={**prov, "repeat": r}, repeat=again)


class FixedCostEvaluator(Evaluator):
  """A cheap evaluator (e.g. F0) whose measurements cost a fixed
  `cost_s` device-seconds each: a simulator's own wall time is noise on a
  shared machine and would make runs irreproducible. `memo` (candidate key
  -> measurement), shared by every run of a task, keeps what the inner
  evaluator said: a simulator is a pure function of the candidate, so runs
  after the first reuse its answers (each run still pays for them)."""

  def __init__(self, inner: Evaluator, cost_s: float, memo: dict[str, Measurement] | None = None):
    self.inner = inner
    self.fidelity = inner.fidelity
    self.cost_s = float(cost_s)
    self.memo = memo

  def evaluate(self, problem: Problem, candidates: Sequence[Candidate]) -> list[Measurement]:
    if self.memo is None:
      got = self.inner.evaluate(problem, candidates)
    else:
      todo = [c for c in dict.fromkeys(Candidate.of(c.values) for c in candidates) if c.key not in self.memo]
      if todo:
        for c, m in zip(todo, self.inner.evaluate(problem, todo)):
          self.memo[c.key] = m
      got = [self.memo[c.key] for c in candidates]
    return [dataclasses.replace(m, candidate=Candidate.of(c.values), cost_s=self.cost_s, wallclock=0.0)
            for c, m in zip(candidates, got)]


class MemoryStore:
  """The part of `store.MeasurementStore`'s interface the search loop uses,
  in memory."""

  def __init__(self):
    self._rows: list[Measurement] = []
    self._index: dict[tuple[str, ...], Measurement] = {}

  def append(self, m: Measurement) -> None:
    self._rows.append(m)
    self._index.setdefault(m.cache_key, m)

  def get(self, workload_key: str, cluster_key: str, candidate_key: str, fidelity: str,
          settings_key: str = "", repeat: int = 0) -> Measurement | None:
    return self._index.get((workload_key, cluster_key, candidate_key, fidelity, settings_key, repeat))

  def __len__(self) -> int:
    return len(self._rows)

  def __iter__(self) -> Iterator[Measurement]:
    return iter(list(self._rows))

  def measurements(self, workload_key=None, cluster_key=None, fidelity=None) -> list[Measurement]:
    return [m for m in self._rows
            if (workload_key is None or m.workload_key == workload_key)
            and (cluster_key is None or m.cluster_key == cluster_key)
            and (fidelity is None or m.fidelity == fidelity)]
