"""Rows of PyTorch-native trainers (FSDP2, torchtitan) read as those stacks
run, not as Megatron does:
- "selective" activation checkpointing is PyTorch's policy-based SAC
  (torchtitan's op-level AC): matmul and attention outputs kept, the
  element-wise work recomputed; Megatron's recomputes the attention core.
  Row: Llama 3.1 8B, FSDP2 on 8 H100s, 8k tokens, local batch 2, as
  torchtitan's H100 benchmark publishes it (82.4 GiB measured).
- tensor parallelism shards the norms' sequence dimension (SequenceParallel
  in PyTorch's TP plans) unless the row says otherwise.
- FSDP under a pipeline keeps each stage's parameters gathered across its
  micro-batches and accumulates unsharded fp32 gradients until the last
  one (torchtitan reshards after forward only without PP): ZeRO-1's state."""

import pytest
from published_rows import predict_rows

BASE = dict(row_id="", source_id="UNSEEN", framework="torchtitan (FSDP2)", task="pretrain", model="Llama 3.1 8B",
            hardware="H100 80GB", num_devices="8", seq_len="8192", sharding="FSDP2", micro_batch_size="2",
            global_batch_size="16", recompute="selective", precision="bf16", tp="", pp="", cp="", dp="")


@pytest.fixture(scope="module")
def predicted(tmp_path_factory):
  rows = [dict(BASE, row_id=rc, recompute=rc) for rc in ("none", "selective", "full")]
  rows.append(dict(BASE, row_id="megatron", framework="Megatron-LM", sharding="distributed optimizer"))
  rows.append(dict(BASE, row_id="megatron_none", framework="Megatron-LM", sharding="distributed optimizer",
                   recompute="none"))
  return predict_rows(tmp_path_factory.mktemp("sac"), rows)


def _mem(r):
  assert r["pred_status"] == "ok", r["pred_status"]
  return float(r["pred_peak_mem_gb_per_device"])


def _tput(r):
  return float(r["pred_tokens_per_sec_per_device"])


def test_fsdp_selective_keeps_matmul_outputs_and_recomputes_the_rest(predicted):
  none, sel, full = predicted["none"], predicted["selective"], predicted["full"]
  assert _mem(full) < _mem(sel) < _mem(none)
  assert _tput(full) < _tput(sel) < _tput(none)
  # the published run: 82.4 GiB on its devices
  assert _mem(sel) == pytest.approx(82.4 * 2**30 / 1e9, rel=0.15)
  assert sel["pred_feasible"] in ("yes", "uncertain")


def test_megatron_selective_recomputes_only_the_attention_core(predicted):
  # with flash attention there is no score matrix to drop: about no recompute
  assert _mem(predicted["megatron"]) == pytest.approx(_mem(predicted["megatron_none"]), rel=0.05)
  assert _mem(predicted["megatron"]) > _mem(predicted["selective"])


ROW_405B = dict(BASE, model="Llama 3.1 405B", num_devices="512", tp="8", pp="8", micro_batch_size="1",
                global_batch_size="256", recompute="full", precision="bf16")


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
  rows = [dict(ROW_405B, row_id="fsdp_pp", sequence_parallel="on"),
          dict(ROW_405B, row_id="megatron_dist_opt", framework="Megatron-LM", sharding="distributed optimizer",
               sequence_parallel="on"),
          dict(BASE, row_id="tp_sp", model="Llama 3.1 70B", num_devices="256", tp="8", micro_batch_size="16",
               global_batch_size="512", recompute="full"),
          dict(BASE, row_id="tp_no_sp", model="Llama 3.1 70B", num_devices="256", tp="8", micro_batch_size="16",
               global_batch_size="512", recompute="full", sequence_parallel="off")]
  return predict_rows(tmp_path_factory.mktemp("native"), rows)


def test_fsdp_under_a_pipeline_keeps_the_state_of_a_sharded_optimizer(layouts):
  # gathered bf16 parameters + unsharded fp32 gradients + sharded fp32
  # master and Adam moments: what Megatron's distributed optimizer keeps
  # with fp32 gradients
  assert _mem(layouts["fsdp_pp"]) == pytest.approx(_mem(layouts["megatron_dist_opt"]), rel=0.15)
  # 405B over tp 8 x pp 8: 6.3B parameters a GPU, 6 bytes each unsharded
  assert _mem(layouts["fsdp_pp"]) > 6.3 * 6  # GB


def test_pytorch_tensor_parallelism_shards_the_sequence_unless_told_not_to(layouts):
  assert _mem(layouts["tp_sp"]) < 0.5 * _mem(layouts["tp_no_sp"])
  assert layouts["tp_sp"]["pred_feasible"] == "yes"  # trained at 72 GiB (torchtitan's 2-D table)
