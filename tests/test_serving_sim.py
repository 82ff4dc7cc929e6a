"""The F0 serving model (sim/serving.py): the physics it promises."""

import dataclasses

import pytest

from autoscout_jax.sim import hardware, serving
from autoscout_jax.sim.serving import EngineLayout, ServingPlan, ServingRequest
from autoscout_jax.sim.serving_catalog import ARCHS, find_arch

LLAMA70 = ARCHS["meta-llama/Llama-3.1-70B"]
LLAMA8 = ARCHS["meta-llama/Llama-3.1-8B-Instruct"]
DSR1 = ARCHS["deepseek-ai/DeepSeek-R1"]
H100 = hardware.SYSTEMS["dgx_h100"]


def _plan(tp=1, batch=32, pp=1, ep=1, attn_dp=1, **kw):
  kw.setdefault("weight_dtype", "fp8")
  return ServingPlan(layout=EngineLayout(tp=tp, pp=pp, ep=ep, attn_dp=attn_dp, batch=batch), **kw)


def test_more_tensor_parallelism_lowers_tpot_of_a_big_model():
  req = ServingRequest(1024, 1024, 32)
  tpot = {tp: serving.predict(_plan(tp=tp), LLAMA70, H100, req).tpot_s for tp in (1, 2, 4, 8)}
  assert tpot[1] > tpot[2] > tpot[4] > tpot[8]
  # Weight reads halve with tp but collectives and kernel floors do not:
  # the gain shrinks as tp grows.
  assert tpot[1] / tpot[2] > tpot[4] / tpot[8] > 1.0


def test_tensor_parallelism_across_nodes_loses_when_communication_dominates():
  req = ServingRequest(1024, 256, 64)
  in_node = serving.predict(_plan(tp=8, batch=64), LLAMA8, H100, req).tpot_s
  across = serving.predict(_plan(tp=16, batch=64), LLAMA8, H100, req).tpot_s
  assert across > in_node  # a 16-way all-reduce over InfiniBand costs more than the halved weight reads save


def test_kv_capacity_bounds_the_batch():
  req = ServingRequest(8192, 8192, 4096)
  p = serving.predict(_plan(tp=1, batch=4096, engine="trtllm"), LLAMA70, hardware.SYSTEMS["dgx_h200"], req)
  assert p.fits
  assert 1 <= p.effective_batch < 4096
  # The batch the cache holds: capacity / tokens per sequence.
  assert p.effective_batch == pytest.approx(p.kv_capacity_tokens / (8192 + 8192), abs=1)
  short = serving.predict(_plan(tp=1, batch=4096, engine="trtllm"), LLAMA70, hardware.SYSTEMS["dgx_h200"],
                          ServingRequest(1024, 1024, 4096))
  assert short.effective_batch > p.effective_batch
  # More memory for the cache, or half-size fp8 entries, hold more sequences.
  fp8 = serving.predict(_plan(tp=1, batch=4096, engine="trtllm", kv_dtype="fp8"), LLAMA70,
                        hardware.SYSTEMS["dgx_h200"], req)
  assert fp8.kv_capacity_tokens == pytest.approx(2 * p.kv_capacity_tokens, rel=1e-6)
  less = serving.predict(_plan(tp=1, batch=4096, engine="trtllm", kv_fraction=0.5), LLAMA70,
                         hardware.SYSTEMS["dgx_h200"], req)
  assert less.effective_batch < p.effective_batch
  # Requests beyond the cache wait under TRT-LLM's no-eviction scheduler.
  assert p.ttft_s > 10 * serving.predict(_plan(tp=1, batch=8, engine="trtllm"), LLAMA70,
                                         hardware.SYSTEMS["dgx_h200"], ServingRequest(8192, 8192, 8)).ttft_s


def test_mla_cache_is_replicated_over_tensor_ranks_but_split_by_attention_dp():
  sysm = hardware.SYSTEMS["dgx_b200"]
  req = ServingRequest(1024, 1024, 256)
  tp8 = serving.predict(_plan(tp=8, ep=8, batch=256), DSR1, sysm, req)
  dp8 = serving.predict(_plan(tp=1, attn_dp=8, ep=8, batch=256), DSR1, sysm, req)
  # The same 8 GPUs and weights per GPU for the experts, but attention-DP
  # keeps 1/8 of the sequences' latents per GPU: ~8x the sequences fit.
  assert dp8.kv_capacity_tokens > 4 * tp8.kv_capacity_tokens


def test_decode_is_memory_bound_and_prefill_compute_bound():
  sysm = hardware.SYSTEMS["dgx_h100"]
  ttft = {n: serving.predict(_plan(tp=8, batch=1), LLAMA70, sysm, ServingRequest(n, 512, 1)).ttft_s
          for n in (128, 2048, 4096, 8192)}
  # Compute-bound prefill: doubling a long prompt doubles the added time
  # (a little more: causal attention is quadratic).
  ratio = (ttft[8192] - ttft[4096]) / (ttft[4096] - ttft[2048])
  assert 1.9 < ratio < 2.5
  # Memory-bound decode: TPOT barely moves with 64x the context of weights-dominated reads,
  small = serving.predict(_plan(tp=8, batch=1), LLAMA70, sysm, ServingRequest(128, 512, 1))
  big = serving.predict(_plan(tp=8, batch=1), LLAMA70, sysm, ServingRequest(8192, 512, 1))
  assert small.tpot_s < big.tpot_s < 1.3 * small.tpot_s
  # and a batch of 16 costs far less than 16x one sequence's TPOT (weights are shared).
  b16 = serving.predict(_plan(tp=8, batch=16), LLAMA70, sysm, ServingRequest(128, 512, 16))
  assert small.tpot_s < b16.tpot_s < 3 * small.tpot_s


def test_disaggregated_decode_pays_no_prefill():
  sysm = hardware.SYSTEMS["dgx_h200"]
  req = ServingRequest(8192, 512, 64)
  agg = serving.predict(_plan(tp=8, batch=64), LLAMA70, sysm, req)
  dis = serving.predict(dataclasses.replace(_plan(tp=8, batch=1), decode_layout=EngineLayout(tp=8, batch=64),
                                            decode_replicas=1), LLAMA70, sysm, req)
  assert dis.tpot_s < agg.tpot_s
  assert dis.tokens_per_s_per_device > 0 and agg.throughput_tok_s > 0


def test_weights_that_do_not_fit_are_named():
  p = serving.predict(_plan(tp=1, batch=1, weight_dtype="bf16"), LLAMA70, H100, ServingRequest(128, 128, 1))
  assert not p.fits and "weights need" in p.reason


def test_plan_values_refuse_nonsense():
  with pytest.raises(ValueError, match="ep"):
    EngineLayout(tp=2, ep=4)
  with pytest.raises(ValueError, match="kv_dtype"):
    _plan(kv_dtype="int2")
  with pytest.raises(ValueError, match="decode_replicas"):
    ServingPlan(layout=EngineLayout(), decode_layout=EngineLayout())
  with pytest.raises(ValueError, match="isl"):
    ServingRequest(0, 10)
  assert find_arch("nvidia/DeepSeek-R1-NVFP4") is DSR1 and find_arch("no/such-model") is None


def test_training_models_map_onto_the_serving_model():
  from autoscout_jax.sim import catalog
  from autoscout_jax.sim.serving_catalog import arch_from_model
  for name in ("llama3_70b", "mixtral_8x7b", "gpt3_175b"):
    model, _ = catalog.find_model(name)
    arch = arch_from_model(model)
    total = arch.active_params_per_token() + (arch.experts - arch.top_k) * arch.moe_layers * arch.expert_params
    # Same weights as the training catalog counts (norms and the tied/untied
    # embedding aside: within 3 %).
    assert total == pytest.approx(catalog.param_count(model), rel=0.03), name
  p = serving.predict(_plan(tp=8, batch=16), arch_from_model(catalog.find_model("llama3_70b")[0]), H100,
                      ServingRequest(1024, 256, 16))
  assert p.fits and p.tpot_s > 0


def test_throughput_is_bounded_by_what_the_cache_holds():
  sysm = hardware.SYSTEMS["dgx_h100"]
  req = ServingRequest(1024, 512, 256)
  small = serving.predict(_plan(tp=2, batch=256, kv_fraction=0.1), LLAMA70, sysm, req)
  big = serving.predict(_plan(tp=2, batch=256, kv_fraction=0.9), LLAMA70, sysm, req)
  assert small.effective_batch < big.effective_batch <= 256
  assert small.throughput_tok_s < big.throughput_tok_s
  # Little's law on what is served: sequences at once / time per request.
  want = small.effective_batch / (small.ttft_s + 512 * small.tpot_s) * 512
  assert small.throughput_tok_s == pytest.approx(want)


def test_kv_fraction_of_the_whole_memory():
  sysm = hardware.SYSTEMS["dgx_h200"]
  req = ServingRequest(1024, 1024, 64)
  after = serving.predict(_plan(tp=4, batch=64, kv_fraction=0.2), LLAMA70, sysm, req)
  total = serving.predict(_plan(tp=4, batch=64, kv_fraction=0.2, kv_of_total=True), LLAMA70, sysm, req)
  # 20 % of 141 GB is more than 20 % of what ~18 GB of weights and the reserve leave, yet
  # never more than what they leave.
  assert total.kv_capacity_tokens > after.kv_capacity_tokens
  most = serving.predict(_plan(tp=4, batch=64, kv_fraction=1.0, kv_of_total=True), LLAMA70, sysm, req)
  allfree = serving.predict(_plan(tp=4, batch=64, kv_fraction=1.0), LLAMA70, sysm, req)
  assert most.kv_capacity_tokens == pytest.approx(allfree.kv_capacity_tokens)
