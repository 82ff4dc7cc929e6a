"""Hybrid Mamba-2 / transformer models (Megatron's layer patterns) through
the catalog, the cluster simulators, published rows and the launch file."""

import dataclasses

import numpy as np
import pytest

from autoscout_jax.sim import analytic, catalog, costs, event, hardware
from autoscout_jax.targets.megatron import megatron_plan
from autoscout_jax.targets import launch_files, megatron
from autoscout_jax.workload import ModelConfig, Workload, _digest
from published_rows import predict_rows


def test_catalog_counts_match_the_published_sizes():
  count = lambda n: catalog.param_count(catalog.find_model(n)[0]) / 1e9
  assert count("nemotron_3_nano") == pytest.approx(31.6, abs=0.3)  # "30B-A3B": 31.6B total
  assert count("Nemotron_3_Nano") == count("nemotron_3_nano")  # Megatron-Bridge's table name
  assert count("nemotron_h_8b") == pytest.approx(8.1, abs=0.2)
  assert count("nemotron_h_56b") == pytest.approx(56.3, abs=0.6)
  assert count("nemotron_nano_12b_v2") == pytest.approx(12.3, abs=0.3)
  nano = catalog.find_model("nemotron_3_nano")[0]
  assert nano.layer_counts() == dict(attention=6, mamba=23, dense=0, moe=23, blocks=52)


def test_simulators_count_the_same_parameters_as_the_catalog():
  for name in ("nemotron_3_nano", "nemotron_h_8b", "nemotron_nano_9b_v2", "llama3_8b", "deepseek_v3"):
    cfg = catalog.find_model(name)[0]
    m = costs.model_scalars(catalog.make_workload(name, 64 if cfg.is_moe else 8))
    assert float(costs.total_params(np, m)) == pytest.approx(catalog.param_count(cfg), rel=2e-3), name


@pytest.mark.parametrize("change, message", [
    (dict(layer_pattern="M*-X" * 13), "may hold only"),
    (dict(layer_pattern="M*-"), "has 3 layers"),
    (dict(layer_pattern="ME" * 26), "MoE"),
    (dict(mamba_num_heads=0), "mamba_num_heads"),
])
def test_a_bad_pattern_gets_one_clear_error(change, message):
  base = catalog.find_model("nemotron_h_8b")[0]
  fields = dict(dataclasses.asdict(base), layer_pattern="M*-M" * 13)
  fields.update(change)
  with pytest.raises(ValueError, match=message):
    ModelConfig(**fields)


def test_transformer_workload_keys_do_not_change():
  w = catalog.make_workload("llama3_8b", 8)
  d = dataclasses.asdict(w)
  d.pop("default"), d.pop("serving"), d.pop("example_lens")
  for f in ("layer_pattern", "mamba_num_heads", "mamba_head_dim", "mamba_state_dim", "mamba_num_groups",
            "moe_latent_size", "mtp_layers", "mtp_pattern", "mtp_shared", "moe_layer_freq"):
    d["model"].pop(f)
  d["lora_targets"] = tuple(d["lora_targets"])
  for k, v in {"lora_rank": 0, "lora_targets": ("query", "key", "value", "out"), "lora_alpha": 16.0,
               "frozen_dtype": "bf16"}.items():
    if d.get(k) == v:
      d.pop(k)
  assert w.key == f"{w.name}-{_digest(d)}"
  hybrid = catalog.make_workload("nemotron_h_8b", 8)
  other = dataclasses.replace(hybrid, model=dataclasses.replace(hybrid.model, layer_pattern="M*" * 26))
  assert hybrid.key != other.key  # the pattern is part of a hybrid job


def _f0(model_cfg, seq=4096, gbs=64, n=8, tp=1, pp=1, sim=analytic.simulate_f0):
  model_cfg = dataclasses.replace(model_cfg, seq_len=seq)
  w = Workload(name=model_cfg.name, model=model_cfg, global_batch=gbs, precision="bf16", default={})
  L = model_cfg.num_layers
  plan = megatron_plan(float(tp), float(pp), 1.0, float(n // tp // pp), 1.0, 1.0, 1.0, 1.0, float(tp > 1), 1.0, 0.0,
                       0.0, 1.0, 1.0, 1.0, 40e6, 0.0, float(gbs), float(L), 8.0, flash=1.0, grad_bytes=2.0)
  plan = {k: np.atleast_1d(np.asarray(v, np.float64)) for k, v in dict(costs.PLAN_DEFAULTS, **plan).items()}
  return sim(plan, costs.model_scalars(w), hardware.cluster_scalars(hardware.make_cluster("dgx_h100", n)))


def test_alternating_attention_and_mlp_layers_are_the_transformer():
  # a pattern "*-*-..." of 2L layers is an L-layer transformer, layer by layer
  gpt = ModelConfig("gpt", 8, 1024, 16, 4096, 32000, 2048)
  hyb = dataclasses.replace(gpt, name="hyb", num_layers=16, layer_pattern="*-" * 8)
  for tp in (1, 2):
    a, b = _f0(gpt, tp=tp), _f0(hyb, tp=tp)
    assert tp == 1 or float(a["tp_comm_s"][0]) > 0
    for k in ("step_time_s", "compute_s", "tp_comm_s", "dp_comm_s", "peak_mem_bytes", "mfu"):
      assert float(b[k][0]) == pytest.approx(float(a[k][0]), rel=1e-4), (tp, k)
  # and F1's timeline over a pipeline of 2 stages
  a, b = (_f0(cfg, tp=2, pp=2, sim=event.simulate_f1) for cfg in (gpt, hyb))
  for k in ("step_time_s", "peak_mem_bytes"):
    assert float(b[k][0]) == pytest.approx(float(a[k][0]), rel=1e-6), k


def test_mamba_layers_scale_linearly_with_the_sequence():
  # per token, a transformer's attention grows with the context; Mamba-2 does not
  llama = catalog.find_model("llama3_8b")[0]
  nh = catalog.find_model("nemotron_h_8b")[0]
  growth = {}
  for cfg in (llama, nh):
    short, long = _f0(cfg, seq=4096, gbs=64), _f0(cfg, seq=32768, gbs=8)  # same tokens per step
    growth[cfg.name] = float(long["step_time_s"][0] / short["step_time_s"][0])
  assert growth["nemotron_h_8b"] < 1 + 0.5 * (growth["llama3_8b"] - 1)
  assert growth["nemotron_h_8b"] > 1.0


def _f0_f1_on_the_top(name, n, top_k):
  """A workload's Megatron space on n H100s: F0's scores, and F1 beside
  them on F0's `top_k` feasible candidates."""
  w = catalog.make_workload(name, n)
  c = hardware.make_cluster("dgx_h100", n)
  space = megatron.space(w, c)
  table, out = analytic.score_space(space, w, c)
  ok = out["feasible"] > 0
  top = np.argsort(-np.where(ok, out["tokens_per_s"], 0.0))[:top_k]
  plan = {k: v[top] for k, v in space.plan(table, w, c).items()}
  f1 = event.simulate_f1(plan, costs.model_scalars(w), hardware.cluster_scalars(c))
  return w, c, space, out, ok, f1["tokens_per_s"], out["tokens_per_s"][top]


def test_f0_and_f1_agree_on_a_hybrid_moe_space():
  _, _, _, out, ok, f1, f0 = _f0_f1_on_the_top("nemotron_3_nano", 16, 50)
  assert ok.sum() > 1000 and np.isfinite(out["tokens_per_s"]).all()
  np.testing.assert_allclose(f1, f0, rtol=0.05)


def test_published_hybrid_rows_are_predicted_or_named(tmp_path):
  base = dict(source_id="X", framework="Megatron-Bridge", task="pretrain", hardware="H100 80GB (DGX-H100)",
              num_devices="16", tp="1", pp="1", cp="1", ep="8", micro_batch_size="1", global_batch_size="1024",
              seq_len="8192", precision="FP8", tokens_per_sec_per_device="14719")
  out = predict_rows(tmp_path, [
      dict(base, row_id="1", model="Nemotron_3_Nano"),
      dict(base, row_id="2", model="Nemotron_3_Ultra", ep="64", num_devices="64"),
      dict(base, row_id="3", model="Jamba-1.5-Mini", num_layers="32", hidden_size="4096", num_heads="32", ep=""),
  ])
  assert out["1"]["pred_status"] == "ok"
  assert 5000 < float(out["1"]["pred_tokens_per_sec_per_device"]) < 40000
  assert out["1"]["pred_feasible"] in ("yes", "uncertain")
  assert out["2"]["pred_status"].startswith("unsupported:") and "Ultra" in out["2"]["pred_status"]
  assert out["3"]["pred_status"].startswith("unsupported:") and "hybrid" in out["3"]["pred_status"]


def test_a_hybrid_recommendation_launches_megatrons_hybrid_stack():
  w = catalog.make_workload("nemotron_3_nano", 16)
  c = hardware.make_cluster("dgx_h100", 16)
  space = megatron.space(w, c)
  sh = launch_files(space, space.make(w.default_values), w, c)["launch.sh"]
  assert "pretrain_hybrid.py" in sh and "pretrain_gpt.py" not in sh
  assert f"--hybrid-layer-pattern '{w.model.layer_pattern}'" in sh or \
      f"--hybrid-layer-pattern {w.model.layer_pattern}" in sh
  for flag, v in (("--mamba-num-heads", 64), ("--mamba-head-dim", 64), ("--mamba-state-dim", 128),
                  ("--num-experts", 128)):
    assert f"{flag} {v}" in sh, flag
  assert "--moe-layer-freq" not in sh  # the pattern places the MoE layers


def test_mamba_layers_widen_the_interval_as_an_uncalibrated_mechanism():
  nh = _f0(catalog.find_model("nemotron_h_8b")[0])
  as_if_calibrated = dataclasses.replace(catalog.find_model("nemotron_h_8b")[0], mamba_num_heads=128,
                                         layer_pattern="*-" * 26)
  tr = _f0(as_if_calibrated)
  width = lambda o: float(np.log(o["tokens_per_s_per_device_hi"][0] / o["tokens_per_s_per_device_lo"][0]))
  assert width(nh) > width(tr) * 1.3


def test_families_that_build_transformers_refuse_a_hybrid_with_one_clear_error():
  from autoscout_jax.compile.evaluator import CompileAtScaleEvaluator
  from autoscout_jax.local.model import check_supported
  from autoscout_jax.targets import jax_mesh, maxtext
  w = catalog.make_workload("nemotron_h_8b", 8)
  c = hardware.make_cluster("dgx_h100", 8)
  for build in (lambda: jax_mesh.space(w, c), lambda: maxtext.space(w, c), lambda: check_supported(w.model)):
    with pytest.raises(ValueError, match="hybrid"):
      build()
  assert "hybrid" in CompileAtScaleEvaluator().check_fits(w, c)


def test_context_parallel_mamba_layers_pay_their_all_to_alls():
  # a mechanism left free is one a search exploits: Mamba-2 layers under cp
  # move their in-projection and output between sequence and head shards
  from autoscout_jax.sim.constants import CALIBRATED
  w = catalog.make_workload("nemotron_h_8b", 16)
  m = costs.model_scalars(w)
  hw = hardware.cluster_scalars(hardware.make_cluster("dgx_h100", 16))
  cp_comm = {}
  for cp in (1, 2, 4):
    plan = megatron_plan(1.0, 1.0, float(cp), 16.0 / cp, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 40e6,
                         0.0, float(w.global_batch), float(w.model.num_layers), 8.0, flash=1.0, grad_bytes=2.0)
    plan = dict(costs.PLAN_DEFAULTS, **plan)
    lc = costs.layer_costs(np, plan, m, hw, CALIBRATED.as_dict())
    no_ssm = costs.layer_costs(np, plan, dict(m, f_ssm=0.0), hw, CALIBRATED.as_dict())
    cp_comm[cp] = float(lc["cp_fwd_s"] + lc["cp_bwd_s"]) - float(no_ssm["cp_fwd_s"] + no_ssm["cp_bwd_s"])
  assert cp_comm[1] == 0.0 and 0 < cp_comm[2] and cp_comm[4] > 0


# --- LatentMoE and multi-token prediction (Nemotron 3 Super) ---------------------------------


def test_super_counts_its_published_parameters():
  sup = catalog.find_model("Nemotron_3_Super")[0]
  # the model hub checkpoint's BF16 weights, MTP block included (123,611,012,096)
  assert catalog.param_count(sup) == pytest.approx(123_611_012_096, rel=1e-4)
  assert sup.layer_counts() == dict(attention=8, mamba=40, dense=0, moe=40, blocks=88)
  without_mtp = dataclasses.replace(sup, mtp_layers=0, mtp_pattern="", mtp_shared=False)
  # its MTP block: 2,942,324,736 parameters
  assert catalog.param_count(sup) - catalog.param_count(without_mtp) == pytest.approx(2_942_324_736, rel=1e-3)
  m = costs.model_scalars(catalog.make_workload("nemotron_3_super", 64))
  # the simulators price the MTP block as two average layers: within 1 % of the whole
  assert float(costs.total_params(np, m)) == pytest.approx(catalog.param_count(sup), rel=1e-2)


def _moe(**kw):
  base = ModelConfig("latent_probe", 16, 4096, 32, 2688, 131072, 4096, num_kv_heads=8, num_experts=64,
                     moe_top_k=8, moe_ffn_hidden_size=2688)
  return dataclasses.replace(base, **kw)


def _f0_ep(model_cfg, n=64, ep=64, mbs=1.0):
  w = Workload(name=model_cfg.name, model=model_cfg, global_batch=256, precision="bf16", default={})
  c = hardware.make_cluster("dgx_h100", n)
  plan = megatron_plan(1.0, 1.0, 1.0, float(n), float(ep), 1.0, 1.0, mbs, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 40e6,
                       0.0, 256.0, float(model_cfg.num_layers), 8.0, flash=1.0, grad_bytes=2.0)
  plan = {k: np.atleast_1d(np.asarray(v, np.float64)) for k, v in dict(costs.PLAN_DEFAULTS, **plan).items()}
  return costs.layer_costs(np, plan, costs.model_scalars(w), hardware.cluster_scalars(c),
                           analytic.CALIBRATED.as_dict())


def test_latent_moe_moves_and_multiplies_at_the_latent_width():
  plain, latent = _moe(), _moe(moe_latent_size=1024)
  a, b = _f0_ep(plain), _f0_ep(latent)
  # the all-to-all carries the latent vector: a quarter of the bytes across nodes
  assert float(b["ep_fwd_s"][0]) < 0.35 * float(a["ep_fwd_s"][0])
  # expert weights at the latent width: a quarter of them, plus the two projections
  pa, pb = (float(costs.total_params(np, costs.model_scalars(
      Workload(name="x", model=m, global_batch=256, precision="bf16", default={})))) for m in (plain, latent))
  experts = 16 * 64 * 2 * 2688 * 4096
  assert pa - pb == pytest.approx(experts * 3 / 4 - 16 * 2 * 4096 * 1024, rel=1e-6)
  # and less time in the layer (its routed GEMMs at a quarter of the FLOPs)
  assert float(b["fwd_s"][0]) < float(a["fwd_s"][0])


def test_multi_token_prediction_runs_on_the_last_stage():
  plain = _moe()
  mtp = _moe(mtp_layers=2, mtp_pattern="", mtp_shared=True)
  a, b = _f0_ep(plain), _f0_ep(mtp)
  # two passes, each an average layer with its communication, the 2h -> h
  # projection and another output layer: the last stage's extra work
  extra = float(b["head_fwd_s"][0] - a["head_fwd_s"][0])
  layer = float(a["fwd_s"][0] + a["tp_fwd_s"][0] + a["cp_fwd_s"][0] + a["ep_fwd_s"][0])
  assert 2 * (layer + float(a["head_fwd_s"][0])) < extra < 2 * (layer + float(a["head_fwd_s"][0])) * 1.2
  assert float(b["mem_last"][0]) > float(a["mem_last"][0])
  assert float(np.ravel(b["model_flops"])[0]) > float(np.ravel(a["model_flops"])[0])
  for f in ("fwd_s", "bwd_s", "ep_fwd_s"):  # the layers themselves are the same
    assert float(b[f][0]) == float(a[f][0]), f


def test_published_super_rows_are_predicted_and_launch_with_latent_and_mtp_flags(tmp_path):
  base = dict(source_id="X", framework="Megatron-Bridge", task="pretrain", hardware="GB300 NVL72",
              num_devices="64", tp="1", pp="1", cp="1", ep="64", micro_batch_size="1", global_batch_size="512",
              seq_len="8192", precision="MXFP8", tokens_per_sec_per_device="9856")
  out = predict_rows(tmp_path, [dict(base, row_id="1", model="Nemotron_3_Super")])
  assert out["1"]["pred_status"] == "ok"
  assert 3000 < float(out["1"]["pred_tokens_per_sec_per_device"]) < 30000
  w = catalog.make_workload("nemotron_3_super", 64)
  c = hardware.make_cluster("gb300_nvl72", 64)
  space = megatron.space(w, c)
  sh = launch_files(space, space.make(w.default_values), w, c)["launch.sh"]
  for flag in ("--moe-latent-size 1024", "--mtp-num-layers 2", "--mtp-use-repeated-layer",
               "--mtp-hybrid-override-pattern"):
    assert flag in sh, flag


@pytest.mark.parametrize("change, message", [
    (dict(moe_latent_size=-1), "moe_latent_size"),
    (dict(num_experts=0, moe_top_k=0, moe_latent_size=512), "needs experts"),
    (dict(mtp_pattern="*E"), "mtp_layers"),
    (dict(mtp_layers=1, mtp_pattern="*X"), "mtp_pattern"),
])
def test_a_bad_latent_or_mtp_setting_gets_one_clear_error(change, message):
  with pytest.raises(ValueError, match=message):
    _moe(**change)


def test_families_without_latent_moe_refuse_it():
  from autoscout_jax.compile.evaluator import CompileAtScaleEvaluator
  from autoscout_jax.targets import jax_mesh, maxtext
  w = Workload(name="x", model=_moe(moe_latent_size=1024), global_batch=256, precision="bf16", default={})
  c = hardware.make_cluster("dgx_h100", 8)
  for build in (lambda: jax_mesh.space(w, c), lambda: maxtext.space(w, c)):
    with pytest.raises(ValueError, match="LatentMoE"):
      build()
  assert "LatentMoE" in CompileAtScaleEvaluator().check_fits(w, c)


def test_alternating_moe_layers_price_and_launch_as_alternating():
  w, c, space, _, _, f1, f0 = _f0_f1_on_the_top("llama4_maverick", 32, 40)
  # F1 prices alternating layers at their average, as F0 does (no leading dense block on stage 0)
  np.testing.assert_allclose(f1, f0, rtol=0.05)
  sh = launch_files(space, space.make(w.default_values), w, c)["launch.sh"]
  assert "([0]*0+([0]*1+[1])*24)" in sh
  with pytest.raises(ValueError, match="moe_layer_freq"):
    dataclasses.replace(w.model, moe_layer_freq=5)  # 48 layers are not whole groups of 5
