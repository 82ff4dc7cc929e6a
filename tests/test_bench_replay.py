"""scoutbench's replay: recorded measurements at their recorded cost, nothing
unpaid reaches a designer, seeded runs repeat exactly, metrics are right."""

import dataclasses
import math
import os

import numpy as np
import pytest

from autoscout_jax.bench import metrics, peers, runner, tasks, truth
from autoscout_jax.bench.replay import MemoryStore, ReplayEvaluator, repeat_index
from autoscout_jax.designers import RandomSearch
from autoscout_jax.evaluator import Evaluator
from autoscout_jax.targets.local import space as local_training_space
from autoscout_jax.measurement import Measurement, Metrics
from autoscout_jax.problem import Problem
from autoscout_jax.search import run_search
from autoscout_jax.workload import LocalCluster, ModelConfig, Workload

REAL_TABLE = os.path.join(tasks.repo_root(), "experiments", "scoutbench", "real_tiny_cpu8.json")


class Formula(Evaluator):
  """A deterministic stand-in simulator: step time from the knobs, tensor=4 OOMs."""

  fidelity = "event"

  def evaluate(self, problem, candidates):
    out = []
    for c in candidates:
      if c["tensor"] == 4:
        out.append(Measurement(c, self.fidelity, Metrics.failed("oom", "too big"), 0.0))
        continue
      t = 1.0 + 0.3 * math.log2(c["tensor"]) + 0.1 * c["num_microbatches"] + 0.2 * (c["remat_policy"] == "full")
      out.append(Measurement(c, self.fidelity, Metrics(True, step_time_s=t, tokens_per_s=512 / t), 0.0))
    return out


def synthetic_task(repeats=3, noise=0.05):
  w = Workload("tiny", ModelConfig("tiny", 2, 64, 4, 256, 256, 32), 16,
               default={"data": 8, "fsdp": 1, "tensor": 1, "num_microbatches": 1, "remat_policy": "none",
                        "scan_layers": False})
  c = LocalCluster()
  space = local_training_space(w, c, microbatch_choices=(1, 2), remat_policies=("none", "full"))
  cands = space.enumerate()
  table = truth.simulate_truth("synthetic", Problem(w, c, space, ("event",)), cands, Formula(), profiled_steps=10, overhead_s=5.0,
                               noise=noise, repeats=repeats, seed=3)
  spec = tasks.task_spec("synthetic", w, c, local_training_space, tasks.SimulatedProfiling(Formula()),
                         budget_evals=(3, 6, 12))
  budgets = tuple(b * table.median_cost_s() for b in spec.budget_evals)
  return tasks.Task(spec, space, cands, table, space.make(w.default_values), budgets)


def test_simulated_truth_costs_and_noise():
  task = synthetic_task()
  t = task.table
  i = t.index[task.default]
  # cost of a repeat: (10 steps x its step time + 5 s overhead) x 8 devices
  np.testing.assert_allclose(t.cost_s[i], (10 * t.step_time_s[i] + 5.0) * 8)
  assert np.std(t.step_time_s[i]) > 0  # repeats differ...
  assert t.true_value(task.default) == pytest.approx(512 / 1.1)  # ...the truth is noiseless
  oom = [k for k, c in enumerate(t.candidates) if c["tensor"] == 4]
  assert oom and all(t.failure_kind[k] == ["oom"] * 3 for k in oom)
  np.testing.assert_allclose(t.cost_s[oom], 5.0 * 8)  # a failed launch pays the overhead
  assert t.optimum == pytest.approx(512 / 1.1)


def test_replay_serves_recorded_repeat_at_recorded_cost():
  task = synthetic_task()
  ev = ReplayEvaluator(task.table, seed=11)
  cands = [c for c in task.candidates if c["tensor"] != 4][:6] + [c for c in task.candidates if c["tensor"] == 4][:1]
  ms = ev.evaluate(runner.task_problem(task), cands)
  for c, m in zip(cands, ms):
    i, r = task.table.index[c], repeat_index(11, c, 3)
    assert m.cost_s == task.table.cost_s[i, r]
    if m.feasible:
      assert m.metrics.tokens_per_s == task.table.tokens_per_s[i, r]
    else:
      assert m.metrics.failure_kind == task.table.failure_kind[i][r] == "oom"
  assert sum(m.feasible for m in ms) == 6
  # the repeat depends on the seed, not on the order of asking
  again = ReplayEvaluator(task.table, seed=11).evaluate(runner.task_problem(task), cands[::-1])
  assert [m.cost_s for m in again] == [m.cost_s for m in ms][::-1]
  other = ReplayEvaluator(task.table, seed=12).evaluate(runner.task_problem(task), cands)
  assert [m.cost_s for m in other] != [m.cost_s for m in ms]


class Spy(RandomSearch):
  seen = []

  def update(self, measurements):
    Spy.seen.extend(measurements)


def test_designer_never_sees_an_unpaid_evaluation():
  task = synthetic_task()
  Spy.seen = []
  peers.register("spy", peers.DesignerEntry(Spy))
  try:
    tr, result = runner.run_one(task, "spy", seed=0)
  finally:
    del peers.DESIGNERS["spy"]
  replay_costs = {}
  for m in Spy.seen:
    assert m.fidelity == "profile" and m.provenance.get("replay") == "synthetic"
    i = task.table.index[m.candidate]
    assert m.cost_s == task.table.cost_s[i, m.provenance["repeat"]]
    replay_costs[m.candidate.key] = m.cost_s
  # what the designer saw is exactly what the loop charged, and within budget + one evaluation
  assert sum(replay_costs.values()) == pytest.approx(result.cost_s) == pytest.approx(tr.total_cost_s)
  assert result.cost_s < task.budgets_s[-1] + task.table.cost_s.max()
  assert len(Spy.seen) == tr.paid_top == tr.suggested


def test_random_search_same_seed_same_curve():
  task = synthetic_task()
  a, _ = runner.run_one(task, "random", seed=5)
  b, _ = runner.run_one(task, "random", seed=5)
  c, _ = runner.run_one(task, "random", seed=6)
  assert a.costs == b.costs and a.best_true == b.best_true and a.costs
  assert (a.costs, a.best_true) != (c.costs, c.best_true)


def test_measures_on_a_hand_made_trace():
  tr = metrics.RunTrace("t", "d", 0, costs=[10.0, 20.0, 30.0, 40.0], best_true=[None, 80.0, 96.0, 99.0],
                        failed_paid={"oom": 1}, suggested=4, cpu_s=2.0)
  r = metrics.run_measures(tr, optimum=100.0, expert=50.0, budgets_s=(15.0, 30.0, 35.0))
  assert r["cost_to_5pct"] == 30.0 and r["cost_to_2pct"] == 40.0
  assert r["regret_at_budgets"] == pytest.approx([1.0, 0.04, 0.04])
  assert r["speedup_vs_expert"] == pytest.approx(96.0 / 50.0)
  assert r["infeasible_paid"] == 1 and r["overhead_s_per_suggestion"] == 0.5
  agg = metrics.aggregate("t", "d", [r, dict(r, seed=1, cost_to_5pct=None), dict(r, seed=2, cost_to_5pct=50.0)],
                          (15.0, 30.0, 35.0), (1, 2, 3))
  assert agg["cost_to_5pct"] == 50.0 and agg["cost_to_5pct_reached"] == 2
  assert metrics.quantile([1.0, None], 0.5) is None  # a median touching "never" is never


def test_truth_table_json_round_trip(tmp_path):
  task = synthetic_task(repeats=2)
  path = str(tmp_path / "t.json")
  truth.save_table(task.table, path)
  back = truth.load_table(path, task.space)
  assert back.candidates == task.table.candidates
  np.testing.assert_array_equal(back.cost_s, task.table.cost_s)
  assert back.failure_kind == task.table.failure_kind
  with open(path, "w") as f:
    f.write('{"format": "something else"}')
  with pytest.raises(truth.TruthError, match="not a scoutbench truth table"):
    truth.load_table(path)


@pytest.mark.skipif(not os.path.exists(REAL_TABLE), reason="the committed real-task table is not there yet")
def test_real_task_replays_its_committed_measurements(tmp_path):
  import gin
  from autoscout_jax.bench.__main__ import load_task_file
  gin.add_config_file_search_path(tasks.repo_root())
  spec = load_task_file(os.path.join(tasks.repo_root(), "gin", "bench", "real_tiny_cpu8.gin"))
  task = tasks.build_task(spec, str(tmp_path))
  t = task.table
  assert t.source_fidelity == "profile" and t.repeats >= 2
  assert t.provenance.get("kind") == "measured" and "jax_version" in t.provenance
  assert set(task.candidates) == set(t.candidates)
  ev = ReplayEvaluator(t, seed=0)
  store = MemoryStore()
  # the replayed profile alone (the task's cheap fidelities are not run here)
  problem = dataclasses.replace(runner.task_problem(task), fidelities=("profile",))
  res = run_search(problem, RandomSearch(problem, 0), {"profile": ev}, store,
                   budget_s=task.budgets_s[0], batch_size=1, screen_fidelities=(), compare_default=False)
  assert res.measurements
  for m in res.measurements:
    i, r = t.index[m.candidate], m.provenance["repeat"]
    assert m.cost_s == t.cost_s[i, r]
    if m.feasible:
      assert m.metrics.step_time_s == t.step_time_s[i, r]
      assert m.metrics.extra["step_times_s"] == t.extra[i][r]["step_times_s"]
  assert res.cost_s == pytest.approx(sum(c for _, _, c in ev.served))


def test_cheap_answers_are_shared_by_a_tasks_runs_and_still_paid():
  from autoscout_jax.bench.replay import FixedCostEvaluator

  class Counting(Formula):
    calls = 0

    def evaluate(self, problem, candidates):
      Counting.calls += len(candidates)
      return super().evaluate(problem, candidates)

  task = synthetic_task()
  problem = Problem(task.workload, task.cluster, task.space, ("event",))
  memo: dict = {}
  first = FixedCostEvaluator(Counting(), 2.0, memo=memo).evaluate(problem, task.candidates[:5])
  again = FixedCostEvaluator(Counting(), 2.0, memo=memo).evaluate(problem, task.candidates[:7])
  assert Counting.calls == 7  # the second run asked the simulator only for the two it had not seen
  assert [m.metrics for m in again[:5]] == [m.metrics for m in first]
  assert all(m.cost_s == 2.0 for m in again) and [m.candidate for m in again] == task.candidates[:7]
