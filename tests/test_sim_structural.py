"""Structural memory/time models and robustness of the cluster simulators:
unplaceable clusters are refused per row, flash attention at long context,
FSDP memory against the shard count, intervals that widen outside the
calibrated range, partial NVL72 racks, the uncertain memory verdict in a
Measurement, and the vTrain validation command."""

import csv
import os
import subprocess
import sys

import numpy as np
import pytest

from autoscout_jax.problem import Problem
from autoscout_jax.sim import analytic, catalog, costs, hardware, uncertainty
from autoscout_jax.sim.constants import CALIBRATED
from autoscout_jax.targets import megatron
from autoscout_jax.tools import predict_published

C = CALIBRATED.as_dict()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_COLS = ("row_id", "source_id", "framework", "task", "model", "num_layers", "hidden_size", "ffn_hidden_size",
         "num_heads", "num_kv_heads", "seq_len", "vocab_size", "hardware", "num_devices", "tp", "pp", "dp", "cp",
         "sharding", "micro_batch_size", "global_batch_size", "recompute", "precision")


def _row(**kw):
  base = dict(source_id="X", framework="PyTorch FSDP", task="pretrain", model="mpt-1b-like", num_layers="24",
              hidden_size="2048", ffn_hidden_size="8192", num_heads="16", seq_len="2048", vocab_size="50368",
              hardware="H100 80GB", num_devices="8", sharding="FSDP FULL_SHARD", micro_batch_size="4",
              global_batch_size="64", recompute="none", precision="bf16")
  base.update(kw)
  return base


def _plan(**kw):
  base = dict(tp=1, pp=1, cp=1, dp=8, ep=1, etp=1, vp=1, mbs=1, sp=0, dist_opt=0, recompute=2, rc_block=0,
              rc_layers=1, overlap_grad=1, overlap_param=1, bucket_params=40e6, tp_overlap=0, global_batch=8,
              layers=32, node_size=8)
  flash, fsdp = kw.pop("flash", 1.0), kw.pop("fsdp", 1.0)
  base.update(kw)
  return {k: float(v) for k, v in megatron.megatron_plan(**base, fsdp=fsdp, flash=flash, grad_bytes=4.0).items()}


def _row_arrays(row):
  """A published row's (plan, model, hardware) numbers as 1-element arrays,
  the simulators' batch form."""
  from autoscout_jax.sim import published
  return tuple({k: np.atleast_1d(np.asarray(v, np.float64)) for k, v in d.items()}
               for d in published.row_inputs(row))


def _llama8b(seq):
  wl = catalog.make_workload("llama3_8b", 8, seq_len=seq, global_batch=8)
  return costs.model_scalars(wl)


def test_unplaceable_cluster_is_refused_per_row_and_the_others_are_predicted(tmp_path):
  rows = [_row(row_id="a"), _row(row_id="b", num_devices="12", global_batch_size="48"),
          _row(row_id="c", model="unknown-without-dims", num_layers="", hidden_size=""), _row(row_id="d"),
          _row(row_id="f", model="unknown-200B", num_layers="", hidden_size="14400"),
          # 128 GPUs of NVL72 racks (two 64-GPU NVLink domains), fp4 GEMMs
          _row(row_id="e", hardware="GB300 NVL72", num_devices="128", global_batch_size="256", micro_batch_size="2",
               precision="NVFP4")]
  src = tmp_path / "in.csv"
  with open(src, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=_COLS)
    w.writeheader()
    w.writerows(rows)
  out = predict_published.predict_file(str(src), str(tmp_path / "out.csv"))
  status = {r["row_id"]: r["pred_status"] for r in out}
  assert status["a"] == status["d"] == status["e"] == "ok"
  assert status["b"].startswith("unsupported: cluster cannot be placed") and "12 devices" in status["b"]
  assert status["c"].startswith("unsupported: no dimensions")
  assert status["f"].startswith("unsupported: num_layers missing (hidden_size given) and unknown model 'unknown-200B'")
  a = next(r for r in out if r["row_id"] == "a")
  assert float(a["pred_tokens_per_sec_per_device_lo"]) < float(a["pred_tokens_per_sec_per_device"]) \
      < float(a["pred_tokens_per_sec_per_device_hi"])
  assert a["pred_feasible"] in ("yes", "uncertain", "no")


def test_nvl72_jobs_that_split_racks_get_whole_tray_nvlink_domains():
  assert hardware.make_cluster("gb200_nvl72", 256).node_size == 64
  assert hardware.make_cluster("gb300_nvl72", 128).num_nodes == 2
  assert hardware.make_cluster("gb200_nvl72", 144).node_size == 72
  with pytest.raises(ValueError, match="not a whole number of 8-device nodes"):
    hardware.make_cluster("dgx_h100", 12)


def test_a_published_nvl72_row_counting_4_gpu_trays_as_nodes_keeps_the_rack_as_its_nvlink_domain():
  """Published NVL72 rows often count a compute tray (4 GPUs, the host a
  scheduler hands out) as a node: devices_per_node 4 must not shrink the
  NVLink domain from the rack to the tray. On an 8-GPU-node system a
  smaller stated node still does (4-GPU nodes)."""
  from autoscout_jax.sim import published
  gb = dict(source_id="X", framework="Megatron-Bridge", model="LLAMA3_70B", seq_len="8192",
            hardware="GB200 NVL72", num_devices="128", tp="2", pp="4", dp="16", vp="5", micro_batch_size="1",
            global_batch_size="256", precision="FP8-MX")
  tray = dict(gb, devices_per_node="4", num_nodes="32")
  assert published.cluster_for(tray).node_size == published.cluster_for(gb).node_size == 64
  assert published.row_inputs(tray)[0] == published.row_inputs(gb)[0]
  h100 = dict(gb, hardware="H100 80GB (DGX-H100)", num_devices="64", dp="8")
  assert published.cluster_for(dict(h100, devices_per_node="4")).node_size == 4
  assert published.cluster_for(h100).node_size == 8


def test_flash_attention_keeps_an_8b_model_at_128k_tokens_on_8x80gb_under_fsdp():
  m = _llama8b(131072)
  hw = hardware.cluster_scalars(hardware.make_cluster("dgx_h100", 8))
  # FSDP over all 8 GPUs (data x context), full recompute, flash attention
  plan = _plan(cp=4, dp=2, mbs=1, global_batch=2)
  lc = costs.layer_costs(np, plan, {**costs.MODEL_DEFAULTS, **m}, hw, C)
  assert lc["mem_peak"] < hw["hbm_bytes"]
  # the same run with the s x s scores materialized needs far more than a device
  scores = costs.layer_costs(np, _plan(cp=4, dp=2, mbs=1, global_batch=2, flash=0.0), m, hw, C)
  assert scores["mem_peak"] > 4 * hw["hbm_bytes"]


def test_fsdp_memory_falls_with_the_shard_count():
  m = _llama8b(8192)
  hw = hardware.cluster_scalars(hardware.make_cluster("dgx_h100", 64))
  mem = [costs.layer_costs(np, _plan(dp=n, global_batch=n, node_size=8), m, hw, C)["mem_state"] for n in (2, 8, 64)]
  assert mem[0] > mem[1] > mem[2]
  p = costs.total_params(np, m)
  # 18 bytes of state per parameter, divided by the shard count, plus the gathered working set
  assert mem[0] - mem[2] == pytest.approx(18 * p * (1 / 2 - 1 / 64), rel=1e-6)


def test_intervals_widen_outside_the_calibrated_range():
  hw = hardware.cluster_scalars(hardware.make_cluster("dgx_h100", 8))
  inside = _llama8b(4096)
  longer = _llama8b(65536)
  small = dict(inside, L=12.0, h=768.0, a=12.0, g=12.0, d=64.0, f=3072.0, V=50368.0, gated=0.0)
  widths = []
  for m in (inside, longer, small):
    plan = _plan(mbs=1, global_batch=8)
    out = uncertainty.intervals(np, plan, m, hw, C, 1000.0, 40e9)
    widths.append((out["tokens_per_s_per_device_hi"] / out["tokens_per_s_per_device_lo"],
                   out["peak_mem_hi"] / out["peak_mem_lo"]))
  # eager FSDP was never calibrated (one unit of distance); longer context and a
  # 125M-class model add more
  assert widths[1][0] > widths[0][0] and widths[2][0] > widths[0][0]
  assert widths[1][1] > widths[0][1] and widths[2][1] > widths[0][1]


def test_throughput_interval_widens_where_a_dense_layer_is_host_bound():
  # the host floor is fitted only through MoE layers: a dense layer whose kernels are short
  # (small model, micro-batch 1, tp 8) gets a wider throughput interval, its memory interval
  # does not move, and no dense calibration-like point (large model, long passes) is affected
  hw = hardware.cluster_scalars(hardware.make_cluster("dgx_a100_80gb", 8))
  small = dict(_llama8b(1024), L=12.0, h=1024.0, a=16.0, g=16.0, d=64.0, f=4096.0, gated=0.0)
  base = uncertainty.intervals(np, _plan(mbs=1, global_batch=8), small, hw, C, 1000.0, 10e9)
  for ratio, wider in ((0.1, False), (uncertainty.DENSE_HOST_RATIO, False), (1.0, True), (4.0, True)):
    out = uncertainty.intervals(np, _plan(mbs=1, global_batch=8), small, hw, C, 1000.0, 10e9, ratio)
    t = out["tokens_per_s_per_device_hi"] / out["tokens_per_s_per_device_lo"]
    t0 = base["tokens_per_s_per_device_hi"] / base["tokens_per_s_per_device_lo"]
    assert (t > t0 * 1.01) == wider
    assert out["peak_mem_hi"] == pytest.approx(base["peak_mem_hi"]) and out["mem_verdict"] == base["mem_verdict"]
  # F0 computes the ratio itself: tp 8 at micro-batch 1 is more host-bound than tp 1 at 8
  wl = catalog.make_workload("llama3_8b", 8, global_batch=64)
  m = costs.model_scalars(wl)
  lc = lambda **kw: float(np.asarray(costs.layer_costs(np, _plan(**kw), m, hw, C)["dense_host_ratio"]))
  assert lc(tp=8, dp=1, mbs=1, global_batch=64) > lc(tp=1, dp=8, mbs=8, global_batch=64) > 0


def test_uncertain_memory_is_a_feasible_measurement_with_a_flag():
  cluster = hardware.make_cluster("dgx_h100", 8)
  wl = catalog.make_workload("llama3_8b", 8, global_batch=64)
  space = megatron.space(wl, cluster)
  table = space.table()
  plan = space.plan(table, wl, cluster)
  out = analytic.simulate_f0(plan, costs.model_scalars(wl), hardware.cluster_scalars(cluster))
  verdict = out["mem_verdict"]
  assert set(np.unique(verdict)) == {0.0, 1.0, 2.0}
  np.testing.assert_array_equal(out["feasible"], verdict >= 1)
  idx = [int(np.flatnonzero(verdict == v)[0]) for v in (0.0, 1.0, 2.0)]
  ev = analytic.AnalyticEvaluator()
  ms = ev.evaluate(Problem(wl, cluster, space, ("analytic",)), space.candidates_from_table(table, idx))
  assert [m.feasible for m in ms] == [False, True, True]
  assert ms[0].metrics.failure_kind == "oom"
  assert [m.metrics.extra.get("memory_verdict") for m in ms[1:]] == ["uncertain", "yes"]
  lo, hi = ms[1].metrics.extra["peak_mem_bytes_lo"], ms[1].metrics.extra["peak_mem_bytes_hi"]
  assert lo <= cluster.device.hbm_bytes < hi


def test_vtrain_validation_command_prints_per_sweep_rows():
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  res = subprocess.run([sys.executable, "-m", "autoscout_jax.tools.calibration_report", "--validate=vtrain"],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
  assert res.returncode == 0, res.stderr[-2000:]
  lines = res.stdout.splitlines()
  for fid in ("analytic", "event"):
    assert any(f"fidelity {fid}" in ln for ln in lines)
  sweeps = [ln.split() for ln in lines if ln.strip().endswith("%") and ln.split()[0].endswith("B")]
  assert {(s[0], s[1]) for s in sweeps} == {("3.6B", "64"), ("18.4B", "256"), ("39.1B", "512"), ("175B", "512")}
  assert len(sweeps) == 8  # four sweeps x two fidelities
  for s in sweeps:
    assert 0 <= float(s[3].rstrip("%")) < 100  # MAPE
    assert -1 <= float(s[5]) <= 1  # rank correlation
  # the single-node table: one line per GPU count and hidden size, per fidelity, every row counted
  single = [ln.split() for ln in lines if ln.strip().endswith("%") and ln.split()[0] in ("2", "4", "8")]
  assert len(single) == 12 and {(s[0], s[1]) for s in single} == {(g, h) for g in "248" for h in ("1024", "2048")}
  assert sum(int(s[2]) for s in single) == 2 * 1440
  for s in single:
    assert int(s[3]) >= 8 and 0 <= float(s[4].rstrip("%")) < 100 and -1 <= float(s[6]) <= 1
    assert 0 <= float(s[8].rstrip("%")) <= 100  # share of rows inside the 80 % interval


def test_f1_puts_deepseeks_leading_dense_layers_on_the_first_stage():
  from autoscout_jax.sim import event
  wl = catalog.make_workload("deepseek_v3", 256, global_batch=64)
  m = costs.model_scalars(wl)
  hw = hardware.cluster_scalars(hardware.make_cluster("dgx_h100", 256))
  base = dict(tp=1, pp=8, cp=1, dp=32, ep=32, etp=1, vp=1, mbs=1, sp=0, dist_opt=1, recompute=1, rc_block=0,
              rc_layers=1, overlap_grad=1, overlap_param=1, bucket_params=40e6, tp_overlap=0, global_batch=64,
              layers=61, node_size=8)
  plan = {k: np.array([float(v)]) for k, v in megatron.megatron_plan(**base).items()}
  inp, aux = event.pipeline_inputs(plan, m, hw, C)
  lc = aux["lc"]
  per = lambda mm: costs.layer_costs(np, plan, mm, hw, C)
  dense, moe = per(dict(m, Ld=m["L"])), per(dict(m, Ld=0.0))
  layers = event.stage_layers(np.array([61.0]), np.array([8]), np.array([1]), 1, 8)[0, 0]
  one = lambda c: c["fwd_s"] + c["tp_fwd_s"] + c["cp_fwd_s"] + c["ep_fwd_s"]
  # stage 0 runs the embedding, the 3 dense layers and the rest of its layers as MoE
  expect0 = lc["emb_fwd_s"] + 3 * one(dense) + (layers[0] - 3) * one(moe)
  assert inp.fwd[0, 0, 0] == pytest.approx(float(expect0[0]), rel=1e-6)
  # a middle stage holds MoE layers only
  assert inp.fwd[0, 0, 3] == pytest.approx(float(layers[3] * one(moe)[0]), rel=1e-6)
  assert one(dense)[0] != pytest.approx(one(moe)[0], rel=0.05)


def _hw(system="dgx_h100"):
  return {k: float(v) for k, v in hardware.cluster_scalars(hardware.make_cluster(system, 8)).items()}


def test_tp_backward_collectives_run_under_the_weight_gradient_gemms():
  # Megatron / TE linear backward: the column-parallel input-gradient
  # collective is asynchronous, under the weight-gradient GEMM. Where the
  # link is fast enough for the GEMM to cover it nothing shows (SP leaves
  # the output gradient's all-gather, half a collective, blocking); over a
  # slow link the GEMMs hide little of it.
  m, hw = _llama8b(8192), _hw()
  lc = lambda hw, **kw: costs.layer_costs(np, _plan(tp=8, dp=1, fsdp=0.0, **kw), m, hw, C)
  fast = dict(hw, intra_bw=hw["intra_bw"] * 20)
  plain, sp = lc(fast, recompute=0), lc(fast, recompute=0, sp=1)
  assert plain["tp_fwd_s"] > 0 and plain["tp_bwd_s"] < 0.1 * plain["tp_fwd_s"]
  assert sp["tp_bwd_s"] == pytest.approx(0.5 * sp["tp_fwd_s"], rel=0.1)
  slow = lc(dict(hw, intra_bw=hw["intra_bw"] / 100), recompute=0)
  assert 0.8 * slow["tp_fwd_s"] < slow["tp_bwd_s"] < slow["tp_fwd_s"]
  # full recompute repeats the forward's (blocking) collectives in the backward
  base = lc(hw, recompute=0)
  assert lc(hw, recompute=2)["tp_bwd_s"] == pytest.approx(base["tp_bwd_s"] + base["tp_fwd_s"], rel=1e-6)


def test_output_layer_runs_in_bf16_under_fp8_recipes():
  # Megatron's output layer is its own linear, outside TE's fp8 autocast
  m, hw = _llama8b(8192), _hw()
  fp8 = dict(m, fp8=1.0)
  p = _plan(fsdp=0.0)
  bf, f8 = costs.layer_costs(np, p, m, hw, C), costs.layer_costs(np, p, fp8, hw, C)
  assert f8["head_fwd_s"] == pytest.approx(bf["head_fwd_s"])
  assert f8["fwd_s"] < 0.9 * bf["fwd_s"]  # the layers themselves do gain


def test_fitted_interval_holds_80_percent_of_every_source():
  # two sources, one twice as noisy: the half-width follows the noisier one
  rng = np.random.default_rng(0)
  rows = []
  for src, noise in (("A", 0.05), ("B", 0.2)):
    for i in range(20):
      rows.append(dict(source_id=src, err=float(rng.normal(0, noise))))

  class Prep:
    index = list(range(40))
    def __init__(self, rows):
      self.rows = rows

  prep = Prep(rows)
  err = np.array([r["err"] for r in rows])
  import autoscout_jax.sim.calibration as cal
  orig_t, orig_e = cal.targets, cal.log_errors
  try:
    cal.targets = lambda p: (np.ones(40), np.zeros(40, bool))
    cal.log_errors = lambda p, out: err
    w = cal.fit_spread(prep, {"extrapolation": np.zeros(40)})
  finally:
    cal.targets, cal.log_errors = orig_t, orig_e
  for src in ("A", "B"):
    e = np.abs(err[[r["source_id"] == src for r in rows]])
    assert np.mean(e <= w) >= 0.8
  assert np.mean(np.abs(err[20:]) <= w) < 0.95  # not wider than the noisier source needs


def test_all_reduce_over_two_nodes_is_hierarchical_and_flat_inside_one():
  # A100 nodes with 800 Gb/s of InfiniBand per node (vTrain's cluster)
  cl = hardware.make_cluster("dgx_a100_80gb", 16, inter_bw=12.5e9)
  hw = {k: float(v) for k, v in hardware.cluster_scalars(cl).items()}
  from autoscout_jax.sim import collectives
  nbytes = 256e6
  ring = lambda n, loc, rails=1.0: collectives.all_reduce_s(np, n, nbytes, *collectives.tier(np, loc, n, hw, C, rails))
  tiered = lambda n, loc, rails=1.0: collectives.all_reduce_tiered_s(np, n, loc, nbytes, hw, C, rails)
  # inside a node, and one member per node: nothing to split, the ring
  assert tiered(8, 8) == pytest.approx(ring(8, 8))
  assert tiered(16, 1) == pytest.approx(ring(16, 1))
  # 16 ranks on two nodes: only half the buffer, not 15/8 of it, crosses the network
  assert tiered(16, 8) < 0.9 * ring(16, 8)
  # a framework that drives one NIC per rank keeps the flat ring
  assert tiered(16, 8, rails=0.0) == pytest.approx(ring(16, 8, rails=0.0))
  # many nodes: the hierarchical form never loses to the ring
  assert tiered(512, 8) <= ring(512, 8) + 1e-12


def test_expert_gradients_leave_through_each_members_own_nic():
  # Qwen3-30B-A3B on two 8-GPU nodes, expert parallelism 8 filling each node:
  # the experts' data-parallel group has one member per node, so their
  # gradient reduce-scatter crosses the network on one NIC per member, not on
  # the 8 NICs the dense data-parallel group (8 members per node) drives.
  from autoscout_jax.sim import memory
  wl = catalog.make_workload("qwen3_30b_a3b", 16, global_batch=32)
  m = costs.model_scalars(wl)
  hw = {k: float(v) for k, v in hardware.cluster_scalars(hardware.make_cluster("dgx_h100", 16)).items()}
  p = _plan(dp=16, ep=8, dist_opt=1, fsdp=0.0, layers=m["L"], global_batch=32)
  lc = costs.layer_costs(np, p, m, hw, C)
  mm = memory.memory(np, p, m, hw, C, lc["layers_per_stage"])
  assert mm["e_shard"] == 2 and mm["P_train_exp"] > mm["P_train_first"]
  one_nic = (mm["e_shard"] - 1) / mm["e_shard"] * mm["P_train_exp"] * p["g_bytes"] / (hw["inter_bw"] * C["comm_eff"])
  assert lc["dp_grad_s"] > one_nic
  assert lc["dp_param_s"] > 0.5 * one_nic  # the bf16 parameter all-gather takes the same road


def test_squad_packed_finetuning_rows_pay_attention_per_example():
  from autoscout_jax.sim import published
  row = dict(source_id="NEMO_2407", framework="NeMo", task="SFT", model="LLAMA2-7B", seq_len="4096",
             hardware="H100 80GB (DGX-H100)", num_devices="8", tp="1", pp="1", cp="1", micro_batch_size="1",
             global_batch_size="32", precision="FP8", table="Finetuning (FP8, SQuAD packed to 4096)")
  packed = published.row_inputs(row)
  full = published.row_inputs(dict(row, table="Finetuning (FP8)"))
  assert packed[0]["packed"] == 1.0 and full[0]["packed"] == 0.0
  assert packed[1]["attn_packed"] < 0.1 and full[1]["attn_packed"] == 1.0
  speed = lambda pmh: analytic.simulate_f0_reference(*pmh)["tokens_per_s_per_device"]
  assert speed(packed) > 1.1 * speed(full)  # at 4k tokens a 7B layer spends >10 % in attention


def test_plain_all_to_all_sends_every_remote_copy_a_deduplicating_dispatcher_one_per_node():
  wl = catalog.make_workload("qwen3_235b_a22b", 256, seq_len=4096, global_batch=2048)
  m = costs.model_scalars(wl)
  hw = hardware.cluster_scalars(hardware.make_cluster("dgx_h100", 256))
  ep_s = {}
  for ep in (8, 32):
    for dedup in (0.0, 1.0):
      plan = dict(_plan(tp=1, pp=8, dp=32, ep=ep, mbs=1, global_batch=2048, layers=94, fsdp=0.0), ep_dedup=dedup)
      ep_s[ep, dedup] = costs.layer_costs(np, plan, m, hw, C)["ep_fwd_s"]
  # EP inside a node: no remote copies, the dispatcher does not matter
  assert ep_s[8, 0.0] == pytest.approx(ep_s[8, 1.0])
  # across 4 nodes with top-8 routing: 8 x 3/4 = 6 remote copies of a token
  # against 3 x (1 - (3/4)^8) = 2.7 remote nodes
  assert ep_s[32, 0.0] / ep_s[32, 1.0] == pytest.approx(6 / (3 * (1 - 0.75 ** 8)), rel=0.05)


def test_megatron_bridge_moe_rows_follow_their_recipes_dispatch():
  from autoscout_jax.sim import published
  base = dict(source_id="MBRIDGE", framework="Megatron-Bridge", task="pretrain", seq_len="4096",
              micro_batch_size="1", global_batch_size="8192", precision="FP8")
  qwen_h100 = dict(base, model="Qwen3_235B_a22B", hardware="H100 80GB (DGX-H100)", num_devices="256", tp="2",
                   pp="8", dp="16", ep="32", vp="4")
  plan, _, _ = published.row_inputs(qwen_h100)
  assert (plan["ep_dedup"], plan["ep_overlap"]) == (0.0, 1.0)  # alltoall, moe_a2a_overlap
  # the same recipe without an interleaved pipeline has no overlapped schedule
  plan, _, _ = published.row_inputs(dict(qwen_h100, vp="1"))
  assert (plan["ep_dedup"], plan["ep_overlap"]) == (0.0, 0.0)
  # DeepSeek-V3 on H100: HybridEP, no overlap (the defaults)
  plan, _, _ = published.row_inputs(dict(qwen_h100, model="DeepSeekV3", num_devices="1024", dp="64", ep="64"))
  assert (plan["ep_dedup"], plan["ep_overlap"]) == (1.0, 0.0)
  # DeepSeek-V3 MXFP8 on GB300: its preset overlaps the all-to-all inside the
  # NVLink domain too; its BF16 preset does not
  gb300 = dict(base, model="DeepSeekV3", hardware="GB300 NVL72", num_devices="256", tp="1", pp="2", vp="8",
               ep="32", precision="MXFP8", global_batch_size="4096")
  plan, _, _ = published.row_inputs(gb300)
  assert (plan["ep_dedup"], plan["ep_overlap"]) == (1.0, 1.0)
  plan, _, _ = published.row_inputs(dict(gb300, precision="BF16"))
  assert plan["ep_overlap"] == 0.0


def test_throughput_interval_widens_on_a_device_no_calibration_row_ran_on():
  # GB300 (and B300, GB200, H200, local devices) never ran a calibration row:
  # its throughput is an extrapolation of the fitted efficiencies; its memory is not
  m = _llama8b(4096)
  plan = _plan(mbs=1, global_batch=8)
  seen = uncertainty.intervals(np, plan, m, hardware.cluster_scalars(hardware.make_cluster("dgx_b200", 8)), C,
                               1000.0, 40e9)
  for system in ("dgx_b300", "gb300_nvl72", "dgx_h200"):
    new = uncertainty.intervals(np, plan, m, hardware.cluster_scalars(hardware.make_cluster(system, 8)), C,
                                1000.0, 40e9)
    # one more unit of distance than on the calibrated device (GB300's bf16 peak, above
    # B200's, adds a little more)
    d_seen = (seen["tput_spread"] / C["tput_spread"] - 1) / C["extrap_gain"]
    assert new["tput_spread"] >= C["tput_spread"] * (1 + C["extrap_gain"] * (d_seen + 1)) * 0.999, system
    if system != "gb300_nvl72":  # (its peak lies outside the calibrated box: both intervals widen for that)
      assert new["peak_mem_hi"] / new["peak_mem_lo"] == pytest.approx(seen["peak_mem_hi"] / seen["peak_mem_lo"])
  for system in ("dgx_a100_80gb", "dgx_h100", "dgx_b200"):
    assert float(uncertainty.uncalibrated_device(np, hardware.cluster_scalars(hardware.make_cluster(system, 8)))) == 0.0


def test_megatron_recompute_modules_trade_moe_time_for_memory():
  from autoscout_jax.sim import hardware
  w = catalog.make_workload("qwen3_30b_a3b", 16)
  m = costs.model_scalars(w)
  hw = hardware.cluster_scalars(hardware.make_cluster("dgx_h100", 16))
  plan = _plan(tp=1, pp=1, dp=16, ep=16, mbs=1, global_batch=1024, layers=48, fsdp=0.0, recompute=0)
  base = costs.layer_costs(np, plan, m, hw, C)
  moe = costs.layer_costs(np, dict(plan, rc_moe=1.0), m, hw, C)
  elem = costs.layer_costs(np, dict(plan, rc_elem=1.0), m, hw, C)
  # "moe": the MoE layers' forward again in the backward (its GEMMs at
  # least), one more dispatch + combine, and only their input kept
  assert float(moe["recompute_s"]) > float(base["recompute_s"]) + 0.9 * float(base["fwd_s"]) * 0.3
  assert float(moe["ep_bwd_s"]) > float(base["ep_bwd_s"])
  assert float(moe["mem_act_layer"]) < 0.6 * float(base["mem_act_layer"])
  # "layernorm" / "moe_act": cheap element-wise work for less memory
  assert float(base["recompute_s"]) < float(elem["recompute_s"]) < float(moe["recompute_s"])
  assert float(elem["mem_act_layer"]) < float(base["mem_act_layer"])
  # a full recompute already repeats them: the modules add nothing on top
  full = _plan(tp=1, pp=1, dp=16, ep=16, mbs=1, global_batch=1024, layers=48, fsdp=0.0, recompute=2)
  a = costs.layer_costs(np, full, m, hw, C)
  b = costs.layer_costs(np, dict(full, rc_moe=1.0, rc_elem=1.0), m, hw, C)
  assert float(b["recompute_s"]) == pytest.approx(float(a["recompute_s"]))
  assert float(b["ep_bwd_s"]) == pytest.approx(float(a["ep_bwd_s"]))


def test_megatron_bridge_rows_take_their_presets_recompute_modules():
  from autoscout_jax.sim import published
  base = dict(source_id="MBRIDGE", framework="Megatron-Bridge", task="pretrain", seq_len="8192",
              model="Nemotron_3_Nano", num_devices="16", tp="1", pp="1", ep="8", micro_batch_size="1",
              global_batch_size="1024")
  h100 = dict(base, hardware="H100 80GB (DGX-H100)", precision="FP8")
  plan, _, _ = published.row_inputs(h100)
  # NEMOTRON_3_NANO_PRETRAIN_CONFIG_H100_FP8_CS_V1: moe, layernorm, core_attn, moe_act
  assert (plan["recompute"], plan["rc_moe"], plan["rc_elem"]) == (1.0, 1.0, 1.0)
  assert not published.recompute_unstated(h100)
  plan, _, _ = published.row_inputs(dict(h100, precision="BF16"))  # moe, layernorm
  assert (plan["recompute"], plan["rc_moe"], plan["rc_elem"]) == (0.0, 1.0, 1.0)
  b200 = dict(base, hardware="B200 (DGX-B200)", num_devices="8", precision="MXFP8")
  plan, _, _ = published.row_inputs(b200)  # its B200 preset recomputes nothing
  assert (plan["recompute"], plan["rc_moe"], plan["rc_elem"]) == (0.0, 0.0, 0.0)
  assert not published.recompute_unstated(b200)
  # a row that states its recompute keeps it; other stacks' rows are untouched
  plan, _, _ = published.row_inputs(dict(h100, recompute="full"))
  assert (plan["recompute"], plan["rc_moe"]) == (2.0, 0.0)
  plan, _, _ = published.row_inputs(dict(h100, source_id="X", framework="NeMo"))
  assert (plan["rc_moe"], plan["rc_elem"]) == (0.0, 0.0)


def test_partial_activation_offload_and_the_host_link():
  from autoscout_jax.sim import hardware, published
  m = _llama8b(8192)
  plan = _plan(tp=1, pp=1, dp=8, mbs=2, global_batch=64, recompute=0, fsdp=1.0)
  h100 = hardware.cluster_scalars(hardware.make_cluster("dgx_h100", 8))
  gb200 = hardware.cluster_scalars(hardware.make_cluster("gb200_nvl72", 8))
  none, half, full = (costs.layer_costs(np, dict(plan, offload=f), m, h100, C) for f in (0.0, 0.5, 1.0))
  act = lambda o: float(o["mem_first"]) - float(o["mem_state"])
  # half the layers offloaded: about half the stored activations leave the device
  assert act(full) < act(half) < act(none)
  assert act(none) - act(half) == pytest.approx((act(none) - act(full)) / 2, rel=0.15)
  # the copies cost what the host link cannot hide: NVLink-C2C (Grace) hides more than PCIe
  slow = costs.layer_costs(np, dict(plan, offload=1.0), m, h100, C)
  fast = costs.layer_costs(np, dict(plan, offload=1.0), m, gb200, C)
  assert float(fast["fwd_s"]) / float(costs.layer_costs(np, plan, m, gb200, C)["fwd_s"]) < \
      float(slow["fwd_s"]) / float(none["fwd_s"])
  # Megatron-Bridge's Llama 3 70B FSDP preset on GB200 (FP8): 40 of 80 layers offloaded, no recompute
  row = dict(source_id="MBRIDGE", framework="Megatron-Bridge", task="pretrain", model="LLAMA3_70B",
             hardware="GB200 NVL72", num_devices="64", tp="1", pp="1", cp="1", micro_batch_size="2",
             global_batch_size="256", seq_len="8192", precision="FP8", sharding="FSDP")
  p, _, _ = published.row_inputs(row)
  assert (p["offload"], p["recompute"]) == (0.5, 0.0)
  assert not published.recompute_unstated(row)
  p, _, _ = published.row_inputs(dict(row, sharding=""))  # not the FSDP preset: nothing assumed
  assert p["offload"] == 0.0 and published.recompute_unstated(dict(row, sharding=""))


def test_flashattention_2_runs_at_its_own_rate_on_hopper_only_for_pytorch_native_stacks():
  """FlashAttention-2 (what PyTorch-native trainers call) predates Hopper:
  on H100 it is priced at the device's fa2_rate, so a long-context row
  slows by nearly that factor; a Megatron (Transformer Engine) row, a row
  naming FlashAttention-3, and the same row on A100 keep the native rate."""
  from autoscout_jax.sim import published

  def tps(row):
    plan, m, hw = _row_arrays(row)
    out = analytic.simulate_f0(plan, m, hw, CALIBRATED)
    return float(plan["flash"][0]), float(out["tokens_per_s_per_device"][0])

  long = _row(seq_len="65536", micro_batch_size="1", global_batch_size="16", recompute="full")
  flash, fa2 = tps(long)
  assert flash == pytest.approx(hardware.DEVICES["h100_sxm"].fa2_rate) and flash < 1
  flash, fa3 = tps(dict(long, notes="flash-attn 3"))
  assert flash == 1.0
  # attention is most of a 1B model's step at 64k tokens: nearly the whole factor
  assert 0.47 < fa2 / fa3 < 0.65
  assert tps(dict(long, framework="Megatron-LM (Transformer Engine)"))[0] == 1.0
  for hw_name in ("A100-SXM4-80GB", "B200"):  # native there / no published figure: the native rate
    assert tps(dict(long, hardware=hw_name))[0] == 1.0
  # at 2k tokens attention is a small share: the change is small
  short_fa2, short_fa3 = tps(_row())[1], tps(_row(notes="FA3"))[1]
  assert 0.8 < short_fa2 / short_fa3 < 1.0
  with pytest.raises(ValueError, match="fa2_rate"):
    hardware.DeviceSpec("x", 1e15, None, 80e9, 3e12, "gpu", fa2_rate=1.5)
  # catalog devices' cluster keys leave the rate out (committed tables keep their keys)
  import dataclasses
  cl = hardware.make_cluster("dgx_h100", 8)
  with_rate = lambda r: dataclasses.replace(cl, device=dataclasses.replace(cl.device, fa2_rate=r)).key
  assert cl.device.fa2_rate == 0.47 and with_rate(None) == cl.key and with_rate(0.6) != cl.key


def test_fsdp1_backward_post_prefetch_puts_the_backward_gathers_on_the_critical_path():
  """Composer's FSDP config (LLM Foundry) issues the gather of the unit the
  backward reaches next only once the current unit's gradient is done
  (BACKWARD_POST): each backward gather waits on the critical path, one
  gather of the stage's weights per micro-batch more than a prefetching
  stack pays; a row that states its
  prefetch, FSDP2 and plain PyTorch FSDP (BACKWARD_PRE) keep overlapping."""
  from autoscout_jax.sim import event, published

  composer = _row(framework="LLM Foundry (Composer, PyTorch FSDP)", model="mpt-13b-like", num_layers="40",
                  hidden_size="5120", num_heads="40", ffn_hidden_size="20480", micro_batch_size="2",
                  global_batch_size="16")
  assert published.row_inputs(composer)[0]["z3_post"] == 1.0
  for other in (dict(composer, notes="backward_prefetch: BACKWARD_PRE"), dict(composer, framework="PyTorch FSDP"),
                dict(composer, framework="torchtitan (PyTorch FSDP2)"), dict(composer, sharding="DDP")):
    assert published.row_inputs(other)[0]["z3_post"] == 0.0
  assert published.row_inputs(dict(_row(), notes="backward_prefetch=BACKWARD_POST"))[0]["z3_post"] == 1.0

  plan, m, hw = _row_arrays(composer)
  pre = dict(plan, z3_post=np.zeros(1))
  lc = costs.layer_costs(np, plan, {**costs.MODEL_DEFAULTS, **m}, hw, C)
  f0 = lambda p: analytic.simulate_f0(p, m, hw, CALIBRATED)["step_time_s"][0]
  f1 = lambda p: event.simulate_f1(p, m, hw, CALIBRATED)["step_time_s"][0]
  # 13B on 8 GPUs, 2 sequences per GPU: prefetching hides every collective;
  # after the gradient, the step pays one gather of the weights per micro-batch
  assert f0(plan) - f0(pre) == pytest.approx(float(plan["num_micro"][0] * lc["zero3_ag_s"][0]), rel=1e-6)
  assert 0.05 < (f0(plan) - f0(pre)) / f0(pre) < 0.5
  assert f1(plan) > f1(pre) * 1.05
  # without prefetch (overlap_param 0) every collective is already serial
  serial = dict(plan, overlap_param=np.zeros(1))
  assert f0(serial) == pytest.approx(f0(dict(serial, z3_post=np.zeros(1))))
