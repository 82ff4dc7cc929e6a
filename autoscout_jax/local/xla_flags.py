"""The environment of a local evaluator's child process (jax-free).

Where it sits: `local/evaluators.py` groups a batch of candidates by the
environment this module derives for them and starts one child process per
group (`local/runner.py`); XLA reads XLA_FLAGS once, when the child's
backend starts, so candidates that differ in XLA flag knobs cannot share a
child.

On the CPU (cluster.platform 'cpu', or 'auto' on a machine without an
accelerator) the child gets `--xla_force_host_platform_device_count=N`; the
flag only shapes the host platform, so 'auto' can always set it and still
use a GPU/TPU where JAX finds one.

Every child of one search process shares a persistent compilation cache
(`compile_cache_dir`, a temporary directory removed when the search exits):
a candidate that F2 compiled is loaded, not compiled again, by its F3
child (the same programs: the train step, or the serving engine's
prefill / decode / route / insert), so each candidate compiles once per
search. A JAX_COMPILATION_CACHE_DIR the user set is kept.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping

from autoscout_jax.targets.local import XLA_FLAG_KNOBS
from autoscout_jax.targets.xla import xla_flags

# The local target's XLA flag knobs; their flags' spelling lives in
# targets/xla.py, shared with the launch artifact (GPU flags are parsed, and
# ignored, on the CPU).

_DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"
_CACHE_DIR: list[str] = []  # this process's compilation cache, made on first use


def compile_cache_dir() -> str:
  """This process's persistent compilation cache for its children (made on
  first use, removed at exit)."""
  if not _CACHE_DIR:
    path = tempfile.mkdtemp(prefix="autoscout_xla_cache_")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    _CACHE_DIR.append(path)
  return _CACHE_DIR[0]


def knob_flags(values: Mapping[str, Any]) -> list[str]:
  """The XLA flags a candidate's flag knobs ask for, in a stable order."""
  return xla_flags({k: bool(values[k]) for k in sorted(XLA_FLAG_KNOBS) if k in values}, "gpu")


def child_env(platform: str, num_devices: int, values: Mapping[str, Any],
              base: Mapping[str, str] | None = None, compile_cache: str | None = None) -> dict[str, str]:
  """A copy of `base` (default: this process's environment) with the XLA
  flags and platform selection for one candidate's child process, and
  `compile_cache` (a directory) as its persistent compilation cache unless
  `base` names one already."""
  env = dict(os.environ if base is None else base)
  if compile_cache and not env.get("JAX_COMPILATION_CACHE_DIR"):
    # every program, however small or quick to compile: a serving candidate's
    # insert and route programs compile in milliseconds but count too
    env.update(JAX_COMPILATION_CACHE_DIR=compile_cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1")
  ours = knob_flags(values)
  overridden = {f.split("=", 1)[0] for f in ours} | {_DEVICE_COUNT_FLAG}
  # Inherited flags stay (a user's dump or debug flags) unless we set them.
  flags = [f for f in env.get("XLA_FLAGS", "").split() if f.split("=", 1)[0] not in overridden]
  if platform in ("cpu", "auto"):
    flags.append(f"{_DEVICE_COUNT_FLAG}={int(num_devices)}")
  flags += ours
  env["XLA_FLAGS"] = " ".join(flags)
  if platform == "cpu":
    env["JAX_PLATFORMS"] = "cpu"
  else:
    # 'auto' means what this machine has, however the parent restricted itself
    # (a search process may pin itself to the CPU to leave the GPU to us).
    env.pop("JAX_PLATFORMS", None)
  # The child runs `python -m autoscout_jax.local.child`: make this checkout
  # importable there even when it is not installed.
  root = str(Path(__file__).resolve().parents[2])
  paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
  if root not in paths:
    env["PYTHONPATH"] = os.pathsep.join([root] + paths)
  return env
