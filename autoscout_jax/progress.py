"""Progress a user can trust: one console line per round.

Where it sits: `search.run_search` calls `Progress.round` after each round;
`experiment.run_experiment` prints `Progress.finish` under the summary.
A line says how far the run is (rounds of the maximum, and the budget
spent when there is one), the elapsed time and an estimate of the time
left, and the incumbent with its gain over the workload's default. The
estimate extrapolates the elapsed time over the larger of the two
fractions done (rounds, budget), since the run stops at whichever ends
first.
"""

from __future__ import annotations

import math
import time
from typing import Callable

from autoscout_jax.units import fmt_duration

NO_BUDGET_S = 1e9


class Progress:

  def __init__(self, printer: Callable[[str], None], max_rounds: int, budget_s: float = math.inf,
               clock: Callable[[], float] = time.monotonic):
    self.printer = printer
    self.max_rounds = max_rounds
    # search.gin's default budget (1e9 device-seconds) stands for "none".
    self.budget_s = budget_s if budget_s < NO_BUDGET_S else math.inf
    self.clock = clock
    self.t0 = clock()

  @property
  def elapsed_s(self) -> float:
    return self.clock() - self.t0

  def fraction_done(self, rnd: int, cost_s: float) -> float:
    f = rnd / self.max_rounds
    if math.isfinite(self.budget_s) and self.budget_s > 0:
      f = max(f, cost_s / self.budget_s)
    return min(1.0, f)

  def line(self, stats, best: float | None, default: float | None, best_round: int | None,
           cost_s: float) -> str:
    r = stats.round
    parts = [f"round {r}/{self.max_rounds}"]
    if math.isfinite(self.budget_s):
      parts.append(f"budget {cost_s:,.1f}/{self.budget_s:,.0f} dev-s "
                   f"({100 * min(1.0, cost_s / self.budget_s):.0f}%)")
    else:
      parts.append(f"cost {cost_s:,.1f} dev-s")
    el = self.elapsed_s
    f = self.fraction_done(r, cost_s)
    eta = el * (1 - f) / f if f > 0 else math.inf
    parts.append(f"elapsed {fmt_duration(el)}, ETA {fmt_duration(eta) if math.isfinite(eta) else '?'}")
    if best is None:
      parts.append("no feasible configuration yet")
    else:
      inc = f"best {best:,.0f} tok/s"
      if default:
        inc += f" ({100 * (best / default - 1):+.1f}% vs default"
        inc += f", since round {best_round})" if best_round is not None else ")"
      elif best_round is not None:
        inc += f" (since round {best_round})"
      parts.append(inc)
    parts.append(f"{stats.new_measurements} new, {stats.cached} cached, {stats.invalid} invalid, "
                 f"{stats.infeasible} oom, {stats.failed} failed")
    return " | ".join(parts)

  def round(self, stats, best: float | None, default: float | None, best_round: int | None,
            cost_s: float) -> None:
    self.printer(self.line(stats, best, default, best_round, cost_s))
