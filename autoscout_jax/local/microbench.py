"""Micro-benchmarks of this machine's devices, run once in a child process:
`python -m autoscout_jax.local.microbench`.

Where it sits: `local/devices.py` (parent; no JAX backend there) starts this module
with the same environment the F3 profiler's child gets
(local/xla_flags.child_env: on the CPU, N virtual devices), writes one JSON
request to its stdin and reads one JSON object from its stdout; the numbers
become the simulators' hardware description of the local cluster
(sim/measured.py). Everything runs on ALL devices at once (shard_map over a
1-D mesh), as a training step does: on a CPU host the virtual devices share
the cores, so a device's throughput is what it gets while the others work
too.

What is measured (seconds per operation, per device; each timing is the
fastest of `repeats` calls of a jitted loop of `inner` iterations, so the
dispatch of a call is not counted):
  matmul       [m, k] @ [k, n] per device, by shape and dtype
  copy         x * a + b over a large per-device array (bytes read + written)
  op           one tiny matmul + tanh in a chain of dependent ones (the
               per-kernel floor of a compiled program)
  transcendental  exp and tanh over a per-device array (float32), by
               element
  collectives  all_reduce (psum), all_gather, reduce_scatter (psum_scatter),
               all_to_all over the device axis, by bytes per device; and
               small all-reduces / all-gathers inside groups of 2, 4, ...
               devices (`group`; a 2-D mesh), which separate a collective
               call's fixed cost from its per-step latency
  dispatch     one call of a jitted program on all devices, timed from the
               call to its result (what a training step's dispatch costs),
               by the number of argument buffers it updates (donated)
Request: {"platform", "num_devices", "quick": bool}. Reply: {"ok": true,
"provenance": {...}, "matmul": [...], "copy": [...], "op": [...],
"collectives": [...], "dispatch": [...]} or {"ok": false, "error": "..."}.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Callable, Mapping

from autoscout_jax.child_protocol import claim_stdout, die_with_parent

MATMUL_DIMS = (32, 64, 128, 256, 512)  # square m = k = n per device
MATMUL_DTYPES = ("float32", "bfloat16")
COPY_BYTES = (1 << 20, 16 << 20)  # per device, float32
COLLECTIVE_BYTES = (1 << 10, 1 << 14, 1 << 18, 1 << 21)  # per device, float32
COLLECTIVES = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all")
GROUP_BYTES = (1 << 10, 1 << 14)  # per device, the group collectives (latency, not bandwidth)
DISPATCH_BUFFERS = (1, 16, 64)  # argument buffers of the dispatched program
TRANSCENDENTAL_ELEMS = 1 << 16  # per device


def _time(fn: Callable[[], Any], repeats: int) -> float:
  """Fastest wall seconds of `fn()` (which blocks) over `repeats` calls,
  after one warm call: the machine's capability, least disturbed by other
  work on a shared host."""
  fn()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return min(times)


def run(request: Mapping[str, Any]) -> dict[str, Any]:
  import jax
  import jax.numpy as jnp
  import jaxlib
  import numpy as np
  from jax import lax
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

  platform, n = request.get("platform", "auto"), int(request["num_devices"])
  quick = bool(request.get("quick", False))
  found = jax.devices() if platform == "auto" else jax.devices(platform)
  if len(found) < n:
    raise RuntimeError(f"{n} devices asked for, this machine has {len(found)} {found[0].platform} device(s)")
  devices = found[:n]
  mesh = Mesh(np.array(devices), ("x",))
  spec = P("x")
  repeats = 3 if quick else 7

  def sharded(shape_per_dev, dtype):
    shape = (shape_per_dev[0] * n,) + tuple(shape_per_dev[1:])
    x = jnp.ones(shape, dtype) * 0.5
    return jax.device_put(x, NamedSharding(mesh, spec))

  def loop(body, inner):
    """A jitted shard_map running `body` `inner` times with a carried value."""
    def per_device(*xs):
      def step(_, carry):
        return body(*carry)
      return lax.fori_loop(0, inner, step, xs)
    f = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=spec, out_specs=spec, check_vma=False))
    return f

  def per_op(body, args, inner):
    f = loop(body, inner)
    return _time(lambda: jax.block_until_ready(f(*args)), repeats) / inner

  out: dict[str, Any] = {"matmul": [], "copy": [], "op": [], "transcendental": [], "collectives": [],
                         "dispatch": []}
  # matmul: the result feeds the next iteration (scaled to stay finite)
  for dtype in MATMUL_DTYPES:
    for d in MATMUL_DIMS:
      flops = 2.0 * d ** 3
      inner = max(2, min(64, int(2e8 / flops / (4 if quick else 1))))
      a, b = sharded((d, d), dtype), sharded((d, d), dtype)
      s = per_op(lambda x, y: ((x @ y) * 0.01, y), (a, b), inner)
      out["matmul"].append({"dtype": dtype, "m": d, "k": d, "n": d, "s": s})
  # memory traffic: read x, write x (float32)
  for nbytes in COPY_BYTES:
    x = sharded((nbytes // 4,), jnp.float32)
    inner = 8
    s = per_op(lambda v: (v * 0.999 + 0.001,), (x,), inner)
    out["copy"].append({"bytes": nbytes, "s": s})
  # the per-kernel floor: a chain of tiny dependent matmuls (each its own kernel)
  chain = 16
  x = sharded((8, 8), jnp.float32)
  def tiny(v):
    for _ in range(chain):
      v = jnp.tanh(v @ v)
    return (v,)
  s = per_op(tiny, (x,), 16)
  out["op"].append({"ops": chain, "s": s / chain})
  # transcendentals: exp / tanh of every element (plus the scaling that
  # keeps the values in range), float32 as the softmax and activations run
  for name, fn in (("exp", lambda v: (jnp.exp(v) * 0.2,)), ("tanh", lambda v: (jnp.tanh(v) * 1.5,))):
    elems = TRANSCENDENTAL_ELEMS
    x = sharded((elems,), jnp.float32)
    s = per_op(fn, (x,), 8)
    out["transcendental"].append({"fn": name, "elems": elems, "s": s})
  # collectives over the device axis, bytes per device of the input
  ops = {
      "all_reduce": lambda v: (lax.psum(v, "x") * (1.0 / n),),
      "all_gather": lambda v: (lax.all_gather(v, "x", tiled=True)[: v.shape[0]] * 0.5,),
      "reduce_scatter": lambda v: (jnp.tile(lax.psum_scatter(v, "x", tiled=True), n) * (1.0 / n),),
      "all_to_all": lambda v: (lax.all_to_all(v.reshape(n, -1), "x", 0, 0, tiled=True).reshape(-1) * 0.5,),
  }
  if n > 1:
    for name in COLLECTIVES:
      for nbytes in COLLECTIVE_BYTES:
        elems = max(n, nbytes // 4 // n * n)
        x = sharded((elems,), jnp.float32)
        inner = 4 if nbytes >= (1 << 20) else 16
        s = per_op(ops[name], (x,), inner)
        out["collectives"].append({"op": name, "bytes": elems * 4, "group": n, "s": s})
  # the same calls inside groups of g < n devices (n / g groups at once)
  group = 2
  while group < n and n % group == 0:
    gmesh = Mesh(np.array(devices).reshape(n // group, group), ("r", "x"))
    gspec = P(("r", "x"))
    for name in ("all_reduce", "all_gather"):
      for nbytes in GROUP_BYTES:
        elems = max(group, nbytes // 4 // group * group)
        x = jax.device_put(jnp.ones((elems * n,), jnp.float32) * 0.5, NamedSharding(gmesh, gspec))
        g = group
        body = {"all_reduce": lambda v, g=g: lax.psum(v, "x") * (1.0 / g),
                "all_gather": lambda v: lax.all_gather(v, "x", tiled=True)[: v.shape[0]] * 0.5}[name]
        f = jax.jit(jax.shard_map(lambda v, body=body: lax.fori_loop(0, 16, lambda _, c: body(c), v),
                                  mesh=gmesh, in_specs=gspec, out_specs=gspec, check_vma=False))
        s = _time(lambda: jax.block_until_ready(f(x)), repeats) / 16
        out["collectives"].append({"op": name, "bytes": elems * 4, "group": group, "s": s})
    group *= 2
  # dispatch: one call of a program that updates k small sharded buffers
  # (donated, as a training step's state), from the call to its result
  for k in DISPATCH_BUFFERS:
    bufs = [sharded((8,), jnp.float32) for _ in range(k)]
    f = jax.jit(lambda *a: [v * 0.999 + 0.001 for v in a], donate_argnums=tuple(range(k)))
    state = [f(*bufs)]
    def call():
      state[0] = f(*state[0])
      jax.block_until_ready(state[0])
    out["dispatch"].append({"buffers": k, "s": _time(call, repeats)})
  d0 = devices[0]
  out["provenance"] = dict(jax_version=jax.__version__, jaxlib_version=jaxlib.__version__,
                           platform=d0.platform, device_kind=d0.device_kind, device_count=n,
                           host_cpus=os.cpu_count(), quick=quick,
                           date=time.strftime("%Y-%m-%d", time.gmtime()))
  return out


def main() -> int:
  die_with_parent()
  proto = claim_stdout()  # anything else written to fd 1 goes to stderr
  request = json.loads(sys.stdin.read() or "{}")
  try:
    reply = {"ok": True, **run(request)}
  except Exception as e:  # reported to the parent, which raises one clear error
    reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
  proto.write(json.dumps(reply) + "\n")
  proto.flush()
  return 0 if reply["ok"] else 1


if __name__ == "__main__":
  sys.exit(main())
