"""The sharded local train step (in-process, 8 virtual CPU devices from conftest)."""

import jax
import numpy as np
import pytest

from autoscout_jax.local.model import Decoder, init_params
from autoscout_jax.local.train_step import build_train_setup, spec_for
from autoscout_jax.targets.local import Config, LayoutError
from autoscout_jax.workload import ModelConfig, Workload

# GQA (8 query heads over 4 kv heads) so that tensor=4 is legal.
MODEL = ModelConfig("tiny", num_layers=2, hidden_size=64, num_heads=8, num_kv_heads=4,
                    ffn_hidden_size=128, vocab_size=256, seq_len=32, gated_mlp=True)
WORKLOAD = Workload("tiny", MODEL, global_batch=16, precision="fp32")


@pytest.fixture(scope="module")
def devices():
  devs = jax.devices()
  assert len(devs) >= 8, "needs 8 virtual devices: XLA_FLAGS is set in tests/conftest.py"
  return devs[:8]


def _two_losses(values, devices, params, tokens):
  setup = build_train_setup(WORKLOAD, values, devices)
  p, opt = setup.place(params)
  tok = jax.device_put(tokens, setup.batch_sharding)
  losses = []
  for _ in range(2):
    p, opt, loss = setup.step(p, opt, tok)
    losses.append(float(loss))
  return losses


def _host_params(seed=0):
  # Host-side random parameters: cheaper than compiling an initializer, and
  # the layouts only need to agree on what they train.
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(lambda k: init_params(MODEL, k), jax.random.key(0))
  return jax.tree.map(lambda s: (0.05 * rng.standard_normal(s.shape)).astype(np.float32), shapes)


def test_every_layout_trains_the_same_model(devices):
  params = _host_params()
  tokens = np.random.default_rng(1).integers(0, MODEL.vocab_size, (16, 33), dtype=np.int32)
  ref = _two_losses({"data": 8}, devices, params, tokens)
  assert np.isfinite(ref).all() and ref[1] < ref[0], ref  # the update does something
  layouts = [
      {"fsdp": 8},
      {"data": 2, "fsdp": 2, "tensor": 2, "scan_layers": True, "scan_unroll": 2,
       "remat_policy": "full"},
      {"data": 2, "tensor": 4, "num_microbatches": 2, "remat_policy": "dots_saveable",
       "scan_layers": True},
  ]
  for values in layouts:
    got = _two_losses(values, devices, params, tokens)
    np.testing.assert_allclose(got, ref, rtol=2e-5, err_msg=str(values))


def test_parameters_and_optimizer_state_are_sharded(devices):
  setup = build_train_setup(WORKLOAD, {"fsdp": 2, "tensor": 4}, devices)
  wi = setup.param_shardings["layers_0"]["mlp"]["wi"].spec
  assert tuple(wi) == ("fsdp", "tensor")
  # adam's first moment mirrors the parameters' layout
  mu = setup.opt_shardings[0].mu["layers_0"]["attn"]["out"].spec
  assert tuple(mu) == ("tensor", None, "fsdp")
  per_device = setup.abstract_args()[0]["embedding"].sharding.shard_shape((256, 64))
  assert per_device == (64, 32)


def test_scan_stacks_layers_with_an_unsharded_layer_axis(devices):
  setup = build_train_setup(WORKLOAD, {"tensor": 2, "data": 4, "scan_layers": True}, devices)
  q = setup.abstract_params["layers"]["attn"]["query"]
  assert q.shape == (2, 64, 8, 8)
  assert tuple(setup.param_shardings["layers"]["attn"]["query"].spec) == (None, "fsdp", "tensor", None)


def test_tied_embeddings_have_no_output_matrix():
  tied = ModelConfig("t", num_layers=1, hidden_size=32, num_heads=2, ffn_hidden_size=64,
                     vocab_size=64, seq_len=8, tie_embeddings=True)
  shapes = jax.eval_shape(lambda k: init_params(tied, k), jax.random.key(0))
  assert "unembed" not in shapes and shapes["embedding"].shape == (64, 32)
  logits = jax.eval_shape(lambda p, t: Decoder(tied).apply({"params": p}, t), shapes,
                          jax.ShapeDtypeStruct((2, 8), np.int32))
  assert logits.shape == (2, 8, 64)


@pytest.mark.parametrize("values, message", [
    ({"data": 4}, "4 but 8 devices"),
    ({"tensor": 8}, "does not divide the key/value heads"),
    ({"data": 8, "num_microbatches": 4}, "cannot be split into data*fsdp=8 shards x num_microbatches=4"),
    ({"data": 8, "remat_policy": "some"}, "unknown remat_policy"),
    ({"data": 8, "pipeline": 2}, "unknown knob"),
])
def test_bad_layouts_name_the_problem(devices, values, message):
  with pytest.raises(LayoutError, match=message.replace("*", r"\*")):
    build_train_setup(WORKLOAD, values, devices)


def test_step_config_ignores_xla_flag_knobs():
  cfg = Config.from_candidate({"data": 8, "xla_triton_gemm": True})
  assert cfg == Config(data=8)


def test_unknown_leaf_has_no_sharding_rule():
  with pytest.raises(ValueError, match="no sharding rule"):
    spec_for((jax.tree_util.DictKey("mystery"),), (4, 4))
