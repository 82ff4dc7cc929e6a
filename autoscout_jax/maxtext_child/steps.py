"""F3 for the maxtext family: run MaxText's own train step and time it.

Where it sits: the 3.12 child (`autoscout_jax.maxtext_child/profile_child.py`) calls
`measure(overrides, options)` once per candidate; `overrides` are MaxText
configuration keys (targets/maxtext.overrides on the 3.11 side). Here MaxText
builds everything -- its config (`pyconfig.initialize`, its own
validation), mesh, model, optimizer state, shardings and jitted
`train_step` (`train_utils.setup_train_loop` and
`jit_train_and_eval_step`, as its `train_loop` does) -- and we only compile
it, run warm-up steps and time `repeats` blocks of `timed_steps` steps with
`block_until_ready` (MaxText's own per-step metrics are dispatch gaps,
too noisy on a shared host).

The result is a Metrics-shaped dict (autoscout_jax/measurement.py): a
failure is data -- `invalid` (MaxText's config validation refuses it),
`compile_error` (building or compiling its step fails), `oom` (an
allocation error), `crash` (an error while stepping). Hangs and hard crashes are the parent's to
record (local/runner.py). Imports of jax/maxtext happen inside functions:
this module is importable without them.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any, Mapping

from autoscout_jax.child_protocol import failed, failed_at

DEFAULT_OPTIONS = {"warmup_steps": 1, "timed_steps": 3, "repeats": 3, "seed": 0}


def _slices_by_process() -> None:
  """CPU (and GPU) devices carry no useful `slice_index`: make each process one DCN
  granule, JAX's documented fallback (`process_is_granule`), so MaxText's
  multi-slice mesh (dcn_* axes) forms over processes."""
  from jax.experimental import mesh_utils
  if getattr(mesh_utils.create_hybrid_device_mesh, "_autoscout", False):
    return
  original = mesh_utils.create_hybrid_device_mesh

  def hybrid(mesh_shape, dcn_mesh_shape, devices=None, **kw):
    import jax
    devs = devices if devices is not None else jax.devices()
    slices = {getattr(d, "slice_index", None) for d in devs}
    if len(slices) < len({d.process_index for d in devs}):  # no (or one) slice_index across processes
      kw["process_is_granule"] = True
    return original(mesh_shape, dcn_mesh_shape, devs, **kw)

  hybrid._autoscout = True  # type: ignore[attr-defined]
  mesh_utils.create_hybrid_device_mesh = hybrid


def make_config(overrides: Mapping[str, Any]) -> Any:
  """MaxText's config for `overrides` (config.make_config: its own
  validation) plus what MaxText's train.initialize sets up around it."""
  import jax
  from maxtext.utils import train_utils
  from autoscout_jax.maxtext_child.config import make_config as maxtext_config
  jax.config.update("jax_default_prng_impl", "unsafe_rbg")
  cfg = maxtext_config(overrides)
  train_utils.validate_train_config(cfg)
  jax.config.update("jax_use_shardy_partitioner", cfg.shardy)
  jax.config.update("jax_remove_size_one_mesh_axis_from_type", cfg.remove_size_one_mesh_axis_from_type)
  return cfg


_BARRIERS = [0]


def _barrier(what: str, timeout_s: float = 900.0) -> None:
  """With several processes, wait until every process got here. The first
  run of a program opens gloo contexts whose peers must arrive within 30 s
  (XLA's fixed limit); processes compile on their own, and on a loaded host
  one can finish its compile minutes after the other."""
  import jax
  if jax.process_count() < 2:
    return
  from jax._src import distributed
  _BARRIERS[0] += 1
  distributed.global_state.client.wait_at_barrier(f"autoscout_{what}_{_BARRIERS[0]}", int(timeout_s * 1000))


def _peak_bytes(mem: Any) -> float | None:
  if mem is None:
    return None
  return float(mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
               - mem.alias_size_in_bytes)


def measure(overrides: Mapping[str, Any], options: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """Metrics (as JSON) of one configuration: compile, warm up, time."""
  opts = {**DEFAULT_OPTIONS, **dict(options or {})}
  t0 = time.perf_counter()
  _slices_by_process()
  from autoscout_jax.maxtext_child.config import ConfigError
  try:
    cfg = make_config(overrides)
  except ConfigError as e:  # MaxText's own validation says no: not a valid configuration
    return failed("invalid", f"MaxText refused the config: {e}", extra={"stage": "config"})
  except Exception as e:
    return failed_at("config", "compile_error", e)
  import jax
  from flax import nnx
  from flax.core.spmd import logical_axis_rules
  from maxtext.trainers.pre_train import train
  from maxtext.utils import maxtext_utils, sharding, train_utils
  try:
    (_, _, state_shardings, _, mesh, _, _, _, _, _, state) = train_utils.setup_train_loop(cfg, None)
    graph, state = nnx.split(state)
    params_shardings, state_shardings = sharding.maybe_update_params_sharding_with_opt(cfg, state_shardings)
    p_step, _ = train_utils.jit_train_and_eval_step(cfg, graph, mesh, state, state_shardings, train.train_step,
                                                    train.eval_step, None, params_shardings)
    t_setup = time.perf_counter() - t0
    with jax.set_mesh(mesh), logical_axis_rules(cfg.logical_axis_rules):
      data_sharding = sharding.get_input_data_sharding(cfg, mesh)
      shaped = maxtext_utils.get_shaped_batch(cfg, batch_sharding=data_sharding)
      if cfg.shard_optimizer_over_data:
        state = jax.device_put(state, state_shardings)
      t1 = time.perf_counter()
      compiled = p_step.lower(state, shaped).compile()
      t_compile = time.perf_counter() - t1
  except BaseException as e:
    if isinstance(e, KeyboardInterrupt):
      raise
    return failed_at("build", "compile_error", e)
  try:
    mem = compiled.memory_analysis()
  except Exception:  # not every backend has it
    mem = None
  extra: dict[str, Any] = {"setup_s": t_setup, "compile_s": t_compile,
                           "mesh_shape": {k: int(v) for k, v in mesh.shape.items() if v > 1},
                           "global_batch": int(cfg.global_batch_size_to_train_on),
                           "process_count": jax.process_count()}
  if mem is not None:
    extra.update(argument_bytes=mem.argument_size_in_bytes, output_bytes=mem.output_size_in_bytes,
                 temp_bytes=mem.temp_size_in_bytes, alias_bytes=mem.alias_size_in_bytes)
  try:
    with jax.set_mesh(mesh), logical_axis_rules(cfg.logical_axis_rules):
      batch = train.make_synthetic_batch(cfg, shaped, seed=int(opts["seed"]))
      _barrier("compiled")
      t1 = time.perf_counter()
      for _ in range(int(opts["warmup_steps"])):
        state, metrics = compiled(state, batch)
      jax.block_until_ready(state)
      extra["warmup_s"] = time.perf_counter() - t1
      blocks = []
      for _ in range(int(opts["repeats"])):
        t1 = time.perf_counter()
        for _ in range(int(opts["timed_steps"])):
          state, metrics = compiled(state, batch)
        jax.block_until_ready(state)
        blocks.append((time.perf_counter() - t1) / int(opts["timed_steps"]))
      loss = metrics.get("scalar", {}).get("learning/loss") if isinstance(metrics, dict) else None
  except BaseException as e:
    if isinstance(e, KeyboardInterrupt):
      raise
    return failed_at("run", "crash", e, **extra)
  step = statistics.median(blocks)
  tokens = cfg.global_batch_size_to_train_on * cfg.max_target_length
  extra.update(step_times_s=blocks, timed_steps=int(opts["timed_steps"]),
               loss=float(loss) if loss is not None else None)
  return {"feasible": True, "step_time_s": step, "tokens_per_s": tokens / step,
          "peak_mem_bytes": _peak_bytes(mem), "extra": extra}


def versions() -> dict[str, str]:
  """Versions that identify a measurement (the table's header records them)."""
  import platform
  import jax
  import jaxlib
  out = {"python": platform.python_version(), "jax": jax.__version__, "jaxlib": jaxlib.__version__}
  try:
    from importlib.metadata import version
    out["maxtext"] = version("maxtext")
  except Exception:
    pass
  return out


def device_info() -> dict[str, Any]:
  import jax
  d = jax.devices()[0]
  return {"platform": d.platform, "device_kind": d.device_kind, "device_count": jax.device_count(),
          "local_device_count": jax.local_device_count(), "process_count": jax.process_count(),
          "cpu_count": os.cpu_count()}
