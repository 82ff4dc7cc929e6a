"""Published rows as people write them: the same run described in the
words other tables use (hardware and instance names, recompute and sharding
wording, numbers with separators, suffixes or units, a micro-batch left to
the stack) gets the prediction its plain spelling gets, and what changes
the run (ZeRO stage, the instance's network) changes the prediction."""

import pytest

from autoscout_jax.sim import calibration, hardware, published
from autoscout_jax.tools import predict_published
from published_rows import predict_rows

BASE = dict(row_id="base", source_id="UNSEEN", framework="PyTorch FSDP", task="pretrain", model="Llama-2 7B",
            num_layers="32", hidden_size="4096", ffn_hidden_size="11008", num_heads="32", num_kv_heads="32",
            seq_len="4096", vocab_size="32000", hardware="A100-SXM4-80GB", num_devices="8", tp="", pp="", dp="",
            cp="", ep="", vp="", sharding="FSDP FULL_SHARD", micro_batch_size="2", global_batch_size="64",
            grad_accum="", recompute="full", precision="bf16", oom="")

# (column, spelling, the spelling of BASE's own value it must equal)
SAME = [
    ("hardware", "8xA100 80GB", "A100-SXM4-80GB"), ("hardware", "NVIDIA A100 80GB", "A100-SXM4-80GB"),
    ("recompute", "full AC", "full"), ("recompute", "activation checkpointing", "full"),
    ("recompute", "enabled", "full"), ("recompute", "uniform", "full"), ("recompute", "block", "full"),
    ("recompute", "No AC", "none"), ("recompute", "no activation checkpointing", "none"),
    ("recompute", "without recompute", "none"), ("recompute", "sel", "selective"), ("recompute", "op", "selective"),
    ("sharding", "fully_shard", "FSDP"), ("sharding", "ZeRO stage 3", "FSDP"), ("sharding", "sharded, stage 3", "FSDP"),
    ("sharding", "SHARD_GRAD_OP", "ZeRO-2"), ("sharding", "ZeRO stage 2", "ZeRO-2"),
    ("seq_len", "4k", "4096"), ("seq_len", "4,096", "4096"), ("num_devices", "8 GPUs", "8"),
    ("global_batch_size", "64 sequences", "64"), ("global_batch_size", "256k tokens", "64"),
    ("global_batch_size", "262,144 tokens", "64"),
    # a parenthesized second figure is another recipe's (Megatron-Bridge tables)
    ("micro_batch_size", "2 (4)", "2"), ("global_batch_size", "64 (128)", "64"),
]


@pytest.fixture(scope="module")
def spelled(tmp_path_factory):
  rows = []
  for i, (col, text, plain) in enumerate(SAME):
    rows.append(dict(BASE, row_id=f"alt{i}", **{col: text}))
    rows.append(dict(BASE, row_id=f"plain{i}", **{col: plain}))
  return predict_rows(tmp_path_factory.mktemp("spelled"), rows)


@pytest.mark.parametrize("i", range(len(SAME)), ids=[f"{c}={t}" for c, t, _ in SAME])
def test_other_spellings_predict_what_the_plain_one_does(spelled, i):
  alt, plain = spelled[f"alt{i}"], spelled[f"plain{i}"]
  assert alt["pred_status"] == "ok" and plain["pred_status"] == "ok"
  for col in ("pred_tokens_per_sec_per_device", "pred_peak_mem_gb_per_device", "pred_feasible"):
    assert alt[col] == plain[col], (SAME[i], col)


@pytest.mark.parametrize("col,text,reason", [
    ("micro_batch_size", "1-2", "micro_batch_size='1-2' is not a number"),
    ("num_devices", "2 nodes", "counts nodes, not devices"),
    ("recompute", "partial", "unknown recompute setting 'partial'"),
    ("hardware", "MI300X", "unknown hardware name 'MI300X'")])
def test_text_that_cannot_be_read_is_a_named_reason_and_the_rest_run(tmp_path, col, text, reason):
  out = predict_rows(tmp_path, [dict(BASE, row_id="bad", **{col: text}), dict(BASE)])
  assert reason in out["bad"]["pred_status"]
  assert out["base"]["pred_status"] == "ok"


def test_zero2_shards_gradients_and_optimizer_state(tmp_path):
  # 7B on 8 A100-80GB: replicated Adam state alone is 12 bytes x 6.7B > 80 GB;
  # ZeRO-2 divides gradients and optimizer state by 8, ZeRO-3 the weights too
  out = predict_rows(tmp_path, [dict(BASE, row_id=z, sharding=z) for z in ("DDP", "ZeRO-1", "ZeRO-2", "ZeRO-3")])
  mem = {z: float(out[z]["pred_peak_mem_gb_per_device"]) for z in out}
  assert mem["DDP"] > 80 > mem["ZeRO-2"]
  assert mem["DDP"] > mem["ZeRO-1"] > mem["ZeRO-2"] > mem["ZeRO-3"]
  assert out["DDP"]["pred_feasible"] == "no" and out["ZeRO-2"]["pred_feasible"] == "yes"


def test_a_micro_batch_left_to_the_stack_is_the_largest_that_fits(tmp_path):
  # 7B under FSDP on 8 A100-80GB without recompute, 32 sequences of 4k per
  # GPU: the whole per-replica batch does not fit (each sequence keeps
  # gigabytes of activations); automatic micro-batching halves it until it does
  big = dict(BASE, global_batch_size="256", recompute="none")
  rows = [dict(big, row_id="auto", micro_batch_size="auto"), dict(big, row_id="blank", micro_batch_size="")]
  rows += [dict(big, row_id=f"mbs{b}", micro_batch_size=str(b)) for b in (32, 16, 8, 4, 2, 1)]
  out = predict_rows(tmp_path, rows)
  fits = [b for b in (32, 16, 8, 4, 2, 1) if out[f"mbs{b}"]["pred_feasible"] == "yes"]
  assert fits and fits[0] < 32  # the per-replica batch alone does not fit
  for key in ("auto", "blank"):
    assert out[key]["pred_status"] == "ok"
    assert out[key]["pred_tokens_per_sec_per_device"] == out[f"mbs{fits[0]}"]["pred_tokens_per_sec_per_device"]
    assert out[key]["pred_peak_mem_gb_per_device"] == out[f"mbs{fits[0]}"]["pred_peak_mem_gb_per_device"]


def test_a_pipeline_without_micro_batch_or_accumulation_is_refused_with_its_reason(tmp_path):
  row = dict(BASE, row_id="pp", framework="Megatron-LM", sharding="", tp="2", pp="2", dp="2", micro_batch_size="")
  out = predict_rows(tmp_path, [row])
  assert "a pipeline's micro-batch cannot be inferred" in out["pp"]["pred_status"]


@pytest.mark.parametrize("name,system", [
    ("8xA100 80GB", "dgx_a100_80gb"), ("A100 40GB (p4d.24xlarge)", "aws_p4d"), ("p4de.24xlarge", "aws_p4de"),
    ("H100 (p5.48xlarge)", "aws_p5"), ("p5en.48xlarge", "aws_p5e"), ("H100 80GB (GCP A3 Mega)", "gcp_a3_mega"),
    ("H100 80GB (GCP A3, 8 GPUs/VM)", "gcp_a3_h100"), ("H200 (GCP A3 Ultra)", "gcp_a3_ultra"),
    ("NVIDIA H800 80GB", "hgx_h800"), ("A800-SXM4-80GB", "hgx_a800"), ("v5p-128", "tpu_v5p"),
    ("TPUv4", "tpu_v4"), ("tpu-v5e-256", "tpu_v5e"), ("2x GB200 NVL72", "gb200_nvl72"),
    ("A100 80GB (p4d.24xlarge)", "dgx_a100_80gb")])  # the device named wins over a contradicting instance
def test_instance_and_variant_names_resolve(name, system):
  assert hardware.system_for_hardware_name(name).name == system


def test_the_instance_network_is_what_changes():
  # same device: DGX-A100's 8x200 Gb/s HDR against p4d's 400 Gb/s EFA per node
  dgx = hardware.make_cluster("dgx_a100_40gb", 64)
  p4d = hardware.make_cluster(hardware.system_for_hardware_name("p4d.24xlarge").name, 64)
  assert dgx.device == p4d.device and dgx.intra.bw == p4d.intra.bw
  assert p4d.inter.bw == pytest.approx(dgx.inter.bw / 4)
  h800 = hardware.make_cluster("hgx_h800", 8)
  assert h800.device.name == "h100_sxm" and h800.intra.bw < hardware.make_cluster("dgx_h100", 8).intra.bw


def test_a_tpu_slice_named_without_tpu_is_an_xla_program():
  row = dict(BASE, framework="", hardware="v5p-128", num_devices="64")
  assert published._is_xla(row)
  assert not published._is_xla(dict(BASE))


def test_calibration_keeps_each_rows_chosen_micro_batch(tmp_path):
  rows = [dict(BASE, micro_batch_size="auto", global_batch_size="16"), dict(BASE, row_id="b2")]
  prep = calibration.prepare(rows)
  out = calibration.simulate(prep)
  assert list(out["mbs"]) == [2.0, 2.0]  # 16 / 8 replicas fits as it is; the stated one is kept


def test_the_device_count_a_row_implies_is_used(tmp_path):
  rows = [dict(BASE, row_id="nodes", num_devices="", num_nodes="1", devices_per_node="8"),
          dict(BASE, row_id="degrees", num_devices="", dp="8"),
          dict(BASE, row_id="none", num_devices=""), dict(BASE)]
  out = predict_rows(tmp_path, rows)
  for key in ("nodes", "degrees"):
    assert out[key]["pred_tokens_per_sec_per_device"] == out["base"]["pred_tokens_per_sec_per_device"]
  assert out["none"]["pred_status"].startswith("unsupported: num_devices missing")


@pytest.mark.parametrize("col,value", [("tokens_per_sec_per_device", "3000"), ("tokens_per_sec_total", "24,000"),
                                       ("samples_per_sec", "5.859375"), ("step_time_s", "10.922666")])
def test_published_throughput_in_any_of_its_units(col, value):
  # 64 sequences of 4,096 tokens on 8 devices: 3,000 tokens/s per device
  m = published.model_numbers(BASE)
  assert published.published_tokens_per_s(dict(BASE, **{col: value}), m) == pytest.approx(3000, rel=1e-6)


def test_a_dp_that_folds_in_context_or_expert_parallelism_is_read_as_meant(tmp_path):
  long = dict(BASE, framework="torchtitan", sharding="FSDP2", model="Llama-3 8B", num_layers="", hidden_size="",
              hardware="H100 80GB", seq_len="131072", global_batch_size="2", micro_batch_size="1")
  moe = dict(BASE, framework="Megatron-Bridge", sharding="", model="Mixtral 8x7B", num_layers="", hidden_size="",
             hardware="H100 80GB", num_devices="64", tp="1", pp="4", ep="8", seq_len="4096",
             global_batch_size="256", micro_batch_size="1")
  rows = [dict(long, row_id="cp_apart", cp="4", dp="2"), dict(long, row_id="cp_in_dp", cp="4", dp="8"),
          dict(moe, row_id="ep_in_dp", dp="16"), dict(moe, row_id="ep_apart", dp="2"),
          dict(long, row_id="wrong", cp="4", dp="3"),
          # the micro-batch left blank is the per-replica batch of the dp read as meant (2 / 2)
          dict(long, row_id="cp_in_dp_blank_mbs", cp="4", dp="8", micro_batch_size="")]
  out = predict_rows(tmp_path, rows)
  assert out["cp_in_dp"]["pred_status"] == "ok"
  assert out["cp_in_dp"]["pred_tokens_per_sec_per_device"] == out["cp_apart"]["pred_tokens_per_sec_per_device"]
  assert out["ep_apart"]["pred_status"] == "ok"
  assert out["ep_apart"]["pred_tokens_per_sec_per_device"] == out["ep_in_dp"]["pred_tokens_per_sec_per_device"]
  assert "is not the 8 devices" in out["wrong"]["pred_status"]
  blank = out["cp_in_dp_blank_mbs"]
  assert blank["pred_tokens_per_sec_per_device"] == out["cp_apart"]["pred_tokens_per_sec_per_device"]


@pytest.mark.parametrize("sep,bom", [(";", False), ("\t", False), (",", True)])
def test_spreadsheet_exports_are_read(tmp_path, sep, bom):
  cols = list(BASE)
  text = sep.join(cols) + "\n" + sep.join(BASE[c] for c in cols) + "\n"
  (tmp_path / "in.csv").write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
  out = predict_published.predict_file(str(tmp_path / "in.csv"), str(tmp_path / "out.csv"))
  assert out[0]["row_id"] == "base" and out[0]["pred_status"] == "ok"


@pytest.mark.parametrize("hw, gib", [("H100 96GB HBM2e", 96.0), ("H100 NVL 94GB", 94.0), ("H100 80GB (DGX-H100)", 80.0),
                                     ("A100-SXM4-40GB", 40.0), ("H200 141GB", 141e9 / 2**30), ("B200", 180e9 / 2**30)])
def test_a_memory_size_the_hardware_cell_states_is_the_devices(hw, gib):
  cluster = published.cluster_for(dict(hardware=hw, num_devices="8"))
  assert cluster.device.hbm_bytes / 2**30 == pytest.approx(gib, rel=1e-6)


def test_the_stated_memory_decides_the_memory_verdict(tmp_path):
  # a Llama-2 7B layout (ZeRO-2, micro-batch 3, no recompute) that an 80 GB
  # H100 may not hold and a 96 GB one does
  row = dict(BASE, hardware="H100 80GB", sharding="ZeRO-2", recompute="none", micro_batch_size="3",
             global_batch_size="24")
  out = predict_rows(tmp_path, [dict(row, row_id="80"), dict(row, row_id="96", hardware="H100 96GB HBM2e")])
  assert out["80"]["pred_feasible"] in ("no", "uncertain") and out["96"]["pred_feasible"] == "yes"
  # the same run: only the runtime's reserve, a share of the device, differs
  assert float(out["96"]["pred_peak_mem_gb_per_device"]) == pytest.approx(
      float(out["80"]["pred_peak_mem_gb_per_device"]), rel=0.01)
