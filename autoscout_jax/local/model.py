"""A small decoder-only transformer (Flax linen) for the local-device evaluators.

Where it sits: `train_step.py` builds a `Decoder` from a workload's
`ModelConfig` and a candidate's remat / scan knobs, shards its parameters over
the device mesh and jits one training step; F2 (compile) compiles that step,
F3 (profile) times it.

Parameter leaf names are unique per role (`embedding`, `query`, `key`,
`value`, `out`, `wi`, `wg`, `wo`, `scale`, `unembed`) so `train_step.py` can
derive every PartitionSpec from the leaf name alone, for the parameters and
for the optimizer state that mirrors them.

Parameters are float32; matmuls run in the workload's compute dtype
(`compute_dtype`), softmax and the loss in float32.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from autoscout_jax.targets.local import BATCH_AXES, REMAT_POLICIES
from autoscout_jax.workload import ModelConfig

# The batch dimension is split over BATCH_AXES (fsdp is data parallel for
# activations; it differs from `data` only in how parameters are stored).

# fp8 training keeps master weights and most activations in higher precision;
# locally we run its matmuls in bf16 (no fp8 kernels on CPU).
_COMPUTE_DTYPES = {"fp32": jnp.float32, "tf32": jnp.float32, "bf16": jnp.bfloat16,
                   "fp16": jnp.float16, "fp8": jnp.bfloat16}

_init = nn.initializers.normal(stddev=0.02)


def compute_dtype(precision: str) -> Any:
  try:
    return _COMPUTE_DTYPES[precision]
  except KeyError:
    raise ValueError(f"unknown precision {precision!r}; the local model supports "
                     f"{sorted(_COMPUTE_DTYPES)}") from None


def check_supported(model: ModelConfig) -> None:
  """Raise one clear error for models this local transformer cannot build."""
  if model.is_moe:
    raise ValueError(f"model {model.name!r} is a mixture-of-experts model; the local "
                     "compile/profile evaluators build dense decoders only")
  if model.is_hybrid:
    raise ValueError(f"model {model.name!r} is a hybrid Mamba-2/transformer model; the local "
                     "compile/profile evaluators build transformer decoders only")
  if model.head_dim % 2:
    raise ValueError(f"model {model.name!r}: head_dim {model.head_dim} must be even "
                     "(rotary position embedding)")


def _constrain(x: jax.Array, mesh: Mesh | None, *spec: Any) -> jax.Array:
  # Activation layouts pin what GSPMD would otherwise have to guess; without
  # a mesh (single device, tests of the bare model) they are no-ops.
  if mesh is None:
    return x
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, PartitionSpec(*spec)))


@dataclasses.dataclass(frozen=True)
class Lora:
  """LoRA adapters of a fine-tuning workload: rank, the projections that
  carry them, the scale alpha / rank, and the dtype the frozen base is
  kept in ('float32' when nothing is frozen)."""

  rank: int = 0
  targets: tuple[str, ...] = ()
  alpha: float = 16.0
  frozen_dtype: str = "float32"

  @classmethod
  def of(cls, workload: Any) -> "Lora":
    if not workload.is_lora:
      return cls()
    return cls(workload.lora_rank, tuple(workload.lora_targets), float(workload.lora_alpha),
               workload.frozen_dtype)


def _project(mod: nn.Module, name: str, x: jax.Array, eq: str, shape: tuple[int, ...], n_in: int,
             lora: Lora, dt: Any) -> jax.Array:
  """`einsum(eq, x, W)` for the projection weight `name` of `shape` (its
  first `n_in` dims contract with x). An int8 frozen weight is dequantized
  by its per-output-channel `<name>_scale`; a LoRA target adds
  (x A) B * alpha / r, A `<name>_lora_a` [in..., r], B `<name>_lora_b`
  [r, out...] (zeros at init, so training starts from the base model)."""
  w = mod.param(name, _init, shape, jnp.float32).astype(dt)
  if lora.frozen_dtype == "int8":
    w = w * mod.param(f"{name}_scale", nn.initializers.ones, shape[n_in:], jnp.float32).astype(dt)
  y = jnp.einsum(eq, x, w)
  if name in lora.targets:
    lhs, out = eq.split("->")
    xin, wl = lhs.split(",")
    a = mod.param(f"{name}_lora_a", _init, shape[:n_in] + (lora.rank,), jnp.float32)
    b = mod.param(f"{name}_lora_b", nn.initializers.zeros, (lora.rank,) + shape[n_in:], jnp.float32)
    xa = jnp.einsum(f"{xin},{wl[:n_in]}r->bsr", x, a.astype(dt))
    y = y + jnp.einsum(f"bsr,r{wl[n_in:]}->{out}", xa, b.astype(dt)) * (lora.alpha / lora.rank)
  return y


def _rope(x: jax.Array, positions: jax.Array) -> jax.Array:
  """Rotary position embedding over the last (head) dimension of [B,S,H,D];
  positions int[S] (every row alike) or int[B,S] (packed rows)."""
  half = x.shape[-1] // 2
  freqs = 1.0 / (10000.0 ** (jnp.arange(half, dtype=jnp.float32) / half))
  angles = positions[..., None].astype(jnp.float32) * freqs  # [S, half] or [B, S, half]
  if angles.ndim == 2:
    angles = angles[None]
  sin, cos = jnp.sin(angles)[:, :, None, :], jnp.cos(angles)[:, :, None, :]
  x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


def segment_positions(segments: jax.Array) -> jax.Array:
  """int[B,S] segment ids (0 = padding, examples contiguous) -> each
  position's index inside its own segment (positions restart per example)."""
  idx = jnp.arange(segments.shape[1], dtype=jnp.int32)
  starts = jnp.concatenate([jnp.ones_like(segments[:, :1], dtype=bool), segments[:, 1:] != segments[:, :-1]], 1)
  return idx - jax.lax.cummax(jnp.where(starts, idx, 0), axis=1)


def attention_mask(segments: jax.Array | None, s: int) -> jax.Array:
  """bool[S,T] causal mask, or bool[B,S,T] with segment ids: a position
  sees earlier positions of its own segment only (padding sees padding,
  which carries no loss)."""
  causal = jnp.tril(jnp.ones((s, s), dtype=bool))
  if segments is None:
    return causal
  return causal[None] & (segments[:, :, None] == segments[:, None, :])


class RMSNorm(nn.Module):
  eps: float = 1e-6

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    scale = self.param("scale", nn.initializers.ones, (x.shape[-1],), jnp.float32)
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return (y * scale).astype(x.dtype)


class Attention(nn.Module):
  """Causal self-attention with grouped-query heads (num_kv_heads <= num_heads).

  Megatron layout: query/key/value are column-parallel over heads ('tensor'),
  `out` is row-parallel, so one all-reduce per attention block."""

  cfg: ModelConfig
  dtype: Any
  mesh: Mesh | None = None
  lora: Lora = Lora()

  @nn.compact
  def __call__(self, x: jax.Array, segments: jax.Array | None = None) -> jax.Array:
    c, dt = self.cfg, self.dtype
    d, h, kv, hd = c.hidden_size, c.num_heads, c.kv_heads, c.head_dim
    proj = lambda name, inp, eq, shape, n_in=1: _project(self, name, inp, eq, shape, n_in, self.lora, dt)
    heads = (BATCH_AXES, None, "tensor", None)
    q = _constrain(proj("query", x, "bsd,dhk->bshk", (d, h, hd)), self.mesh, *heads)
    k = _constrain(proj("key", x, "bsd,dhk->bshk", (d, kv, hd)), self.mesh, *heads)
    v = _constrain(proj("value", x, "bsd,dhk->bshk", (d, kv, hd)), self.mesh, *heads)
    b, s = x.shape[:2]
    positions = jnp.arange(s) if segments is None else segment_positions(segments)
    q, k = _rope(q, positions), _rope(k, positions)
    # Group the query heads under their kv head: head h = kv_index * g + j, so
    # sharding heads over 'tensor' (which divides kv) keeps groups local.
    q = q.reshape(b, s, kv, h // kv, hd)
    scores = jnp.einsum("bskgd,btkd->bkgst", q, k).astype(jnp.float32) / jnp.sqrt(float(hd))
    mask = attention_mask(segments, s)
    mask = mask if segments is None else mask[:, None, None]  # [B,1,1,S,T] against [B,K,G,S,T]
    scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(dt)
    ctx = jnp.einsum("bkgst,btkd->bskgd", probs, v).reshape(b, s, h, hd)
    out = proj("out", ctx, "bshk,hkd->bsd", (h, hd, d), 2)
    return _constrain(out, self.mesh, BATCH_AXES, None, None)


class Mlp(nn.Module):
  """`wi` (and `wg` when gated) column-parallel, `wo` row-parallel."""

  cfg: ModelConfig
  dtype: Any
  mesh: Mesh | None = None
  lora: Lora = Lora()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c, dt = self.cfg, self.dtype
    d, f = c.hidden_size, c.ffn_hidden_size
    proj = lambda name, inp, eq, shape: _project(self, name, inp, eq, shape, 1, self.lora, dt)
    hidden = (BATCH_AXES, None, "tensor")
    act = _constrain(proj("wi", x, "bsd,df->bsf", (d, f)), self.mesh, *hidden)
    if c.gated_mlp:
      gate = _constrain(proj("wg", x, "bsd,df->bsf", (d, f)), self.mesh, *hidden)
      act = jax.nn.silu(gate) * act
    else:
      act = jax.nn.gelu(act)
    return _constrain(proj("wo", act, "bsf,fd->bsd", (f, d)), self.mesh, BATCH_AXES, None, None)


class Block(nn.Module):
  """Pre-norm transformer block. Returns (x, None) so that the same class can
  be the body of `nn.scan` (the segment ids, None for full rows, are the
  same for every layer: broadcast)."""

  cfg: ModelConfig
  dtype: Any
  mesh: Mesh | None = None
  lora: Lora = Lora()

  @nn.compact
  def __call__(self, x: jax.Array, segments: jax.Array | None = None) -> tuple[jax.Array, None]:
    kw = dict(cfg=self.cfg, dtype=self.dtype, mesh=self.mesh, lora=self.lora)
    x = x + Attention(**kw, name="attn")(RMSNorm(name="attn_norm")(x), segments)
    x = x + Mlp(**kw, name="mlp")(RMSNorm(name="mlp_norm")(x))
    return _constrain(x, self.mesh, BATCH_AXES, None, None), None


def _remat_block(policy: str, scanned: bool) -> type[nn.Module]:
  if policy not in REMAT_POLICIES:
    raise ValueError(f"unknown remat_policy {policy!r}; known: {REMAT_POLICIES}")
  if policy == "none":
    return Block
  # 'full' saves nothing but the block input (jax.checkpoint's default);
  # dots_saveable keeps matmul outputs and recomputes the cheap elementwise ops.
  jax_policy = jax.checkpoint_policies.dots_saveable if policy == "dots_saveable" else None
  # Under scan, the loop boundary already stops XLA from CSE-ing the
  # recomputation away, so prevent_cse (which costs fusion) is only needed
  # for the unrolled Python loop.
  return nn.remat(Block, policy=jax_policy, prevent_cse=not scanned)


class Decoder(nn.Module):
  """tokens int32[B,S] (and segment ids int32[B,S] for packed or padded
  examples, 0 = padding) -> logits [B,S,vocab] (compute dtype)."""

  cfg: ModelConfig
  dtype: Any = jnp.float32
  remat_policy: str = "none"
  scan_layers: bool = False
  scan_unroll: int = 1
  mesh: Mesh | None = None
  lora: Lora = Lora()

  @nn.compact
  def __call__(self, tokens: jax.Array, segments: jax.Array | None = None) -> jax.Array:
    c, dt = self.cfg, self.dtype
    embedding = self.param("embedding", _init, (c.vocab_size, c.hidden_size), jnp.float32)
    # Gather rows from a table that is whole along the width: a gather from an
    # fsdp-sharded width forces GSPMD into a full rematerialization.
    table = _constrain(embedding, self.mesh, "tensor", None)
    x = _constrain(jnp.take(table, tokens, axis=0).astype(dt), self.mesh, BATCH_AXES, None, None)
    block = _remat_block(self.remat_policy, self.scan_layers)
    kw = dict(cfg=c, dtype=dt, mesh=self.mesh, lora=self.lora)
    if self.scan_layers:
      stack = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True},
                      in_axes=nn.broadcast, length=c.num_layers, unroll=self.scan_unroll)
      x, _ = stack(**kw, name="layers")(x, segments)
    else:
      for i in range(c.num_layers):
        x, _ = block(**kw, name=f"layers_{i}")(x, segments)
    x = RMSNorm(name="final_norm")(x)
    if c.tie_embeddings:
      logits = jnp.einsum("bsd,vd->bsv", x, embedding.astype(dt))
    else:
      unembed = self.param("unembed", _init, (c.hidden_size, c.vocab_size), jnp.float32)
      logits = jnp.einsum("bsd,dv->bsv", x, unembed.astype(dt))
    return _constrain(logits, self.mesh, BATCH_AXES, None, "tensor")


def stack_layers(params: dict[str, Any], num_layers: int) -> dict[str, Any]:
  """Per-layer params (`layers_0..`) -> the stacked layout of `nn.scan` (`layers`)."""
  out = {k: v for k, v in params.items() if not k.startswith("layers_")}
  per_layer = [params[f"layers_{i}"] for i in range(num_layers)]
  out["layers"] = jax.tree.map(lambda *xs: jnp.stack(xs), *per_layer)
  return out


def is_adapter(name: str) -> bool:
  """A LoRA adapter leaf (trained); every other leaf of a LoRA model is frozen."""
  return name.endswith(("_lora_a", "_lora_b"))


def freeze(params: Any, lora: Lora) -> Any:
  """The frozen base in its storage dtype: bf16, or int8 projection weights
  with a per-output-channel fp32 scale (absmax / 127; embedding, output
  layer and norms stay bf16). Adapters stay fp32 (they train)."""
  if lora.frozen_dtype == "float32":
    return params

  def walk(tree):
    out = {}
    for k, v in tree.items():
      if isinstance(v, Mapping):
        out[k] = walk(v)
      elif is_adapter(k):
        out[k] = v
      elif k.endswith("_scale") and k[:-len("_scale")] in tree:
        continue  # set with its weight below
      elif lora.frozen_dtype == "int8" and f"{k}_scale" in tree:
        n_in = 2 if k == "out" else 1
        lead = v.ndim - len(tree[f"{k}_scale"].shape) - n_in  # a stacked layer axis
        amax = jnp.max(jnp.abs(v), axis=tuple(range(lead, lead + n_in)), keepdims=True)
        scale = jnp.maximum(amax, 1e-12) / 127.0
        out[k] = jnp.clip(jnp.round(v / scale), -127, 127).astype(jnp.int8)
        out[f"{k}_scale"] = jnp.squeeze(scale, axis=tuple(range(lead, lead + n_in))).astype(jnp.float32)
      else:
        out[k] = v.astype(jnp.bfloat16)
    return out
  return walk(params)


def init_params(cfg: ModelConfig, key: jax.Array, scan_layers: bool = False, lora: Lora = Lora()) -> dict[str, Any]:
  """Initial parameters, identical for every layout: always initialized per
  layer and stacked for scan, so scan_layers / remat / mesh do not change the
  model being trained (the sharded-step tests rely on this). With LoRA the
  base weights are the same draw as without (adapters come from their own
  key) and are stored frozen (`freeze`)."""
  params = dict(Decoder(cfg).init(key, jnp.zeros((1, 1), jnp.int32))["params"])
  if lora.rank or lora.frozen_dtype != "float32":
    full = dict(Decoder(cfg, lora=lora).init(jax.random.fold_in(key, 1), jnp.zeros((1, 1), jnp.int32))["params"])
    params = _overlay(full, params)
    params = freeze(params, lora)
  return stack_layers(params, cfg.num_layers) if scan_layers else params


def _overlay(tree: Any, base: Any) -> Any:
  """`tree` with every leaf that `base` also has taken from `base`."""
  return {k: (_overlay(v, base.get(k, {})) if isinstance(v, Mapping) else base.get(k, v)) for k, v in tree.items()}
