"""The local-device training space: the knobs of a sharded JAX train step on
the devices of this machine (F2 compile and F3 profile evaluate it).

Knobs: mesh axes data x fsdp x tensor (product = device count), number of
gradient-accumulation micro-batches (the global batch is fixed by the
workload, so the per-device micro-batch is derived), remat policy, scan over
layers and, under it, the scan unroll factor; optionally XLA GPU flags.
"""

from __future__ import annotations

from autoscout_jax.space import (Boolean, Categorical, Constraint, Ordinal, ProductGroup,
                                 SearchSpace, SpaceError, When)
from autoscout_jax.workload import LocalCluster, Workload

REMAT_POLICIES = ("none", "dots_saveable", "full")


def _pow2_upto(n: int) -> tuple[int, ...]:
  out, v = [], 1
  while v <= n:
    out.append(v)
    v *= 2
  if n not in out:  # non power-of-two device counts: allow n itself
    out.append(n)
  return tuple(out)


def _divides(knob: str, fact: str, what: str) -> Constraint:
  def check(vals, facts):
    v, f = int(vals[knob]), int(facts[fact])
    if f % v:
      return f"{knob}={v} does not divide {what} ({fact}={f})"
    return None
  return Constraint(f"{knob}_divides_{fact}", check, f"{knob} divides {what}")


def _batch_split(vals, facts):
  shards = int(vals["data"]) * int(vals["fsdp"])
  mb = int(vals["num_microbatches"])
  gb = int(facts["global_batch"])
  if gb % (shards * mb):
    return (f"global batch {gb} cannot be split into data*fsdp={shards} shards "
            f"x num_microbatches={mb} micro-batches")
  return None


def param_count(workload: Workload) -> int:
  """Parameters of the local model (local/model.py): embedding, per layer
  q/k/v/out projections, MLP (two or three matrices) and two norms, final
  norm, untied output layer."""
  m = workload.model
  d, hd = m.hidden_size, m.head_dim
  attn = d * hd * (m.num_heads + 2 * m.kv_heads) + m.num_heads * hd * d
  mlp = (3 if m.gated_mlp else 2) * d * m.ffn_hidden_size
  per_layer = attn + mlp + 2 * d
  unembed = 0 if m.tie_embeddings else d * m.vocab_size
  return m.vocab_size * d + m.num_layers * per_layer + d + unembed


def min_state_bytes_per_device(workload: Workload, num_devices: int) -> int:
  """Lower bound on per-device memory of any layout: fp32 parameters,
  gradients and two Adam moments (16 bytes a parameter), fully sharded."""
  return 16 * param_count(workload) // num_devices


def local_training_space(workload: Workload, cluster: LocalCluster,
                         microbatch_choices: tuple[int, ...] = (1, 2, 4, 8),
                         remat_policies: tuple[str, ...] = REMAT_POLICIES,
                         xla_gpu_flags: bool = False) -> SearchSpace:
  n = cluster.num_devices
  need = min_state_bytes_per_device(workload, n)
  if need > cluster.memory_bytes_per_device:
    raise SpaceError(
        f"model {workload.model.name!r} cannot fit: its parameters, gradients and Adam states need "
        f"at least {need:,} bytes per device even fully sharded over {n} devices, but the budget is "
        f"{cluster.memory_bytes_per_device:,} bytes per device")
  axes = _pow2_upto(n)
  m = workload.model
  knobs = [
      Ordinal("data", values=axes, default=n, doc="data-parallel mesh axis"),
      Ordinal("fsdp", values=axes, default=1, doc="parameters and optimizer state sharded"),
      Ordinal("tensor", values=axes, default=1, doc="column/row-parallel attention and MLP"),
      Ordinal("num_microbatches", values=microbatch_choices,
              default=microbatch_choices[0] if microbatch_choices else None,
              doc="gradient accumulation steps (lax.scan over micro-batches)"),
      Categorical("remat_policy", choices=remat_policies,
                  default=remat_policies[0] if remat_policies else None),
      Boolean("scan_layers", default=False, doc="lax.scan over the layer stack"),
      Ordinal("scan_unroll", values=(1, 2), default=1, when=(When("scan_layers", True),),
              doc="unroll factor of the layer scan"),
  ]
  if xla_gpu_flags:
    knobs += [
        Boolean("xla_latency_hiding_scheduler", default=False,
                doc="--xla_gpu_enable_latency_hiding_scheduler"),
        Boolean("xla_triton_gemm", default=True, doc="--xla_gpu_enable_triton_gemm"),
    ]
  facts = dict(num_devices=n, num_heads=m.num_heads, kv_heads=m.kv_heads, hidden_size=m.hidden_size,
               ffn_hidden_size=m.ffn_hidden_size, vocab_size=m.vocab_size,
               global_batch=workload.global_batch, num_layers=m.num_layers)
  constraints = [
      _divides("tensor", "num_heads", "the attention heads"),
      _divides("tensor", "kv_heads", "the key/value heads"),
      _divides("tensor", "ffn_hidden_size", "the MLP width"),
      _divides("tensor", "vocab_size", "the vocabulary"),
      _divides("fsdp", "hidden_size", "the model width (fsdp shards parameters along it)"),
      Constraint("batch_split", _batch_split,
                 "global batch divisible by data*fsdp*num_microbatches"),
  ]
  return SearchSpace(knobs, constraints, groups=[ProductGroup(("data", "fsdp", "tensor"), n)],
                     facts=facts, name=f"local:{workload.name}:{n}dev", family="local")
