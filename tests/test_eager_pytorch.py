"""A PyTorch-native trainer runs its element-wise work as eager kernels, one
per operator, unless it compiles (torch.compile is opt-in). For the Llama
family that is RMSNorm written as x.float() -> pow -> mean -> rsqrt ->
type_as -> * weight, rotary embeddings through complex fp32 and SwiGLU as
silu(a) * b: each a pass over HBM that a fused kernel (Transformer Engine,
Megatron's fusions, torch.compile, XLA) does not make. LayerNorm and GELU
are one native kernel each, so a GPT-style model moves nothing extra.
Rows: Llama 3.1 8B on 8 H100s with FSDP2 at 8k tokens (torchtitan's
benchmark layout), eager and compiled."""

import numpy as np
import pytest

from autoscout_jax.sim import calibration, costs, published

BASE = dict(row_id="", source_id="UNSEEN", framework="torchtitan (FSDP2)", task="pretrain", model="Llama 3.1 8B",
            hardware="H100 80GB", num_devices="8", seq_len="8192", sharding="FSDP2", micro_batch_size="2",
            global_batch_size="16", recompute="none", precision="bf16", tp="", pp="", cp="", dp="", notes="")


@pytest.mark.parametrize("notes,framework,compiled", [
    ("eager", "torchtitan", False),
    ("", "PyTorch FSDP", False),
    ("torch.compile", "torchtitan", True),
    ("torch.compile + Float8", "torchtitan", True),
    ("compiled with Inductor", "PyTorch", True),
    ("no torch.compile", "torchtitan", False),
    ("compile=false", "torchtitan", False),
])
def test_a_row_says_whether_its_trainer_compiled(notes, framework, compiled):
  assert published.compiled(dict(notes=notes, framework=framework)) is compiled


def _prep(rows):
  prep = calibration.prepare(rows)
  assert prep.status == ["ok"] * len(rows), prep.status
  return prep


def test_only_pytorch_native_trainers_without_compile_run_eager_kernels():
  rows = [dict(BASE, row_id="eager", notes="eager"), dict(BASE, row_id="compiled", notes="torch.compile"),
          dict(BASE, row_id="megatron", framework="Megatron-LM", sharding="distributed optimizer")]
  assert list(_prep(rows).plan["eager"]) == [1.0, 0.0, 0.0]


@pytest.mark.parametrize("fidelity", ["analytic", "event"])
def test_eager_kernels_cost_their_extra_passes_over_memory(fidelity):
  rows = [dict(BASE, row_id="eager", notes="eager"), dict(BASE, row_id="compiled", notes="torch.compile")]
  prep = _prep(rows)
  out = calibration.simulate(prep, fidelity)
  t_eager, t_compiled = (float(x) for x in out["step_time_s"])
  assert t_eager > t_compiled
  # the extra bytes of one layer's forward, over the device's memory bandwidth,
  # for every token and layer of the step: the backward passes over about
  # twice what the forward does, no recompute here -- about 3x the forward's
  m, plan = prep.model, prep.plan
  per_token = costs.eager_bytes_per_token({k: v[0] for k, v in m.items()}, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0)
  tokens = m["s"][0] * m["gbs"][0] / plan["dp"][0]
  fwd_s = per_token * tokens * m["L"][0] / prep.hw["hbm_bw"][0]
  assert 2.5 * fwd_s < t_eager - t_compiled < 4.0 * fwd_s
  # torchtitan's published pair: eager 5,762 tokens/s per GPU, compiled 6,667 (1.16x)
  assert 1.05 < t_eager / t_compiled < 1.3


def test_layernorm_and_gelu_models_move_nothing_extra():
  gpt = dict(BASE, model="", num_layers="24", hidden_size="2048", ffn_hidden_size="8192", num_heads="16",
             num_kv_heads="16", vocab_size="50368", seq_len="2048")
  rows = [dict(gpt, row_id="eager", notes="eager"), dict(gpt, row_id="compiled", notes="torch.compile")]
  prep = _prep(rows)
  assert list(prep.plan["eager"]) == [1.0, 0.0] and not prep.model["gated"].any()
  out = calibration.simulate(prep, "analytic")
  assert float(out["step_time_s"][0]) == pytest.approx(float(out["step_time_s"][1]), rel=1e-6)
  assert np.all(np.isfinite(out["step_time_s"]))
