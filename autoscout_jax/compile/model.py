"""The decoder of the compile-at-scale evaluator: dense and mixture-of-experts
models of the catalog at their real dimensions, written as pure JAX functions
over a parameter dict, with every JAX-mesh axis in its sharding rules.

Where it sits: `compile/step.py` asks `param_shapes` for the parameter
tree (shapes and logical axes; nothing is ever initialized: the step is
lowered from ShapeDtypeStructs) and calls `forward_hidden` / `logits_loss`
inside the jitted train step. It is the architecture of
`autoscout_jax/local/model.py` (pre-norm blocks, RMSNorm, rotary GQA
attention, gated or GELU MLP, same leaf names) generalized: MoE layers
(GShard-style top-k routing with a capacity factor, experts sharded over
'expert'), optional leading dense layers (DeepSeek), shared experts,
flash-style attention (compile/flash.py) and a 'sequence' (context) axis.
Pure functions rather than linen modules because the pipeline (step.py)
vmaps a stage's slice of the stacked layers, which a plain dict makes
direct.

Logical axes -> mesh axes (MaxText's defaults): weights' model width
('embed') over fsdp x sequence x expert (expert weights over fsdp x
sequence), heads / kv heads / MLP width / vocabulary over 'tensor', experts
over 'expert', pipeline stages over 'stage'; activations' batch over data x
fsdp x expert, sequence over 'sequence', and the residual stream's width
over 'tensor' (MaxText's activation_embed rule: a tensor-parallel rank keeps
its share of the [B, S, D] activations, as Megatron's sequence parallelism).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from autoscout_jax.compile.flash import BLOCK, flash_attention
from autoscout_jax.targets.jax_mesh import REMAT as JAX_MESH_REMAT
from autoscout_jax.workload import ModelConfig

MESH_AXES = ("data", "stage", "fsdp", "sequence", "tensor", "expert")
BATCH = ("data", "fsdp", "expert")
LOGICAL = {
    "embed": ("fsdp", "sequence", "expert"),
    "embed_e": ("fsdp", "sequence"),
    "vocab": ("tensor",), "heads": ("tensor",), "kv": ("tensor",), "mlp": ("tensor",),
    "exp": ("expert",), "stage": ("stage",), "batch": BATCH, "seq": ("sequence",),
    "act_embed": ("tensor",),
}
CAPACITY_FACTOR = 1.25  # MoE: tokens an expert takes, relative to an even share
REMAT = tuple(JAX_MESH_REMAT)  # the JAX-mesh family's remat_policy choices (targets/jax_mesh.py)

# leaf name -> logical axes of one layer's (or the unstacked) parameter
RULES: dict[str, tuple[str | None, ...]] = {
    "embedding": ("vocab", "embed"), "unembed": ("embed", "vocab"), "final_norm": (None,),
    "attn_norm": (None,), "mlp_norm": (None,),
    "query": ("embed", "heads", None), "key": ("embed", "kv", None), "value": ("embed", "kv", None),
    "out": ("heads", None, "embed"),
    "wi": ("embed", "mlp"), "wg": ("embed", "mlp"), "wo": ("mlp", "embed"),
    "router": ("embed", None),
    "e_wi": ("exp", "embed_e", "mlp"), "e_wg": ("exp", "embed_e", "mlp"), "e_wo": ("exp", "mlp", "embed_e"),
    "s_wi": ("embed", "mlp"), "s_wg": ("embed", "mlp"), "s_wo": ("mlp", "embed"),
}


@dataclasses.dataclass(frozen=True)
class Param:
  shape: tuple[int, ...]
  axes: tuple[str | None, ...]


def _layer_params(m: ModelConfig, moe: bool) -> dict[str, Param]:
  d, h, kv, hd = m.hidden_size, m.num_heads, m.kv_heads, m.head_dim
  out = {"attn_norm": (d,), "query": (d, h, hd), "key": (d, kv, hd), "value": (d, kv, hd),
         "out": (h, hd, d), "mlp_norm": (d,)}
  gate = m.gated_mlp
  if not moe:
    f = m.ffn_hidden_size
    out.update(wi=(d, f), wo=(f, d), **({"wg": (d, f)} if gate else {}))
  else:
    e, fe = m.num_experts, m.moe_ffn_hidden_size or m.ffn_hidden_size
    out.update(router=(d, e), e_wi=(e, d, fe), e_wo=(e, fe, d), **({"e_wg": (e, d, fe)} if gate else {}))
    if m.num_shared_experts:
      fs = m.num_shared_experts * fe
      out.update(s_wi=(d, fs), s_wo=(fs, d), **({"s_wg": (d, fs)} if gate else {}))
  return {k: Param(tuple(v), RULES[k]) for k, v in out.items()}


def stacks(m: ModelConfig) -> tuple[tuple[str, int, bool], ...]:
  """(name, layers, is_moe) of the layer stacks, in order."""
  if not m.is_moe:
    return (("layers", m.num_layers, False),)
  nd = m.num_dense_layers
  out = (("dense_layers", nd, False),) if nd else ()
  return out + (("moe_layers", m.num_layers - nd, True),)


def param_shapes(m: ModelConfig, stages: int = 1) -> dict[str, Any]:
  """The parameter tree as `Param`s. Layer stacks get a leading layer axis;
  with `stages` > 1 (one uniform stack) it is split into [stages, layers/stages]."""
  tree: dict[str, Any] = {"embedding": Param((m.vocab_size, m.hidden_size), RULES["embedding"]),
                          "final_norm": Param((m.hidden_size,), (None,))}
  if not m.tie_embeddings:
    tree["unembed"] = Param((m.hidden_size, m.vocab_size), RULES["unembed"])
  for name, n, moe in stacks(m):
    lead, axes = ((stages, n // stages), ("stage", None)) if stages > 1 else ((n,), (None,))
    tree[name] = {k: Param(lead + p.shape, axes + p.axes) for k, p in _layer_params(m, moe).items()}
  return tree


def mesh_spec(axes: tuple[str | None, ...], shape: tuple[int, ...], mesh_shape: dict[str, int]) -> PartitionSpec:
  """PartitionSpec of logical `axes`: each dimension takes its mesh axes in
  order while their product still divides the dimension (an axis that would
  split it unevenly is left out, so the dimension is replicated over it)."""
  out: list[Any] = []
  for dim, name in zip(shape, axes):
    used: list[str] = []
    for ax in LOGICAL.get(name, ()) if name else ():
      size = mesh_shape.get(ax, 1)
      if size > 1 and dim % (math.prod(mesh_shape[a] for a in used) * size) == 0:
        used.append(ax)
    out.append(tuple(used) if len(used) > 1 else (used[0] if used else None))
  return PartitionSpec(*out)


def constrain(x: jax.Array, mesh: Mesh | None, *axes: str | None) -> jax.Array:
  if mesh is None:
    return x
  spec = mesh_spec(tuple(axes), x.shape, dict(mesh.shape))
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


def rms_norm(x: jax.Array, scale: jax.Array, eps: float = 1e-6) -> jax.Array:
  x32 = x.astype(jnp.float32)
  y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
  return (y * scale).astype(x.dtype)


def _rope(x: jax.Array) -> jax.Array:
  half = x.shape[-1] // 2
  freqs = 1.0 / (10000.0 ** (jnp.arange(half, dtype=jnp.float32) / half))
  ang = jnp.arange(x.shape[1], dtype=jnp.float32)[:, None] * freqs[None, :]
  sin, cos = jnp.sin(ang)[None, :, None, :], jnp.cos(ang)[None, :, None, :]
  x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


def attention(p: dict[str, jax.Array], x: jax.Array, m: ModelConfig, dt: Any, mesh: Mesh | None,
              attn_block: int = BLOCK) -> jax.Array:
  b, s, _ = x.shape
  kv, g, hd = m.kv_heads, m.num_heads // m.kv_heads, m.head_dim
  q = constrain(jnp.einsum("bsd,dhk->bshk", x, p["query"].astype(dt)), mesh, "batch", "seq", "heads", None)
  # Context parallelism: queries stay split over 'sequence', keys and values
  # are gathered whole (MaxText's all-gather context parallelism).
  k = constrain(jnp.einsum("bsd,dhk->bshk", x, p["key"].astype(dt)), mesh, "batch", None, "kv", None)
  v = constrain(jnp.einsum("bsd,dhk->bshk", x, p["value"].astype(dt)), mesh, "batch", None, "kv", None)
  q, k = _rope(q), _rope(k)
  ctx = flash_attention(q.reshape(b, s, kv, g, hd), k, v, attn_block).reshape(b, s, kv * g, hd)
  ctx = constrain(ctx, mesh, "batch", "seq", "heads", None)
  return constrain(jnp.einsum("bshk,hkd->bsd", ctx, p["out"].astype(dt)), mesh, "batch", "seq", "act_embed")


def mlp(p: dict[str, jax.Array], x: jax.Array, gated: bool, dt: Any, mesh: Mesh | None,
        prefix: str = "") -> jax.Array:
  act = constrain(jnp.einsum("bsd,df->bsf", x, p[prefix + "wi"].astype(dt)), mesh, "batch", "seq", "mlp")
  if gated:
    gate = constrain(jnp.einsum("bsd,df->bsf", x, p[prefix + "wg"].astype(dt)), mesh, "batch", "seq", "mlp")
    act = jax.nn.silu(gate) * act
  else:
    act = jax.nn.gelu(act)
  return constrain(jnp.einsum("bsf,fd->bsd", act, p[prefix + "wo"].astype(dt)), mesh, "batch", "seq", "act_embed")


def moe(p: dict[str, jax.Array], x: jax.Array, m: ModelConfig, dt: Any, mesh: Mesh | None) -> jax.Array:
  """Top-k routed experts, GShard dispatch: each sequence is a routing group;
  an expert takes at most `capacity` tokens of a group, the rest are dropped
  (their residual passes through). Dispatch/combine are einsums, so the
  expert-parallel all-to-alls appear where the layouts change."""
  b, s, d = x.shape
  e, k = m.num_experts, m.moe_top_k
  cap = max(1, math.ceil(s * k / e * CAPACITY_FACTOR))
  logits = jnp.einsum("bsd,de->bse", x, p["router"].astype(dt), preferred_element_type=jnp.float32)
  probs = jax.nn.softmax(logits, axis=-1)
  weights, idx = jax.lax.top_k(probs, k)  # [b, s, k]
  weights = weights / jnp.sum(weights, axis=-1, keepdims=True)
  chosen = jax.nn.one_hot(idx, e, dtype=jnp.int32)  # [b, s, k, e]
  # Queue position of each (token, choice) at its expert, in token order.
  order = jnp.cumsum(chosen.reshape(b, s * k, e), axis=1).reshape(b, s, k, e) * chosen - 1
  dispatch = jnp.zeros((b, s, e, cap), dt)
  combine = jnp.zeros((b, s, e, cap), jnp.float32)
  for j in range(k):  # k one-hot slices, summed (XLA fuses them)
    pos = jnp.sum(order[:, :, j, :] * chosen[:, :, j, :], axis=-1)  # [b, s]
    slot = jax.nn.one_hot(pos, cap, dtype=jnp.float32) * (pos < cap)[..., None]
    hit = chosen[:, :, j, :, None].astype(jnp.float32) * slot[:, :, None, :]  # [b, s, e, cap]
    dispatch = dispatch + hit.astype(dt)
    combine = combine + hit * weights[:, :, j, None, None]
  dispatch = constrain(dispatch, mesh, "batch", "seq", None, None)
  xin = jnp.einsum("bsec,bsd->becd", dispatch, x)
  # Expert-major layout: experts over 'expert', groups over the rest of the batch.
  xin = _expert_layout(xin, mesh)
  h = jnp.einsum("becd,edf->becf", xin, p["e_wi"].astype(dt))
  if m.gated_mlp:
    h = jax.nn.silu(jnp.einsum("becd,edf->becf", xin, p["e_wg"].astype(dt))) * h
  else:
    h = jax.nn.gelu(h)
  y = _expert_layout(jnp.einsum("becf,efd->becd", h, p["e_wo"].astype(dt)), mesh)
  out = jnp.einsum("bsec,becd->bsd", combine.astype(dt), y)
  out = constrain(out, mesh, "batch", "seq", "act_embed")
  if m.num_shared_experts:
    out = out + mlp(p, x, m.gated_mlp, dt, mesh, prefix="s_")
  return out


def _expert_layout(x: jax.Array, mesh: Mesh | None) -> jax.Array:
  """[groups, experts, capacity, width]: experts over 'expert', routing
  groups over what remains of the batch axes (data x fsdp)."""
  if mesh is None:
    return x
  shape = dict(mesh.shape)
  groups = tuple(a for a in ("data", "fsdp") if shape.get(a, 1) > 1)
  while groups and x.shape[0] % math.prod(shape[a] for a in groups):
    groups = groups[:-1]
  experts = "expert" if shape.get("expert", 1) > 1 and x.shape[1] % shape["expert"] == 0 else None
  spec = PartitionSpec(groups or None, experts, None, None)
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


def block(p: dict[str, jax.Array], x: jax.Array, m: ModelConfig, is_moe: bool, dt: Any,
          mesh: Mesh | None, attn_block: int = BLOCK) -> jax.Array:
  x = x + attention(p, rms_norm(x, p["attn_norm"]), m, dt, mesh, attn_block)
  h = rms_norm(x, p["mlp_norm"])
  x = x + (moe(p, h, m, dt, mesh) if is_moe else mlp(p, h, m.gated_mlp, dt, mesh))
  return constrain(x, mesh, "batch", "seq", "act_embed")


def remat_block(policy: str, m: ModelConfig, is_moe: bool, dt: Any, mesh: Mesh | None,
                attn_block: int = BLOCK) -> Callable:
  """The block under the candidate's remat policy: 'none' keeps every
  activation, 'minimal' keeps matmul outputs (MaxText's minimal: weight
  matmuls without batch dimensions) and recomputes the rest, 'full' keeps
  only the block input."""
  if policy not in REMAT:
    raise ValueError(f"unknown remat_policy {policy!r}; known: {REMAT}")
  fn = lambda p, x: block(p, x, m, is_moe, dt, mesh, attn_block)
  if policy == "none":
    return fn
  pol = (jax.checkpoint_policies.dots_with_no_batch_dims_saveable if policy == "minimal"
         else jax.checkpoint_policies.nothing_saveable)
  return jax.checkpoint(fn, policy=pol)


def run_stack(stack: dict[str, jax.Array], x: jax.Array, fn: Callable, unroll: bool = False) -> jax.Array:
  """Scan `fn(layer_params, x)` over the leading layer axis of `stack`
  (`unroll`: no loop in the program, for flop counting)."""
  return jax.lax.scan(lambda h, p: (fn(p, h), None), x, stack, unroll=unroll)[0]


def embed(params: dict[str, Any], tokens: jax.Array, dt: Any, mesh: Mesh | None) -> jax.Array:
  # Gather rows from a table whole along the width (see local/model.py).
  table = constrain(params["embedding"], mesh, "vocab", None)
  return constrain(jnp.take(table, tokens, axis=0).astype(dt), mesh, "batch", "seq", "act_embed")


def logits_loss(params: dict[str, Any], x: jax.Array, targets: jax.Array, m: ModelConfig, dt: Any,
                mesh: Mesh | None) -> jax.Array:
  """Mean next-token cross entropy (float32) of hidden states x [B,S,D]."""
  x = rms_norm(x, params["final_norm"])
  w = params["embedding"].T if m.tie_embeddings else params["unembed"]
  logits = constrain(jnp.einsum("bsd,dv->bsv", x, w.astype(dt)), mesh, "batch", "seq", "vocab")
  logits = logits.astype(jnp.float32)
  lse = jax.nn.logsumexp(logits, axis=-1)
  picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  return jnp.mean(lse - picked)
