"""Measured serving tasks (bench/serving_tables.py): groups of aiconfigurator's sample as scoutbench tasks."""

import itertools
import math

import numpy as np
import pytest

from autoscout_jax.bench import serving_tables as st
from autoscout_jax.bench import tasks, truth
from autoscout_jax.problem import Problem

NAME = "serving_llama3_70b_h200_trtllm_fp8_8k1k"


@pytest.fixture(scope="module")
def parts():
  group, ttft, tpot = st.task_group(NAME), st.TASKS[NAME][1], st.TASKS[NAME][2]
  wl = st.workload(group, ttft, tpot)
  cl = st.cluster(group)
  return group, wl, cl, st.space(wl, cl, group), st.truth_table(NAME)


def test_every_task_group_has_twenty_measured_configurations():
  for name in st.TASKS:
    assert len(st.group_configs(st.task_group(name))) >= 20, name


def test_candidates_are_exactly_the_measured_configurations(parts):
  group, wl, cl, space, table = parts
  cands = space.enumerate()
  assert set(cands) == set(table.candidates) and len(cands) == len(st.group_configs(group))
  assert space.validate(space.make(wl.default_values)) == []


def test_unmeasured_combinations_are_refused():
  name = "serving_minimax_m2_5_b200_vllm_fp8_1k1k"  # a group that did not measure the full grid
  group = st.task_group(name)
  wl = st.workload(group, *st.TASKS[name][1:])
  space = st.space(wl, st.cluster(group), group)
  measured = set(space.enumerate())
  names = [k.name for k in space.knobs]
  grid = [space.make(dict(zip(names, v))) for v in itertools.product(*(space[n].values for n in names))]
  odd = [c for c in grid if c not in measured]
  assert odd and len(measured) == len(st.group_configs(group))
  assert all(any(v.constraint == "measured_configuration" for v in space.validate(c)) for c in odd[:20])


def test_truth_is_slo_constrained_throughput_per_gpu(parts):
  group, wl, cl, space, table = parts
  ttft_slo, tpot_slo = st.TASKS[NAME][1], st.TASKS[NAME][2]
  cfgs = {space.make(c.knobs): c for c in st.group_configs(group)}
  n_slo = 0
  for i, cand in enumerate(table.candidates):
    c = cfgs[cand]
    tps, ttft, tpot = st.measured_objective(c.rows[0], c)
    if ttft <= ttft_slo and tpot <= tpot_slo:
      assert table.tokens_per_s[i, 0] == pytest.approx(tps)
    else:
      n_slo += 1
      assert table.failure_kind[i][0] == "slo" and math.isnan(table.tokens_per_s[i, 0])
  assert 0 < n_slo < len(table.candidates)
  # Little's law by hand for one row: concurrency x osl / request time / GPUs.
  c = next(iter(cfgs.values()))
  r = c.rows[0]
  conc = st.silicon.concurrency(r)
  want = conc * 1024 / ((float(r["silicon_ttft_ms"]) + 1023 * float(r["silicon_tpot_ms"])) / 1e3) / c.gpus
  assert st.measured_objective(r, c)[0] == pytest.approx(want)


def test_committed_truth_matches_the_sample(parts):
  *_, table = parts
  committed = truth.load_table(f"{tasks.repo_root()}/experiments/scoutbench/{NAME}.json", parts[3])
  assert committed.candidates == table.candidates
  np.testing.assert_allclose(committed.true_tokens_per_s, table.true_tokens_per_s, rtol=1e-9)


def test_cheap_fidelity_scores_every_candidate(parts):
  group, wl, cl, space, table = parts
  ev = st.SampleServingEvaluator(*st.TASKS[NAME][1:])
  ms = ev.evaluate(Problem(wl, cl, space, ("analytic", "profile")), table.candidates)
  assert len(ms) == len(table.candidates)
  kinds = {m.metrics.failure_kind for m in ms}
  assert kinds <= {None, "slo", "oom"} and None in kinds
  ok = [(m.metrics.tokens_per_s, table.true_value(m.candidate)) for m in ms if m.feasible]
  assert all(p > 0 for p, _ in ok)
  # Informative: the predicted per-GPU throughput ranks the configurations
  # both call feasible in the measured order more often than not.
  both = [(p, t) for p, t in ok if t is not None]
  if len(both) >= 4:
    p, t = np.array(both).T
    concord = np.mean([(p[i] - p[j]) * (t[i] - t[j]) > 0 for i in range(len(p)) for j in range(i)])
    assert concord > 0.5
