"""F0 as a whole: the jitted vectorized path equals the per-candidate numpy
path, the step-time composition (pipeline bubble, breakdown), topology,
and the AnalyticEvaluator's measurements."""

import numpy as np
import pytest

from autoscout_jax.measurement import INVALID, OOM
from autoscout_jax.problem import Problem
from autoscout_jax.sim import analytic, catalog, costs, hardware
from autoscout_jax.space import Candidate
from autoscout_jax.targets import jax_mesh, megatron
from autoscout_jax.workload import Workload


@pytest.fixture(scope="module")
def setup():
  cluster = hardware.make_cluster("dgx_h100", 64)
  wl = catalog.make_workload("llama3_70b", 64)
  space = megatron.space(wl, cluster)
  return space, wl, cluster


def _row(plan, i):
  return {k: float(v[i]) for k, v in plan.items()}


def test_vectorized_f0_equals_the_scalar_path(setup):
  space, wl, cluster = setup
  cands = space.sample(np.random.default_rng(0), 24)
  plan = analytic.candidates_to_arrays(space, cands, wl, cluster)
  model, hw = costs.model_scalars(wl), hardware.cluster_scalars(cluster)
  vec = analytic.simulate_f0(plan, model, hw)
  for i in range(len(cands)):
    ref = analytic.simulate_f0_reference(_row(plan, i), model, hw)
    for k in ("step_time_s", "tokens_per_s", "mfu", "peak_mem_bytes", "compute_s", "dp_comm_s", "bubble_s"):
      assert vec[k][i] == pytest.approx(ref[k], rel=2e-3, abs=1e-9), (k, cands[i].short())
    assert bool(vec["feasible"][i]) == bool(ref["feasible"])


def test_jax_mesh_candidates_score_the_same_way():
  cluster = hardware.make_cluster("tpu_v5p", 128, devices_per_node=64)
  wl = catalog.make_workload("gpt_22b", 128, space="jax_mesh", devices_per_slice=64)
  space = jax_mesh.space(wl, cluster)
  cands = space.sample(np.random.default_rng(1), 8)
  plan = analytic.candidates_to_arrays(space, cands, wl, cluster)
  model, hw = costs.model_scalars(wl), hardware.cluster_scalars(cluster)
  vec = analytic.simulate_f0(plan, model, hw)
  for i in range(len(cands)):
    ref = analytic.simulate_f0_reference(_row(plan, i), model, hw)
    assert vec["step_time_s"][i] == pytest.approx(ref["step_time_s"], rel=2e-3)
  assert np.all(plan["zero"][plan["shard"] > 1] == 3)  # fsdp axes are ZeRO-3


def test_breakdown_adds_up_to_the_step(setup):
  space, wl, cluster = setup
  plan = analytic.candidates_to_arrays(space, space.sample(np.random.default_rng(2), 16), wl, cluster)
  out = analytic.simulate_f0(plan, costs.model_scalars(wl), hardware.cluster_scalars(cluster))
  total = sum(out[k] for k in analytic.BREAKDOWN)
  np.testing.assert_allclose(total, out["step_time_s"], rtol=1e-4)


def _step(wl, cluster, consts=None, **plan_kw):
  base = dict(tp=4, pp=4, cp=1, dp=4, ep=1, etp=1, vp=1, mbs=1, sp=1, dist_opt=1, recompute=1, rc_block=0,
              rc_layers=1, overlap_grad=1, overlap_param=1, bucket_params=40e6, tp_overlap=0,
              global_batch=wl.global_batch, layers=wl.model.num_layers, node_size=cluster.node_size)
  base.update(plan_kw)
  plan = {k: float(v) for k, v in megatron.megatron_plan(**base).items()}
  return analytic.simulate_f0_reference(plan, costs.model_scalars(wl), hardware.cluster_scalars(cluster), consts)


def test_pipeline_bubble_is_pp_minus_one_over_m_and_shrinks_with_interleaving(setup):
  _, wl, cluster = setup
  one = _step(wl, cluster, vp=1)
  per_mb = (one["step_time_s"] - one["bubble_s"] - one["pp_comm_s"] - one["dp_comm_s"] - one["optimizer_s"]) / 32
  # (pp-1) slots of the AVERAGE stage (m = 128/4 = 32): the steady state runs
  # at the slower end stage (output layer on the last), fill/drain does not
  assert 0.9 * 3 * per_mb < one["bubble_s"] < 3 * per_mb
  inter = _step(wl, cluster, vp=5)
  assert inter["bubble_s"] == pytest.approx(one["bubble_s"] / 5, rel=1e-6)


def test_tensor_parallelism_across_nodes_is_slower(setup):
  _, wl, cluster = setup
  inside = _step(wl, cluster, tp=8, pp=2, dp=4)
  across = _step(wl, cluster, tp=8, pp=2, dp=4, node_size=4)  # same layout, 4-GPU nodes: tp leaves the node
  # 4 members per node drive 4 NICs (50 GB/s each): 200 GB/s against NVLink's 450
  assert across["tp_comm_s"] > 1.8 * inside["tp_comm_s"]
  assert across["step_time_s"] > inside["step_time_s"]


def test_comm_overlap_knobs_reduce_exposed_time(setup):
  _, wl, cluster = setup
  assert _step(wl, cluster, tp_overlap=1)["tp_comm_s"] < _step(wl, cluster, tp_overlap=0)["tp_comm_s"]
  assert _step(wl, cluster, overlap_grad=1)["dp_comm_s"] <= _step(wl, cluster, overlap_grad=0)["dp_comm_s"]


def test_flash_attention_makes_long_sequences_cheaper():
  cluster = hardware.make_cluster("dgx_h100", 8)
  wl = catalog.make_workload("llama3_8b", 8, seq_len=32768, global_batch=8)
  kw = dict(tp=8, pp=1, dp=1, recompute=0, global_batch=8)
  flash = _step(wl, cluster, **kw, flash=1.0)
  scores = _step(wl, cluster, **kw, flash=0.0)
  assert scores["compute_s"] > 1.5 * flash["compute_s"]
  assert scores["peak_mem_bytes"] > 2 * flash["peak_mem_bytes"]


def test_evaluator_returns_one_measurement_per_candidate_in_order(setup):
  space, wl, cluster = setup
  good = space.sample(np.random.default_rng(3), 5)
  bad = Candidate.of({**good[0].values, "tensor_model_parallel_size": 16, "data_parallel_size": 1})
  huge = space.make({**wl.default_values, "micro_batch_size": 2, "recompute_granularity": "none",
                     "pipeline_model_parallel_size": 1, "context_parallel_size": 1,
                     "tensor_model_parallel_size": 1, "data_parallel_size": 64,
                     "use_distributed_optimizer": False})
  ms = analytic.AnalyticEvaluator().evaluate(Problem(wl, cluster, space, ("analytic",)), good + [bad, huge])
  assert [m.candidate for m in ms] == good + [bad, huge]
  assert all(m.fidelity == "analytic" and m.cost_s > 0 for m in ms)
  assert ms[5].metrics.failure_kind == INVALID
  assert ms[6].metrics.failure_kind == OOM and "GiB" in ms[6].metrics.error
  for m in ms[:5]:
    if m.feasible:
      assert m.metrics.tokens_per_s == pytest.approx(wl.tokens_per_step / m.metrics.step_time_s)
      assert set(analytic.BREAKDOWN) <= set(m.metrics.breakdown)


def test_check_fits_names_a_workload_too_big_for_the_cluster():
  cluster = hardware.make_cluster("dgx_h100", 8)
  wl = catalog.make_workload("llama3_405b", 1024)
  msg = analytic.AnalyticEvaluator().check_fits(wl, cluster)
  assert msg and "llama3_405b" in msg and "exceed" in msg
  assert analytic.AnalyticEvaluator().check_fits(catalog.make_workload("llama3_8b", 8), cluster) is None


def test_scoring_a_whole_space_prefers_a_sensible_layout(setup):
  space, wl, cluster = setup
  table, out = analytic.score_space(space, wl, cluster)
  assert len(out["step_time_s"]) == len(table["micro_batch_size"]) == space.size()
  best = int(np.argmax(np.where(out["feasible"], out["tokens_per_s"], 0)))
  cand = space.candidates_from_table(table, [best])[0]
  assert cand["tensor_model_parallel_size"] <= 8  # TP stays inside the NVLink node
  assert 0.2 < out["mfu"][best] < 0.9


@pytest.mark.parametrize("L,pp,vp", [(70, 12, 1), (70, 72, 1), (70, 16, 1), (126, 8, 8), (61, 16, 1), (61, 8, 4),
                                     (94, 8, 4), (32, 4, 2), (30, 4, 1), (71, 2, 1), (48, 1, 1), (80, 3, 1)])
def test_f0_places_a_pipelines_layers_as_f1_does(L, pp, vp):
  from autoscout_jax.sim import event
  split = costs.stage_split(np, np.float64(L), np.float64(pp), np.float64(vp))
  per_rank = event.stage_layers(np.array([float(L)]), np.array([pp]), np.array([vp]), vp, pp)[0].sum(axis=0)
  assert split["layers_first"] == per_rank[0] and split["layers_last"] == per_rank[-1]
  assert split["layers_mid"] == (per_rank[1:-1].max() if pp > 2 else 0.0)
  assert split["layers_total"] == per_rank.sum() == L


def test_a_stage_whose_layer_slot_the_output_layer_takes_is_not_charged_both():
  # BLOOM's shape on 72 stages: 70 layers + embedding + loss, one per rank
  # (Megatron-DeepSpeed's 'type:transformer|embedding' partition). The
  # steady state goes at max(one layer, the output layer), not their sum.
  wl = Workload(name="bloom", model=catalog.find_model("bloom_176b")[0], global_batch=2048)
  cl = hardware.make_cluster("dgx_a100_80gb", 288)
  plan = dict(megatron.megatron_plan(1, 72, 1, 4, 1, 1, 1, 1, 0, 1, 2, 0, 1, 0, 0, 40e6, 0, 2048, 70, 8, flash=0.0))
  plan = {k: np.asarray(plan.get(k, costs.PLAN_DEFAULTS.get(k)), np.float64) for k in costs.PLAN_FIELDS}
  model, hw = costs.model_scalars(wl), hardware.cluster_scalars(cl)
  out = analytic.simulate_f0(plan, model, hw)
  lc = costs.layer_costs(np, plan, {k: np.float64(v) for k, v in costs.model_fields(model).items()},
                         {k: np.float64(v) for k, v in hw.items()}, analytic._consts(None))
  layer = float(lc["fwd_s"] + lc["bwd_s"] + lc["tp_fwd_s"] + lc["tp_bwd_s"])
  head = float(lc["head_fwd_s"] + lc["head_bwd_s"])
  per_mb = max(layer, head)
  steady = 512 * per_mb  # 2048 / (dp 4 x mbs 1) micro-batches
  assert float(out["compute_s"][0] + out["recompute_s"][0] + out["tp_comm_s"][0]) == pytest.approx(steady, rel=1e-3)
