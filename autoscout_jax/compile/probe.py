"""Compile one JAX-mesh candidate for a target cluster and read XLA's figures
(runs inside the compile child).

Where it sits: `compile/child.py` calls `measure(...)` for each candidate
with the target's compile-only devices; the returned `Metrics` travel back
to `compile/evaluator.py`. The program comes from a backend
(`BACKENDS`: today the project's decoder in compile/step.py; a MaxText
backend plugs in beside it with the same `build(workload, values, devices,
num_slices) -> Program` and `reference(workload, values) -> Lowered`).

Steps: build and lower from ShapeDtypeStructs (nothing is allocated); hash
the lowered program (StableHLO text + target + JAX version) and look the
hash up in the on-disk cache, so a repeated (model, mesh, remat) never
compiles twice (candidates differing only in runtime-flag knobs lower to the
same program); otherwise compile, and read memory, flops and collectives
(compile/analysis.py). Above the target's usable HBM, or when XLA itself
refuses with RESOURCE_EXHAUSTED, the result is an 'oom' measurement.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import os
import re
import time
import traceback
from pathlib import Path
from typing import Any, Mapping, Sequence

from autoscout_jax.compile import analysis
from autoscout_jax.compile.targets import CompileTarget
from autoscout_jax.local.runner import classify
from autoscout_jax.measurement import COMPILE_ERROR, INVALID, OOM, Metrics
from autoscout_jax.workload import Workload

BACKENDS = {"flax": "autoscout_jax.compile.step"}
# libtpu's out-of-memory verdict names what the program needed:
# "the total memory required for HLO temporaries (34.11G) exceeds available HBM (15.75G)".
_OOM_NEEDS = re.compile(r"HLO temporaries \(([\d.]+)([KMGT])\) exceeds available HBM \(([\d.]+)([KMGT])\)")
_UNIT = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


class CompileCache:
  """Figures by program hash, one JSON file each (written atomically)."""

  def __init__(self, directory: str | os.PathLike | None):
    self.dir = Path(directory) if directory else None

  def get(self, key: str) -> dict[str, Any] | None:
    if self.dir is None:
      return None
    path = self.dir / f"{key}.json"
    try:
      return json.loads(path.read_text())
    except (OSError, ValueError):
      return None

  def put(self, key: str, record: Mapping[str, Any]) -> None:
    if self.dir is None:
      return
    self.dir.mkdir(parents=True, exist_ok=True)
    tmp = self.dir / f".{key}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(record, sort_keys=True, default=str))
    os.replace(tmp, self.dir / f"{key}.json")


def program_key(lowered_text: str, target: CompileTarget, backend: str) -> str:
  import jax
  h = hashlib.sha256()
  for part in (lowered_text, json.dumps(target.to_json(), sort_keys=True), jax.__version__, backend):
    h.update(part.encode())
    h.update(b"\0")
  return h.hexdigest()[:32]


def reference_flops(mod: Any, workload: Workload, values: Mapping[str, Any], num_devices: int) -> float | None:
  """Per-device flops of one step (see analysis.extrapolate_flops)."""
  m = workload.model
  stacks = mod.layer_stacks(m)
  base_layers = {name: 1 for name, _, _ in stacks}

  def model_with(extra: str | None):
    counts = {name: base_layers[name] + (1 if name == extra else 0) for name, _, _ in stacks}
    dense = counts.get("dense_layers", 0)
    return dataclasses.replace(m, num_layers=sum(counts.values()),
                               num_dense_layers=dense if m.is_moe else 0)

  def flops(model):
    w = dataclasses.replace(workload, model=model, default=())
    return analysis.cost_flops(mod.reference_lowered(w, values).cost_analysis())

  base = flops(model_with(None))
  if base is None:
    return None
  per = {}
  for name, layers, _ in stacks:
    plus = flops(model_with(name))
    if plus is None:
      return None
    per[name] = (plus, layers)
  return analysis.extrapolate_flops(base, per, base_layers) / num_devices


def _cpu_s() -> float:
  return time.process_time()  # this process, all threads: stabler than wall time on a shared host


def argument_bytes(args: Any) -> int:
  """Per-device bytes of the sharded arguments (the largest shard of each)."""
  import jax
  import numpy as np
  total = 0
  for a in jax.tree.leaves(args):
    shard = a.sharding.shard_shape(a.shape) if a.sharding is not None else a.shape
    total += int(np.prod(shard)) * np.dtype(a.dtype).itemsize
  return total


def _oom_figures(text: str, args: Any) -> dict[str, Any]:
  """What an XLA out-of-memory verdict says the program needed: its
  temporaries from the message, plus the arguments' shards."""
  m = _OOM_NEEDS.search(text)
  if not m:
    return {}
  temp = float(m.group(1)) * _UNIT[m.group(2)]
  args_b = argument_bytes(args)
  return {"temp_bytes": int(temp), "argument_bytes": args_b, "peak_mem_bytes": int(temp) + args_b,
          "xla_available_bytes": int(float(m.group(3)) * _UNIT[m.group(4)]), "peak_from": "xla_oom_message"}


def _compile_figures(lowered: Any, target: CompileTarget, args: Any = None) -> dict[str, Any]:
  t0, c0 = time.perf_counter(), _cpu_s()
  try:
    compiled = lowered.compile()
  except Exception:
    text = traceback.format_exc()
    kind = classify(text, COMPILE_ERROR)
    fig = {"failure_kind": kind, "error": text[-2000:], "compile_s": time.perf_counter() - t0,
           "compile_cpu_s": _cpu_s() - c0}
    if kind == OOM and args is not None:
      fig.update(_oom_figures(text, args))
    return fig
  fig: dict[str, Any] = {"compile_s": time.perf_counter() - t0, "compile_cpu_s": _cpu_s() - c0}
  mem = compiled.memory_analysis()
  if mem is not None:
    fig.update(analysis.memory_figures(mem))
  fig["xla_flops_loop_bodies_once"] = analysis.cost_flops(compiled.cost_analysis())
  fig["collectives"] = analysis.collectives(compiled.as_text())
  return fig


def measure(workload: Workload, target: CompileTarget, values: Mapping[str, Any], devices: Sequence[Any],
            options: Mapping[str, Any]) -> Metrics:
  """One candidate at 'compile' fidelity. Never raises for a failing
  candidate: knob values the model or mesh cannot take are 'invalid',
  compiler errors 'compile_error', and 'oom' when XLA runs out of HBM or
  the per-device peak exceeds the target's usable memory."""
  backend = str(options.get("backend", "flax"))
  mod = importlib.import_module(BACKENDS[backend])
  cache = CompileCache(options.get("cache_dir"))
  t0 = time.perf_counter()
  try:
    program = mod.build_program(workload, values, devices, num_slices=target.mesh_groups)
    lowered = program.lower()
  except mod.LayoutError as e:
    return Metrics.failed(INVALID, f"{type(e).__name__}: {e}")
  except Exception:
    return Metrics.failed(COMPILE_ERROR, traceback.format_exc())
  lower_s = time.perf_counter() - t0
  key = program_key(lowered.as_text(), target, backend)
  fig = cache.get(key)
  hit = fig is not None
  if fig is None:
    fig = _compile_figures(lowered, target, program.args)
    if "failure_kind" not in fig:
      try:
        fig["flops_per_step"] = reference_flops(mod, workload, values, len(devices))
      except Exception:  # the figure is optional; the compile verdict stands
        fig["flops_error"] = traceback.format_exc()[-500:]
    fig["compiled_at"] = time.time()
    cache.put(key, fig)
  extra = {k: v for k, v in fig.items() if k not in ("peak_mem_bytes", "flops_per_step", "failure_kind", "error")}
  extra.update(program_key=key, cache_hit=hit, lower_s=lower_s, backend=backend,
               usable_bytes=target.usable_bytes, target=target.label)
  if "failure_kind" in fig:
    # An XLA OOM still says how much the program needed (peak_mem_bytes).
    return Metrics.failed(fig["failure_kind"], fig.get("error", ""), peak_mem_bytes=fig.get("peak_mem_bytes"),
                          extra=extra)
  peak = fig.get("peak_mem_bytes")
  figures = dict(peak_mem_bytes=peak, flops_per_step=fig.get("flops_per_step"), extra=extra)
  if peak is not None and peak > target.usable_bytes:
    return Metrics.failed(OOM, f"needs {peak / 2**30:.2f} GiB per device (XLA memory analysis) but "
                          f"{target.label} has {target.usable_bytes / 2**30:.2f} GiB usable", **figures)
  return Metrics(feasible=True, **figures)
