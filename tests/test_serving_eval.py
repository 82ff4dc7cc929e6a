"""The serving family's F0 evaluator (sim/serving_eval.py) on a cluster-scale serving space."""

import dataclasses

import pytest

from autoscout_jax.problem import Problem
from autoscout_jax.sim import catalog, hardware
from autoscout_jax.sim.serving_eval import ServingSimEvaluator
from autoscout_jax.targets import serving as target
from autoscout_jax.workload import ServingSpec, Workload


def _problem(ttft=None, tpot=None, precision="fp8"):
  model, _ = catalog.find_model("llama3_70b")
  wl = Workload("serve_llama3_70b", model, global_batch=64, task="serve", precision=precision,
                serving=ServingSpec(input_lens=(1024,), output_lens=(256,), ttft_slo_ms=ttft, tpot_slo_ms=tpot))
  cluster = hardware.make_cluster("dgx_h100", 8)
  space = target.space(wl, cluster, max_num_seqs=(8, 64, 256), disaggregation=True)
  return Problem(wl, cluster, space, ("analytic",))


def _cand(space, **kv):
  vals = {k.name: k.default for k in space.knobs}
  vals.update(kv)
  return space.make(vals)


def test_tokens_per_device_and_latencies_follow_the_layout():
  p = _problem()
  ev = ServingSimEvaluator()
  cands = [_cand(p.space, tensor_parallel_size=tp, data_parallel_size=8 // tp, max_num_seqs=64)
           for tp in (2, 4, 8)]
  ms = ev.evaluate(p, cands)
  assert all(m.feasible and m.fidelity == "analytic" and m.cost_s == 1.0 for m in ms)
  tpot = [m.metrics.extra["tpot_ms_p90"] for m in ms]
  assert tpot[0] > tpot[1] > tpot[2]  # more tensor parallelism, faster tokens for a 70B model
  assert ms[0].metrics.step_time_s == pytest.approx(tpot[0] / 1e3)
  for m in ms:  # the objective is per device used
    e = m.metrics.extra
    assert m.metrics.tokens_per_s == pytest.approx(e["throughput_tok_s"] / e["devices_used"])
    assert e["devices_used"] == 8


def test_slo_and_memory_failures_are_measurements():
  p = _problem(ttft=2000, tpot=25)
  ev = ServingSimEvaluator()
  small = _cand(p.space, tensor_parallel_size=8, data_parallel_size=1, max_num_seqs=8)
  big = _cand(p.space, tensor_parallel_size=2, data_parallel_size=4, max_num_seqs=256)
  ok, slo = ev.evaluate(p, [small, big])
  assert ok.feasible
  assert not slo.feasible and slo.metrics.failure_kind == "slo" and "TPOT" in slo.metrics.error
  assert slo.metrics.tokens_per_s is None and slo.objective is None  # no objective for a miss,
  assert slo.metrics.extra["tokens_per_s_per_device"] > 0  # but its throughput stays for the frontier
  bf16 = _problem(precision="bf16")
  one = _cand(bf16.space, tensor_parallel_size=1, data_parallel_size=8, max_num_seqs=8)
  (m,) = ev.evaluate(bf16, [one])
  assert m.metrics.failure_kind == "oom" and "weights need" in m.metrics.error


def test_disaggregated_candidates_are_scored():
  p = _problem()
  ev = ServingSimEvaluator()
  c = _cand(p.space, tensor_parallel_size=2, data_parallel_size=4, max_num_seqs=64, disaggregated=True,
            prefill_workers=1)
  (m,) = ev.evaluate(p, [c])
  assert m.feasible and m.metrics.extra["devices_used"] == 8
  assert ev.settings()["model"] == "sim.serving"
  assert dataclasses.asdict(ev.constants)["bw_eff"] > 0
