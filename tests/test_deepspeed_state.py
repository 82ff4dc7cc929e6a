"""DeepSpeed's training state as its engine lays it out: bf16 with ZeRO-0/1
runs BF16_Optimizer (an fp32 gradient buffer for every local parameter,
each bf16 .grad kept beside it), fp16 runs the ZeRO stage optimizers
(2-byte gradients, an fp32 gradient partition). Rows rarely say which
DeepSpeed version ran, so the optimistic memory bound leaves the
version-dependent buffers out: a run that trained on an older version is
`uncertain`, never `no`, and a layout that cannot fit either way stays `no`.
Rows: a BLOOM-like 181B model (72 x 14336, 250k vocabulary) on 384 A100s
with Megatron-DeepSpeed, ZeRO-1, full recompute, as in BigScience's
published layout search."""

import pytest
from published_rows import predict_rows

L, H, V = 72, 14336, 250880
BASE = dict(row_id="", source_id="UNSEEN", framework="Megatron-DeepSpeed", task="pretrain", model="BLOOM-like 181B",
            num_layers=str(L), hidden_size=str(H), ffn_hidden_size=str(4 * H), num_heads="64", num_kv_heads="64",
            seq_len="2048", vocab_size=str(V), hardware="A100-SXM4-80GB", num_devices="384", num_nodes="48",
            devices_per_node="8", tp="8", pp="2", dp="24", cp="", ep="", vp="", sharding="ZeRO-1",
            micro_batch_size="1", global_batch_size="2016", grad_accum="", recompute="full", precision="fp16", oom="")


@pytest.fixture(scope="module")
def predicted(tmp_path_factory):
  rows = []
  for prec in ("fp16", "bf16"):
    rows.append(dict(BASE, row_id=f"trained_{prec}", precision=prec))  # trained at 65 GB (fp16)
    rows.append(dict(BASE, row_id=f"oom_{prec}", precision=prec, pp="1", dp="48", oom="yes"))  # published OOM
    rows.append(dict(BASE, row_id=f"mega_{prec}", precision=prec, framework="Megatron-LM"))
  return predict_rows(tmp_path_factory.mktemp("ds"), rows)


def _mem(r, col="pred_peak_mem_gb_per_device"):
  return float(r[col]) * 1e9


def test_bf16_optimizer_holds_an_fp32_gradient_buffer_beside_the_bf16_gradients(predicted):
  fp16, bf16 = predicted["trained_fp16"], predicted["trained_bf16"]
  assert fp16["pred_status"] == bf16["pred_status"] == "ok"
  # parameters on the first of 2 stages: half the layers and the embedding, over tp 8
  p = (L / 2 * 12 * H * H + V * H) / 8
  dp = 24
  # bf16: 2 + (2 + 4) + 12/dp bytes per parameter; fp16: 2 + 2 + 16/dp
  extra = _mem(bf16) - _mem(fp16)
  assert extra == pytest.approx(p * (4 - 4 / dp), rel=0.1)


def test_the_optimistic_bound_leaves_the_version_dependent_buffers_out(predicted):
  fp16, bf16 = predicted["trained_fp16"], predicted["trained_bf16"]
  spread = _mem(fp16, "pred_peak_mem_gb_per_device_hi") / _mem(fp16)
  # the pessimistic side keeps its usual width; the optimistic side is
  # the older version's state, about fp16's
  assert _mem(bf16, "pred_peak_mem_gb_per_device_hi") / _mem(bf16) == pytest.approx(spread, rel=1e-3)
  assert _mem(bf16, "pred_peak_mem_gb_per_device_lo") <= _mem(fp16, "pred_peak_mem_gb_per_device_lo")
  # the run trained: either version's estimate keeps it possible
  assert fp16["pred_feasible"] in ("yes", "uncertain")
  assert bf16["pred_feasible"] == "uncertain"


def test_a_layout_that_cannot_fit_on_any_version_stays_out(predicted):
  assert predicted["oom_fp16"]["pred_feasible"] == "no"
  assert predicted["oom_bf16"]["pred_feasible"] == "no"


def test_megatron_without_deepspeed_keeps_its_own_state(predicted):
  # Megatron-LM's fp32 main gradients, the same for either precision
  a, b = predicted["mega_fp16"], predicted["mega_bf16"]
  assert a["pred_peak_mem_gb_per_device"] == b["pred_peak_mem_gb_per_device"]
  assert a["pred_peak_mem_gb_per_device_lo"] == b["pred_peak_mem_gb_per_device_lo"]
