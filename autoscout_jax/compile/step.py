"""The sharded training step of one JAX-mesh candidate at cluster scale,
ready to lower from shapes.

Where it sits: the compile child (`compile/child.py` -> `compile/probe.py`)
calls `build_program(workload, values, devices)` with the target's
compile-only devices (a TPU topology or a GPU target config, see
compile/targets.py) and lowers the returned `Program`; tests call it on
CPU devices. The knob vocabulary is the JAX-mesh space's (sim/spaces.py):
`ici_*` / `dcn_*` degrees of data, fsdp, tensor, sequence, expert and
stage, `per_device_batch_size`, `remat_policy`; its XLA-flag knobs
(latency_hiding_scheduler, async_collectives, collective_matmul) shape the
runtime schedule, not the program, and are not part of what is compiled.

One step = forward + backward over the gradient-accumulation micro-batches
(global batch / (data*fsdp*expert*per_device_batch_size)) + one AdamW update,
float32 master weights, gradients and moments (MaxText's defaults), matmuls
in the workload's compute dtype. Without pipelining the micro-batches are a
`lax.scan` that sums float32 gradients. With stage > 1 the layers are split
into stages sharded over 'stage' and the micro-batches flow through them as
a GSPMD pipeline: every iteration each stage runs its layers on its slot
(a vmap over the stage axis) and the slots shift one stage on (a
collective-permute), M + stages - 1 iterations for M micro-batches.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from autoscout_jax.compile import model as mdl
from autoscout_jax.local.model import compute_dtype
from autoscout_jax.workload import Workload

ICI = ("data", "fsdp", "tensor", "sequence", "expert", "stage")
DCN = ("data", "fsdp", "stage")  # tensor, sequence and expert never span slices
FLAG_KNOBS = ("latency_hiding_scheduler", "async_collectives", "collective_matmul")


class LayoutError(ValueError):
  """Knob values this model, batch or device set cannot take."""


@dataclasses.dataclass(frozen=True)
class MeshLayout:
  """The program knobs of a JAX-mesh candidate."""

  ici: tuple[tuple[str, int], ...]
  dcn: tuple[tuple[str, int], ...]
  per_device_batch_size: int = 1
  remat_policy: str = "full"

  @classmethod
  def from_values(cls, values: Mapping[str, Any]) -> "MeshLayout":
    known = {f"ici_{a}" for a in ICI} | {f"dcn_{a}" for a in DCN} | set(FLAG_KNOBS)
    known |= {"per_device_batch_size", "remat_policy"}
    unknown = sorted(set(values) - known)
    if unknown:
      raise LayoutError(f"unknown knob(s) for the JAX-mesh train step: {unknown}")
    ici = tuple((a, int(values.get(f"ici_{a}", 1))) for a in ICI)
    dcn = tuple((a, int(values.get(f"dcn_{a}", 1))) for a in DCN)
    return cls(ici=ici, dcn=dcn, per_device_batch_size=int(values.get("per_device_batch_size", 1)),
               remat_policy=str(values.get("remat_policy", "full")))

  def degree(self, axis: str) -> int:
    return dict(self.ici).get(axis, 1) * dict(self.dcn).get(axis, 1)

  @property
  def num_devices(self) -> int:
    return math.prod(v for _, v in self.ici) * math.prod(v for _, v in self.dcn)

  @property
  def num_slices(self) -> int:
    return math.prod(v for _, v in self.dcn)

  @property
  def batch_shards(self) -> int:
    return self.degree("data") * self.degree("fsdp") * self.degree("expert")

  def micro_batches(self, workload: Workload) -> int:
    return workload.global_batch // (self.batch_shards * self.per_device_batch_size)

  def check(self, workload: Workload, num_devices: int, num_slices: int) -> None:
    m = workload.model
    for axis, v in self.ici + self.dcn:
      if v < 1:
        raise LayoutError(f"{axis} degree must be >= 1, got {v}")
    if self.num_slices != num_slices:
      raise LayoutError(f"dcn degrees multiply to {self.num_slices} but the target has {num_slices} slice(s)")
    if self.num_devices != num_devices:
      raise LayoutError(f"mesh degrees multiply to {self.num_devices} but the target has {num_devices} devices")
    if self.remat_policy not in mdl.REMAT:
      raise LayoutError(f"unknown remat_policy {self.remat_policy!r}; known: {mdl.REMAT}")
    t = self.degree("tensor")
    if m.num_heads % t or m.kv_heads % t:
      raise LayoutError(f"tensor={t} must divide the {m.num_heads} heads and {m.kv_heads} kv heads")
    if m.is_moe and m.num_experts % self.degree("expert"):
      raise LayoutError(f"expert={self.degree('expert')} must divide the {m.num_experts} experts")
    if not m.is_moe and self.degree("expert") > 1:
      raise LayoutError(f"expert={self.degree('expert')} > 1 on the dense model {m.name!r}")
    sq = self.degree("sequence")
    if m.seq_len % sq:
      raise LayoutError(f"sequence={sq} does not divide the sequence length {m.seq_len}")
    split = self.batch_shards * self.per_device_batch_size
    if workload.global_batch % split:
      raise LayoutError(f"global batch {workload.global_batch} is not divisible by data*fsdp*expert*"
                        f"per_device_batch_size = {split}")
    st = self.degree("stage")
    if st > 1:
      if len(mdl.stacks(m)) != 1:
        raise LayoutError(f"stage={st}: model {m.name!r} has dense and MoE layer stacks; the pipeline "
                          "needs one uniform stack")
      if m.num_layers % st:
        raise LayoutError(f"stage={st} does not divide the {m.num_layers} layers")
      if self.micro_batches(workload) < st:
        raise LayoutError(f"{self.micro_batches(workload)} micro-batches cannot fill {st} pipeline stages")


def make_mesh(layout: MeshLayout, devices: Sequence[Any]) -> Mesh:
  """Mesh over mdl.MESH_AXES. Multi-slice TPU targets: a hybrid mesh (ICI
  inside a slice, DCN degrees across slices); GPU nodes: DCN degrees over
  nodes, ICI degrees inside one; single slice: a topology-aware mesh; plain
  device lists (CPU): reshaped in order."""
  ici = dict(layout.ici)
  dcn = dict(layout.dcn)
  ici_shape = tuple(ici.get(a, 1) for a in mdl.MESH_AXES)
  dcn_shape = tuple(dcn.get(a, 1) for a in mdl.MESH_AXES)
  devices = list(devices)
  try:
    if devices and devices[0].platform == "cpu":
      grid = np.asarray(devices, dtype=object).reshape(tuple(i * d for i, d in zip(ici_shape, dcn_shape)))
    elif layout.num_slices > 1 and len({getattr(d, "slice_index", 0) for d in devices}) == layout.num_slices:
      # TPU slices
      grid = mesh_utils.create_hybrid_device_mesh(ici_shape, dcn_shape, devices,
                                                  allow_split_physical_axes=True)
    elif layout.num_slices > 1:  # GPU nodes, numbered node by node: DCN degrees outside ICI ones
      n = len(mdl.MESH_AXES)
      grid = np.asarray(devices, dtype=object).reshape(dcn_shape + ici_shape)
      grid = grid.transpose([a for i in range(n) for a in (i, n + i)])
      grid = grid.reshape(tuple(i * d for i, d in zip(ici_shape, dcn_shape)))
    else:
      grid = mesh_utils.create_device_mesh(ici_shape, devices, allow_split_physical_axes=True)
  except (ValueError, NotImplementedError, AssertionError) as e:
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    raise LayoutError(f"mesh {dict(zip(mdl.MESH_AXES, ici_shape))} (x dcn {dict(zip(mdl.MESH_AXES, dcn_shape))}) "
                      f"does not fit the device topology: {first}") from None
  return Mesh(grid, mdl.MESH_AXES)


def _spec_tree(tree: Any, mesh: Mesh) -> Any:
  shape = dict(mesh.shape)
  return jax.tree.map(lambda p: NamedSharding(mesh, mdl.mesh_spec(p.axes, p.shape, shape)), tree,
                      is_leaf=lambda x: isinstance(x, mdl.Param))


def _opt_shardings(opt_abstract: Any, param_sh: dict[str, Any], mesh: Mesh) -> Any:
  """Optimizer-state leaves mirror the parameter of the same path suffix."""
  flat = {tuple(k.key for k in path): sh for path, sh in
          jax.tree_util.tree_flatten_with_path(param_sh)[0]}

  def pick(path, leaf):
    keys = tuple(k.key for k in path if isinstance(k, jax.tree_util.DictKey))
    for n in range(len(keys)):
      sh = flat.get(keys[n:])
      if sh is not None and len(sh.spec) <= leaf.ndim:
        return sh
    return NamedSharding(mesh, PartitionSpec())  # step counters
  return jax.tree_util.tree_map_with_path(pick, opt_abstract)


@dataclasses.dataclass(frozen=True)
class Program:
  """A jitted step and the abstract (sharded) arguments to lower it with."""

  step: Any
  args: tuple[Any, ...]
  mesh: Mesh
  layout: MeshLayout

  def lower(self) -> Any:
    return self.step.lower(*self.args)


def _pipeline(params: dict[str, Any], xs: jax.Array, fn: Any, stages: int, mesh: Mesh) -> jax.Array:
  """xs [M, mb, S, D] through `stages` stages of the stacked layers ->
  [M, mb, S, D] (see the module docstring)."""
  n_micro = xs.shape[0]

  def stage_fn(stage_params, x):
    return mdl.run_stack(stage_params, x, fn)

  def iteration(state, t):
    inp = jnp.where(t < n_micro, xs[jnp.minimum(t, n_micro - 1)], 0).astype(state.dtype)
    shifted = jnp.roll(state, 1, axis=0).at[0].set(inp)
    shifted = mdl.constrain(shifted, mesh, "stage", "batch", "seq", None)
    new = jax.vmap(stage_fn)(params, shifted)
    new = mdl.constrain(new, mesh, "stage", "batch", "seq", None)
    return new, new[-1]

  state = jnp.zeros((stages,) + xs.shape[1:], xs.dtype)
  _, outs = jax.lax.scan(iteration, state, jnp.arange(n_micro + stages - 1))
  return outs[stages - 1:]


def build_program(workload: Workload, values: Mapping[str, Any], devices: Sequence[Any],
                  num_slices: int = 1, learning_rate: float = 1e-4) -> Program:
  m = workload.model
  layout = MeshLayout.from_values(values)
  layout.check(workload, len(devices), num_slices)
  mesh = make_mesh(layout, devices)
  dt = compute_dtype(workload.precision)
  stages = layout.degree("stage")
  n_micro = layout.micro_batches(workload)
  shapes = mdl.param_shapes(m, stages)
  param_sh = _spec_tree(shapes, mesh)
  abstract_params = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, jnp.float32), shapes,
                                 is_leaf=lambda x: isinstance(x, mdl.Param))
  tx = optax.adamw(learning_rate, weight_decay=0.01)
  abstract_opt = jax.eval_shape(tx.init, abstract_params)
  opt_sh = _opt_shardings(abstract_opt, param_sh, mesh)
  gb, seq = workload.global_batch, m.seq_len
  batch_sh = NamedSharding(mesh, mdl.mesh_spec(("batch", None), (gb, seq + 1), dict(mesh.shape)))
  fns = {name: mdl.remat_block(layout.remat_policy, m, moe, dt, mesh) for name, _, moe in mdl.stacks(m)}

  def hidden(params, tokens):
    x = mdl.embed(params, tokens, dt, mesh)
    for name, _, _ in mdl.stacks(m):
      x = mdl.run_stack(params[name], x, fns[name])
    return x

  def loss_fn(params, tokens):
    return mdl.logits_loss(params, hidden(params, tokens[:, :-1]), tokens[:, 1:], m, dt, mesh)

  def pipeline_loss(params, micro):  # micro [M, mb, S+1]
    name = mdl.stacks(m)[0][0]
    xs = jax.vmap(lambda t: mdl.embed(params, t, dt, mesh))(micro[:, :, :-1])
    ys = _pipeline(params[name], xs, fns[name], stages, mesh)
    head = jax.checkpoint(lambda y, t: mdl.logits_loss(params, y, t, m, dt, mesh))
    losses = jax.lax.map(lambda a: head(a[0], a[1]), (ys, micro[:, :, 1:]))
    return jnp.mean(losses)

  def split(tokens):
    # Row b goes to micro-batch b % M: every shard's rows split evenly.
    micro = tokens.reshape(gb // n_micro, n_micro, seq + 1).swapaxes(0, 1)
    return mdl.constrain(micro, mesh, None, "batch", None)

  def step(params, opt_state, tokens):
    if stages > 1:
      loss, grads = jax.value_and_grad(pipeline_loss)(params, split(tokens))
    elif n_micro == 1:
      loss, grads = jax.value_and_grad(loss_fn)(params, tokens)
    else:
      def accumulate(carry, mb_tokens):
        g_sum, l_sum = carry
        loss, grads = jax.value_and_grad(loss_fn)(params, mb_tokens)
        g_sum = jax.lax.with_sharding_constraint(jax.tree.map(jnp.add, g_sum, grads), param_sh)
        return (g_sum, l_sum + loss), None
      zeros = jax.tree.map(jnp.zeros_like, params)
      (g_sum, l_sum), _ = jax.lax.scan(accumulate, (zeros, jnp.zeros((), jnp.float32)), split(tokens))
      grads = jax.tree.map(lambda g: g / n_micro, g_sum)
      loss = l_sum / n_micro
    grads = jax.lax.with_sharding_constraint(grads, param_sh)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  replicated = NamedSharding(mesh, PartitionSpec())
  step_jit = jax.jit(step, in_shardings=(param_sh, opt_sh, batch_sh),
                     out_shardings=(param_sh, opt_sh, replicated), donate_argnums=(0, 1))
  sds = lambda tree, sh: jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), tree, sh)
  args = (sds(abstract_params, param_sh), sds(abstract_opt, opt_sh),
          jax.ShapeDtypeStruct((gb, seq + 1), jnp.int32, sharding=batch_sh))
  return Program(step=step_jit, args=args, mesh=mesh, layout=layout)


def reference_lowered(workload: Workload, values: Mapping[str, Any], learning_rate: float = 1e-4) -> Any:
  """The same candidate's step with no mesh, one micro-batch, the layer
  loop unrolled and attention in one key block: a loop-free program whose
  HLO cost analysis counts every flop once (remat recomputation included).
  Lowered only, never compiled (compile/probe.py derives the flops)."""
  m = workload.model
  layout = MeshLayout.from_values(values)
  dt = compute_dtype(workload.precision)
  shapes = mdl.param_shapes(m, 1)
  params = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, jnp.float32), shapes,
                        is_leaf=lambda x: isinstance(x, mdl.Param))
  tx = optax.adamw(learning_rate, weight_decay=0.01)
  fns = {name: mdl.remat_block(layout.remat_policy, m, moe, dt, None, attn_block=m.seq_len)
         for name, _, moe in mdl.stacks(m)}

  def loss_fn(p, tokens):
    x = mdl.embed(p, tokens[:, :-1], dt, None)
    for name, _, _ in mdl.stacks(m):
      x = mdl.run_stack(p[name], x, fns[name], unroll=True)
    return mdl.logits_loss(p, x, tokens[:, 1:], m, dt, None)

  def step(p, opt_state, tokens):
    loss, grads = jax.value_and_grad(loss_fn)(p, tokens)
    updates, opt_state = tx.update(grads, opt_state, p)
    return optax.apply_updates(p, updates), opt_state, loss

  tokens = jax.ShapeDtypeStruct((workload.global_batch, m.seq_len + 1), jnp.int32)
  return jax.jit(step).lower(params, jax.eval_shape(tx.init, params), tokens)


layer_stacks = mdl.stacks  # (name, layers, is_moe) per stack: probe.py's flop reference varies them
