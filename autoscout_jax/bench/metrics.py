"""Scoring benchmark runs: from what a run paid for to search-quality numbers.

Where it sits: runner.py turns each `SearchResult` of a (task, designer,
seed) run into a `RunTrace` (the cost paid and the true value of the
incumbent after every paid measurement); `run_measures` scores one trace;
`aggregate` takes medians and interquartile ranges over seeds; report.py
writes them.

Definitions (all costs in device-seconds, as the search loop charges them):
- incumbent: the top-fidelity candidate the loop would return so far: the
  best *observed* objective, a candidate measured more than once scored by
  the lower median of its repeats, one with a failed repeat never
  (`measurement.Repeats`); its *true* value is the truth table's (median
  over recorded repeats, or the noiseless simulated value);
- regret at budget B: 1 - true(incumbent after the last measurement paid
  within B) / optimum; 1.0 when nothing feasible was found within B;
- cost to within p of the optimum: the cumulative cost at which the
  incumbent's true value first reaches (1 - p) x optimum; None if never;
- speedup vs expert: true(incumbent within the largest budget) / true(the
  expert default);
- infeasible paid: top-fidelity measurements paid for that failed (OOM,
  crash, timeout, compile error); invalid suggestions cost nothing and are
  counted apart;
- overhead: the designer's CPU seconds (suggest + update) per suggestion.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import numpy as np

from autoscout_jax.bench.truth import TruthTable
from autoscout_jax.measurement import INVALID, Measurement, Repeats

TARGETS = (0.05, 0.02)


@dataclasses.dataclass
class RunTrace:
  task: str
  designer: str
  seed: int
  costs: list[float]  # cumulative cost after each paid measurement
  best_true: list[float | None]  # true value of the incumbent then
  paid_top: int = 0
  repeats_paid: int = 0  # of paid_top: deliberate re-measurements (repeat index > 0)
  paid_cheap: int = 0
  failed_paid: dict[str, int] = dataclasses.field(default_factory=dict)
  invalid: int = 0
  suggested: int = 0
  cpu_s: float = 0.0
  total_cost_s: float = 0.0
  stop_reason: str = ""
  incumbent: dict[str, Any] | None = None

  @property
  def infeasible_paid(self) -> int:
    return int(sum(self.failed_paid.values()))

  def best_within(self, budget_s: float) -> float | None:
    best = None
    for c, v in zip(self.costs, self.best_true):
      if c > budget_s * (1 + 1e-12):
        break
      best = v
    return best


def trace_run(task: str, designer: str, seed: int, measurements: Sequence[Measurement],
              table: TruthTable, top_fidelity: str, profiles_free: bool = False) -> RunTrace:
  """Replays the loop's accounting: each (candidate, fidelity, repeat) is
  charged once, at its first appearance, by its cost_s (top-fidelity
  profiles at no cost with `profiles_free`: the simulator-only planner's
  pick); the incumbent is the loop's (`measurement.Repeats`)."""
  tr = RunTrace(task, designer, seed, [], [])
  charged: set[tuple[str, str, int]] = set()
  cost, best_true = 0.0, None
  answer = Repeats(top_fidelity)
  for m in measurements:
    if m.metrics.failure_kind == INVALID:
      tr.invalid += 1
      continue
    tag = (m.candidate.key, m.fidelity, m.repeat)
    if tag in charged:
      continue
    charged.add(tag)
    if not (profiles_free and m.fidelity == top_fidelity):
      cost += m.cost_s
    if m.fidelity == top_fidelity:
      tr.paid_top += 1
      if m.repeat > 0:
        tr.repeats_paid += 1
      kind = m.metrics.failure_kind
      if kind is not None:
        tr.failed_paid[kind] = tr.failed_paid.get(kind, 0) + 1
      answer.add(m)
      if answer.best is not None:
        best_true = table.true_value(answer.best.candidate)
        tr.incumbent = dict(answer.best.candidate.values)
      else:
        best_true, tr.incumbent = None, None
    else:
      tr.paid_cheap += 1
    tr.costs.append(cost)
    tr.best_true.append(best_true)
  tr.total_cost_s = cost
  return tr


def run_measures(tr: RunTrace, optimum: float, expert: float | None,
                 budgets_s: Sequence[float]) -> dict[str, Any]:
  out: dict[str, Any] = {"seed": tr.seed}
  for p in TARGETS:
    hit = None
    for c, v in zip(tr.costs, tr.best_true):
      if v is not None and v >= (1 - p) * optimum * (1 - 1e-12):
        hit = c
        break
    out[f"cost_to_{round(p * 100)}pct"] = hit
  regrets = []
  for b in budgets_s:
    v = tr.best_within(b)
    regrets.append(1.0 if v is None else max(0.0, 1.0 - v / optimum))
  out["regret_at_budgets"] = regrets
  final = tr.best_within(budgets_s[-1])
  out["best_true_tokens_per_s"] = final
  out["speedup_vs_expert"] = final / expert if (final is not None and expert) else None
  out["infeasible_paid"] = tr.infeasible_paid
  out["failed_paid_by_kind"] = dict(tr.failed_paid)
  out["invalid_suggestions"] = tr.invalid
  out["paid_top"] = tr.paid_top
  out["repeats_paid"] = tr.repeats_paid
  out["paid_cheap"] = tr.paid_cheap
  out["suggested"] = tr.suggested
  out["overhead_s_per_suggestion"] = tr.cpu_s / tr.suggested if tr.suggested else None
  out["total_cost_s"] = tr.total_cost_s
  out["stop_reason"] = tr.stop_reason
  out["incumbent"] = tr.incumbent
  return out


def quantile(values: Sequence[float | None], q: float, never: float = math.inf) -> float | None:
  """Linear-interpolated quantile where None means "never" (+inf): an
  interpolation touching +inf is +inf, returned as None."""
  xs = sorted(never if v is None else float(v) for v in values)
  if not xs:
    return None
  pos = q * (len(xs) - 1)
  lo, hi = int(math.floor(pos)), int(math.ceil(pos))
  a, b = xs[lo], xs[hi]
  if math.isinf(a) or math.isinf(b):
    return None
  return a + (b - a) * (pos - lo)


def _stats(values: Sequence[float | None], never_is_missing: bool = True) -> tuple[Any, Any, Any]:
  if not never_is_missing:
    values = [v for v in values if v is not None]
    if not values:
      return None, None, None
  return quantile(values, 0.5), quantile(values, 0.25), quantile(values, 0.75)


def aggregate(task: str, designer: str, per_seed: Sequence[dict[str, Any]], budgets_s: Sequence[float],
              budget_evals: Sequence[float]) -> dict[str, Any]:
  """Medians (and IQRs) over seeds of one (task, designer)."""
  out: dict[str, Any] = {"task": task, "designer": designer, "seeds": [r["seed"] for r in per_seed]}
  for p in TARGETS:
    key = f"cost_to_{round(p * 100)}pct"
    vals = [r[key] for r in per_seed]
    med, lo, hi = _stats(vals)
    out[key] = med
    out[key + "_iqr"] = [lo, hi]
    out[key + "_reached"] = sum(v is not None for v in vals)
  out["regret_at_budgets"] = []
  for j, (b, e) in enumerate(zip(budgets_s, budget_evals)):
    med, lo, hi = _stats([r["regret_at_budgets"][j] for r in per_seed])
    out["regret_at_budgets"].append({"budget_s": b, "budget_evals": e, "median": med, "iqr": [lo, hi]})
  for key in ("speedup_vs_expert", "best_true_tokens_per_s", "overhead_s_per_suggestion"):
    med, lo, hi = _stats([r[key] for r in per_seed], never_is_missing=False)
    out[key] = med
    out[key + "_iqr"] = [lo, hi]
  for key in ("infeasible_paid", "invalid_suggestions", "paid_top", "repeats_paid", "paid_cheap", "suggested",
              "total_cost_s"):
    out[key] = quantile([r.get(key, 0) for r in per_seed], 0.5)
  out["per_seed"] = list(per_seed)
  return out


def curve_on_grid(tr: RunTrace, grid: np.ndarray) -> np.ndarray:
  """True value of the incumbent at each cost of `grid` (NaN before any)."""
  out = np.full(len(grid), np.nan)
  costs = np.asarray(tr.costs)
  for j, g in enumerate(grid):
    k = int(np.searchsorted(costs, g * (1 + 1e-12), side="right")) - 1
    if k >= 0 and tr.best_true[k] is not None:
      out[j] = tr.best_true[k]
  return out
