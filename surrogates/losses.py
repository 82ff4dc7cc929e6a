"""Training arrays and the masked, weighted losses of one ensemble member.

Where it sits in the data flow::

    SurrogateData + Normalizer ──► prepare_arrays ──► TrainArrays (padded,
        standardized, NaN-free)  ──► member_batch_loss / member_full_loss
        ──► train.py (vmapped over members inside one jitted step)

Targets are made NaN-free here, on the host, and masked: a NaN target kept
under `jnp.where` would still poison the gradient (0 * NaN = NaN).
Loss terms: squared error on standardized log time over feasible rows,
squared error on standardized log memory where it is known, and binary
cross-entropy on feasibility over all real rows. Padding rows (weight 0)
contribute nothing.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from surrogates.config import ModelConfig, TrainConfig
from surrogates.data import SurrogateData, pad_rows
from surrogates.model import FEAS, MEM, TIME, Normalizer, Params, apply_member


@struct.dataclass
class TrainArrays:
  """Standardized inputs and masked targets, padded to a bucketed row count."""

  xn: jax.Array  # f32[N, D] standardized x, 0 where inactive
  active: jax.Array  # f32[N, D]
  fidelity: jax.Array  # i32[N]
  cn: jax.Array  # f32[N, C]
  pn: jax.Array  # f32[N] standardized prior
  y_time: jax.Array  # f32[N] standardized log time (0 where masked)
  m_time: jax.Array  # f32[N] 1 on real feasible rows
  y_mem: jax.Array  # f32[N]
  m_mem: jax.Array  # f32[N] 1 on real rows with known memory
  feas: jax.Array  # f32[N]
  w: jax.Array  # f32[N] 1 real, 0 padding


def prepare_arrays(data: SurrogateData, norm: Normalizer, size: int) -> TrainArrays:
  """Standardizes `data` with `norm` and pads it to `size` rows (host-side)."""
  g = {f.name: np.asarray(getattr(norm, f.name)) for f in dataclasses.fields(norm)}
  real = (np.asarray(data.weight) > 0).astype(np.float32)
  active = np.asarray(data.active, np.float32)
  xn = (np.asarray(data.x) - g["x_mean"]) / g["x_std"] * active
  cn = (np.asarray(data.context) - g["ctx_mean"]) / g["ctx_std"]
  pn = (np.asarray(data.prior) - g["time_mean"]) / g["time_std"]
  m_time = real * (np.asarray(data.feasible) > 0) * np.isfinite(data.log_time)
  y_time = np.where(m_time > 0, (np.nan_to_num(data.log_time) - g["time_mean"]) / g["time_std"],
                    0.0)
  m_mem = real * np.isfinite(data.log_mem)
  y_mem = np.where(m_mem > 0, (np.nan_to_num(data.log_mem) - g["mem_mean"]) / g["mem_std"], 0.0)
  cols = dict(xn=xn, active=active, fidelity=np.asarray(data.fidelity, np.int32), cn=cn, pn=pn,
              y_time=y_time, m_time=m_time, y_mem=y_mem, m_mem=m_mem,
              feas=np.asarray(data.feasible) * real, w=real)
  out = {}
  for k, v in cols.items():
    v = pad_rows(np.asarray(v), size)
    out[k] = jnp.asarray(v if k == "fidelity" else v.astype(np.float32))
  return TrainArrays(**out)


def gather(arrays: TrainArrays, idx: jax.Array) -> TrainArrays:
  """Rows `idx` of every column (a mini-batch)."""
  return jax.tree.map(lambda a: a[idx], arrays)


def _row_losses(config: ModelConfig, params: Params, b: TrainArrays) -> jax.Array:
  """f32[3, B]: per-row (time, mem, feasibility) losses, already masked."""
  out = apply_member(config, params, b.xn, b.active, b.fidelity, b.cn, b.pn)
  lt = jnp.square(out[:, TIME] - b.y_time) * b.m_time
  lm = jnp.square(out[:, MEM] - b.y_mem) * b.m_mem
  lf = optax.sigmoid_binary_cross_entropy(out[:, FEAS], b.feas) * b.w
  return jnp.stack([lt, lm, lf])


def term_weights(tc: TrainConfig) -> jax.Array:
  """f32[3] weights of the (time, mem, feasibility) terms; a traced input to
  the jitted loop, so changing them does not recompile."""
  return jnp.asarray([tc.time_weight, tc.mem_weight, tc.feas_weight], jnp.float32)


def expected_weights(arrays: TrainArrays, row_w: jax.Array) -> jax.Array:
  """f32[3]: mean over real rows of (row weight x term mask).

  A mini-batch drawn uniformly from the real rows has E[row_w * mask * l] =
  sum(row_w * mask * l) / n_real; dividing by this makes the batch loss an
  unbiased estimate of the weighted mean loss of each term.
  """
  n_real = jnp.maximum(arrays.w.sum(), 1.0)
  masks = jnp.stack([arrays.m_time, arrays.m_mem, arrays.w])
  return (masks * row_w).sum(axis=1) / n_real


def member_batch_loss(params: Params, batch: TrainArrays, row_w: jax.Array,
                      expected: jax.Array, term_w: jax.Array, config: ModelConfig) -> jax.Array:
  """Scalar mini-batch loss of one member.

  Args:
    row_w: f32[B] this member's (bootstrap) weight of each batch row.
    expected: f32[3] from `expected_weights`; a term with 0 expected weight
      (e.g. no memory measured at all) is dropped instead of dividing by 0.
    term_w: f32[3] from `term_weights`.
  """
  per_term = (_row_losses(config, params, batch) * row_w).mean(axis=1)
  safe = jnp.where(expected > 0, expected, 1.0)
  per_term = jnp.where(expected > 0, per_term / safe, 0.0)
  return (per_term * term_w).sum()


def member_full_loss(params: Params, arrays: TrainArrays, term_w: jax.Array,
                     config: ModelConfig) -> jax.Array:
  """Scalar unweighted loss of one member over a whole (validation) set."""
  sums = _row_losses(config, params, arrays).sum(axis=1)
  counts = jnp.stack([arrays.m_time, arrays.m_mem, arrays.w]).sum(axis=1)
  per_term = jnp.where(counts > 0, sums / jnp.maximum(counts, 1.0), 0.0)
  return (per_term * term_w).sum()
