"""The array container the surrogate learns from, with validation and padding.

Where it sits in the data flow::

    encoding.to_arrays(store, space) ──► numpy arrays
        ──► make_data(...)        validated SurrogateData   (this module)
        ──► pad_to_bucket(...)    fixed, bucketed row count (this module)
        ──► fit / evaluate        (train.py, metrics.py)

Everything here is host-side numpy: validation must name the offending
column, which is easiest before anything becomes a traced array. Rows with
`weight == 0` are padding and are never validated or learned from.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from flax import struct

from surrogates.config import ModelConfig

_MAX_ROWS_IN_MESSAGE = 5


@struct.dataclass
class SurrogateData:
  """Encoded measurements, one row per (candidate, fidelity) measurement.

  Attributes:
    x: f32[N, D] encoded features, ~[0, 1]; 0 where the knob is inactive.
    active: f32[N, D] 1 where the feature's knob is active, else 0.
    fidelity: i32[N] fidelity index, 0 = cheapest .. F-1 = top.
    context: f32[N, C] workload/cluster descriptors (C may be 0).
    prior: f32[N] cheapest simulator's log step time (0 if unavailable).
    log_time: f32[N] log step time; NaN allowed only where infeasible.
    log_mem: f32[N] log peak memory; NaN where unknown (masked out).
    feasible: f32[N] 1 feasible / 0 failed (OOM, compile error, ...).
    weight: f32[N] 1 for real rows, 0 for padding rows.
  """

  x: np.ndarray
  active: np.ndarray
  fidelity: np.ndarray
  context: np.ndarray
  prior: np.ndarray
  log_time: np.ndarray
  log_mem: np.ndarray
  feasible: np.ndarray
  weight: np.ndarray

  @property
  def num_rows(self) -> int:
    """Rows including padding."""
    return int(self.x.shape[0])

  @property
  def num_real(self) -> int:
    """Rows with weight > 0 (real measurements)."""
    return int(np.count_nonzero(self.weight > 0))

  @property
  def num_features(self) -> int:
    return int(self.x.shape[1])

  @property
  def context_dim(self) -> int:
    return int(self.context.shape[1])

  def take(self, rows: np.ndarray) -> "SurrogateData":
    """The rows at `rows` (host-side gather), e.g. a validation split."""
    rows = np.asarray(rows, dtype=np.int64)
    return SurrogateData(**{f: np.asarray(getattr(self, f))[rows] for f in _FIELDS})


_FIELDS = ("x", "active", "fidelity", "context", "prior", "log_time", "log_mem",
           "feasible", "weight")


def _rows(mask: np.ndarray) -> str:
  idx = np.flatnonzero(mask)
  shown = ", ".join(str(i) for i in idx[:_MAX_ROWS_IN_MESSAGE])
  more = f", ... ({idx.size} rows)" if idx.size > _MAX_ROWS_IN_MESSAGE else ""
  return f"[{shown}{more}]"


def _check_finite_columns(name: str, a: np.ndarray, real: np.ndarray,
                          names: Sequence[str] | None) -> None:
  bad = ~np.isfinite(a) & real[:, None]
  if bad.any():
    col = int(np.flatnonzero(bad.any(axis=0))[0])
    label = f"{name}[:, {col}]" + (f" ({names[col]!r})" if names is not None else "")
    raise ValueError(
        f"{label} has NaN/inf at rows {_rows(bad[:, col])}; features must be finite "
        "(encode inactive knobs as 0 with active=0, not NaN)")


def _as_1d(name: str, a: np.ndarray | None, n: int, dtype, default: float) -> np.ndarray:
  if a is None:
    return np.full((n,), default, dtype=dtype)
  a = np.asarray(a)
  if a.shape != (n,):
    raise ValueError(f"{name} must have shape ({n},) to match x, got {a.shape}")
  return a.astype(dtype)


def make_data(
    x: np.ndarray,
    active: np.ndarray | None,
    fidelity: np.ndarray | None,
    log_time: np.ndarray,
    feasible: np.ndarray,
    *,
    log_mem: np.ndarray | None = None,
    context: np.ndarray | None = None,
    prior: np.ndarray | None = None,
    weight: np.ndarray | None = None,
    feature_names: Sequence[str] | None = None,
) -> SurrogateData:
  """Validates numpy arrays and wraps them in a `SurrogateData`.

  Defaults: `active` all ones, `fidelity` all zeros, `log_mem` unknown (NaN),
  `context` width 0, `prior` zeros, `weight` ones.

  Raises:
    ValueError: empty data; mismatched shapes; NaN/inf in x, context or
      prior (naming the column); NaN log_time on a feasible row; feasible or
      active not 0/1; negative or non-finite weights; infinite log_mem.
  """
  x = np.asarray(x, dtype=np.float32)
  if x.ndim != 2:
    raise ValueError(f"x must be 2-D [N, D], got shape {x.shape}")
  n, d = x.shape
  if n == 0:
    raise ValueError("surrogate data is empty: got 0 rows; the surrogate needs at "
                     "least one measurement to fit or evaluate")
  if feature_names is not None and len(feature_names) != d:
    raise ValueError(f"feature_names has {len(feature_names)} names but x has {d} columns")

  active = np.ones_like(x) if active is None else np.asarray(active, dtype=np.float32)
  if active.shape != x.shape:
    raise ValueError(f"active must have the shape of x {x.shape}, got {active.shape}")
  if context is None:
    context = np.zeros((n, 0), dtype=np.float32)
  context = np.asarray(context, dtype=np.float32)
  if context.ndim != 2 or context.shape[0] != n:
    raise ValueError(f"context must be 2-D [{n}, C], got shape {context.shape}")

  weight = _as_1d("weight", weight, n, np.float32, 1.0)
  if not np.all(np.isfinite(weight)) or np.any(weight < 0):
    raise ValueError(f"weight must be finite and >= 0; bad at rows "
                     f"{_rows(~np.isfinite(weight) | (weight < 0))}")
  real = weight > 0
  if not real.any():
    raise ValueError(f"surrogate data is empty: all {n} rows have weight 0 (padding only)")

  fid_raw = np.zeros((n,)) if fidelity is None else np.asarray(fidelity)
  if fid_raw.shape != (n,):
    raise ValueError(f"fidelity must have shape ({n},) to match x, got {fid_raw.shape}")
  if np.any(fid_raw != np.round(fid_raw)) or np.any(fid_raw[real] < 0):
    raise ValueError(f"fidelity must hold non-negative integer indices, got bad values "
                     f"at rows {_rows(real & ((fid_raw != np.round(fid_raw)) | (fid_raw < 0)))}")
  fid = fid_raw.astype(np.int32)

  feasible = _as_1d("feasible", feasible, n, np.float32, 0.0)
  bad_feas = real & ~np.isin(feasible, (0.0, 1.0))
  if bad_feas.any():
    raise ValueError(f"feasible must be 0 or 1, got other values at rows {_rows(bad_feas)}")
  bad_act = real[:, None] & ~np.isin(active, (0.0, 1.0))
  if bad_act.any():
    col = int(np.flatnonzero(bad_act.any(axis=0))[0])
    raise ValueError(f"active[:, {col}] must be 0 or 1, got other values at rows "
                     f"{_rows(bad_act[:, col])}")

  _check_finite_columns("x", x, real, feature_names)
  _check_finite_columns("context", context, real, None)
  prior = _as_1d("prior", prior, n, np.float32, 0.0)
  bad_prior = real & ~np.isfinite(prior)
  if bad_prior.any():
    raise ValueError(f"prior has NaN/inf at rows {_rows(bad_prior)}; pass has_prior=False "
                     "(and zeros) when the cheapest simulator's prediction is unavailable")

  log_time = _as_1d("log_time", log_time, n, np.float32, np.nan)
  bad_time = real & (feasible == 1.0) & ~np.isfinite(log_time)
  if bad_time.any():
    raise ValueError(f"log_time is NaN/inf on feasible rows {_rows(bad_time)}; a feasible "
                     "measurement needs a finite step time (mark the row infeasible instead)")
  log_mem = _as_1d("log_mem", log_mem, n, np.float32, np.nan)
  bad_mem = real & np.isinf(log_mem)
  if bad_mem.any():
    raise ValueError(f"log_mem is +/-inf at rows {_rows(bad_mem)}; use NaN for unknown memory")

  # Inactive features are defined to be 0; enforcing it here means the model
  # never sees two encodings of the same candidate.
  x = np.where(active > 0, x, 0.0).astype(np.float32)
  return SurrogateData(x=x, active=active, fidelity=fid, context=context, prior=prior,
                       log_time=log_time, log_mem=log_mem, feasible=feasible, weight=weight)


def bucket_size(n: int, min_size: int = 64) -> int:
  """Next power of two >= max(n, min_size): the padded row count.

  Jitted functions are compiled per shape; growing data only recompiles when
  it crosses a power of two.
  """
  n = max(int(n), int(min_size), 1)
  return 1 << (n - 1).bit_length()


def pad_rows(a: np.ndarray, size: int, fill: float = 0.0) -> np.ndarray:
  """Pads the leading axis of `a` to `size` rows with `fill`."""
  a = np.asarray(a)
  if a.shape[0] > size:
    raise ValueError(f"cannot pad {a.shape[0]} rows down to {size}")
  pad = [(0, size - a.shape[0])] + [(0, 0)] * (a.ndim - 1)
  return np.pad(a, pad, constant_values=fill)


def pad_to_bucket(data: SurrogateData, min_size: int = 64) -> SurrogateData:
  """Pads `data` with weight-0 rows to `bucket_size(num_rows, min_size)`.

  Padding rows are all-zero, infeasible and have weight 0, so they contribute
  nothing to any loss or statistic.
  """
  size = bucket_size(data.num_rows, min_size)
  return SurrogateData(**{f: pad_rows(getattr(data, f), size) for f in _FIELDS})


def validation_split(data: SurrogateData, fraction: float, seed: int,
                     min_val_rows: int = 8) -> tuple[np.ndarray, np.ndarray]:
  """Deterministic (train_rows, val_rows) split of the real rows.

  Returns an empty validation set when fewer than `min_val_rows` rows would
  be held out (early stopping then watches the training loss).
  """
  real = np.flatnonzero(np.asarray(data.weight) > 0)
  perm = np.random.default_rng(seed).permutation(real)
  n_val = int(np.floor(fraction * real.size))
  if n_val < min_val_rows or n_val >= real.size:
    n_val = 0
  return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def check_compatible(config: ModelConfig, num_features: int, context_dim: int,
                     fidelity: np.ndarray | None = None, *, what: str = "data") -> None:
  """Raises a ValueError naming both widths when `what` does not fit `config`."""
  if num_features != config.num_features:
    raise ValueError(
        f"feature width mismatch: {what} has D={num_features} features but the surrogate "
        f"(checkpoint) expects D={config.num_features}")
  if context_dim != config.context_dim:
    raise ValueError(
        f"context width mismatch: {what} has C={context_dim} context columns but the "
        f"surrogate (checkpoint) expects C={config.context_dim}")
  if fidelity is not None and np.size(fidelity):
    hi = int(np.max(fidelity))
    if hi >= config.num_fidelities:
      raise ValueError(
          f"fidelity index {hi} in {what} is out of range: the surrogate has "
          f"num_fidelities={config.num_fidelities} (indices 0..{config.num_fidelities - 1})")
