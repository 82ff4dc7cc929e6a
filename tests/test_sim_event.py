"""F1 event simulator: the vectorized engine against the plain event loop,
pipeline physics (bubble, interleaving, overlap, contention), and the
evaluator on a catalog workload next to F0."""

import dataclasses

import numpy as np
import pytest

from autoscout_jax.problem import Problem
from autoscout_jax.sim import catalog, costs, event, hardware, spaces
from autoscout_jax.sim import event_reference as ref
from autoscout_jax.sim.analytic import BREAKDOWN, AnalyticEvaluator, candidates_to_arrays, simulate_f0
from autoscout_jax.sim.event_engine import PipelineInputs, simulate_pipeline


def uniform(pp=4, vp=1, m=8, f=1.0, b=2.0, n=1, **kw):
  """N identical candidates with uniform stages and no communication."""
  V, P = vp, pp
  full = lambda x: np.full((n, V, P), float(x))
  base = dict(pp=np.full(n, pp), vp=np.full(n, vp), m=np.full(n, m), fwd=full(f), bwd=full(b),
              fwd_comm=full(0), bwd_comm=full(0), dp=full(0), buckets=full(1), ag=full(0),
              p2p=np.zeros(n), p2p_shared=np.zeros(n, bool), p2p_async=np.zeros(n, bool),
              interference=np.zeros(n), overlap_grad=np.zeros(n, bool), overlap_param=np.zeros(n, bool),
              opt=np.zeros((n, P)))
  for k, v in kw.items():
    base[k] = np.broadcast_to(np.asarray(v), np.shape(base[k])).copy() if np.ndim(base[k]) else v
  return PipelineInputs(**base)


def random_inputs(rng, n):
  pp = rng.choice([1, 2, 3, 4, 8], n)
  vp = np.where(pp > 1, rng.integers(1, 4, n), 1)
  m = np.where(vp > 1, pp * rng.integers(1, 4, n), rng.integers(1, 13, n))
  V, P = 3, 8
  u = lambda lo, hi: rng.uniform(lo, hi, (n, V, P))
  fwd = u(0.5, 1.5)
  bwd = fwd * u(1.8, 2.5)
  some = lambda: rng.random((n, 1, 1)) < 0.5
  return PipelineInputs(
      pp=pp, vp=vp, m=m, fwd=fwd, bwd=bwd, fwd_comm=fwd * u(0, 0.3) * some(), bwd_comm=bwd * u(0, 0.3) * some(),
      dp=u(0.2, 3.0), buckets=rng.integers(1, 6, (n, V, P)).astype(float), ag=u(0.1, 1.0) * some(),
      p2p=rng.uniform(0, 0.5, n), p2p_shared=rng.random(n) < 0.5, p2p_async=rng.random(n) < 0.5,
      interference=rng.uniform(0, 0.2, n), overlap_grad=rng.random(n) < 0.6, overlap_param=rng.random(n) < 0.5,
      opt=rng.uniform(0.1, 0.5, (n, P)))


KEYS = ("step_time_s", "pipe_end_s", "dp_end_s", "busy_s", "send_s", "contention_s", "ag_wait_s", "idle_s",
        "tail_s")


def test_vectorized_engine_equals_the_event_loop():
  inp = random_inputs(np.random.default_rng(0), 48)
  out = simulate_pipeline(inp)
  assert not out["stalled"].any()
  for i in range(len(inp.pp)):
    want = ref.simulate_one(ref.row_of(inp, i))
    for k in KEYS:
      assert out[k][i] == pytest.approx(want[k], rel=1e-4, abs=1e-4), (i, k)


def test_long_runs_are_extrapolated_from_the_settled_schedule():
  rng = np.random.default_rng(1)
  base = random_inputs(rng, 6)
  inp = dataclasses.replace(base, pp=np.array([2, 2, 3, 2, 2, 3]), vp=np.array([1, 2, 1, 3, 1, 1]),
                            m=np.array([90, 80, 120, 70, 65, 100]))
  assert np.all(inp.m > 4 * 8 * inp.pp)  # all take the extrapolated path
  fast, full = simulate_pipeline(inp), simulate_pipeline(inp, extrapolate=False)
  for i in range(len(inp.pp)):
    want = ref.simulate_one(ref.row_of(inp, i))
    for k in ("step_time_s", "busy_s", "dp_end_s"):
      assert fast[k][i] == pytest.approx(want[k], rel=1e-3), (i, k)
      assert full[k][i] == pytest.approx(want[k], rel=1e-3), (i, k)


def test_reads_past_the_ring_are_redone_not_wrong(monkeypatch):
  from autoscout_jax.sim import event_engine
  inp = uniform(pp=8, vp=2, m=16, n=2, p2p=0.1)
  want = simulate_pipeline(inp)["step_time_s"]
  monkeypatch.setattr(event_engine, "RING", 2)  # too short for pp=8 interleaved: must retry
  np.testing.assert_allclose(simulate_pipeline(inp)["step_time_s"], want, rtol=1e-6)


def test_1f1b_bubble_is_pp_minus_1_passes():
  pp, m, f, b = 4, 6, 1.0, 2.0
  out = simulate_pipeline(uniform(pp=pp, m=m, f=f, b=b))
  ideal = m * (f + b)
  assert out["step_time_s"][0] == pytest.approx((m + pp - 1) * (f + b))
  assert out["idle_s"][0] / ideal == pytest.approx((pp - 1) / m)


def test_interleaving_divides_the_bubble_by_the_virtual_stages():
  pp, m, vp = 4, 8, 2
  plain = simulate_pipeline(uniform(pp=pp, m=m, f=1.0, b=2.0))
  inter = simulate_pipeline(uniform(pp=pp, vp=vp, m=m, f=0.5, b=1.0))  # same work per rank
  assert inter["busy_s"][0] == pytest.approx(plain["busy_s"][0])
  assert inter["idle_s"][0] == pytest.approx(plain["idle_s"][0] / vp, rel=0.05)


def test_a_slow_last_stage_sets_the_pace():
  bwd = np.full((1, 1, 4), 2.0)
  bwd[0, 0, 3] = 3.0  # output layer + loss on the last stage
  out = simulate_pipeline(uniform(pp=4, m=16, bwd=bwd))
  assert out["step_time_s"][0] >= 16 * 4.0  # 16 micro-batches at the last stage's 1 + 3 s
  assert out["idle_s"][0] > simulate_pipeline(uniform(pp=4, m=16))["idle_s"][0]


def test_overlapping_the_gradient_reduction_hides_it():
  kw = dict(pp=2, m=8, dp=np.full((1, 1, 2), 3.0), buckets=np.full((1, 1, 2), 8.0))
  off = simulate_pipeline(uniform(**kw))
  on = simulate_pipeline(uniform(overlap_grad=True, **kw))
  exposed = lambda o: o["dp_end_s"][0] - o["pipe_end_s"][0]
  assert exposed(off) == pytest.approx(3.0)
  assert exposed(on) < 0.5 * exposed(off)
  assert on["step_time_s"][0] < off["step_time_s"][0]


def test_two_transfers_on_one_link_take_longer_than_one():
  # rank 1 ends its last backward, its buckets queue on the NIC, then it sends
  # the gradient to rank 0 over the same NIC: the send shares the link
  kw = dict(pp=2, m=1, f=1.0, b=2.0, p2p=0.5, dp=np.full((1, 1, 2), 2.0), buckets=np.full((1, 1, 2), 1.0),
            overlap_grad=True)
  alone = simulate_pipeline(uniform(**kw))
  shared = simulate_pipeline(uniform(p2p_shared=True, **kw))
  assert alone["contention_s"][0] == 0.0
  # the DP queue still holds 2 s when the 0.5 s send starts: the send takes 2 x 0.5 s
  assert shared["step_time_s"][0] == pytest.approx(alone["step_time_s"][0] + 0.5)
  row = ref.row_of(uniform(p2p_shared=True, **kw), 0)
  assert ref.simulate_one(row)["step_time_s"] == pytest.approx(shared["step_time_s"][0])


def test_tp_traffic_on_the_dp_link_slows_the_overlapped_backward():
  kw = dict(pp=1, m=2, f=1.0, b=2.0, dp=np.full((1, 1, 1), 1.0), buckets=np.full((1, 1, 1), 4.0),
            overlap_grad=True)
  quiet = simulate_pipeline(uniform(**kw))
  shared = simulate_pipeline(uniform(bwd_comm=np.full((1, 1, 1), 0.8), **kw))
  assert shared["contention_s"][0] > 0
  assert shared["step_time_s"][0] > quiet["step_time_s"][0]


def test_interleaving_with_a_ragged_micro_batch_count_is_flagged_stalled():
  inp = uniform(pp=8, vp=2, m=10)  # the spaces forbid it: m must be a multiple of pp when interleaved
  assert simulate_pipeline(inp)["stalled"][0]
  with pytest.raises(RuntimeError, match="deadlocked"):
    ref.simulate_one(ref.row_of(inp, 0))


def test_bad_inputs_name_the_field():
  good = uniform()
  with pytest.raises(ValueError, match="fwd"):
    dataclasses.replace(good, fwd=np.zeros((1, 1, 2)))
  with pytest.raises(ValueError, match="interleaving"):
    uniform(pp=1, vp=2)


def test_stage_layers_count_embedding_and_loss_slots():
  def one(*vals):
    return [np.array([v]) for v in vals]

  L, pp, vp = one(96, 8, 3)
  lay = event.stage_layers(L, pp, vp, 3, 8)
  assert lay.sum() == 96 and lay.min() == lay.max() == 4
  L, pp, vp = one(126, 8, 8)  # Llama-3.1 405B: 126 + embedding + loss = 128 slots
  lay = event.stage_layers(L, pp, vp, 8, 8)
  assert lay.sum() == 126 and lay[0, 0, 0] == 1 and lay[0, 7, 7] == 1 and lay[0, 3, 3] == 2


# --- the adapter over the cost model, next to F0 -----------------------------------------


@pytest.fixture(scope="module")
def gpt():
  wl = catalog.make_workload("gpt3_175b", 1024)
  cl = hardware.make_cluster("dgx_a100_80gb", 1024)
  return wl, cl, spaces.megatron_training_space(wl, cl)


def _f0_f1(wl, cl, space, cands):
  plan = candidates_to_arrays(space, cands, wl, cl)
  args = (plan, costs.model_scalars(wl), hardware.cluster_scalars(cl))
  return simulate_f0(*args), event.simulate_f1(*args)


def test_f1_agrees_with_f0_without_pipeline_or_overlap(gpt):
  wl, cl, space = gpt
  base = dict(tensor_model_parallel_size=8, pipeline_model_parallel_size=1, data_parallel_size=128,
              use_distributed_optimizer=False, recompute_granularity="full", micro_batch_size=1)
  cands = [space.make(base), space.make(dict(base, micro_batch_size=4))]
  f0, f1 = _f0_f1(wl, cl, space, cands)
  np.testing.assert_allclose(f1["step_time_s"], f0["step_time_s"], rtol=0.01)
  assert set(f0) <= set(f1)


def test_f1_differs_from_f0_where_the_closed_forms_approximate(gpt):
  wl, cl, space = gpt
  default = space.make(wl.default_values)  # pp 8 x 3 virtual stages, overlapped DP
  f0, f1 = _f0_f1(wl, cl, space, [default])
  assert abs(f1["step_time_s"][0] / f0["step_time_s"][0] - 1) > 0.01
  assert f1["dp_comm_s"][0] < f0["dp_comm_s"][0]  # chunks' buckets reduce under later backwards
  parts = sum(f1[k][0] for k in BREAKDOWN)
  assert parts == pytest.approx(f1["step_time_s"][0], rel=1e-4)


def test_event_evaluator_measures_a_batch(gpt):
  wl, cl, space = gpt
  oom = space.make(dict(tensor_model_parallel_size=2, pipeline_model_parallel_size=1, data_parallel_size=512,
                        use_distributed_optimizer=False, recompute_granularity="none"))
  bad = space.make(wl.default_values).replace(micro_batch_size=3)
  cands = [space.make(wl.default_values), oom, bad]
  problem = Problem(wl, cl, space, ("analytic", "event"))
  ms = event.EventEvaluator().evaluate(problem, cands)
  assert [m.fidelity for m in ms] == ["event"] * 3
  assert ms[0].feasible and ms[0].metrics.tokens_per_s > 0 and 0 < ms[0].metrics.mfu < 1
  assert ms[0].metrics.breakdown["bubble_s"] > 0 and ms[0].cost_s > 0
  assert ms[1].metrics.failure_kind == "oom"
  assert ms[2].metrics.failure_kind == "invalid"
  f0 = AnalyticEvaluator().evaluate(problem, cands[:1])[0]
  assert ms[0].metrics.peak_mem_bytes == pytest.approx(f0.metrics.peak_mem_bytes)
