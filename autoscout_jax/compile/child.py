"""Child process of the compile-at-scale evaluator:
`python -m autoscout_jax.compile.child`.

Where it sits: `compile/evaluator.py` starts it through the local
evaluators' runner (`local/runner.py`, same JSON-lines protocol as
`local/child.py`) with the environment of `targets.child_env_vars`; here
the target's compile-only devices are made once and each candidate is
compiled by `compile/probe.py`. A crash or hang costs the parent one
candidate; a target XLA does not know ends the call with one 'fatal' line.
It dies with the search (local/bare_child.die_with_parent).

Request: {"workload", "target", "candidates": [{"index", "key", "values"}],
"options": {"cache_dir", "backend"}}.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Mapping, TextIO

from autoscout_jax.local.bare_child import die_with_parent
from autoscout_jax.local.child import _claim_stdout, _emit


def serve(request: Mapping[str, Any], out: TextIO) -> int:
  from autoscout_jax.compile.targets import CompileTarget, target_devices
  from autoscout_jax.workload import ModelConfig, Workload
  w = dict(request["workload"])
  workload = Workload(**{**w, "model": ModelConfig(**w["model"]), "default": ()})
  target = CompileTarget(**request["target"])
  try:
    devices = target_devices(target)
  except Exception as e:
    _emit(out, event="fatal", error=str(e))
    return 2
  import jax
  import jaxlib
  from autoscout_jax.compile.probe import measure
  _emit(out, event="ready", provenance=dict(
      jax_version=jax.__version__, jaxlib_version=jaxlib.__version__, platform=target.platform,
      device_kind=devices[0].device_kind, device_count=len(devices), topology=target.label))
  options = request.get("options") or {}
  for item in request["candidates"]:
    _emit(out, event="start", index=item["index"])
    t0 = time.perf_counter()
    metrics = measure(workload, target, item["values"], devices, options)
    _emit(out, event="result", index=item["index"], metrics=metrics.to_json(),
          wall_s=time.perf_counter() - t0)
    jax.clear_caches()
  _emit(out, event="done")
  return 0


def main() -> int:
  die_with_parent()  # first: a killed search takes its compiles with it
  out = _claim_stdout()
  return serve(json.loads(sys.stdin.read()), out)


if __name__ == "__main__":
  sys.exit(main())
