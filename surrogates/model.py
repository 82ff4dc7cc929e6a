"""The network, its standardization statistics and the state pytree.

Where it sits in the data flow::

    SurrogateData ──► compute_normalizer ─┐
    ModelConfig ──► init_params (vmap) ───┴─► SurrogateState
    SurrogateState + raw arrays ──► member_outputs ──► f32[K, N, 3]
                                   (standardized time, mem, feasibility logit)

`train.py` optimizes `SurrogateState.params`; `predict.py` turns the member
outputs into means, epistemic stds and feasibility probabilities. Members are
one `flax.linen` module whose parameters carry a leading ensemble axis K,
created with `jax.vmap(init)` and applied with `jax.vmap(apply)`.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from surrogates.config import ModelConfig
from surrogates.data import SurrogateData
from surrogates.tracing import count_trace

Params = Any  # a flax parameter pytree; every leaf has a leading K axis.

# Output columns of a member.
TIME, MEM, FEAS = 0, 1, 2
# Standardization never divides by less than this (constant columns).
_MIN_STD = 1e-3

_ACT = {"swish": nn.swish, "gelu": nn.gelu, "tanh": jnp.tanh, "softplus": nn.softplus}


class MemberMLP(nn.Module):
  """One ensemble member: features -> (time, mem, feasibility logit).

  The fidelity enters twice, for different reasons: an embedding concatenated
  to the input lets the network learn fidelity-dependent *shapes*, and a
  per-fidelity additive output bias (initialized at 0) makes a constant
  offset between a cheap fidelity and the top one trivial to learn, so the
  few top-fidelity rows only need to pin that offset down.
  """

  config: ModelConfig

  @nn.compact
  def __call__(self, x: jax.Array, active: jax.Array, fidelity: jax.Array,
               context: jax.Array, prior: jax.Array) -> jax.Array:
    cfg = self.config
    act = _ACT[cfg.activation]
    emb = nn.Embed(cfg.num_fidelities, cfg.fidelity_embed_dim, name="fidelity_embed")(fidelity)
    parts = [x, active, emb, context]
    if cfg.has_prior:
      parts.append(prior[:, None])
    h = jnp.concatenate(parts, axis=-1)
    for i, width in enumerate(cfg.hidden_sizes):
      h = act(nn.Dense(width, name=f"hidden_{i}")(h))
    out = nn.Dense(3, name="head")(h)
    out = out + nn.Embed(cfg.num_fidelities, 3, embedding_init=nn.initializers.zeros,
                         name="fidelity_bias")(fidelity)
    if cfg.has_prior:
      # Residual on the cheapest simulator: the head only learns the correction.
      out = out.at[:, TIME].add(prior)
    return out


@struct.dataclass
class Normalizer:
  """Standardization statistics, computed from real (weight > 0) rows.

  The prior is a log step time, so it is standardized with the log_time
  statistics; that is what makes "prior + residual" consistent.
  """

  x_mean: jax.Array  # f32[D]
  x_std: jax.Array  # f32[D]
  ctx_mean: jax.Array  # f32[C]
  ctx_std: jax.Array  # f32[C]
  time_mean: jax.Array  # f32[]
  time_std: jax.Array  # f32[]
  mem_mean: jax.Array  # f32[]
  mem_std: jax.Array  # f32[]


@struct.dataclass
class SurrogateState:
  """Everything `predict` needs; the pytree that jit sees and that is saved.

  Attributes:
    params: member parameters, each leaf with a leading K axis.
    norm: input/target standardization.
    time_trained: f32[] 1 if the time head saw feasible rows, else 0 (then
      predictions carry `UNTRAINED_STD`).
    mem_trained: f32[] same for the memory head.
    fixed_feasible_prob: f32[] NaN normally; a number overrides the
      feasibility head (all-failed data: 0).
    config: static architecture (not a pytree leaf; jit keys on it).
  """

  params: Params
  norm: Normalizer
  time_trained: jax.Array
  mem_trained: jax.Array
  fixed_feasible_prob: jax.Array
  config: ModelConfig = struct.field(pytree_node=False)


def _weighted_stats(v: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Column-wise weighted mean/std; (0, 1) for columns without weight."""
  v = np.asarray(v, np.float64)
  w = np.asarray(w, np.float64)
  tot = w.sum(axis=0)
  safe = np.maximum(tot, 1e-12)
  mean = np.where(tot > 0, (w * v).sum(axis=0) / safe, 0.0)
  var = np.where(tot > 0, (w * (v - mean) ** 2).sum(axis=0) / safe, 1.0)
  std = np.where(tot > 0, np.maximum(np.sqrt(var), _MIN_STD), 1.0)
  return mean.astype(np.float32), std.astype(np.float32)


def compute_normalizer(data: SurrogateData) -> Normalizer:
  """Statistics from the real rows; features only where active, targets only
  where known (time on feasible rows, memory where finite)."""
  w = (np.asarray(data.weight) > 0).astype(np.float32)
  x_mean, x_std = _weighted_stats(np.asarray(data.x), w[:, None] * np.asarray(data.active))
  ctx_mean, ctx_std = _weighted_stats(np.asarray(data.context), w[:, None])
  t_ok = w * (np.asarray(data.feasible) > 0) * np.isfinite(data.log_time)
  t_mean, t_std = _weighted_stats(np.nan_to_num(data.log_time), t_ok)
  m_ok = w * np.isfinite(data.log_mem)
  m_mean, m_std = _weighted_stats(np.nan_to_num(data.log_mem), m_ok)
  return Normalizer(x_mean=jnp.asarray(x_mean), x_std=jnp.asarray(x_std),
                    ctx_mean=jnp.asarray(ctx_mean), ctx_std=jnp.asarray(ctx_std),
                    time_mean=jnp.asarray(t_mean), time_std=jnp.asarray(t_std),
                    mem_mean=jnp.asarray(m_mean), mem_std=jnp.asarray(m_std))


def identity_normalizer(config: ModelConfig) -> Normalizer:
  """A normalizer that changes nothing (template for loading, untrained state)."""
  d, c = config.num_features, config.context_dim
  one, zero = jnp.ones((), jnp.float32), jnp.zeros((), jnp.float32)
  return Normalizer(x_mean=jnp.zeros((d,)), x_std=jnp.ones((d,)), ctx_mean=jnp.zeros((c,)),
                    ctx_std=jnp.ones((c,)), time_mean=zero, time_std=one, mem_mean=zero,
                    mem_std=one)


@functools.partial(jax.jit, static_argnums=0)
def init_params(config: ModelConfig, key: jax.Array) -> Params:
  """K independent member initializations, stacked on a leading axis."""
  count_trace("init_params")
  module = MemberMLP(config)
  d, c = config.num_features, config.context_dim
  dummy = (jnp.zeros((1, d)), jnp.zeros((1, d)), jnp.zeros((1,), jnp.int32),
           jnp.zeros((1, c)), jnp.zeros((1,)))
  keys = jax.random.split(key, config.ensemble_size)
  return jax.vmap(lambda k: module.init(k, *dummy)["params"])(keys)


def untrained_state(config: ModelConfig, key: jax.Array,
               norm: Normalizer | None = None) -> SurrogateState:
  """A fresh, untrained state (both regression heads marked untrained)."""
  return SurrogateState(
      params=init_params(config, key),
      norm=identity_normalizer(config) if norm is None else norm,
      time_trained=jnp.zeros((), jnp.float32),
      mem_trained=jnp.zeros((), jnp.float32),
      fixed_feasible_prob=jnp.full((), jnp.nan, jnp.float32),
      config=config)


def normalize_inputs(norm: Normalizer, x: jax.Array, active: jax.Array, context: jax.Array,
                     prior: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Standardized (x, context, prior); inactive features stay exactly 0 so
  the network only reads them through the `active` mask."""
  xn = (x - norm.x_mean) / norm.x_std * active
  cn = (context - norm.ctx_mean) / norm.ctx_std
  pn = (prior - norm.time_mean) / norm.time_std
  return xn, cn, pn


def apply_member(config: ModelConfig, params: Params, xn: jax.Array, active: jax.Array,
                 fidelity: jax.Array, cn: jax.Array, pn: jax.Array) -> jax.Array:
  """One member on standardized inputs -> f32[N, 3] standardized outputs."""
  return MemberMLP(config).apply({"params": params}, xn, active, fidelity, cn, pn)


def member_outputs(state: SurrogateState, x: jax.Array, active: jax.Array,
                   fidelity: jax.Array, context: jax.Array, prior: jax.Array) -> jax.Array:
  """All members on raw inputs -> f32[K, N, 3] standardized outputs (traceable)."""
  xn, cn, pn = normalize_inputs(state.norm, x, active, context, prior)
  return jax.vmap(apply_member, in_axes=(None, 0, None, None, None, None, None))(
      state.config, state.params, xn, active, fidelity, cn, pn)
