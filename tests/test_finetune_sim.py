"""Fine-tuning in the cluster simulators (F0/F1): frozen base weights carry
no gradients or optimizer state and skip their weight-gradient GEMMs, so a
LoRA step needs less memory and time than a full fine-tune of the same
layout, which matches pre-training; a published LoRA row gets a prediction."""

import dataclasses

import numpy as np
import pytest

from autoscout_jax.sim import analytic, catalog, costs, event, hardware, published
from autoscout_jax.targets import jax_mesh, megatron
from autoscout_jax.workload import Workload


def _kinds(wl: Workload) -> dict[str, Workload]:
  full = dataclasses.replace(wl, task="finetune")
  lora = dataclasses.replace(full, lora_rank=16, lora_targets=("query", "value"))
  qlora = dataclasses.replace(lora, frozen_dtype="int8")
  return dict(pretrain=wl, full=full, lora=lora, qlora=qlora)


@pytest.fixture(scope="module")
def megatron_setup():
  cluster = hardware.make_cluster("dgx_h100", 64)
  wl = catalog.make_workload("llama3_70b", 64)
  space = megatron.space(wl, cluster)
  cands = space.sample(np.random.default_rng(0), 32)
  return space, wl, cluster, cands


@pytest.mark.parametrize("sim", ["f0", "f1"])
def test_lora_needs_less_memory_and_time_than_full_finetuning(megatron_setup, sim):
  space, wl, cluster, cands = megatron_setup
  plan = analytic.candidates_to_arrays(space, cands, wl, cluster)
  hw = hardware.cluster_scalars(cluster)
  run = analytic.simulate_f0 if sim == "f0" else event.simulate_f1
  out = {k: run(plan, costs.model_scalars(w), hw) for k, w in _kinds(wl).items()}
  mem = {k: o["peak_mem_bytes"] for k, o in out.items()}
  assert np.all(mem["lora"] < mem["full"]) and np.all(mem["full"] <= mem["pretrain"])
  assert np.all(mem["qlora"] < mem["lora"])  # int8 base weights
  np.testing.assert_allclose(mem["full"], mem["pretrain"])  # full fine-tuning: the same state
  ok = np.isfinite(out["full"]["step_time_s"])
  # no weight-gradient GEMMs or gradient sync for frozen weights: faster,
  # but never below a forward + activation-gradient pass (2/3 of a step)
  ratio = out["lora"]["step_time_s"][ok] / out["full"]["step_time_s"][ok]
  assert np.all(ratio < 1.0) and np.all(ratio > 0.5)


def test_frozen_weights_have_no_state_beyond_their_bytes():
  cluster = hardware.make_cluster("dgx_h100", 8)
  wl = _kinds(catalog.make_workload("llama3_8b", 8))
  plan = megatron.megatron_plan(1, 1, 1, 8, 1, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 40e6, 0, 64, 32, 8)
  hw = hardware.cluster_scalars(cluster)
  lc = {k: costs.layer_costs(np, plan, costs.model_scalars(w), hw, dataclasses.asdict(costs.SimConstants()))
        for k, w in wl.items()}
  m = costs.model_scalars(wl["lora"])
  params = costs.total_params(np, m)
  adapters = m["lora_p"] * m["L"]
  assert adapters == 16 * m["L"] * (2 * m["h"] + m["a"] * m["d"] + m["g"] * m["d"])  # query + value
  # replicated data parallel: bf16 frozen weights + adapters' 2+4+12 bytes
  assert float(lc["lora"]["mem_state"]) == pytest.approx(2 * params + 18 * adapters, rel=1e-6)
  assert float(lc["qlora"]["mem_state"]) == pytest.approx(1 * params + 18 * adapters, rel=1e-6)
  assert float(lc["pretrain"]["mem_state"]) == pytest.approx(18 * params, rel=1e-6)
  # gradient sync of the adapters only; no embedding gradient
  assert float(lc["lora"]["dp_grad_bytes"]) == pytest.approx(4 * adapters, rel=1e-6)
  assert float(lc["lora"]["emb_bwd_s"]) == 0 < float(lc["full"]["emb_bwd_s"])
  flops = {k: float(v["model_flops"]) for k, v in lc.items()}
  assert flops["lora"] / flops["full"] == pytest.approx(2 / 3, abs=0.01)


def test_fsdp_shards_frozen_weights_on_a_jax_mesh():
  cluster = hardware.make_cluster("tpu_v5p", 64, devices_per_node=64)
  base = catalog.make_workload("llama3_8b", 64, space="jax_mesh", devices_per_slice=64)
  kinds = _kinds(base)
  space = jax_mesh.space(base, cluster)
  cands = space.sample(np.random.default_rng(3), 16)
  plan = analytic.candidates_to_arrays(space, cands, base, cluster)
  hw = hardware.cluster_scalars(cluster)
  mem = {k: analytic.simulate_f0(plan, costs.model_scalars(w), hw)["peak_mem_bytes"] for k, w in kinds.items()}
  assert np.all(mem["lora"] < mem["full"]) and np.all(mem["full"] <= mem["pretrain"])


def test_a_published_lora_row_is_predicted():
  row = dict(row_id="398", source_id="NEMO_2407", framework="NeMo 24.07 (Megatron-Core)", task="LoRA",
             model="LLAMA2-7B", seq_len="4096", hardware="H100 80GB (DGX-H100)", num_devices="8", tp="1",
             pp="1", dp="8", cp="1", micro_batch_size="1", global_batch_size="32", precision="FP8",
             tokens_per_sec_per_device="24824")
  sft = dict(row, task="SFT", tokens_per_sec_per_device="16891")
  plan, m, hw = published.row_inputs(row)
  assert m["frozen"] == 1 and m["lora_r"] == published.LORA_ASSUMED_RANK and m["lora_p"] > 0
  f0 = {k: analytic.simulate_f0({a: np.atleast_1d(v) for a, v in published.row_inputs(r)[0].items()},
                                published.row_inputs(r)[1], hw)
        for k, r in (("lora", row), ("sft", sft))}
  tok = {k: float(o["tokens_per_s_per_device"][0]) for k, o in f0.items()}
  # NeMo measured LoRA 1.47x faster than SFT on the same layout
  assert 1.2 < tok["lora"] / tok["sft"] < 1.7
  assert 24824 / 1.5 < tok["lora"] < 24824 * 1.5


def test_compile_at_scale_refuses_lora_in_one_line(monkeypatch):
  from autoscout_jax.compile import evaluator as compile_evaluator
  monkeypatch.setattr(compile_evaluator.tg, "missing_extra", lambda *a: None)
  cluster = hardware.make_cluster("dgx_h100", 8)
  kinds = _kinds(catalog.make_workload("llama3_8b", 8))
  ev = compile_evaluator.CompileAtScaleEvaluator(cache_dir="")
  assert ev.check_fits(kinds["full"], cluster) is None
  msg = ev.check_fits(kinds["lora"], cluster)
  assert "LoRA" in msg and "\n" not in msg


def test_a_lora_job_too_big_to_pretrain_is_admitted():
  cluster = hardware.make_cluster("dgx_h100", 8)
  kinds = _kinds(Workload("llama3_70b", catalog.find_model("llama3_70b")[0], global_batch=32))
  ev = analytic.AnalyticEvaluator()
  assert "exceed" in ev.check_fits(kinds["full"], cluster)  # ~1.1 TB of state on 640 GB
  assert ev.check_fits(kinds["lora"], cluster) is None  # ~141 GB of bf16 base + adapters


@pytest.mark.parametrize("sim", ["f0", "f1"])
def test_moe_lora_gives_every_expert_its_own_adapters(sim):
  """Targets that include the MLP put adapters on each routed expert's
  projections: E sets of them in memory (sharded over ep like the experts),
  the k a token is routed to in its time and FLOPs."""
  cluster = hardware.make_cluster("dgx_h100", 8)
  base = dataclasses.replace(catalog.make_workload("mixtral_8x7b", 8), task="finetune", lora_rank=16)
  attn = dataclasses.replace(base, lora_targets=("query", "value"))
  mlp = dataclasses.replace(base, lora_targets=("query", "value", "wi", "wg", "wo"))
  ma, mm = costs.model_scalars(attn), costs.model_scalars(mlp)
  E, k, h, fe = mm["E"], mm["k"], mm["h"], mm["fe"]
  assert ma["lora_pe"] == 0 and mm["lora_pe"] == E * 16 * 3 * (h + fe)  # wi, wg, wo of every expert
  assert mm["lora_pm"] == ma["lora_pm"]  # no shared experts: attention adapters only outside the experts
  hw = hardware.cluster_scalars(cluster)
  run = analytic.simulate_f0 if sim == "f0" else event.simulate_f1
  per_ep = {}
  for ep in (1, 8):  # tp 1, dp 8; ep 8: each rank holds one expert (and its adapters)
    plan = megatron.megatron_plan(1, 1, 1, 8, ep, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 40e6, 0, 64, 32, 8)
    out = {n: run(plan, m, hw) for n, m in (("attn", ma), ("mlp", mm))}
    lc = {n: costs.layer_costs(np, plan, m, hw, dataclasses.asdict(costs.SimConstants())) for n, m in
          (("attn", ma), ("mlp", mm))}
    # replicated data parallel: each adapter weight costs 2 + 4 + 12 bytes of state
    state = float(lc["mlp"]["mem_state"] - lc["attn"]["mem_state"])
    assert state == pytest.approx(18 * mm["L"] * mm["lora_pe"] / ep, rel=1e-6)
    per_ep[ep] = float(out["mlp"]["peak_mem_bytes"][0] - out["attn"]["peak_mem_bytes"][0])
    assert float(out["mlp"]["step_time_s"][0]) > float(out["attn"]["step_time_s"][0])
    flops = float(lc["mlp"]["model_flops"] - lc["attn"]["model_flops"])
    assert flops == pytest.approx(6 * mm["L"] * k * mm["lora_pe"] / E * mm["gbs"] * mm["s"], rel=1e-6)
  assert per_ep[8] == pytest.approx(per_ep[1] / 8, rel=0.05)
