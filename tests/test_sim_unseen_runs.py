"""Runs of the kinds issue 12 says the simulators will be judged on but were
never fitted to (configurations only, written from public accounts of such
runs; no published number is used as an expected value): FSDP pre-training
of 125M-70B models at 512-65k tokens on A100-40/80GB and H100, a 3D-parallel
176B model on 384 A100s and one of its layouts that cannot fit, FSDP2 long
context of an 8B model on 8 H100s at 131k/262k tokens, and GB200/GB300 NVL72
and B300 jobs of dense, MoE and hybrid Mamba-2 models at 8-256 GPUs, some of
them splitting racks. Every row must come back from `predict_published` with a prediction,
a plausible throughput (model FLOPs per device at least 15 % of the bf16 peak
-- 12 % for PyTorch-native runs at 64k+ tokens on Hopper, whose steps are
mostly FlashAttention-2, a kernel that reaches about a third of Hopper's
peak in its own benchmarks and less inside a training step -- and at most
75 % of the peak of the precision its GEMMs run in: fp8 runs
report MFU against the bf16 peak and reach 70-80 % of it) and, where the run trained, a memory verdict of yes or
uncertain; the layout that cannot fit must be predicted infeasible."""

import csv

import pytest

from autoscout_jax.sim import hardware
from autoscout_jax.tools import predict_published

COLS = ("row_id", "source_id", "framework", "task", "model", "num_layers", "hidden_size", "ffn_hidden_size",
        "num_heads", "num_kv_heads", "seq_len", "vocab_size", "hardware", "num_devices", "tp", "pp", "dp", "cp",
        "ep", "vp", "sharding", "micro_batch_size", "global_batch_size", "recompute", "precision", "oom")

_FSDP = dict(framework="PyTorch FSDP", sharding="FSDP FULL_SHARD", recompute="full", precision="bf16")
_TITAN = dict(framework="torchtitan (PyTorch FSDP2)", sharding="FSDP2 fully_shard", model="Llama-3 8B",
              recompute="full", precision="bf16")
_BLOOM = dict(framework="Megatron-DeepSpeed", model="BLOOM-176B", seq_len="2048", hardware="A100-SXM4-80GB",
              num_devices="384", sharding="DeepSpeed ZeRO-1", global_batch_size="2048", recompute="full",
              precision="bf16")
_MB = dict(framework="Megatron-Bridge")

ROWS = [
    # BLOOM-176B's training layout: tp 4, pp 12, dp 8 on 384 A100-80GB
    dict(_BLOOM, row_id="bloom_176b_tp4_pp12", tp="4", pp="12", dp="8", micro_batch_size="2"),
    # the same model with pipeline 4 and no tensor parallelism: 44B
    # parameters per GPU, 88 GB of bf16 weights alone -- cannot fit
    dict(_BLOOM, row_id="bloom_176b_tp1_pp4", tp="1", pp="4", dp="96", micro_batch_size="1", oom="yes"),
    # Llama-2 7B / 13B / 70B under FSDP on A100-40GB (seq 4096, full AC)
    dict(_FSDP, row_id="llama2_7b_a100_40gb", model="Llama-2 7B", seq_len="4096", hardware="A100-SXM4-40GB",
         num_devices="8", dp="8", micro_batch_size="2", global_batch_size="64"),
    dict(_FSDP, row_id="llama2_13b_a100_40gb", model="Llama-2 13B", seq_len="4096", hardware="A100-SXM4-40GB",
         num_devices="64", dp="64", micro_batch_size="1", global_batch_size="256"),
    dict(_FSDP, row_id="llama2_70b_a100_40gb", model="Llama-2 70B", seq_len="4096", hardware="A100-SXM4-40GB",
         num_devices="64", dp="64", micro_batch_size="1", global_batch_size="512"),
    # small GPT-style models given by their dimensions (no catalog entry):
    # 125M at 512 tokens with a large micro-batch and no recompute, 125M at
    # 65k, 350M at 32k, 1.3B at 65k tokens
    dict(_FSDP, row_id="gpt_125m_512", model="gpt-125m", num_layers="12", hidden_size="768", num_heads="12",
         seq_len="512", vocab_size="50257", hardware="H100 80GB", num_devices="8", dp="8", micro_batch_size="64",
         global_batch_size="512", recompute="none"),
    dict(_FSDP, row_id="gpt_125m_65k", model="gpt-125m", num_layers="12", hidden_size="768", num_heads="12",
         seq_len="65536", vocab_size="50257", hardware="A100-SXM4-80GB", num_devices="8", dp="8",
         micro_batch_size="1", global_batch_size="8"),
    dict(_FSDP, row_id="gpt_350m_32k", model="gpt-350m", num_layers="24", hidden_size="1024", num_heads="16",
         seq_len="32768", vocab_size="50257", hardware="A100-SXM4-80GB", num_devices="8", dp="8",
         micro_batch_size="1", global_batch_size="64"),
    dict(_FSDP, row_id="gpt_1.3b_65k", model="gpt-1.3b", num_layers="24", hidden_size="2048", num_heads="16",
         seq_len="65536", vocab_size="50257", hardware="H100 80GB", num_devices="8", dp="8", micro_batch_size="1",
         global_batch_size="8"),
    # torchtitan-style FSDP2 + context parallelism, Llama-3 8B on 8 H100
    dict(_TITAN, row_id="llama3_8b_131k", seq_len="131072", hardware="H100 80GB", num_devices="8", dp="2", cp="4",
         micro_batch_size="1", global_batch_size="2"),
    dict(_TITAN, row_id="llama3_8b_262k", seq_len="262144", hardware="H100 80GB", num_devices="8", dp="1", cp="8",
         micro_batch_size="1", global_batch_size="1"),
    # one GB200 NVL72 rack, FSDP2 over its 72 GPUs
    dict(_TITAN, row_id="llama3_8b_gb200_72", seq_len="8192", hardware="GB200 NVL72", num_devices="72", dp="72",
         micro_batch_size="2", global_batch_size="144", recompute="selective"),
    # Megatron-Bridge-style recipes on 128 / 256 Blackwell GPUs (128 and 256
    # GPUs split NVL72 racks), dense and MoE
    dict(_MB, row_id="llama3_70b_gb200_128", model="LLAMA3_70B", seq_len="8192", hardware="GB200 NVL72",
         num_devices="128", tp="2", pp="4", dp="16", vp="5", micro_batch_size="1", global_batch_size="256",
         precision="FP8-MX"),
    dict(_MB, row_id="llama3_70b_gb300_256_fsdp", model="LLAMA3_70B", seq_len="8192", hardware="GB300 NVL72",
         num_devices="256", dp="256", sharding="Megatron FSDP", micro_batch_size="1", global_batch_size="256",
         precision="FP8-MX"),
    dict(_MB, row_id="llama31_405b_b300_256", model="LLAMA3.1_405B", seq_len="8192", hardware="B300 (DGX-B300)",
         num_devices="256", tp="4", pp="8", cp="2", dp="4", vp="8", micro_batch_size="1", global_batch_size="512",
         precision="FP8-MX"),
    dict(_MB, row_id="dsv3_gb300_256", model="DeepSeekV3", seq_len="4096", hardware="GB300 NVL72",
         num_devices="256", tp="1", pp="4", dp="64", ep="64", vp="4", micro_batch_size="1",
         global_batch_size="2048", precision="BF16"),
    dict(_MB, row_id="dsv3_b300_256", model="DeepSeekV3", seq_len="4096", hardware="B300 (DGX-B300)",
         num_devices="256", tp="1", pp="8", dp="32", ep="8", vp="2", micro_batch_size="1", global_batch_size="2048",
         precision="FP8-MX"),
    dict(_MB, row_id="qwen3_235b_gb200_128", model="Qwen3_235B_a22B", seq_len="4096", hardware="GB200 NVL72",
         num_devices="128", tp="1", pp="4", dp="32", ep="32", vp="3", micro_batch_size="1",
         global_batch_size="4096", precision="FP8-MX"),
    dict(_MB, row_id="qwen3_30b_gb300_128", model="Qwen3_30B_a3B", seq_len="4096", hardware="GB300 NVL72",
         num_devices="128", tp="1", pp="1", dp="128", ep="8", micro_batch_size="4", global_batch_size="2048",
         precision="FP8-MX"),
    # a hybrid Mamba-2 / attention / MoE model (Megatron's layer pattern from
    # the catalog): one GB300 tray group of 8, and 16 H100 over two nodes
    dict(_MB, row_id="nemotron3_nano_gb300_8", model="Nemotron_3_Nano", seq_len="8192", hardware="GB300 NVL72",
         num_devices="8", tp="1", pp="1", dp="8", ep="8", micro_batch_size="4", global_batch_size="512",
         precision="MXFP8"),
    dict(_MB, row_id="nemotron3_nano_h100_16", model="Nemotron_3_Nano", seq_len="8192", hardware="H100 80GB",
         num_devices="16", tp="1", pp="1", dp="16", ep="8", micro_batch_size="1", global_batch_size="1024",
         precision="FP8"),
]


@pytest.fixture(scope="module", params=["analytic", "event"])
def predicted(request, tmp_path_factory):
  d = tmp_path_factory.mktemp(request.param)
  with open(d / "in.csv", "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=COLS)
    w.writeheader()
    for r in ROWS:
      w.writerow({**{k: "" for k in COLS}, "source_id": "UNSEEN", "task": "pretrain", **r})
  out = predict_published.predict_file(str(d / "in.csv"), str(d / "out.csv"), request.param)
  return {r["row_id"]: r for r in out}


def _device(row) -> hardware.DeviceSpec:
  return hardware.DEVICES[hardware.system_for_hardware_name(row["hardware"]).device]


def _peaks(row) -> tuple[float, float]:
  """(bf16 peak, peak of the run's GEMM precision), FLOP/s per device."""
  dev = _device(row)
  low = "fp8" in row["precision"].lower() or "fp4" in row["precision"].lower()
  return dev.peak_bf16, (dev.peak_fp8 or dev.peak_bf16) if low else dev.peak_bf16


@pytest.mark.parametrize("row_id", [r["row_id"] for r in ROWS])
def test_every_unseen_run_gets_a_plausible_prediction(predicted, row_id):
  r = predicted[row_id]
  assert r["pred_status"] == "ok", r["pred_status"]
  flops = float(r["pred_model_tflops_per_device"]) * 1e12
  bf16, peak = _peaks(r)
  fa2_long = _device(r).fa2_rate is not None and "megatron" not in r["framework"].lower() and int(r["seq_len"]) >= 65536
  floor = 0.12 if fa2_long else 0.15
  assert floor * bf16 <= flops <= 0.75 * peak, (
      f"{row_id}: model FLOPs at {100 * flops / bf16:.1f} % of the bf16 peak, {100 * flops / peak:.1f} % of its own")
  lo, mid, hi = (float(r[f"pred_tokens_per_sec_per_device{s}"]) for s in ("_lo", "", "_hi"))
  assert lo < mid < hi
  if r["oom"] == "yes":
    assert r["pred_feasible"] == "no"
  else:
    assert r["pred_feasible"] in ("yes", "uncertain"), (
        f"{row_id} trained but is predicted {r['pred_feasible']} at {r['pred_peak_mem_gb_per_device']} GB "
        f"[{r['pred_peak_mem_gb_per_device_lo']}, {r['pred_peak_mem_gb_per_device_hi']}]")
