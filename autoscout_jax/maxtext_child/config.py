"""An overrides dict -> MaxText's configuration, by MaxText's own code.

Where it sits: child.py (and the F3 step runner) call `make_config` with
the keys `autoscout_jax.targets.maxtext.overrides` wrote; `check` is the
oracle the maxtext target's constraints are tested against: MaxText's
config validation (`pyconfig.initialize`) plus MaxText's own device-mesh
construction for the devices at hand (where the product of the ICI degrees
must match the devices per slice).
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Mapping, Sequence


class ConfigError(ValueError):
  """MaxText refused the overrides (its message)."""


def _scratch_dir() -> str:
  path = os.path.join(tempfile.gettempdir(), f"autoscout_jax.maxtext_child_{os.getuid()}")
  os.makedirs(path, exist_ok=True)
  return path


def make_config(overrides: Mapping[str, Any]) -> Any:
  """MaxText's HyperParameters for `overrides` (keys of its base.yml).
  MaxText reports a bad config by exiting (outside test runners); this
  turns that into a ConfigError with MaxText's message."""
  kw = dict(overrides)
  kw.setdefault("base_output_directory", _scratch_dir())  # not the caller's cwd
  kw.setdefault("log_config", False)
  return _initialize([""], kw)


def from_command_line(lines: Sequence[str]) -> Any:
  """MaxText's HyperParameters for `key=value` lines parsed as its trainer
  parses its command line (`python -m maxtext.trainers.pre_train.train
  <lines>`: OmegaConf's dotlist, values typed from their text), e.g. the
  lines of a launch artifact's maxtext_overrides.txt."""
  given = {ln.split("=", 1)[0] for ln in lines}
  kw = {k: v for k, v in (("base_output_directory", _scratch_dir()), ("log_config", False)) if k not in given}
  return _initialize(["", *lines], kw)


def _initialize(argv: Sequence[str], kw: Mapping[str, Any]) -> Any:
  from maxtext.configs import pyconfig
  try:
    return pyconfig.initialize(list(argv), **kw)
  except SystemExit as e:  # MaxText's config error handler exits with status 2
    cause = e.__context__ or e
    raise ConfigError(_message(cause)) from None
  except Exception as e:  # under a test runner MaxText re-raises instead
    raise ConfigError(_message(e)) from None


def _message(e: BaseException) -> str:
  text = str(e).strip() or type(e).__name__
  # pydantic: "1 validation error for MaxTextConfig\n  Assertion failed, <message> [type=...]"
  lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
  for ln in lines[1:]:
    if ln.startswith(("Assertion failed,", "Value error,")):
      return ln.split(",", 1)[1].split(" [type=")[0].strip()
  return f"{type(e).__name__}: {lines[0] if lines else text}"


def device_mesh(config: Any, devices: Sequence[Any]) -> Any:
  """MaxText's mesh of `devices` for `config` (its own construction)."""
  from jax.sharding import Mesh
  from maxtext.utils import maxtext_utils
  return Mesh(maxtext_utils.create_device_mesh(config, list(devices)), config.mesh_axes)


def check(overrides: Mapping[str, Any], devices: Sequence[Any]) -> str | None:
  """None when MaxText accepts `overrides` for `devices` (config and mesh),
  else its reason."""
  try:
    config = make_config(overrides)
  except ConfigError as e:
    return str(e)
  try:
    device_mesh(config, devices)
  except Exception as e:  # MaxText asserts on a mesh that does not fit the devices
    return f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
  return None
