"""scoutbench's "Against the peers" section: ratios of cost to 2 % (bounded
when the peers never get there), regret where the better peer is >= 5 %
off, failed candidates paid for."""

from autoscout_jax.bench.report import peer_comparison


def _row(task, designer, c2, regrets, failed):
  return {"task": task, "designer": designer, "cost_to_2pct": c2, "infeasible_paid": failed,
          "regret_at_budgets": [{"budget_evals": b, "median": m} for b, m in zip((10, 25, 50), regrets)]}


def _results(rows):
  info = [{"name": "t", "median_eval_cost_s": 100.0, "budget_evals": [10, 25, 50]}]
  return {"task_info": info, "results": rows}


def test_ratio_and_regret_where_the_peers_are_off():
  rows = [_row("t", "optuna_tpe", 3000.0, (0.20, 0.04, 0.0), 7),
          _row("t", "smac", None, (0.10, 0.06, 0.03), 5),
          _row("t", "random", 100.0, (0.0, 0.0, 0.0), 0),
          _row("t", "mine", 500.0, (0.02, 0.005, 0.0), 1)]
  md = peer_comparison(_results(rows))
  line = next(l for l in md.splitlines() if l.startswith("| t | mine |"))
  cells = [c.strip() for c in line.strip("|").split("|")]
  assert cells[2:5] == ["5.0", "30.0", "0.17"]  # 5 evals against the better peer's 30
  # Only the first budget has both peers >= 5 % off (min(0.04, 0.06) < 0.05 at 25 evals).
  assert cells[5] == "10 evals: 2.0 % (peer 10.0 %)"
  assert cells[6] == "1 (5)"
  assert "| t | random |" not in md and "| t | smac |" not in md


def test_peers_that_never_arrive_bound_the_ratio():
  rows = [_row("t", "optuna_tpe", None, (0.3, 0.2, 0.1), 2),
          _row("t", "smac", None, (0.3, 0.2, 0.1), 2),
          _row("t", "mine", 400.0, (0.0, 0.0, 0.0), 0),
          _row("t", "stuck", None, (0.03, 0.03, 0.03), 0)]
  md = peer_comparison(_results(rows))
  mine = next(l for l in md.splitlines() if l.startswith("| t | mine |"))
  assert "| 4.0 | never in 50 | < 0.08 |" in mine
  stuck = next(l for l in md.splitlines() if l.startswith("| t | stuck |"))
  assert "| never | never in 50 | — |" in stuck and "50 evals: 3.0 % (peer 10.0 %)" in stuck
  assert peer_comparison(_results(rows[:2])) == ""  # nobody to compare
