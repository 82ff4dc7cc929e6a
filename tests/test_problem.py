"""The run's Problem: built once from the run's inputs, handed to designer
factories and evaluators, so nobody rebuilds a space or guesses a fidelity."""

import pytest

from autoscout_jax import experiment
from autoscout_jax.designers import RandomSearch
from autoscout_jax.measurement import INVALID
from autoscout_jax.problem import Cluster, DefaultError, Problem, expert_default
from autoscout_jax.sim import analytic, catalog, event, hardware
from autoscout_jax.targets import megatron


def llama_8b():
  return catalog.make_workload("llama3_8b", 8), hardware.make_cluster("dgx_h100", 8)


def test_problem_orders_fidelities_and_rejects_bad_ones():
  wl, cl = llama_8b()
  space = megatron.space(wl, cl)
  p = Problem(wl, cl, space, ("event", "analytic"))
  assert p.fidelities == ("analytic", "event") and p.top == "event" and p.family == "megatron"
  assert isinstance(cl, Cluster)
  with pytest.raises(ValueError, match="unknown fidelity 'fast'"):
    Problem(wl, cl, space, ("fast",))
  with pytest.raises(ValueError, match="repeat"):
    Problem(wl, cl, space, ("event", "event"))
  with pytest.raises(DefaultError, match="not in space"):
    expert_default(megatron.space(wl, cl, micro_batch_sizes=(2,)), wl)


@pytest.mark.parametrize("evaluator", [analytic.AnalyticEvaluator(), event.EventEvaluator()])
def test_simulators_measure_the_runs_space_not_a_rebuilt_default(evaluator):
  """A space restricted by its factory's arguments (micro_batch_sizes=(32,),
  outside the default space's 1..16) is the space the simulators check."""
  wl, cl = llama_8b()
  space = megatron.space(wl, cl, micro_batch_sizes=(32,))
  cands = space.enumerate()  # most of them run out of memory at 32 sequences a micro-batch: score them all
  assert all(c["micro_batch_size"] == 32 for c in cands)
  ms = evaluator.evaluate(Problem(wl, cl, space, (evaluator.fidelity,)), cands)
  assert all(m.metrics.failure_kind != INVALID for m in ms), [m.metrics.error for m in ms]
  assert any(m.feasible and m.metrics.tokens_per_s > 0 for m in ms)
  # and a candidate outside the run's space is invalid there
  other = megatron.space(wl, cl).make(wl.default_values)
  (m,) = evaluator.evaluate(Problem(wl, cl, space, (evaluator.fidelity,)), [other])
  assert m.metrics.failure_kind == INVALID and "micro_batch_size" in m.metrics.error


def test_experiment_hands_the_designer_factory_one_problem(tmp_path):
  wl, cl = llama_8b()
  seen = []

  def designer_fn(problem, seed):
    seen.append((problem, seed))
    return RandomSearch(problem, seed)

  space_fn = lambda w, c: megatron.space(w, c, micro_batch_sizes=(1, 2))
  res = experiment.run_experiment(str(tmp_path), wl, cl, space_fn, designer_fn,
                                  [event.EventEvaluator(), analytic.AnalyticEvaluator()],
                                  batch_size=2, max_rounds=1, seed=5, printer=lambda s: None)
  ((problem, seed),) = seen
  assert seed == 5 and problem.fidelities == ("analytic", "event")
  assert problem.space.name == res.best.provenance["space"]
  assert problem.default == problem.space.make(wl.default_values)
  assert problem.space["micro_batch_size"].values == (1, 2)
