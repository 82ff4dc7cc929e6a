"""The sharded inference programs of one serving candidate: prefill and
decode over a KV cache, and the insert that moves a prefilled request's
cache into a decode slot.

Where it sits: the child (`local/child.py` via `local/serve_probe.py`)
calls `build_serve_setup(workload, values, devices)`, compiles the three
programs (F2) and drives them with the request mix (F3). Tests call it
directly to check cached decoding against the un-cached `model.Decoder`.

The model is local/model.py's decoder, evaluated functionally on the same
parameter tree (cast once to the compute dtype, as an inference server
loads its weights). Layout: a group of replicas is a mesh ('data', 'fsdp',
'tensor') with fsdp = 1, so the training step's sharding rules
(targets/local.PARAM_RULES) apply unchanged: replicas on 'data', heads, MLP
columns and the vocabulary on 'tensor'. A KV cache is a tuple over layers
of (keys, values), each [replicas, slots, max_len, kv_heads, head_dim] in
the KV-cache dtype, sharded ('data', -, -, 'tensor', -). Aggregated, one
mesh does both phases; disaggregated, prefill workers and decode workers
are two meshes on disjoint devices, and a prefilled cache row is copied
(`jax.device_put`) from one to the other.

One program, `_forward`, serves both phases: rows of T new tokens at
per-row start positions attend to everything their row's cache holds up to
their own position; the new keys and values are written first. Prefill is
T = chunk (or the whole padded prompt), one request per replica; decode
is T = 1 over every slot. Greedy sampling (argmax) inside the program.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from autoscout_jax.local.model import check_supported, compute_dtype, init_params
from autoscout_jax.local.train_step import shardings_for
from autoscout_jax.targets.local import MESH_AXES
from autoscout_jax.targets.serving import Config, LayoutError, kv_capacity
from autoscout_jax.workload import LocalCluster, Workload

_CACHE_SPEC = P("data", None, None, "tensor", None)
_ROWS = P("data", None)  # [replicas, rows]


def _rope(x: jax.Array, pos: jax.Array) -> jax.Array:
  """model._rope at per-row positions: x [R,B,T,H,D], pos [R,B,T]."""
  half = x.shape[-1] // 2
  freqs = 1.0 / (10000.0 ** (jnp.arange(half, dtype=jnp.float32) / half))
  ang = pos[..., None].astype(jnp.float32) * freqs  # [R,B,T,half]
  sin, cos = jnp.sin(ang)[..., None, :], jnp.cos(ang)[..., None, :]
  x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


def _norm(x: jax.Array, scale: jax.Array, eps: float = 1e-6) -> jax.Array:
  x32 = x.astype(jnp.float32)
  y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
  return (y * scale.astype(jnp.float32)).astype(x.dtype)


def _write(cache: jax.Array, new: jax.Array, start: jax.Array) -> jax.Array:
  """cache [R,B,S,kv,d] <- new [R,B,T,kv,d] at per-row offsets start [R,B]."""
  def one(c, n, s):
    return jax.lax.dynamic_update_slice(c, n.astype(c.dtype), (s, 0, 0))
  return jax.vmap(jax.vmap(one))(cache, new, start)


def _forward(params: Any, cache: Any, tokens: jax.Array, start: jax.Array, last: jax.Array,
             *, cfg: Any, dt: Any, mesh: Mesh) -> tuple[jax.Array, jax.Array, Any]:
  """tokens [R,B,T] at positions start[R,B] + t; returns (next token [R,B]
  from the logits at index last[R,B], those logits [R,B,V], new cache)."""
  def pin(x, *spec):
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P(*spec)))
  h, kv, hd = cfg.num_heads, cfg.kv_heads, cfg.head_dim
  r, b, t = tokens.shape
  pos = start[..., None] + jnp.arange(t)  # [R,B,T]
  x = pin(jnp.take(params["embedding"], tokens, axis=0), "data", None, None, None)
  key_pos = jnp.arange(cache[0][0].shape[2])
  mask = key_pos[None, None, None, :] <= pos[..., None]  # [R,B,T,S]
  new_cache = []
  for i in range(cfg.num_layers):
    lp, (ck, cv) = params[f"layers_{i}"], cache[i]
    a = lp["attn"]
    y = _norm(x, lp["attn_norm"]["scale"])
    heads = ("data", None, None, "tensor", None)
    q = _rope(pin(jnp.einsum("rbtd,dhk->rbthk", y, a["query"]), *heads), pos)
    k = _rope(pin(jnp.einsum("rbtd,dhk->rbthk", y, a["key"]), *heads), pos)
    v = pin(jnp.einsum("rbtd,dhk->rbthk", y, a["value"]), *heads)
    ck, cv = _write(ck, k, start), _write(cv, v, start)
    new_cache.append((ck, cv))
    q = q.reshape(r, b, t, kv, h // kv, hd)
    s = jnp.einsum("rbtkgd,rbskd->rbkgts", q, ck.astype(dt)).astype(jnp.float32) / jnp.sqrt(float(hd))
    s = jnp.where(mask[:, :, None, None], s, jnp.finfo(jnp.float32).min)
    p = jax.nn.softmax(s, axis=-1).astype(dt)
    ctx = jnp.einsum("rbkgts,rbskd->rbtkgd", p, cv.astype(dt)).reshape(r, b, t, h, hd)
    x = x + pin(jnp.einsum("rbthk,hkd->rbtd", ctx, a["out"]), "data", None, None, None)
    m = lp["mlp"]
    y = _norm(x, lp["mlp_norm"]["scale"])
    act = pin(jnp.einsum("rbtd,df->rbtf", y, m["wi"]), "data", None, None, "tensor")
    act = jax.nn.silu(jnp.einsum("rbtd,df->rbtf", y, m["wg"])) * act if cfg.gated_mlp else jax.nn.gelu(act)
    x = x + pin(jnp.einsum("rbtf,fd->rbtd", act, m["wo"]), "data", None, None, None)
  x = _norm(x, params["final_norm"]["scale"])
  x_last = jnp.take_along_axis(x, last[..., None, None], axis=2)[:, :, 0]  # [R,B,D]
  if cfg.tie_embeddings:
    logits = jnp.einsum("rbd,vd->rbv", x_last, params["embedding"])
  else:
    logits = jnp.einsum("rbd,dv->rbv", x_last, params["unembed"])
  logits = pin(logits, "data", None, "tensor")
  return jnp.argmax(logits, axis=-1).astype(jnp.int32), logits, tuple(new_cache)


def _route(row: Any, src: jax.Array, *, length: int) -> Any:
  """Prefill rows [Rp,1,S',..] -> the rows the decode replicas take
  [Rd,1,S,..]: decode replica d gets prefill row src[d], cut to S."""
  return tuple((k[src, :, :length], v[src, :, :length]) for k, v in row)


def _insert(cache: Any, row: Any, slot: jax.Array, take: jax.Array) -> Any:
  """Copy row r of a routed prefill cache [R,1,S,..] into slot[r] of the
  decode cache [R,B,S,..] where take[r]."""
  def one(c, n, s, ok):
    cur = jax.lax.dynamic_slice_in_dim(c, s, 1, axis=0)
    return jax.lax.dynamic_update_slice_in_dim(c, jnp.where(ok, n, cur), s, axis=0)
  put = jax.vmap(one)
  return tuple((put(ck, rk, slot, take), put(cv, rv, slot, take)) for (ck, cv), (rk, rv) in zip(cache, row))


@dataclasses.dataclass(frozen=True)
class Group:
  """One mesh of replicas (a prefill or decode group, or both) and its
  jitted forward pass at one static shape per phase."""

  mesh: Mesh
  replicas: int
  param_shardings: Any
  cache_sharding: NamedSharding
  rows_sharding: NamedSharding


@dataclasses.dataclass(frozen=True)
class ServeSetup:
  """The programs of one candidate. `prefill(params, cache, tokens, start,
  last)` on the prefill group (tokens [Rp,1,T]), `decode(params, cache,
  tokens, start, last)` on the decode group (tokens [Rd,slots,1]) and
  `route(prefill cache, src)` (on the prefill group: the rows each decode
  replica takes, cut to the decode cache's length) and `insert(cache, row,
  slot, take)` (on the decode group); caches are donated."""

  workload: Workload
  config: Config
  prefill_group: Group
  decode_group: Group
  slots: int
  max_len: int
  prefill_len: int  # T of one prefill pass: the chunk, or the longest prompt
  cache_dtype: Any
  dtype: Any
  prefill: Any
  decode: Any
  route: Any
  insert: Any

  @property
  def disaggregated(self) -> bool:
    return self.config.disaggregated

  @property
  def prefill_cache_len(self) -> int:
    """A prefill row's cache: room for the last chunk's padding past the prompt."""
    return self.max_len + self.prefill_len

  def cache_shape(self, group: Group, rows: int, length: int | None = None) -> tuple[int, ...]:
    m = self.workload.model
    return (group.replicas, rows, length or self.max_len, m.kv_heads, m.head_dim)

  def abstract_cache(self, group: Group, rows: int, length: int | None = None) -> Any:
    sds = jax.ShapeDtypeStruct(self.cache_shape(group, rows, length), self.cache_dtype,
                               sharding=group.cache_sharding)
    return tuple((sds, sds) for _ in range(self.workload.model.num_layers))

  def new_cache(self, group: Group, rows: int, length: int | None = None) -> Any:
    shape = self.cache_shape(group, rows, length)
    return tuple((jnp.zeros(shape, self.cache_dtype, device=group.cache_sharding),
                  jnp.zeros(shape, self.cache_dtype, device=group.cache_sharding))
                 for _ in range(self.workload.model.num_layers))

  def place(self, params: Any, group: Group) -> Any:
    """Per-layer (unstacked) float32 parameters -> the group's devices in
    the compute dtype."""
    cast = jax.tree.map(lambda a: jnp.asarray(a, self.dtype), params)
    return jax.device_put(cast, group.param_shardings)

  def init_params(self, seed: int = 0) -> Any:
    """Random float32 parameters of the model's tree, made on the host
    (norm scales one, the rest N(0, 0.02) like the model's initializer):
    no initializer to compile per candidate."""
    rng = np.random.default_rng(seed)
    def leaf(path, a):
      if jax.tree_util.keystr(path).endswith("['scale']"):
        return np.ones(a.shape, np.float32)
      return (0.02 * rng.standard_normal(a.shape)).astype(np.float32)
    return jax.tree_util.tree_map_with_path(leaf, _param_shapes(self.workload))

  def _rows(self, group: Group, shape: tuple[int, ...], dtype: Any) -> jax.ShapeDtypeStruct:
    spec = P("data", *([None] * (len(shape) - 1)))
    return jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(group.mesh, spec))

  def lowered(self) -> dict[str, Any]:
    """The three programs lowered from shapes (nothing is allocated)."""
    pg, dg = self.prefill_group, self.decode_group
    def params(g):
      return jax.tree.map(lambda a, sh: jax.ShapeDtypeStruct(a.shape, self.dtype, sharding=sh),
                          _param_shapes(self.workload), g.param_shardings)
    i32 = jnp.int32
    rp, rd, t = pg.replicas, dg.replicas, self.prefill_len
    return {
        "prefill": self.prefill.lower(params(pg), self.abstract_cache(pg, 1, self.prefill_cache_len),
                                      self._rows(pg, (rp, 1, t), i32),
                                      self._rows(pg, (rp, 1), i32), self._rows(pg, (rp, 1), i32)),
        "decode": self.decode.lower(params(dg), self.abstract_cache(dg, self.slots),
                                    self._rows(dg, (rd, self.slots, 1), i32), self._rows(dg, (rd, self.slots), i32),
                                    self._rows(dg, (rd, self.slots), i32)),
        "insert": self.insert.lower(self.abstract_cache(dg, self.slots), self.abstract_cache(dg, 1),
                                    self._rows(dg, (rd,), i32), self._rows(dg, (rd,), jnp.bool_)),
        "route": self.route.lower(self.abstract_cache(pg, 1, self.prefill_cache_len),
                                  jax.ShapeDtypeStruct((rd,), i32, sharding=NamedSharding(pg.mesh, P(None)))),
    }


def _param_shapes(workload: Workload) -> Any:
  return jax.eval_shape(lambda k: init_params(workload.model, k), jax.random.key(0))


def _group(devices: Sequence[jax.Device], replicas: int, tp: int, workload: Workload) -> Group:
  grid = np.asarray(list(devices), dtype=object).reshape(replicas, 1, tp)
  mesh = Mesh(grid, MESH_AXES)
  return Group(mesh=mesh, replicas=replicas, param_shardings=shardings_for(mesh, _param_shapes(workload)),
               cache_sharding=NamedSharding(mesh, _CACHE_SPEC), rows_sharding=NamedSharding(mesh, _ROWS))


def build_serve_setup(workload: Workload, cluster: LocalCluster, values: Mapping[str, Any],
                      devices: Sequence[jax.Device]) -> ServeSetup:
  m, spec = workload.model, workload.serving
  check_supported(m)
  config = Config.from_candidate(values)
  config.check(workload, cluster)
  if config.pipeline_parallel_size != 1 or config.expert_parallel_size != 1:
    raise LayoutError("the local serving engine runs one pipeline stage of a dense model")
  tp = config.tensor_parallel_size
  slots = kv_capacity(workload, cluster, dataclasses.asdict(config)).slots
  dt = compute_dtype(workload.precision)
  cache_dt = jnp.float8_e4m3fn if config.kv_cache_dtype == "fp8" else dt
  devs = list(devices)
  if config.disaggregated:
    np_, nd = config.prefill_workers * tp, config.decode_workers * tp
    pg = _group(devs[:np_], config.prefill_workers, tp, workload)
    dg = _group(devs[np_:np_ + nd], config.decode_workers, tp, workload)
  else:
    pg = dg = _group(devs[:config.num_devices], config.data_parallel_size, tp, workload)
  chunk = config.chunked_prefill_size
  prefill_len = min(chunk, max(spec.input_lens)) if chunk else max(spec.input_lens)
  fwd = lambda g: jax.jit(
      lambda p, c, tok, s, l: _forward(p, c, tok, s, l, cfg=m, dt=dt, mesh=g.mesh),
      out_shardings=(g.rows_sharding, NamedSharding(g.mesh, P("data", None, "tensor")),
                     tuple((g.cache_sharding,) * 2 for _ in range(m.num_layers))),
      donate_argnums=(1,))
  cache_sh = tuple((dg.cache_sharding,) * 2 for _ in range(m.num_layers))
  # Routed rows stay whole over 'data' on the prefill group (their row count
  # is the decode group's), then move to the decode group's devices.
  routed = NamedSharding(pg.mesh, P(None, None, None, "tensor", None))
  route = jax.jit(lambda row, src: _route(row, src, length=spec.max_len),
                  out_shardings=tuple((routed,) * 2 for _ in range(m.num_layers)))
  insert = jax.jit(_insert, out_shardings=cache_sh, donate_argnums=(0,))
  return ServeSetup(workload=workload, config=config, prefill_group=pg, decode_group=dg, slots=slots,
                    max_len=spec.max_len, prefill_len=prefill_len, cache_dtype=cache_dt, dtype=dt,
                    prefill=fwd(pg), decode=fwd(dg), route=route, insert=insert)
