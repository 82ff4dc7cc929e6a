"""Child process of the local evaluators: `python -m autoscout_jax.local.child`.

Where it sits: `local/runner.py` (parent) starts it with the environment of
`local/xla_flags.py`, writes one JSON request to its stdin and reads JSON
lines from its stdout; here each candidate is measured by `local/probe.py`.
A crash, OOM kill or hang in here costs the parent one candidate, never the
search.

Protocol (one JSON object per line, on the original stdout; everything else
that writes to fd 1, e.g. a C library, is redirected to stderr):
  request  {"fidelity", "family", "workload", "cluster", "candidates": [{"index", "key",
            "values"}], "options": {...}, "faults": {candidate key: kind}}
  events   {"event": "ready", "provenance": {...}}
           {"event": "start", "index": i}
           {"event": "result", "index": i, "metrics": {...}, "wall_s": s}
           {"event": "fatal", "error": "..."}   (this machine cannot serve the cluster)
           {"event": "done"}

`faults` is a test hook (gin macro FAULTS, faults.py): the candidate with
that key acts out a fault kind of local/bare_child.py ('crash', 'hang',
'oom', 'oom_kill', 'garbage') instead of being measured.

The child dies with its parent (bare_child.die_with_parent: prctl
PR_SET_PDEATHSIG on Linux plus a watchdog on the parent's pid), so a killed
search leaves no child behind.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any, Mapping, TextIO

from autoscout_jax.local.bare_child import die_with_parent, inject_fault


def _claim_stdout() -> TextIO:
  """Keep the real stdout for the protocol; send fd 1 (and print) to stderr."""
  proto = os.fdopen(os.dup(1), "w", buffering=1)
  os.dup2(2, 1)
  sys.stdout = sys.stderr
  return proto


def _finite(obj: Any) -> Any:
  # Strict JSON has no NaN/inf (a diverged loss): send null instead.
  if isinstance(obj, float):
    return obj if math.isfinite(obj) else None
  if isinstance(obj, dict):
    return {k: _finite(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_finite(v) for v in obj]
  return obj


def _emit(out: TextIO, **event: Any) -> None:
  out.write(json.dumps(_finite(event), allow_nan=False, default=str) + "\n")
  out.flush()


def _devices(cluster: Any) -> list[Any]:
  import jax  # after the parent's XLA_FLAGS / JAX_PLATFORMS are in place
  want = cluster.platform
  found = jax.devices() if want == "auto" else jax.devices(want)
  if len(found) < cluster.num_devices:
    raise RuntimeError(f"cluster {cluster.name!r} asks for {cluster.num_devices} devices but "
                       f"this machine has {len(found)} {found[0].platform} device(s)")
  return list(found[:cluster.num_devices])


def _provenance(devices: list[Any]) -> dict[str, Any]:
  import jax
  import jaxlib
  import platform as host
  d = devices[0]
  prov = dict(jax_version=jax.__version__, jaxlib_version=jaxlib.__version__,
              python_version=host.python_version(), platform=d.platform,
              device_kind=d.device_kind, device_count=len(devices),
              devices_visible=len(jax.devices(d.platform)))
  try:
    stats = d.memory_stats() or {}
    if "bytes_limit" in stats:
      prov["device_bytes_limit"] = int(stats["bytes_limit"])
  except Exception:  # not every backend reports memory stats
    pass
  return prov


def serve(request: Mapping[str, Any], out: TextIO) -> int:
  from autoscout_jax.measurement import Metrics
  from autoscout_jax.workload import LocalCluster, ModelConfig, Workload
  w = dict(request["workload"])
  # The expert default is a comparison point, not part of the job.
  workload = Workload(**{**w, "model": ModelConfig(**w["model"]), "default": ()})
  cluster = LocalCluster(**request["cluster"])
  try:
    devices = _devices(cluster)
    prov = _provenance(devices)
  except Exception as e:
    _emit(out, event="fatal", error=f"{type(e).__name__}: {e}")
    return 2
  import jax
  if request.get("family") == "serving":  # targets/serving.py: the prefill + decode engine
    from autoscout_jax.local.serve_probe import measure
  else:  # targets/local.py: the train step (flax, optax: part of start-up)
    from autoscout_jax.local.probe import measure
  from autoscout_jax.local.runner import classify
  _emit(out, event="ready", provenance=prov)

  faults = request.get("faults") or {}
  options = request.get("options") or {}
  for item in request["candidates"]:
    _emit(out, event="start", index=item["index"])
    t0 = time.perf_counter()
    if item["key"] in faults:
      error = inject_fault(faults[item["key"]], out)  # only 'oom' returns: an error like XLA's
      metrics = Metrics.failed(classify(error, "crash"), error)
      _emit(out, event="result", index=item["index"], metrics=metrics.to_json(),
            wall_s=time.perf_counter() - t0)
      continue
    metrics = measure(request["fidelity"], workload, cluster, item["values"], devices, options)
    _emit(out, event="result", index=item["index"], metrics=metrics.to_json(),
          wall_s=time.perf_counter() - t0)
    jax.clear_caches()  # executables of this candidate are never reused
  _emit(out, event="done")
  return 0


def main() -> int:
  die_with_parent()  # first: before the slow imports, so a killed search takes us at once
  out = _claim_stdout()
  request = json.loads(sys.stdin.read())
  return serve(request, out)


if __name__ == "__main__":
  sys.exit(main())
