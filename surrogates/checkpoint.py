"""Save and load a trained surrogate without pickle.

Where it sits in the data flow::

    fit ──► SurrogateState ──► save(state, dir) ──► dir/config.json   (ModelConfig)
                                                    dir/state.msgpack (flax.serialization)
    load(dir) ──► SurrogateState ──► predict / fit(init_state=...)

The JSON sidecar is read first: it rebuilds the static `ModelConfig`, from
which a template state with the right shapes is made; msgpack bytes are then
restored into that template, so a corrupt or mismatched file fails loudly.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
from flax import serialization

from surrogates.config import ModelConfig
from surrogates.model import SurrogateState, untrained_state

CONFIG_FILE = "config.json"
STATE_FILE = "state.msgpack"
_FORMAT = "autoscout_surrogate"
_VERSION = 1


def _write_atomic(path: str, payload: bytes) -> None:
  # Write-then-rename so a killed process never leaves a half-written file.
  tmp = path + ".tmp"
  with open(tmp, "wb") as f:
    f.write(payload)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def save(state: SurrogateState, directory: str) -> None:
  """Writes `state` to `directory` (created if needed)."""
  os.makedirs(directory, exist_ok=True)
  meta = {"format": _FORMAT, "version": _VERSION, "model_config": state.config.to_json_dict()}
  _write_atomic(os.path.join(directory, STATE_FILE),
                serialization.to_bytes(jax.device_get(state)))
  _write_atomic(os.path.join(directory, CONFIG_FILE),
                json.dumps(meta, indent=2, sort_keys=True).encode())


def load(directory: str) -> SurrogateState:
  """Reads a state written by `save`.

  Raises:
    FileNotFoundError: a file is missing.
    ValueError: the sidecar is not a surrogate config or of another version,
      or the msgpack does not match the config's shapes.
  """
  with open(os.path.join(directory, CONFIG_FILE), "rb") as f:
    meta = json.loads(f.read())
  if meta.get("format") != _FORMAT or meta.get("version") != _VERSION:
    raise ValueError(f"{directory}/{CONFIG_FILE} is not a version-{_VERSION} surrogate "
                     f"checkpoint (format={meta.get('format')!r}, version={meta.get('version')!r})")
  config = ModelConfig.from_json_dict(meta["model_config"])
  # The template only supplies structure and shapes; its values are replaced.
  template = untrained_state(config, jax.random.PRNGKey(0))
  with open(os.path.join(directory, STATE_FILE), "rb") as f:
    payload = f.read()
  try:
    state = serialization.from_bytes(template, payload)
  except (ValueError, KeyError, TypeError) as e:
    raise ValueError(f"{directory}/{STATE_FILE} does not match its config "
                     f"{config}: {e}") from e
  shapes_ok = jax.tree.all(jax.tree.map(lambda a, b: jnp.shape(a) == jnp.shape(b),
                                        template, state))
  if not shapes_ok:
    raise ValueError(f"{directory}/{STATE_FILE} has array shapes that do not match its "
                     f"config {config}")
  return jax.tree.map(jnp.asarray, state)
