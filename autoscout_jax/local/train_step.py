"""The sharded training step of one local-space candidate.

Where it sits: the child process (`local/child.py` via `local/probe.py`)
calls `build_train_setup(workload, candidate values, devices)` and then
lowers + compiles the step (F2) or also runs it (F3). Tests call it directly
to check that every mesh computes the same loss.

Layout (the rules are the local target's, targets/local.py, which the
launch artifact shows too): a `Mesh` with axes ('data', 'fsdp', 'tensor'). The batch dimension
is split over ('data', 'fsdp'). Parameters and optimizer state are sharded
over 'fsdp' along the model-width dimension and over 'tensor' Megatron-style
(column-parallel query/key/value and MLP-in, row-parallel attention-out and
MLP-out, embedding and output layer over the vocabulary). One step = forward +
backward over `num_microbatches` micro-batches (lax.scan, gradients summed
in float32) + one AdamW update; params and optimizer state are donated.
LoRA fine-tuning (workload.lora_rank > 0): the same step differentiates and
updates only the adapter leaves (`partition`); the frozen base (bf16 or
int8, local/model.py `freeze`) has no gradient and no optimizer state and
passes through unchanged.
Fine-tuning examples (workload.example_lens): the batch is (inputs,
targets, segments), each int32[global_batch, seq_len], laid out by
autoscout_jax/packing.py (one padded example per row, or several per row
under `sequence_packing`); attention stays inside a segment, positions
restart per segment, and the loss is the mean over non-padding positions
of the whole step (micro-batches sum their share of it).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from autoscout_jax import packing
from autoscout_jax.local.model import (BATCH_AXES, Decoder, Lora, check_supported, compute_dtype,
                                       init_params, is_adapter, stack_layers)
from autoscout_jax.targets.local import MESH_AXES, PARAM_RULES, Config, LayoutError
from autoscout_jax.workload import Workload

def spec_for(path: Sequence[Any], shape: Sequence[int]) -> PartitionSpec:
  """PartitionSpec of a parameter or optimizer-state leaf, from its leaf name."""
  if len(shape) == 0:
    return PartitionSpec()  # step counters and other scalars
  names = [p.key for p in path if isinstance(p, jax.tree_util.DictKey)]
  name = names[-1] if names else None
  rule = PARAM_RULES.get(name)
  if rule is None:
    raise ValueError(f"no sharding rule for leaf {jax.tree_util.keystr(tuple(path))} "
                     f"of shape {tuple(shape)}")
  if len(shape) == len(rule) + 1:
    rule = (None,) + rule  # stacked layers
  elif len(shape) != len(rule):
    raise ValueError(f"leaf {name!r} has shape {tuple(shape)}; its rule {rule} expects "
                     f"{len(rule)} dims")
  return PartitionSpec(*rule)


def shardings_for(mesh: Mesh, tree: Any) -> Any:
  return jax.tree_util.tree_map_with_path(
      lambda path, leaf: NamedSharding(mesh, spec_for(path, leaf.shape)), tree)


def partition(tree: Any, lora: Lora) -> tuple[Any, Any]:
  """(trained, frozen) halves of a parameter-shaped tree: with LoRA the
  adapter leaves and the rest; otherwise everything trains."""
  if not lora.rank:
    return tree, {}

  def split(t, want):
    out = {}
    for k, v in t.items():
      if isinstance(v, Mapping):
        sub = split(v, want)
        if sub:
          out[k] = sub
      elif is_adapter(k) == want:
        out[k] = v
    return out
  return split(tree, True), split(tree, False)


def merge(a: Any, b: Any) -> Any:
  """The union of two disjoint parameter-shaped trees (inverse of `partition`)."""
  out = dict(a)
  for k, v in b.items():
    out[k] = merge(out[k], v) if k in out else v
  return out


def make_mesh(config: Config, devices: Sequence[jax.Device]) -> Mesh:
  shape = (config.data, config.fsdp, config.tensor)
  devices = list(devices)[:config.num_devices]
  try:
    # Topology-aware placement (tensor on the closest devices) where known.
    grid = mesh_utils.create_device_mesh(shape, devices)
  except Exception:  # unknown topologies (CPU virtual devices, odd counts): plain order
    grid = np.asarray(devices, dtype=object).reshape(shape)
  return Mesh(grid, MESH_AXES)


@dataclasses.dataclass(frozen=True)
class TrainSetup:
  """Everything needed to lower, compile and run one candidate's step.

  `step(params, opt_state, batch) -> (params, opt_state, loss)` is jitted
  with explicit in/out shardings and donates params and opt_state; `batch`
  is int32[global_batch, seq_len + 1] tokens (inputs and shifted targets),
  or for a workload with example lengths the tuple (inputs, targets,
  segments) of int32[global_batch, seq_len] (`layout`: the examples' lengths
  per row). `loss(params, batch)` is the loss the step differentiates."""

  workload: Workload
  config: Config
  mesh: Mesh
  model: Decoder
  step: Any
  param_shardings: Any
  opt_shardings: Any
  batch_sharding: NamedSharding
  abstract_params: Any
  abstract_opt_state: Any
  _init: Any
  _opt_init: Any
  _batch: Any
  loss: Any = None
  layout: tuple[tuple[int, ...], ...] | None = None

  @property
  def batch_shape(self) -> tuple[int, int]:
    return (self.workload.global_batch, self.workload.model.seq_len + 1)

  @property
  def useful_tokens(self) -> int:
    """Trained tokens per step (padding excluded)."""
    if self.layout is None:
      return self.workload.tokens_per_step
    return packing.useful_tokens(self.layout)

  def example_batch(self, examples: Sequence[Any], layout: Sequence[Sequence[int]] | None = None
                    ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """A batch of given examples, in order, placed as `layout` says (default
    this setup's; global_batch rows): example j is an int sequence of L_j + 1
    tokens (L_j inputs, each predicting the next), L_j the layout's lengths
    in row order. Tests feed the same examples packed and padded."""
    return jax.device_put(make_example_batch(examples, self.layout if layout is None else layout,
                                             self.workload.model.seq_len), self.batch_sharding)

  def init(self, seed: int = 0) -> tuple[Any, Any]:
    """Sharded (params, opt_state), created on the devices (never gathered)."""
    return self._init(jax.random.key(seed))

  def place(self, params: Any) -> tuple[Any, Any]:
    """Put given per-layer parameters (e.g. from `model.init_params`) onto
    this layout and create a fresh optimizer state for them. Lets several
    layouts train the very same parameters without recompiling an init."""
    if self.config.scan_layers and "layers" not in params:
      params = stack_layers(params, self.workload.model.num_layers)
    # Copy first: the step donates its parameters, and device_put may reuse
    # the caller's buffer for one shard; the caller keeps theirs intact.
    params = jax.device_put(jax.tree.map(jnp.copy, dict(params)), self.param_shardings)
    return params, self._opt_init(params)

  def batch(self, seed: int = 0) -> Any:
    """Synthetic tokens from a seeded PRNG, sharded over the batch axes
    (with example lengths: random examples in this layout)."""
    if self.layout is not None:
      rng = np.random.default_rng(seed + 1)
      vocab = self.workload.model.vocab_size
      return self.example_batch([rng.integers(0, vocab, n + 1) for row in self.layout for n in row])
    return self._batch(jax.random.key(seed + 1))

  def abstract_args(self) -> tuple[Any, Any, Any]:
    def sds(tree, shardings):
      return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          tree, shardings)
    tokens = jax.ShapeDtypeStruct(self.batch_shape, jnp.int32, sharding=self.batch_sharding)
    if self.layout is not None:
      shape = (self.workload.global_batch, self.workload.model.seq_len)
      tokens = (jax.ShapeDtypeStruct(shape, jnp.int32, sharding=self.batch_sharding),) * 3
    return (sds(self.abstract_params, self.param_shardings),
            sds(self.abstract_opt_state, self.opt_shardings), tokens)

  def lower(self) -> Any:
    """Lower from shapes only: nothing is allocated on the devices."""
    return self.step.lower(*self.abstract_args())


def make_example_batch(examples: Sequence[Any], layout: Sequence[Sequence[int]],
                       seq_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(inputs, targets, segments) int32[rows, seq_len] of examples placed as
  `layout` says (packing.py); padding positions are 0 in all three."""
  rows = len(layout)
  inputs, targets = np.zeros((rows, seq_len), np.int32), np.zeros((rows, seq_len), np.int32)
  segments = np.asarray(packing.segment_ids(layout, seq_len), np.int32).reshape(rows, seq_len)
  it = iter(examples)
  for r, row in enumerate(layout):
    at = 0
    for n in row:
      ex = np.asarray(next(it), np.int32)
      if ex.shape != (n + 1,):
        raise ValueError(f"row {r}: an example of {n} positions needs {n + 1} tokens, got shape {ex.shape}")
      inputs[r, at:at + n], targets[r, at:at + n] = ex[:-1], ex[1:]
      at += n
  return inputs, targets, segments


def build_train_setup(workload: Workload, values: Mapping[str, Any], devices: Sequence[jax.Device],
                      learning_rate: float = 1e-3) -> TrainSetup:
  m = workload.model
  check_supported(m)
  config = Config.from_candidate(values)
  config.check(workload, len(devices))
  mesh = make_mesh(config, devices)
  lora = Lora.of(workload)
  model = Decoder(m, dtype=compute_dtype(workload.precision), remat_policy=config.remat_policy,
                  scan_layers=config.scan_layers, scan_unroll=config.scan_unroll, mesh=mesh, lora=lora)
  tx = optax.adamw(learning_rate, weight_decay=0.01)

  # LoRA: only the adapters are differentiated and carry optimizer state;
  # the frozen base passes through the step untouched
  def init_state(key):
    params = init_params(m, key, config.scan_layers, lora)
    return params, tx.init(partition(params, lora)[0])

  abstract_params, abstract_opt = jax.eval_shape(init_state, jax.random.key(0))
  param_sh = shardings_for(mesh, abstract_params)
  train_sh = partition(param_sh, lora)[0]
  opt_sh = shardings_for(mesh, abstract_opt)
  batch_sh = NamedSharding(mesh, PartitionSpec(BATCH_AXES, None))
  gb, seq = workload.global_batch, m.seq_len
  examples = bool(workload.example_lens)
  layout = (tuple(packing.step_layout(workload.example_lens, gb, seq, config.sequence_packing))
            if examples else None)

  def loss_fn(trained, frozen, batch, denom):
    """Summed masked loss / denom (examples), or the mean over every token."""
    params = merge(trained, frozen)
    if not examples:
      logits = model.apply({"params": params}, batch[:, :-1])
      losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), batch[:, 1:])
      return losses.mean()
    inputs, targets, segments = batch
    logits = model.apply({"params": params}, inputs, segments)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)
    return jnp.sum(jnp.where(segments > 0, losses, 0.0)) / denom

  def denominator(batch):
    # examples: the step's trained positions, so micro-batches sum to the step's mean
    return jnp.maximum(jnp.sum(batch[2] > 0), 1).astype(jnp.float32) if examples else None

  grad_fn = jax.value_and_grad(loss_fn)
  nmb = config.num_microbatches
  # the mean of the micro-batches' means (full rows), or the sum of their shares (examples)
  per_micro = 1.0 if examples else float(nmb)

  def step(params, opt_state, batch):
    params, frozen = partition(params, lora)
    denom = denominator(batch)
    if nmb == 1:
      loss, grads = grad_fn(params, frozen, batch, denom)
    else:
      # Row b goes to micro-batch b % nmb: every device's contiguous block of
      # rows splits evenly over the micro-batches, so no data moves.
      def split(x):
        x = x.reshape((gb // nmb, nmb) + x.shape[1:]).swapaxes(0, 1)
        return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, PartitionSpec(None, BATCH_AXES, None)))
      micro = jax.tree.map(split, batch)

      def accumulate(carry, mb_tokens):
        grad_sum, loss_sum = carry
        loss, grads = grad_fn(params, frozen, mb_tokens, denom)
        grad_sum = jax.tree.map(jnp.add, grad_sum, grads)
        # Keep the accumulator fsdp-sharded so gradients are reduce-scattered.
        grad_sum = jax.lax.with_sharding_constraint(grad_sum, train_sh)
        return (grad_sum, loss_sum + loss), None

      zeros = jax.tree.map(jnp.zeros_like, params)
      (grad_sum, loss_sum), _ = jax.lax.scan(accumulate, (zeros, jnp.zeros((), jnp.float32)), micro)
      grads = jax.tree.map(lambda g: g / per_micro, grad_sum)
      loss = loss_sum / per_micro
    grads = jax.lax.with_sharding_constraint(grads, train_sh)
    updates, opt_state = tx.update(grads, opt_state, params)
    return merge(optax.apply_updates(params, updates), frozen), opt_state, loss

  replicated = NamedSharding(mesh, PartitionSpec())
  step_jit = jax.jit(step, in_shardings=(param_sh, opt_sh, batch_sh),
                     out_shardings=(param_sh, opt_sh, replicated), donate_argnums=(0, 1))
  init_jit = jax.jit(init_state, out_shardings=(param_sh, opt_sh))
  opt_init_jit = jax.jit(lambda p: tx.init(partition(p, lora)[0]), out_shardings=opt_sh)
  batch_jit = jax.jit(lambda key: jax.random.randint(key, (gb, seq + 1), 0, m.vocab_size, jnp.int32),
                      out_shardings=batch_sh)
  loss_jit = jax.jit(lambda p, b: loss_fn(*partition(p, lora), b, denominator(b)),
                     in_shardings=(param_sh, batch_sh), out_shardings=replicated)
  return TrainSetup(workload=workload, config=config, mesh=mesh, model=model, step=step_jit,
                    param_shardings=param_sh, opt_shardings=opt_sh, batch_sharding=batch_sh,
                    abstract_params=abstract_params, abstract_opt_state=abstract_opt,
                    _init=init_jit, _opt_init=opt_init_jit, _batch=batch_jit, loss=loss_jit, layout=layout)
