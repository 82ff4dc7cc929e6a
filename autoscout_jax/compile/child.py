"""Child process of the compile-at-scale evaluator:
`python -m autoscout_jax.compile.child`.

Where it sits: `compile/evaluator.py` starts it through the local
evaluators' runner (`local/runner.py`, the JSON-lines protocol of
`child_protocol.py`) with the environment of `targets.child_env_vars`; here
the target's compile-only devices are made once and each candidate is
compiled by `compile/probe.py`. A crash or hang costs the parent one
candidate; a target XLA does not know ends the call with one 'fatal' line.
It dies with the search (child_protocol.die_with_parent).

Request: {"workload", "target", "candidates": [{"index", "key", "values"}],
"options": {"cache_dir", "backend"}}.
"""

from __future__ import annotations

import sys
from typing import Any, Mapping, TextIO

from autoscout_jax.child_protocol import child_main, emit, serve_candidates


def serve(request: Mapping[str, Any], out: TextIO) -> int:
  from autoscout_jax.compile.targets import CompileTarget, target_devices
  from autoscout_jax.workload import ModelConfig, Workload
  w = dict(request["workload"])
  workload = Workload(**{**w, "model": ModelConfig(**w["model"]), "default": ()})
  target = CompileTarget(**request["target"])
  try:
    devices = target_devices(target)
  except Exception as e:
    emit(out, event="fatal", error=str(e))
    return 2
  import jax
  import jaxlib
  from autoscout_jax.compile.probe import measure
  emit(out, event="ready", provenance=dict(
      jax_version=jax.__version__, jaxlib_version=jaxlib.__version__, platform=target.platform,
      device_kind=devices[0].device_kind, device_count=len(devices), topology=target.label))
  options = request.get("options") or {}
  return serve_candidates(
      request, out, lambda item: measure(workload, target, item["values"], devices, options).to_json(),
      after_each=jax.clear_caches)


if __name__ == "__main__":
  sys.exit(child_main(serve))
