"""LoRA fine-tuning on the local path (8 virtual CPU devices from conftest):
only the adapters train, the frozen base stays bit-identical and has no
gradient or optimizer state, the loss falls, the frozen base is the
pre-training draw in its storage dtype, and XLA's compiled memory is
smaller than a full fine-tune's; the workload refuses malformed LoRA."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autoscout_jax import finetune
from autoscout_jax.local.model import Lora, init_params, is_adapter
from autoscout_jax.local.train_step import build_train_setup, partition
from autoscout_jax.space import SpaceError
from autoscout_jax.targets import local as local_target
from autoscout_jax.workload import LocalCluster, ModelConfig, Workload

MODEL = ModelConfig("tiny", num_layers=2, hidden_size=64, num_heads=8, num_kv_heads=4,
                    ffn_hidden_size=128, vocab_size=256, seq_len=32, gated_mlp=True)
FULL = Workload("tiny_ft", MODEL, global_batch=16, task="finetune")
LORA = dataclasses.replace(FULL, lora_rank=4, lora_targets=("query", "value", "wg", "wo"))


def _leaves(tree):
  return {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


@pytest.mark.parametrize("frozen_dtype,values", [
    ("bf16", dict(data=8)),
    ("int8", dict(data=2, fsdp=2, tensor=2, num_microbatches=2, scan_layers=True, remat_policy="full")),
])
def test_lora_step_trains_only_the_adapters(frozen_dtype, values):
  wl = dataclasses.replace(LORA, frozen_dtype=frozen_dtype)
  setup = build_train_setup(wl, values, jax.devices()[:8], learning_rate=1e-2)
  params, opt = setup.init(0)
  before = _leaves(params)
  tokens = setup.batch(0)
  losses = []
  for _ in range(4):
    params, opt, loss = setup.step(params, opt, tokens)
    losses.append(float(loss))
  after = _leaves(params)
  assert before.keys() == after.keys()
  adapters = {k for k in before if is_adapter(k.split("'")[-2])}
  assert adapters and len(adapters) == 2 * 4 * (1 if values.get("scan_layers") else MODEL.num_layers)
  for k in before:
    if k in adapters:
      continue
    assert before[k].dtype == after[k].dtype and np.array_equal(before[k], after[k]), k  # bit-identical
  assert any(not np.array_equal(before[k], after[k]) for k in adapters)
  # frozen storage: int8 projections (+ fp32 scales) or bf16; adapters fp32
  dtypes = {str(v.dtype) for k, v in before.items() if k not in adapters and not k.endswith("_scale']")}
  assert dtypes == ({"int8", "bfloat16"} if frozen_dtype == "int8" else {"bfloat16"})
  assert {str(before[k].dtype) for k in adapters} == {"float32"}
  # Adam's moments exist for the adapters only
  opt_names = {k.split("'")[-2] for k, v in _leaves(opt).items() if v.ndim}
  assert opt_names and all(is_adapter(n) for n in opt_names)
  assert losses[-1] < losses[0] - 0.01


def test_gradients_exist_only_for_adapters():
  lora = Lora.of(LORA)
  params = jax.eval_shape(lambda k: init_params(MODEL, k, lora=lora), jax.random.key(0))
  trained, frozen = partition(params, lora)
  assert all(is_adapter(k.split("'")[-2]) for k in _leaves(trained))
  assert not any(is_adapter(k.split("'")[-2]) for k in _leaves(frozen))
  setup = build_train_setup(LORA, dict(data=8), jax.devices()[:8])
  # the step's optimizer state mirrors the adapters exactly (two moments each)
  moments = [v for v in jax.tree.leaves(setup.abstract_opt_state) if v.ndim]
  assert sum(v.size for v in moments) == 2 * sum(v.size for v in jax.tree.leaves(trained))
  assert sum(v.size for v in jax.tree.leaves(trained)) == finetune.adapter_params(LORA)


def test_frozen_base_is_the_pretraining_draw():
  key = jax.random.key(3)
  base = init_params(MODEL, key)
  bf16 = init_params(MODEL, key, lora=Lora.of(LORA))
  q0, q1 = base["layers_0"]["attn"]["query"], bf16["layers_0"]["attn"]["query"]
  assert q1.dtype == jnp.bfloat16 and np.array_equal(np.asarray(q0.astype(jnp.bfloat16)), np.asarray(q1))
  int8 = init_params(MODEL, key, lora=Lora.of(dataclasses.replace(LORA, frozen_dtype="int8")))
  w, scale = int8["layers_0"]["mlp"]["wo"], int8["layers_0"]["mlp"]["wo_scale"]
  assert w.dtype == jnp.int8 and scale.shape == (MODEL.hidden_size,)
  deq = np.asarray(w, np.float32) * np.asarray(scale)
  ref = np.asarray(base["layers_0"]["mlp"]["wo"])
  assert np.max(np.abs(deq - ref)) <= np.max(np.abs(ref)) / 127  # within one quantization step


def test_compiled_state_is_smaller_than_a_full_finetune():
  args = {}
  for name, wl in (("full", FULL), ("lora", LORA), ("qlora", dataclasses.replace(LORA, frozen_dtype="int8"))):
    mem = build_train_setup(wl, dict(data=8), jax.devices()[:8]).lower().compile().memory_analysis()
    args[name] = mem.argument_size_in_bytes
  assert args["qlora"] < args["lora"] < args["full"] / 3


def test_the_local_space_admits_lora_where_pretraining_cannot_fit():
  base = local_target.param_count(FULL)
  budget = int(finetune.state_bytes(LORA, base) / 8 * 1.5)  # LoRA fits sharded, pre-training does not
  cluster = LocalCluster(num_devices=8, memory_bytes_per_device=budget)
  assert local_target.space(LORA, cluster).family == "local"
  with pytest.raises(SpaceError, match="cannot fit"):
    local_target.space(FULL, cluster)
  text = finetune.explain(LORA, base, budget)
  assert "no gradients and no optimizer state" in text and f"{finetune.adapter_params(LORA):,}" in text
  assert finetune.explain(dataclasses.replace(FULL, task="pretrain"), base) is None


@pytest.mark.parametrize("kw,msg", [
    (dict(task="pretrain"), "needs task='finetune'"),
    (dict(lora_targets=("query", "bogus")), "lora_targets"),
    (dict(lora_targets=()), "lora_targets"),
    (dict(frozen_dtype="fp4"), "frozen_dtype"),
    (dict(lora_rank=-1), "lora_rank"),
])
def test_malformed_lora_workloads_are_refused(kw, msg):
  with pytest.raises(ValueError, match=msg):
    dataclasses.replace(LORA, **kw)


def test_workload_key_of_pretraining_is_unchanged_and_lora_is_part_of_it():
  pre = Workload("tiny", MODEL, global_batch=16)
  assert pre.key == "tiny-7b36caf2c26f"  # as before the fine-tuning fields existed: stored runs still match
  assert pre.key != dataclasses.replace(pre, task="finetune").key
  assert LORA.key != dataclasses.replace(LORA, lora_rank=8).key != FULL.key
  assert dataclasses.replace(FULL, frozen_dtype="bf16").key == FULL.key
  with pytest.raises(ValueError, match="needs LoRA"):
    dataclasses.replace(FULL, frozen_dtype="int8")
  # JSON round trip (the child process rebuilds the workload from a dict)
  d = dataclasses.asdict(LORA)
  d["lora_targets"] = list(d["lora_targets"])
  assert Workload(**{**d, "model": MODEL}).key == LORA.key
