"""Measure one candidate inside the child process: F2 figures, F3 timings.

Where it sits: `local/child.py` calls `measure(...)` for each candidate of
its batch and streams the resulting `Metrics` back to the parent
(`local/runner.py`), which wraps them into `Measurement`s.

F2 (compile) figures, all per device:
- peak_mem_bytes = argument + output + temp - alias bytes of XLA's
  `compiled.memory_analysis()`. Arguments are the sharded parameters,
  optimizer state and batch; the donated parameters and optimizer state alias
  outputs, so they are counted once. Generated code is left out (recorded in
  `extra`). This is the OOM oracle: above `cluster.memory_bytes_per_device`
  a candidate is recorded as 'oom' without running.
- flops_per_step: XLA's cost analysis counts a `lax.scan` / while body once,
  whatever its trip count, so the compiled program's own figure shrinks with
  scan_layers and num_microbatches. We therefore take the flops of a
  reference lowering of the same candidate with the layer loop unrolled and
  one micro-batch (same tokens, same remat, so the same arithmetic), from
  `Lowered.cost_analysis()` (no compile; the lowered module is global, so we
  divide by the device count). The compiled program's figure is kept in
  `extra['xla_flops_loop_bodies_once']`.
"""

from __future__ import annotations

import gc
import statistics
import time
import traceback
from typing import Any, Mapping, Sequence

import jax

from autoscout_jax.local.runner import classify
from autoscout_jax.local.launch_script import layout
from autoscout_jax.local.train_step import build_train_setup
from autoscout_jax.measurement import COMPILE_ERROR, CRASH, INVALID, OOM, Metrics
from autoscout_jax.sim.hardware import device_for_kind
from autoscout_jax.targets.local import LayoutError
from autoscout_jax.units import fmt_bytes
from autoscout_jax.workload import LocalCluster, Workload

def peak_flops(device_kind: str) -> float | None:
  """Dense bf16 peak flop/s of a device kind, from the simulators' hardware
  catalog (None for unknown kinds such as CPUs: no mfu then)."""
  dev = device_for_kind(device_kind)
  return dev.peak_bf16 if dev is not None else None


def _cost_flops(cost: Any) -> float | None:
  # cost_analysis() is a dict in current JAX, a one-element list in older ones.
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  if not cost or "flops" not in cost:
    return None
  return float(cost["flops"])


def _reference_flops(workload: Workload, values: Mapping[str, Any],
                     devices: Sequence[jax.Device]) -> float | None:
  """Per-device flops of one step, loops unrolled (see the module docstring)."""
  ref = {k: v for k, v in values.items() if k != "scan_unroll"}
  ref.update(scan_layers=False, num_microbatches=1)
  lowered = build_train_setup(workload, ref, devices).lower()
  total = _cost_flops(lowered.cost_analysis())
  return None if total is None else total / len(devices)


def compile_figures(workload: Workload, values: Mapping[str, Any],
                    devices: Sequence[jax.Device]) -> tuple[Any, Any, dict[str, Any]]:
  """(setup, compiled step, figures). Lowered from shapes: nothing is allocated."""
  t0 = time.perf_counter()
  setup = build_train_setup(workload, values, devices)
  lowered = setup.lower()
  t1 = time.perf_counter()
  compiled = lowered.compile()
  t2 = time.perf_counter()
  # The layout launch.py rebuilds (local/launch_script.py): a test compares them.
  fig: dict[str, Any] = {"lower_s": t1 - t0, "compile_s": t2 - t1, "layout": layout(setup)}
  mem = compiled.memory_analysis()
  if mem is not None:
    parts = {k: int(getattr(mem, f"{k}_size_in_bytes")) for k in
             ("argument", "output", "temp", "alias", "generated_code")}
    fig.update({f"{k}_bytes": v for k, v in parts.items()})
    fig["peak_mem_bytes"] = parts["argument"] + parts["output"] + parts["temp"] - parts["alias"]
  fig["xla_flops_loop_bodies_once"] = _cost_flops(compiled.cost_analysis())
  fig["flops_per_step"] = _reference_flops(workload, values, devices)
  return setup, compiled, fig


def _figures_metrics(fig: Mapping[str, Any]) -> dict[str, Any]:
  extra = {k: v for k, v in fig.items() if k not in ("peak_mem_bytes", "flops_per_step")}
  return dict(peak_mem_bytes=fig.get("peak_mem_bytes"), flops_per_step=fig.get("flops_per_step"),
              extra=extra)


def _over_budget(fig: Mapping[str, Any], cluster: LocalCluster) -> str | None:
  peak = fig.get("peak_mem_bytes")
  if peak is not None and peak > cluster.memory_bytes_per_device:
    return (f"needs {fmt_bytes(peak)} per device (XLA memory analysis) but the cluster has "
            f"{fmt_bytes(cluster.memory_bytes_per_device)}; not run")
  return None


def run_and_time(setup: Any, compiled: Any, workload: Workload, devices: Sequence[jax.Device],
                 warmup_steps: int = 2, timed_steps: int = 5, seed: int = 0) -> dict[str, Any]:
  """Warm up, then time `timed_steps` steps one by one (block_until_ready)."""
  params, opt_state = setup.init(seed)
  tokens = setup.batch(seed)
  losses, times = [], []
  for i in range(warmup_steps + timed_steps):
    t0 = time.perf_counter()
    params, opt_state, loss = compiled(params, opt_state, tokens)
    jax.block_until_ready((params, opt_state, loss))
    if i >= warmup_steps:
      times.append(time.perf_counter() - t0)
    losses.append(float(loss))
  return dict(step_times_s=times, warmup_steps=warmup_steps, losses=losses, useful_tokens=setup.useful_tokens,
              peak_flops=peak_flops(devices[0].device_kind))


def measure(fidelity: str, workload: Workload, cluster: LocalCluster, values: Mapping[str, Any],
            devices: Sequence[jax.Device], options: Mapping[str, Any]) -> Metrics:
  """One candidate at 'compile' or 'profile' fidelity. Never raises for a
  failing candidate: knob values this model or mesh cannot take are
  'invalid', errors while building/compiling 'compile_error', errors while
  running 'crash'; any of them reads as 'oom' when its text says the device
  ran out of memory."""
  if fidelity not in ("compile", "profile"):
    raise ValueError(f"the local child measures 'compile' or 'profile', not {fidelity!r}")
  try:
    setup, compiled, fig = compile_figures(workload, values, devices)
  except LayoutError as e:
    return Metrics.failed(INVALID, f"{type(e).__name__}: {e}")
  except Exception:  # XLA errors surface as many exception types
    text = traceback.format_exc()
    return Metrics.failed(classify(text, COMPILE_ERROR), text)
  figures = _figures_metrics(fig)
  over = _over_budget(fig, cluster)
  if over:
    return Metrics.failed(OOM, over, **figures)
  if fidelity == "compile":
    return Metrics(feasible=True, **figures)
  try:
    run = run_and_time(setup, compiled, workload, devices,
                       warmup_steps=int(options.get("warmup_steps", 2)),
                       timed_steps=int(options.get("timed_steps", 5)),
                       seed=int(options.get("seed", 0)))
  except Exception:
    text = traceback.format_exc()
    return Metrics.failed(classify(text, CRASH), text, **figures)
  finally:
    del setup, compiled
    gc.collect()  # free this candidate's device buffers before the next one
  step = statistics.median(run["step_times_s"])
  flops, peak = figures["flops_per_step"], run["peak_flops"]
  figures["extra"].update(run)
  # trained tokens: a fine-tuning batch's padding is not throughput
  return Metrics(feasible=True, step_time_s=step, tokens_per_s=run["useful_tokens"] / step,
                 mfu=(flops / step / peak) if (flops and peak) else None, **figures)
