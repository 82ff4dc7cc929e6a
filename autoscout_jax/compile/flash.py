"""Blockwise causal attention with a hand-written backward (flash-attention
memory behaviour in plain JAX), for the compile-at-scale decoder.

Where it sits: `compile/model.py` calls `flash_attention(q, k, v)` inside
every attention block. It is plain JAX (no Pallas), so it lowers for any
compile target: a TPU topology, a GPU target config or the CPU.

Why: the naive softmax(QK^T)V keeps the [S, S] score matrix of every head
alive for the backward pass; at real sequence lengths (8192) that alone is
gigabytes per sequence, which the real trainers (MaxText's splash/flash
kernels, cuDNN flash attention) never hold. XLA's memory figure would then
judge a different program. Here the forward walks key/value blocks with an
online softmax and keeps only the output and the log-sum-exp; the backward
recomputes each block's probabilities. Only one [S, block] tile per head is
live at a time.

Shapes: q [B, S, K, G, D] (K key/value heads, G query heads per group),
k and v [B, T, K, D]; returns [B, S, K, G, D] in q's dtype. Every key block
is computed and the causal part masked (the figures count the full square,
as a kernel without block skipping would).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

# Keys per block: one [S, BLOCK] float32 tile per head is the live score memory.
BLOCK = 512
_NEG = -1e30


def _blocks(x: jax.Array, block: int) -> jax.Array:
  b, t = x.shape[:2]
  return x.reshape(b, t // block, block, *x.shape[2:]).swapaxes(0, 1)  # [nb, B, blk, ...]


def _scores(q, kj, j, block, scale):
  s = jnp.einsum("bskgd,btkd->bskgt", q, kj, preferred_element_type=jnp.float32) * scale
  qpos = jnp.arange(q.shape[1])
  kpos = j * block + jnp.arange(block)
  causal = qpos[:, None] >= kpos[None, :]
  return jnp.where(causal[None, :, None, None, :], s, _NEG)


def _forward(q, k, v, block):
  scale = 1.0 / float(q.shape[-1]) ** 0.5
  nb = k.shape[1] // block

  def body(carry, xs):
    o, m, l = carry
    kj, vj, j = xs
    s = _scores(q, kj, j, block, scale)
    m_new = jnp.maximum(m, s.max(-1))
    p = jnp.exp(s - m_new[..., None])
    corr = jnp.exp(m - m_new)
    l = l * corr + p.sum(-1)
    o = o * corr[..., None] + jnp.einsum("bskgt,btkd->bskgd", p.astype(v.dtype), vj,
                                         preferred_element_type=jnp.float32)
    return (o, m_new, l), None

  stat = q.shape[:-1]
  init = (jnp.zeros(q.shape, jnp.float32), jnp.full(stat, _NEG, jnp.float32),
          jnp.zeros(stat, jnp.float32))
  (o, m, l), _ = jax.lax.scan(body, init, (_blocks(k, block), _blocks(v, block), jnp.arange(nb)))
  out = (o / l[..., None]).astype(q.dtype)
  return out, m + jnp.log(l)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _flash(q, k, v, block):
  return _forward(q, k, v, block)[0]


def _flash_fwd(q, k, v, block):
  out, lse = _forward(q, k, v, block)
  return out, (q, k, v, out, lse)


def _flash_bwd(block, res, dout):
  q, k, v, out, lse = res
  scale = 1.0 / float(q.shape[-1]) ** 0.5
  nb = k.shape[1] // block
  delta = jnp.sum(dout.astype(jnp.float32) * out.astype(jnp.float32), axis=-1)

  def body(dq, xs):
    kj, vj, j = xs
    p = jnp.exp(_scores(q, kj, j, block, scale) - lse[..., None])
    dv = jnp.einsum("bskgt,bskgd->btkd", p.astype(dout.dtype), dout)
    dp = jnp.einsum("bskgd,btkd->bskgt", dout, vj, preferred_element_type=jnp.float32)
    ds = (p * (dp - delta[..., None]) * scale).astype(q.dtype)
    dq = dq + jnp.einsum("bskgt,btkd->bskgd", ds, kj, preferred_element_type=jnp.float32)
    dk = jnp.einsum("bskgt,bskgd->btkd", ds, q)
    return dq, (dk, dv)

  dq, (dk, dv) = jax.lax.scan(body, jnp.zeros(q.shape, jnp.float32),
                              (_blocks(k, block), _blocks(v, block), jnp.arange(nb)))
  unblock = lambda x: x.swapaxes(0, 1).reshape(k.shape)
  return dq.astype(q.dtype), unblock(dk).astype(k.dtype), unblock(dv).astype(v.dtype)


_flash.defvjp(_flash_fwd, _flash_bwd)


def flash_attention(q: jax.Array, k: jax.Array, v: jax.Array, block: int = BLOCK) -> jax.Array:
  """Causal attention of q [B,S,K,G,D] over k, v [B,T,K,D] (see module doc)."""
  t = k.shape[1]
  block = min(block, t)
  if t % block:
    raise ValueError(f"sequence length {t} is not a multiple of the attention block {block}")
  return _flash(q, k, v, block)


def reference_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
  """The naive formula (for tests): softmax(QK^T / sqrt(D)) V, causal."""
  scale = 1.0 / float(q.shape[-1]) ** 0.5
  s = jnp.einsum("bskgd,btkd->bskgt", q, k, preferred_element_type=jnp.float32) * scale
  causal = jnp.tril(jnp.ones((q.shape[1], k.shape[1]), bool))
  s = jnp.where(causal[None, :, None, None, :], s, _NEG)
  p = jax.nn.softmax(s, axis=-1).astype(v.dtype)
  return jnp.einsum("bskgt,btkd->bskgd", p, v)
