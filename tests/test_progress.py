"""The console line per round: N of total, elapsed, an ETA from whichever of
rounds or budget ends the run first, the incumbent and its gain."""

import math

from autoscout_jax.progress import Progress
from autoscout_jax.units import fmt_duration
from autoscout_jax.search import RoundStats


class Clock:

  def __init__(self):
    self.t = 100.0

  def __call__(self):
    return self.t


def test_eta_follows_rounds_without_a_budget():
  clock, lines = Clock(), []
  p = Progress(lines.append, max_rounds=10, clock=clock)
  clock.t += 20.0
  p.round(RoundStats(4, new_measurements=3), best=1200.0, default=1000.0, best_round=2, cost_s=5.0)
  line = lines[-1]
  assert line.startswith("round 4/10 | cost 5.0 dev-s | elapsed 20 s, ETA 30 s")
  assert "best 1,200 tok/s (+20.0% vs default, since round 2)" in line
  assert "3 new" in line


def test_eta_follows_the_budget_when_it_ends_first():
  clock, lines = Clock(), []
  p = Progress(lines.append, max_rounds=100, budget_s=50.0, clock=clock)
  clock.t += 30.0
  p.round(RoundStats(3), best=None, default=None, best_round=None, cost_s=25.0)
  assert "round 3/100 | budget 25.0/50 dev-s (50%) | elapsed 30 s, ETA 30 s" in lines[-1]
  assert "no feasible configuration yet" in lines[-1]
  # search.gin's 1e9 stands for no budget: ETA from rounds only
  q = Progress(lines.append, max_rounds=4, budget_s=1e9, clock=clock)
  assert q.budget_s == math.inf


def test_durations_read_as_a_person_would():
  assert fmt_duration(3.21) == "3.2 s"
  assert fmt_duration(75) == "1m15s"
  assert fmt_duration(3 * 3600 + 120) == "3h02m"
