"""Prediction, input gradients and an acquisition score for candidate pools.

Where it sits in the data flow::

    SurrogateState + pool arrays (x, active, context, prior)
        ──► predict_arrays   traceable, for callers that jit their own loop
        ──► predict          host convenience: validates, pads the pool to a
                             bucket, one jitted call per <= 16k-row chunk
        ──► Prediction(mean/std of log time and log memory, P(feasible))
    d(mean log_time)/dx and the acquisition gradient feed the optimizer's
    relaxation of dense knobs.

The ensemble spread is the epistemic std. A head that never saw data
(`time_trained == 0`) answers with `UNTRAINED_STD` so no caller trusts it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from surrogates.data import bucket_size, check_compatible, pad_rows
from surrogates.model import FEAS, MEM, TIME, SurrogateState, member_outputs
from surrogates.tracing import count_trace

# Log-space std reported by an untrained head: "know nothing" (e^1000).
UNTRAINED_STD = 1e3
# Largest rows per jitted predict call; bigger pools loop over equal chunks,
# so any pool size beyond it reuses one compiled function, and padding wastes
# at most one chunk (1e5 rows run as 7 x 16,384, not as 131,072).
_MAX_CHUNK = 1 << 14
# Keeps sqrt differentiable where all members agree exactly.
_VAR_EPS = 1e-12
# Floor of P(feasible) inside the log of the acquisition.
_PROB_EPS = 1e-6
_NEED_PRIOR = ("this surrogate was built with has_prior=True: pass `prior`, the cheapest "
               "simulator's log step time of each candidate")


@struct.dataclass
class Prediction:
  """Per-candidate predictions at one fidelity (all f32[N]; numpy arrays when
  returned by `predict`, jax arrays from `predict_arrays`)."""

  log_time_mean: jax.Array
  log_time_std: jax.Array
  log_mem_mean: jax.Array
  log_mem_std: jax.Array
  feasible_prob: jax.Array


def _fill_optional(state: SurrogateState, x: jax.Array, context, prior, fidelity):
  n = x.shape[0]
  cfg = state.config
  if context is None:
    context = jnp.zeros((n, cfg.context_dim), jnp.float32)
  if prior is None and cfg.has_prior:
    raise ValueError(_NEED_PRIOR)
  if prior is None or not cfg.has_prior:
    # Without a prior input the model ignores this column entirely.
    prior = jnp.zeros((n,), jnp.float32)
  if fidelity is None:
    fidelity = cfg.top_fidelity
  fidelity = jnp.broadcast_to(jnp.asarray(fidelity, jnp.int32), (n,))
  return context, prior, fidelity


def predict_arrays(state: SurrogateState, x: jax.Array, active: jax.Array,
                   context: jax.Array | None = None, prior: jax.Array | None = None,
                   fidelity: int | jax.Array | None = None) -> Prediction:
  """Predictions for every row (pure and traceable; no validation/padding).

  Args:
    state: trained surrogate.
    x, active: f32[N, D] encoded candidates and their active masks.
    context: f32[N, C] or None (zeros).
    prior: f32[N] cheapest simulator's log step time (ignored unless the
      model was built with has_prior).
    fidelity: None for the top fidelity, an int, or i32[N].
  """
  context, prior, fidelity = _fill_optional(state, x, context, prior, fidelity)
  out = member_outputs(state, x, active, fidelity, context, prior)  # [K, N, 3]
  norm = state.norm
  cfg = state.config

  t = out[..., TIME] * norm.time_std + norm.time_mean
  m = out[..., MEM] * norm.mem_std + norm.mem_mean
  t_mean, t_std = t.mean(0), jnp.sqrt(t.var(0) + _VAR_EPS)
  m_mean, m_std = m.mean(0), jnp.sqrt(m.var(0) + _VAR_EPS)

  t_fallback = prior if cfg.has_prior else jnp.broadcast_to(norm.time_mean, t_mean.shape)
  t_ok = state.time_trained > 0
  t_mean = jnp.where(t_ok, t_mean, t_fallback)
  t_std = jnp.where(t_ok, t_std, UNTRAINED_STD)
  m_ok = state.mem_trained > 0
  m_mean = jnp.where(m_ok, m_mean, norm.mem_mean)
  m_std = jnp.where(m_ok, m_std, UNTRAINED_STD)

  # Average of member probabilities (not of logits): a calibrated mixture.
  p = jax.nn.sigmoid(out[..., FEAS]).mean(0)
  fixed = state.fixed_feasible_prob
  p = jnp.where(jnp.isnan(fixed), p, jnp.nan_to_num(fixed))
  return Prediction(log_time_mean=t_mean, log_time_std=t_std, log_mem_mean=m_mean,
                    log_mem_std=m_std, feasible_prob=p)


@jax.jit
def _predict_chunk(state: SurrogateState, x, active, context, prior, fidelity) -> Prediction:
  count_trace("predict")
  return predict_arrays(state, x, active, context, prior, fidelity)


def _host_inputs(state: SurrogateState, x, active, context, prior, fidelity):
  """Validates pool arrays on the host and fills defaults."""
  cfg = state.config
  x = np.asarray(x, np.float32)
  if x.ndim != 2:
    raise ValueError(f"x must be 2-D [N, D], got shape {x.shape}")
  n = x.shape[0]
  active = np.ones_like(x) if active is None else np.asarray(active, np.float32)
  if active.shape != x.shape:
    raise ValueError(f"active must have the shape of x {x.shape}, got {active.shape}")
  context = (np.zeros((n, cfg.context_dim), np.float32) if context is None
             else np.asarray(context, np.float32))
  if context.ndim != 2 or context.shape[0] != n:
    raise ValueError(f"context must be 2-D [{n}, C], got shape {context.shape}")
  if prior is None and cfg.has_prior:
    raise ValueError(_NEED_PRIOR)
  prior = np.zeros((n,), np.float32) if prior is None else np.asarray(prior, np.float32)
  if prior.shape != (n,):
    raise ValueError(f"prior must have shape ({n},) to match x, got {prior.shape}")
  if fidelity is None:
    fidelity = cfg.top_fidelity
  fidelity = np.broadcast_to(np.asarray(fidelity, np.int32), (n,))
  check_compatible(cfg, x.shape[1], context.shape[1], fidelity, what="the candidate pool")
  for name, a in (("x", x), ("context", context), ("prior", prior)):
    if not np.all(np.isfinite(a)):
      raise ValueError(f"{name} of the candidate pool has NaN/inf values")
  return x, active, context, prior, fidelity


def predict(state: SurrogateState, x: np.ndarray, active: np.ndarray | None = None,
            context: np.ndarray | None = None, prior: np.ndarray | None = None,
            fidelity: int | np.ndarray | None = None) -> Prediction:
  """Predictions for a whole pool (numpy in, numpy `Prediction` out).

  The pool is padded to a power-of-two bucket (chunks of 16,384 rows beyond
  that), so calls with similar pool sizes reuse one compiled function.
  Raises ValueError on width mismatches (naming both widths) or NaN inputs.
  """
  x, active, context, prior, fidelity = _host_inputs(state, x, active, context, prior,
                                                     fidelity)
  n = x.shape[0]
  if n == 0:
    empty = np.zeros((0,), np.float32)
    return Prediction(empty, empty, empty, empty, empty)
  size = min(bucket_size(n), _MAX_CHUNK)
  parts = []
  for start in range(0, n, size):
    sl = slice(start, start + size)
    args = [pad_rows(a[sl], size) for a in (x, active, context, prior, fidelity)]
    parts.append((min(size, n - start), _predict_chunk(state, *args)))
  fields = ("log_time_mean", "log_time_std", "log_mem_mean", "log_mem_std", "feasible_prob")
  cols = {f: np.concatenate([np.asarray(getattr(p, f))[:k] for k, p in parts]) for f in fields}
  return Prediction(**cols)


def acquisition_arrays(state: SurrogateState, x: jax.Array, active: jax.Array,
                       context: jax.Array | None = None, prior: jax.Array | None = None,
                       fidelity: int | jax.Array | None = None,
                       kappa: float | jax.Array = 1.0) -> jax.Array:
  """Optimistic, feasibility-weighted score per row; higher is better.

  score = -(mean log_time - kappa * std log_time) + log P(feasible):
  a lower confidence bound on log step time (we minimize time), penalized by
  the log-probability of failing, so both terms are in "log" units.
  """
  p = predict_arrays(state, x, active, context, prior, fidelity)
  lcb = p.log_time_mean - kappa * p.log_time_std
  return -lcb + jnp.log(p.feasible_prob + _PROB_EPS)


def _sum_mean_log_time(x, state, active, context, prior, fidelity):
  # Rows are independent, so the gradient of the sum is the per-row gradient.
  return predict_arrays(state, x, active, context, prior, fidelity).log_time_mean.sum()


@jax.jit
def grad_log_time(state: SurrogateState, x: jax.Array, active: jax.Array,
                  context: jax.Array | None = None, prior: jax.Array | None = None,
                  fidelity: int | jax.Array | None = None) -> jax.Array:
  """d(mean log_time)/dx, f32[N, D]; 0 on inactive features."""
  count_trace("grad_log_time")
  return jax.grad(_sum_mean_log_time)(x, state, active, context, prior, fidelity)


@jax.jit
def acquisition_value_and_grad(state: SurrogateState, x: jax.Array, active: jax.Array,
                               context: jax.Array | None = None,
                               prior: jax.Array | None = None,
                               fidelity: int | jax.Array | None = None,
                               kappa: float | jax.Array = 1.0) -> tuple[jax.Array, jax.Array]:
  """(acquisition f32[N], d acquisition / dx f32[N, D]) in one pass."""
  count_trace("acquisition_value_and_grad")

  def total(xx):
    a = acquisition_arrays(state, xx, active, context, prior, fidelity, kappa)
    return a.sum(), a

  grads, values = jax.grad(total, has_aux=True)(x)
  return values, grads


@jax.jit
def member_log_time(state: SurrogateState, x: jax.Array, active: jax.Array,
                    fidelity: jax.Array) -> jax.Array:
  """f32[K, N]: each ensemble member's predicted log step time (one posterior
  draw per member, e.g. for Thompson sampling), with no context and a zero
  prior. Pad x/active/fidelity to a bucket (`pad_rows`) to reuse one compile."""
  n = x.shape[0]
  out = member_outputs(state, x, active, fidelity, jnp.zeros((n, state.config.context_dim), jnp.float32),
                       jnp.zeros((n,), jnp.float32))
  return out[..., TIME] * state.norm.time_std + state.norm.time_mean
