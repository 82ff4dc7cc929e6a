"""Which Python runs MaxText, and the environment of its children
(jax-free; the search's side, Python 3.11).

Where it sits: MaxText (PyPI `maxtext`, extra `maxtext`) needs Python 3.12
and a newer JAX than the search, so MaxText code runs only in child
processes (`python -m autoscout_jax.maxtext_child.<module>`, repo root on
PYTHONPATH) started with the interpreter `find_python` names: an explicit
path (the evaluators' gin-settable `python=`), else $AUTOSCOUT_MAXTEXT_PYTHON,
else `.venv-maxtext/bin/python` in the repository root (what `.ci/run`
creates; gitignored). The maxtext F2 evaluator (maxtext_compile.py), the F3
runner and the tests use `missing` to refuse or skip with a reason.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Mapping

ENV_VAR = "AUTOSCOUT_MAXTEXT_PYTHON"
ROOT = Path(__file__).resolve().parents[1]  # the repository root (autoscout_jax/maxtext_child/ runs from it)
DEFAULT_VENV = ".venv-maxtext"
_CHECKED: dict[str, str | None] = {}


def default_python() -> Path:
  return ROOT / DEFAULT_VENV / "bin" / "python"


def find_python(explicit: str | None = None) -> str | None:
  """The interpreter for MaxText children, or None if none is configured."""
  if explicit:
    return explicit
  if os.environ.get(ENV_VAR):
    return os.environ[ENV_VAR]
  path = default_python()
  return str(path) if path.exists() else None


def missing(explicit: str | None = None) -> str | None:
  """Why MaxText children cannot run here (None: they can). Checks once per
  interpreter that it is Python >= 3.12 and imports maxtext."""
  python = find_python(explicit)
  if python is None:
    return (f"no Python with MaxText: set {ENV_VAR} or create {DEFAULT_VENV}/ in the repository root "
            f"(python3.12 -m venv {DEFAULT_VENV} && {DEFAULT_VENV}/bin/pip install \"maxtext[tpu]\"; "
            f".ci/run does this)")
  if python not in _CHECKED:
    probe = ("import sys; assert sys.version_info >= (3, 12), sys.version; "
             "import importlib.util as u; assert u.find_spec('maxtext'), 'maxtext is not installed'")
    try:
      r = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=60)
      why = None if r.returncode == 0 else (r.stderr.strip().splitlines() or ["failed"])[-1]
    except (OSError, subprocess.TimeoutExpired) as e:
      why = f"{type(e).__name__}: {e}"
    _CHECKED[python] = None if why is None else f"{python} cannot run MaxText: {why}"
  return _CHECKED[python]


def child_argv(python: str, module: str) -> list[str]:
  return [python, "-m", module]


def child_env(num_devices: int | None = None, platform: str = "cpu",
              base: Mapping[str, str] | None = None) -> dict[str, str]:
  """The environment of a MaxText child: the repo root first on PYTHONPATH
  (for autoscout_jax/maxtext_child), MaxText without Google Cloud, and for CPU
  children `num_devices` virtual devices."""
  env = dict(os.environ if base is None else base)
  # The search's own jax[tpu] points TPU_LIBRARY_PATH at ITS libtpu when it
  # imports JAX; a MaxText child must load the libtpu of its own environment
  # (an older one cannot parse the Pallas kernels its jax writes).
  env.pop("TPU_LIBRARY_PATH", None)
  root = str(ROOT)
  env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
                                                if p and p != root])
  env["DECOUPLE_GCLOUD"] = "TRUE"
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  if platform == "cpu":
    env["JAX_PLATFORMS"] = "cpu"
    ours = ("--xla_force_host_platform_device_count", "--xla_cpu_enable_concurrency_optimized_scheduler")
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith(ours)]
    if num_devices:
      flags.append(f"--xla_force_host_platform_device_count={int(num_devices)}")
    # XLA:CPU's concurrency-optimized scheduler deadlocks MaxText steps with
    # gradient accumulation on a 2-core host (collective rendezvous timeouts)
    flags.append("--xla_cpu_enable_concurrency_optimized_scheduler=false")
    env["XLA_FLAGS"] = " ".join(flags)
  elif platform == "tpu_compile":  # compile-only TPU devices from this host (libtpu)
    env["JAX_PLATFORMS"] = "cpu"  # the child's own backend; libtpu gives the topology
    env["ALLOW_MULTIPLE_LIBTPU_LOAD"] = "1"
    env["TPU_SKIP_MDS_QUERY"] = "1"
    # Pallas kernels without Mosaic debug locations: an older libtpu refuses
    # them ("no such field: 'debug_locations'"); XLA does not need them.
    env["JAX_MOSAIC_UNZIP_DEBUG_LOCATIONS"] = "false"
  return env
