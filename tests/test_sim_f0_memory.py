"""F0's memory model against hand-computed cases (weights + gradients +
optimizer under each sharding; Korthikanti et al. activation formulas) and
its monotonic responses to recompute and tensor parallelism."""

import numpy as np
import pytest

from autoscout_jax.sim import catalog, costs, hardware, spaces
from autoscout_jax.workload import Workload

C = costs.SimConstants().as_dict()


def _plan(**kw):
  base = dict(tp=1, pp=1, dp=1, cp=1, ep=1, etp=1, vp=1, mbs=1, sp=0, dist_opt=0, recompute=0, rc_block=0,
              rc_layers=1, overlap_grad=0, overlap_param=0, bucket_params=40e6, tp_overlap=0, global_batch=8,
              layers=24, node_size=8)
  flash = kw.pop("flash", 1.0)
  fsdp = kw.pop("fsdp", 0.0)
  base.update(kw)
  p = spaces.megatron_plan(**base, fsdp=fsdp, flash=flash)
  return {k: float(v) for k, v in p.items()}


def _costs(model_name, **kw):
  wl = Workload("w", catalog.find_model(model_name)[0], global_batch=kw.get("global_batch", 8))
  m = costs.model_scalars(wl)
  hw = hardware.cluster_scalars(hardware.make_cluster("dgx_a100_80gb", 8))
  return costs.layer_costs(np, _plan(layers=m["L"], **kw), m, hw, C), m, wl


def test_replicated_state_is_18_bytes_per_parameter():
  lc, _, wl = _costs("gpt_1.7b")
  # bf16 weights (2) + fp32 gradients (4) + fp32 master, Adam m and v (12)
  assert lc["mem_state"] == pytest.approx(18 * catalog.param_count(wl.model), rel=1e-5)


def test_distributed_optimizer_is_zero1_not_zero2():
  lc, _, wl = _costs("gpt_1.7b", dp=8, dist_opt=1)
  p = catalog.param_count(wl.model)
  # weights and gradients stay whole; only master + Adam are split over dp
  assert lc["mem_state"] == pytest.approx(p * (2 + 4 + 12 / 8), rel=1e-5)


def test_fsdp_shards_everything_and_holds_two_gathered_units():
  lc, m, wl = _costs("gpt_1.7b", dp=8, fsdp=1)
  p = catalog.param_count(wl.model)
  layer = costs.layer_params(np, m)
  # the unit in use and the prefetched one in bf16, one unsharded fp32
  # gradient; the (larger) embedding is a unit too
  unit = max(layer["attn"] + layer["dense"], layer["emb"])
  assert lc["mem_state"] == pytest.approx(p * 18 / 8 + unit * (2 * 2 + 4), rel=1e-5)


def test_activations_follow_korthikanti_without_flash():
  # GPT layer, tensor parallel t, no sequence parallelism, no recompute,
  # scores materialized: s*b*h*(8 + 24/t) + 5*a*s^2*b/t bytes (the paper's
  # 10 + 24/t less its two 1-byte dropout masks), plus 4 bytes of softmax
  # statistics per head per token.
  t, b = 4, 2
  lc, m, _ = _costs("gpt_18.4b", tp=t, dp=2, mbs=b, flash=0.0)
  s, h, a = m["s"], m["h"], m["a"]
  expected = s * b * h * (8 + 24 / t) + 5 * a * s * s * b / t + 4 * a * s * b / t
  assert lc["mem_act_layer"] == pytest.approx(expected, rel=1e-6)


def test_sequence_parallelism_divides_every_activation_by_t():
  t = 8
  lc, m, _ = _costs("gpt_18.4b", tp=t, sp=1)
  s, h, a = m["s"], m["h"], m["a"]
  # flash attention: no s^2 term; 32 h-sized bf16 values per token, all / t
  assert lc["mem_act_layer"] == pytest.approx(s * h * 32 / t + 4 * a * s / t, rel=1e-6)


def test_more_recompute_means_less_memory_and_more_time():
  res = [_costs("gpt_18.4b", tp=8, sp=1, recompute=r, mbs=4)[0] for r in (0, 1, 2)]
  mem = [r["mem_peak"] for r in res]
  time = [r["bwd_s"] for r in res]
  assert mem[0] > mem[1] > mem[2]
  assert time[0] < time[1] < time[2]


def test_larger_tp_inside_a_node_means_less_memory_per_device():
  mem = [_costs("gpt_18.4b", tp=t, dp=8 // t, sp=1)[0]["mem_peak"] for t in (1, 2, 4, 8)]
  assert all(a > b for a, b in zip(mem, mem[1:]))


def test_first_pipeline_stage_holds_pp_micro_batches():
  one = _costs("gpt_18.4b", pp=4, global_batch=64)[0]
  # 1F1B: the first stage keeps min(pp, micro-batches) micro-batches alive
  few = _costs("gpt_18.4b", pp=4, global_batch=2)[0]
  act = one["mem_act_layer"] * one["layers_per_stage"]
  assert one["mem_first"] - few["mem_first"] == pytest.approx(2 * act * (1 + C["mem_frag"]), rel=0.02)


def test_fp8_is_not_one_byte_per_tensor():
  wl8 = Workload("w", catalog.find_model("llama3_8b")[0], global_batch=8, precision="fp8")
  wl16 = Workload("w", catalog.find_model("llama3_8b")[0], global_batch=8, precision="bf16")
  hw = hardware.cluster_scalars(hardware.make_cluster("dgx_h100", 8))
  plan = _plan(layers=32, dp=8, dist_opt=1)
  lc8 = costs.layer_costs(np, plan, costs.model_scalars(wl8), hw, C)
  lc16 = costs.layer_costs(np, plan, costs.model_scalars(wl16), hw, C)
  p = catalog.param_count(wl8.model)
  assert lc8["mem_state"] == pytest.approx(p * (1 + 4 + 12 / 8), rel=1e-5)  # fp32 grads, master, Adam stay
  assert 0.6 * lc16["mem_act_layer"] < lc8["mem_act_layer"] < lc16["mem_act_layer"]


def test_embedding_and_output_layer_are_counted():
  lc, m, wl = _costs("llama3_8b", global_batch=1)
  # untied 128k vocabulary: input and output matrices, plus fp32 logits
  emb_state = 2 * m["V"] * m["h"] * 18
  assert lc["mem_state"] > emb_state
  assert lc["head_fwd_s"] > 0.05 * lc["fwd_s"] * m["L"]
