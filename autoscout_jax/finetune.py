"""Fine-tuning arithmetic shared by the local family and the report: how
many parameters a LoRA workload trains, and what its training state costs
next to pre-training's.

Where it sits: `targets/local.py` uses `state_bytes` for its
cannot-fit check, `report.py` puts `explain` under the recommendation of a
fine-tuning run; the simulators have their own array form
(sim/memory.py `adapter_params`). jax-free.
"""

from __future__ import annotations

from autoscout_jax.units import fmt_bytes
from autoscout_jax.workload import ModelConfig, Workload

# fp32 weight, fp32 gradient and two fp32 Adam moments per trained parameter
# (the local train step's state)
TRAINED_BYTES = 16
FROZEN_BYTES = {"bf16": 2.0, "int8": 1.0}


def projection_dims(model: ModelConfig) -> dict[str, tuple[int, int]]:
  """(input width, output width) of each projection that can take an adapter."""
  d, q, kv, f = model.hidden_size, model.num_heads * model.head_dim, model.kv_heads * model.head_dim, \
      model.ffn_hidden_size
  return {"query": (d, q), "key": (d, kv), "value": (d, kv), "out": (q, d), "wi": (d, f), "wg": (d, f),
          "wo": (f, d)}


def base_params(model: ModelConfig) -> int:
  """Weights of the model (embedding, attention, MLP or experts, norms,
  untied output layer): what fine-tuning starts from."""
  d = model.hidden_size
  attn = sum(i * o for i, o in list(projection_dims(model).values())[:4]) + 2 * d
  mats = 3 if model.gated_mlp else 2
  dense = mats * d * model.ffn_hidden_size
  fe = model.moe_ffn_hidden_size or model.ffn_hidden_size
  moe = mats * d * fe * (model.num_experts + model.num_shared_experts) + d * model.num_experts
  n_dense = model.num_dense_layers if model.is_moe else model.num_layers
  layers = model.num_layers * attn + n_dense * dense + (model.num_layers - n_dense) * moe
  return model.vocab_size * d * (1 if model.tie_embeddings else 2) + layers + d


def adapter_params(workload: Workload) -> int:
  """Trained LoRA parameters of the whole model: r x (in + out) per
  targeted projection per layer (0 unless LoRA)."""
  if not workload.is_lora:
    return 0
  dims = projection_dims(workload.model)
  return workload.model.num_layers * sum(workload.lora_rank * sum(dims[t]) for t in workload.lora_targets)


def state_bytes(workload: Workload, base_params: int) -> float:
  """Bytes of training state for a model with `base_params` weights, not
  sharded: every weight trained (pre-training, full fine-tuning), or the
  base frozen in its dtype plus the adapters trained (int8 adds one fp32
  scale per output channel, counted as a ~1 % overhead here)."""
  if not workload.is_lora:
    return float(TRAINED_BYTES * base_params)
  per = FROZEN_BYTES[workload.frozen_dtype] * (1.01 if workload.frozen_dtype == "int8" else 1.0)
  return per * base_params + TRAINED_BYTES * adapter_params(workload)


def explain(workload: Workload, base_params: int, memory_bytes_per_device: float | None = None) -> str | None:
  """One paragraph for report.md: why fine-tuning's memory (and so its
  best layout) differs from pre-training's. None for pre-training and serving."""
  if workload.task != "finetune":
    return None
  pre = TRAINED_BYTES * base_params
  budget = (f" (device budget {fmt_bytes(memory_bytes_per_device)})" if memory_bytes_per_device else "")
  if not workload.is_lora:
    return (f"Full fine-tuning: every one of the {base_params:,} weights trains, so the training state "
            f"(fp32 weights, gradients and two Adam moments, {TRAINED_BYTES} bytes a weight) is the same as "
            f"pre-training's: {fmt_bytes(pre)} unsharded{budget}; memory and the best layout follow pre-training.")
  ad = adapter_params(workload)
  return (f"LoRA fine-tuning (rank {workload.lora_rank} on {', '.join(workload.lora_targets)}; frozen base "
          f"weights in {workload.frozen_dtype}): the {base_params:,} frozen weights carry no gradients and no "
          f"optimizer state, only the {ad:,} adapter weights do, so the unsharded training state is "
          f"{fmt_bytes(state_bytes(workload, base_params))} against {fmt_bytes(pre)} for pre-training the same model"
          f"{budget}. Layouts that replicate the weights (data parallelism, no parameter sharding) fit where "
          f"pre-training has to shard them, and the backward still runs through every activation but skips "
          f"the frozen weights' gradient matmuls.")
