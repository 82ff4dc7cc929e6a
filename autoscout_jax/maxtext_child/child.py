"""`python -m autoscout_jax.maxtext_child.child`: MaxText's config validation and its
ahead-of-time compile of the train step, one candidate at a time, in the
JSON-lines protocol of autoscout_jax/child_protocol.py.

Where it sits: started by autoscout_jax/maxtext_compile.py (F2) and by the
maxtext target's oracle test with the interpreter of
autoscout_jax/maxtext_env.py. Request (stdin, one JSON object):
{"op": "validate" | "compile" | "parse", "target": {"kind": "local"} |
{"kind": "tpu", "topology": "v5e-256", "num_slices": 2},
"candidates": [{"index", "key", "values": <MaxText overrides>}]}.

- validate: result metrics {"feasible": true} or {"feasible": false,
  "failure_kind": "invalid", "error": MaxText's reason}.
- parse: `values` is {"argv": ["key=value", ...]}: MaxText's config from
  those lines as its trainer's command line parses them (no device mesh:
  a launch artifact for several processes names devices this one lacks);
  result {"feasible": true, "extra": {"num_slices": ...}} or 'invalid'.
- compile: MaxText's train step (the one its train_compile.py builds)
  lowered from shapes and compiled for this machine's devices or for a TPU
  topology (compile-only devices; libtpu): XLA's per-device memory
  (`peak_mem_bytes`), flops, compile seconds. A config MaxText refuses is
  'invalid', XLA running out of HBM 'oom', any other failure
  'compile_error' -- all data, never an exception.
"""

from __future__ import annotations

import sys
import time
import traceback
from typing import Any, Mapping, Sequence

from autoscout_jax import child_protocol as protocol
from autoscout_jax.maxtext_child.config import ConfigError, check, device_mesh, from_command_line, make_config


def _versions() -> dict[str, Any]:
  import jax
  import jaxlib
  from maxtext import version as mv
  return {"jax_version": jax.__version__, "jaxlib_version": jaxlib.__version__,
          "maxtext_version": getattr(mv, "__version__", None) or getattr(mv, "VERSION", None),
          "python": sys.version.split()[0]}


def _target_keys(target: Mapping[str, Any]) -> dict[str, Any]:
  if target.get("kind") == "tpu":
    return {"compile_topology": target["topology"], "compile_topology_num_slices": int(target.get("num_slices", 1))}
  return {}


def _mesh(config: Any, target: Mapping[str, Any]) -> Any:
  if target.get("kind") == "tpu":
    from maxtext.trainers.pre_train import train_compile
    return train_compile.get_topology_mesh(config)
  import jax
  return device_mesh(config, jax.devices())


def _memory(compiled: Any) -> dict[str, Any]:
  mem = compiled.memory_analysis()
  if mem is None:
    return {}
  parts = {k: int(getattr(mem, f"{k}_size_in_bytes")) for k in ("argument", "output", "temp", "alias",
                                                                  "generated_code")}
  out: dict[str, Any] = {f"{k}_bytes": v for k, v in parts.items()}
  out["peak_mem_bytes"] = parts["argument"] + parts["output"] + parts["temp"] - parts["alias"]
  return out


def _flops(compiled: Any) -> float | None:
  try:
    cost = compiled.cost_analysis()
  except Exception:
    return None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  return float(cost["flops"]) if cost and "flops" in cost else None


def compile_step(overrides: Mapping[str, Any], target: Mapping[str, Any]) -> dict[str, Any]:
  """Metrics JSON of one candidate compiled by MaxText's AOT path."""
  from flax.core.spmd import logical_axis_rules as axis_rules
  from maxtext.trainers.pre_train import train, train_compile
  from maxtext.utils import maxtext_utils, sharding
  t0 = time.perf_counter()
  try:
    config = make_config({**overrides, **_target_keys(target)})
    mesh = _mesh(config, target)
  except ConfigError as e:
    return protocol.failed("invalid", str(e))
  except Exception as e:  # MaxText asserts on a mesh that does not fit the devices
    kind = "invalid" if isinstance(e, AssertionError) else "compile_error"
    return protocol.failed(kind, f"{type(e).__name__}: {e}" if kind == "invalid" else traceback.format_exc())
  try:
    args, kwargs, state_shardings, _, model = train_compile.get_shaped_inputs(mesh, config)
    params_shardings, state_shardings = sharding.maybe_update_params_sharding_with_opt(config, state_shardings)
    in_state = sharding.build_zero1_input_state_mesh_shardings(config, state_shardings, params_shardings)
    data_sharding = sharding.get_input_data_sharding(config, mesh)
    func, in_shard, out_shard, static, donate = maxtext_utils.get_functional_train_with_signature(
        train.train_step, data_sharding, in_state, model, config, params_shardings)
    lower_s = time.perf_counter() - t0
    compiled = train_compile.jit_and_compile(func, args, kwargs, mesh, in_shard, out_shard, static, donate,
                                             config, axis_rules(config.logical_axis_rules))
  except Exception:
    text = traceback.format_exc()
    kind = protocol.classify(text, "compile_error")
    return protocol.failed(kind, text, extra={"compile_s": time.perf_counter() - t0})
  extra = _memory(compiled)
  peak = extra.pop("peak_mem_bytes", None)
  extra.update(compile_s=time.perf_counter() - t0, lower_s=lower_s, num_devices=int(mesh.devices.size),
               mesh_shape={str(k): int(v) for k, v in mesh.shape.items() if int(v) > 1})
  return {"feasible": True, "peak_mem_bytes": peak, "flops_per_step": _flops(compiled), "extra": extra}


def _validate(values: Mapping[str, Any], target: Mapping[str, Any], devices: Sequence[Any]) -> str | None:
  """MaxText's verdict on `values` for the target's devices (None: accepted)."""
  keys = {**values, **_target_keys(target)}
  if target.get("kind") != "tpu":
    return check(keys, devices)
  try:
    _mesh(make_config(keys), target)
  except ConfigError as e:
    return str(e)
  except Exception as e:
    return f"{type(e).__name__}: {str(e).strip()[:300]}"
  return None


def _parse(lines: Sequence[str]) -> dict[str, Any]:
  try:
    config = from_command_line(lines)
  except ConfigError as e:
    return protocol.failed("invalid", str(e))
  return {"feasible": True, "extra": {"num_slices": int(config.num_slices)}}


def serve(request: Mapping[str, Any], out: Any) -> int:
  op = request.get("op", "validate")
  target = request.get("target") or {"kind": "local"}
  if op not in ("validate", "compile", "parse"):
    protocol.emit(out, event="fatal", error=f"unknown op {op!r}; known: validate, compile, parse")
    return 2
  try:
    import jax
    devices: Sequence[Any] = jax.devices()
    prov = dict(_versions(), device_kind=devices[0].device_kind, device_count=len(devices), op=op,
                target=dict(target))
  except Exception as e:
    protocol.emit(out, event="fatal", error=f"MaxText's environment is broken: {type(e).__name__}: {e}")
    return 2
  protocol.emit(out, event="ready", provenance=prov)

  def one(item: Mapping[str, Any]) -> dict[str, Any]:
    if op == "validate":
      why = _validate(item["values"], target, devices)
      return {"feasible": True} if why is None else protocol.failed("invalid", why)
    if op == "parse":
      return _parse(item["values"]["argv"])
    return compile_step(item["values"], target)

  return protocol.serve_candidates(request, out, one, after_each=jax.clear_caches if op == "compile" else None)


if __name__ == "__main__":
  sys.exit(protocol.child_main(serve))
