"""`fit`: trains the whole ensemble in one jitted, vmapped loop.

Where it sits in the data flow::

    SurrogateData ──► fit(data, ModelConfig, TrainConfig, init_state=None)
        host: validate, split (seeded), normalize, pad to buckets
        device: _run_chunk = `epochs_per_chunk` epochs of vmapped AdamW steps
                + per-member validation and best-parameter tracking
        host: early stopping, divergence restarts (lr / 10)
    ──► (SurrogateState, FitHistory) ──► predict / save / evaluate

Shapes inside `_run_chunk` depend only on the padded bucket sizes and the
static configs, so refitting on data that grew within a bucket reuses the
compiled loop (the row count is a traced scalar, not a shape).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import struct

from surrogates.config import ModelConfig, TrainConfig
from surrogates.data import SurrogateData, bucket_size, check_compatible, validation_split
from surrogates.losses import (TrainArrays, expected_weights, gather, member_batch_loss,
                               member_full_loss, prepare_arrays, term_weights)
from surrogates.model import Params, SurrogateState, compute_normalizer, init_params
from surrogates.tracing import count_trace


@dataclasses.dataclass(frozen=True)
class FitHistory:
  """What happened during `fit`, for TensorBoard scalars and debugging.

  Attributes:
    train_loss: f32[E] per-epoch training loss, mean over members.
    val_loss: f32[E] per-epoch validation loss, mean over members (NaN when
      there was no validation split).
    member_train_loss, member_val_loss: f32[E, K] per member.
    best_epoch: i32[K] epoch whose parameters each member kept.
    restarts: how many times divergence forced a restart at lr / 10.
    learning_rate: the peak learning rate of the run that succeeded.
    train_rows, val_rows: row indices (into the `data` given to fit) of the
      split, so the caller can compute validation metrics.
  """

  train_loss: np.ndarray
  val_loss: np.ndarray
  member_train_loss: np.ndarray
  member_val_loss: np.ndarray
  best_epoch: np.ndarray
  restarts: int
  learning_rate: float
  train_rows: np.ndarray
  val_rows: np.ndarray

  @property
  def num_epochs(self) -> int:
    return int(self.train_loss.shape[0])

  def scalars(self, prefix: str = "surrogate") -> list[tuple[int, dict[str, float]]]:
    """[(epoch, {name: value})] ready for a scalar writer."""
    rows = []
    for e in range(self.num_epochs):
      vals = {f"{prefix}/train_loss": float(self.train_loss[e])}
      if np.isfinite(self.val_loss[e]):
        vals[f"{prefix}/val_loss"] = float(self.val_loss[e])
      rows.append((e, vals))
    return rows


@struct.dataclass
class _Carry:
  """Training state threaded through `_run_chunk` (a pure carry -> carry
  update; donated, so its buffers are reused in place)."""

  params: Params
  opt_state: optax.OptState
  best_params: Params
  best_score: jax.Array  # f32[K]
  best_epoch: jax.Array  # i32[K]
  epoch: jax.Array  # i32[]
  key: jax.Array


@struct.dataclass
class _Hyper:
  """Traced hyperparameters: values that change between fits (learning rate,
  planned steps, divergence restarts, ...) without changing any shape, so a
  new value reuses the compiled loop instead of recompiling it."""

  peak_lr: jax.Array  # f32[]
  lr_scale: jax.Array  # f32[] 1, then /10 per divergence restart
  weight_decay: jax.Array  # f32[]
  warmup_steps: jax.Array  # f32[]
  total_steps: jax.Array  # f32[]
  term_w: jax.Array  # f32[3]
  has_val: jax.Array  # f32[] 1 if a validation split exists


def _hyper(tc: TrainConfig, total_steps: int, lr_scale: float, has_val: bool) -> _Hyper:
  def f32(v: float) -> jax.Array:
    return jnp.asarray(v, jnp.float32)

  return _Hyper(peak_lr=f32(tc.learning_rate), lr_scale=f32(lr_scale),
                weight_decay=f32(tc.weight_decay),
                warmup_steps=f32(max(1, int(tc.warmup_fraction * total_steps))),
                total_steps=f32(total_steps), term_w=term_weights(tc), has_val=f32(has_val))


def _learning_rate(h: _Hyper, step: jax.Array) -> jax.Array:
  """Linear warmup to the peak, then cosine decay to 1% of it."""
  step = step.astype(jnp.float32)
  warm = step / h.warmup_steps
  frac = jnp.clip((step - h.warmup_steps) / jnp.maximum(h.total_steps - h.warmup_steps, 1.0),
                  0.0, 1.0)
  cosine = 0.01 + 0.99 * 0.5 * (1.0 + jnp.cos(jnp.pi * frac))
  return h.peak_lr * h.lr_scale * jnp.where(step < h.warmup_steps, warm, cosine)


def _optimizer(h: _Hyper) -> optax.GradientTransformation:
  # AdamW spelled out so that the schedule and the decay can be traced values.
  # optax multiplies the decoupled decay by the lr too, as AdamW intends.
  return optax.chain(optax.scale_by_adam(), optax.add_decayed_weights(h.weight_decay),
                     optax.scale_by_learning_rate(lambda count: _learning_rate(h, count)))


def _epoch_indices(key: jax.Array, w: jax.Array, steps: int, batch: int) -> jax.Array:
  """i32[steps, batch] row indices covering every real row once per epoch.

  Real rows are shuffled to the front (padding sorts last), then the
  positions cycle over the first n_real of them: no step is spent on padding
  and n_real stays a traced value, so growing data does not recompile.
  """
  n_real = jnp.maximum((w > 0).sum(), 1)
  order = jnp.argsort(jax.random.uniform(key, w.shape) + 2.0 * (w <= 0))
  return order[jnp.arange(steps * batch) % n_real].reshape(steps, batch)


@functools.partial(jax.jit, static_argnames=("config", "batch_size", "epochs"),
                   donate_argnums=(0,))
def _run_chunk(carry: _Carry, train: TrainArrays, val: TrainArrays, row_w: jax.Array,
               h: _Hyper, *, config: ModelConfig, batch_size: int,
               epochs: int) -> tuple[_Carry, jax.Array, jax.Array]:
  """Runs `epochs` epochs; returns per-epoch f32[epochs, K] losses.

  Static: the architecture, the batch size and the chunk length (shapes).
  Everything else, including the row count, is traced.
  """
  count_trace("fit_chunk")
  k = config.ensemble_size
  n = train.w.shape[0]
  batch = min(batch_size, n)
  steps = n // batch
  opt = _optimizer(h)
  expected = jax.vmap(expected_weights, in_axes=(None, 0))(train, row_w)  # [K, 3]

  def one_member_step(params, opt_state, idx, w_k, exp_k):
    loss, grads = jax.value_and_grad(member_batch_loss)(
        params, gather(train, idx), w_k[idx], exp_k, h.term_w, config)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  vstep = jax.vmap(one_member_step)

  def epoch_body(c: _Carry, _):
    key, sub = jax.random.split(c.key)
    idx = jax.vmap(_epoch_indices, in_axes=(0, None, None, None))(
        jax.random.split(sub, k), train.w, steps, batch)  # [K, steps, B]

    def step_body(state, step_idx):
      params, opt_state = state
      params, opt_state, loss = vstep(params, opt_state, step_idx, row_w, expected)
      return (params, opt_state), loss

    (params, opt_state), losses = jax.lax.scan(
        step_body, (c.params, c.opt_state), jnp.swapaxes(idx, 0, 1))
    train_loss = losses.mean(axis=0)  # [K]
    val_loss = jax.vmap(member_full_loss, in_axes=(0, None, None, None))(
        params, val, h.term_w, config)
    score = jnp.where(h.has_val > 0, val_loss, train_loss)
    improved = score < c.best_score

    def keep_best(best, new):
      mask = improved.reshape((k,) + (1,) * (new.ndim - 1))
      return jnp.where(mask, new, best)

    new = _Carry(params=params, opt_state=opt_state,
                 best_params=jax.tree.map(keep_best, c.best_params, params),
                 best_score=jnp.where(improved, score, c.best_score),
                 best_epoch=jnp.where(improved, c.epoch, c.best_epoch),
                 epoch=c.epoch + 1, key=key)
    return new, (train_loss, val_loss)

  carry, (train_losses, val_losses) = jax.lax.scan(
      epoch_body, carry, None, length=epochs)
  return carry, train_losses, val_losses


def _resolve_config(data: SurrogateData, config: ModelConfig | None,
                    init_state: SurrogateState | None) -> ModelConfig:
  if init_state is not None:
    if config is not None and config != init_state.config:
      raise ValueError(
          "warm start needs the same architecture: init_state has "
          f"{init_state.config} but fit was given {config}")
    config = init_state.config
  if config is None:
    config = ModelConfig(num_features=data.num_features, context_dim=data.context_dim,
                         num_fidelities=int(np.max(data.fidelity)) + 1)
  what = "the warm-start data" if init_state is not None else "the training data"
  check_compatible(config, data.num_features, data.context_dim,
                   np.asarray(data.fidelity)[np.asarray(data.weight) > 0], what=what)
  return config


def _untrained_state(config: ModelConfig, data: SurrogateData, tc: TrainConfig,
                     init_state: SurrogateState | None) -> SurrogateState:
  """All rows failed: a model that says "infeasible" and trusts no regression."""
  base_params = (init_state.params if init_state is not None
                 else init_params(config, jax.random.PRNGKey(tc.seed)))
  norm = init_state.norm if init_state is not None else compute_normalizer(data)
  return SurrogateState(params=base_params, norm=norm,
                        time_trained=jnp.zeros((), jnp.float32),
                        mem_trained=jnp.zeros((), jnp.float32),
                        fixed_feasible_prob=jnp.zeros((), jnp.float32), config=config)


def _mem_trained(data: SurrogateData, init_state: SurrogateState | None) -> jax.Array:
  """1 if this data has known memory or the warm start's memory head was trained
  (transferred knowledge survives a refit on time-only data)."""
  real = np.asarray(data.weight) > 0
  known = bool(np.any(real & np.isfinite(data.log_mem)))
  if init_state is not None:
    known = known or bool(init_state.mem_trained > 0)
  return jnp.asarray(float(known), jnp.float32)


def fit(data: SurrogateData, config: ModelConfig | None = None,
        train_config: TrainConfig = TrainConfig(), *,
        init_state: SurrogateState | None = None) -> tuple[SurrogateState, FitHistory]:
  """Trains a deep ensemble on `data`.

  Args:
    data: validated measurements (padding rows allowed).
    config: architecture; defaults to `init_state.config` or widths read off
      `data` (no prior, F = max fidelity + 1).
    train_config: optimizer, schedule, early stopping, seed.
    init_state: warm start from another workload's trained state (same
      architecture and widths). Its standardization statistics are kept so
      the starting function is exactly the trained one.

  Returns:
    (state, history). If no real row is feasible, the returned state is not
    trained: it predicts P(feasible) = 0 and `UNTRAINED_STD` for time and
    memory, and history is empty.

  Raises:
    ValueError: empty data or widths incompatible with config/init_state.
    FloatingPointError: the loss stayed non-finite after `max_restarts`
      restarts at successively 10x smaller learning rates.
  """
  tc = train_config
  if data.num_real == 0:
    raise ValueError("surrogate data is empty: no rows with weight > 0")
  config = _resolve_config(data, config, init_state)
  real = np.asarray(data.weight) > 0
  if not np.any(real & (np.asarray(data.feasible) > 0)):
    logging.warning("surrogate fit: none of the %d measurements is feasible; returning a "
                    "model that predicts infeasible with untrained time/memory heads",
                    int(real.sum()))
    empty = np.zeros((0,), np.float32)
    history = FitHistory(empty, empty, np.zeros((0, config.ensemble_size)),
                         np.zeros((0, config.ensemble_size)),
                         np.zeros((config.ensemble_size,), np.int32), 0, tc.learning_rate,
                         np.flatnonzero(real), np.zeros((0,), np.int64))
    return _untrained_state(config, data, tc, init_state), history

  train_rows, val_rows = validation_split(data, tc.val_fraction, tc.seed, tc.min_val_rows)
  norm = init_state.norm if init_state is not None else compute_normalizer(data)
  train = prepare_arrays(data.take(train_rows), norm, bucket_size(train_rows.size, tc.min_bucket))
  has_val = val_rows.size > 0
  val = prepare_arrays(data.take(val_rows if has_val else train_rows[:1]), norm,
                       bucket_size(val_rows.size, tc.min_bucket))
  if not has_val:
    val = val.replace(w=jnp.zeros_like(val.w))

  n_train = train.w.shape[0]
  steps_per_epoch = n_train // min(tc.batch_size, n_train)
  epochs = min(tc.max_epochs, max(1, tc.max_steps // steps_per_epoch))
  num_chunks = -(-epochs // tc.epochs_per_chunk)
  total_steps = num_chunks * tc.epochs_per_chunk * steps_per_epoch

  k = config.ensemble_size
  key_init, key_boot, key_shuffle = jax.random.split(jax.random.PRNGKey(tc.seed), 3)
  row_w = train.w[None, :] * (jax.random.exponential(key_boot, (k, n_train)) if tc.bootstrap
                              else jnp.ones((k, n_train)))
  start_params = (init_state.params if init_state is not None
                  else init_params(config, key_init))

  lr_scale = 1.0
  for restart in range(tc.max_restarts + 1):
    result = _train_once(config, tc, train, val, row_w, start_params, key_shuffle, lr_scale,
                         has_val, num_chunks, total_steps)
    if result is not None:
      break
    if restart == tc.max_restarts:
      raise FloatingPointError(
          f"surrogate fit diverged: the loss became non-finite in {tc.max_restarts + 1} "
          f"attempts (peak learning rates {tc.learning_rate:g} down to "
          f"{tc.learning_rate * lr_scale:g}); check the targets' scale or lower "
          "TrainConfig.learning_rate")
    lr_scale /= 10.0
    logging.warning("surrogate fit: non-finite loss; restarting with learning rate %g "
                    "(restart %d of at most %d)", tc.learning_rate * lr_scale, restart + 1,
                    tc.max_restarts)
  best_params, best_epoch, tr, va = result

  state = SurrogateState(
      params=best_params, norm=norm, time_trained=jnp.ones((), jnp.float32),
      mem_trained=_mem_trained(data, init_state),
      fixed_feasible_prob=jnp.full((), jnp.nan, jnp.float32), config=config)
  history = FitHistory(
      train_loss=tr.mean(axis=1), val_loss=va.mean(axis=1) if has_val else np.full(len(tr), np.nan),
      member_train_loss=tr, member_val_loss=va if has_val else np.full_like(va, np.nan),
      best_epoch=best_epoch, restarts=restart, learning_rate=tc.learning_rate * lr_scale,
      train_rows=train_rows, val_rows=val_rows)
  return state, history


def _train_once(config: ModelConfig, tc: TrainConfig, train: TrainArrays, val: TrainArrays,
                row_w: jax.Array, start_params: Params, key: jax.Array, lr_scale: float,
                has_val: bool, num_chunks: int, total_steps: int
                ) -> tuple[Params, np.ndarray, np.ndarray, np.ndarray] | None:
  """One training attempt; None if the loss became non-finite."""
  k = config.ensemble_size
  h = _hyper(tc, total_steps, lr_scale, has_val)
  # Copies: the carry is donated, and must not alias the caller's init_state,
  # the key reused by a restart, nor itself (params and best_params start equal).
  params = jax.tree.map(jnp.copy, start_params)
  opt_state = jax.vmap(_optimizer(h).init)(params)
  carry = _Carry(params=params, opt_state=opt_state,
                 best_params=jax.tree.map(jnp.copy, start_params),
                 best_score=jnp.full((k,), jnp.inf, jnp.float32),
                 best_epoch=jnp.zeros((k,), jnp.int32), epoch=jnp.zeros((), jnp.int32),
                 key=jnp.copy(key))
  train_hist, val_hist = [], []
  for _ in range(num_chunks):
    carry, tr, va = _run_chunk(carry, train, val, row_w, h, config=config,
                               batch_size=tc.batch_size, epochs=tc.epochs_per_chunk)
    tr, va = np.asarray(tr), np.asarray(va)
    train_hist.append(tr)
    val_hist.append(va)
    if not (np.all(np.isfinite(tr)) and np.all(np.isfinite(va))):
      return None
    epochs_done = int(carry.epoch)
    since_best = epochs_done - 1 - np.asarray(carry.best_epoch)
    if np.all(since_best >= tc.patience):
      break
  return (carry.best_params, np.asarray(carry.best_epoch), np.concatenate(train_hist),
          np.concatenate(val_hist))
