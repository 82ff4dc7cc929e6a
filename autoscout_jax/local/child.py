"""Child process of the local evaluators: `python -m autoscout_jax.local.child`.

Where it sits: `local/runner.py` (parent) starts it with the environment of
`local/xla_flags.py`, writes one JSON request to its stdin and reads JSON
lines from its stdout; here each candidate is measured by `local/probe.py`.
A crash, OOM kill or hang in here costs the parent one candidate, never the
search.

Protocol: autoscout_jax/child_protocol.py (JSON lines on the original
stdout; the child dies with its parent; injected faults). This child's
request carries {"fidelity", "family", "workload", "cluster", "candidates",
"options", "faults"}; a 'fatal' event says this machine cannot serve the
cluster.
"""

from __future__ import annotations

import sys
from typing import Any, Mapping, TextIO

from autoscout_jax.child_protocol import child_main, emit, serve_candidates


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
  from autoscout_jax.workload import LocalCluster, ModelConfig, Workload
  w = dict(request["workload"])
  # The expert default is a comparison point, not part of the job.
  workload = Workload(**{**w, "model": ModelConfig(**w["model"]), "default": ()})
  cluster = LocalCluster(**request["cluster"])
  try:
    devices = _devices(cluster)
    prov = _provenance(devices)
  except Exception as e:
    emit(out, event="fatal", error=f"{type(e).__name__}: {e}")
    return 2
  import jax
  if request.get("family") == "serving":  # targets/serving.py: the prefill + decode engine
    from autoscout_jax.local.serve_probe import measure
  else:  # targets/local.py: the train step (flax, optax: part of start-up)
    from autoscout_jax.local.probe import measure
  emit(out, event="ready", provenance=prov)
  fidelity, options = request["fidelity"], request.get("options") or {}
  return serve_candidates(
      request, out, lambda item: measure(fidelity, workload, cluster, item["values"], devices, options).to_json(),
      after_each=jax.clear_caches)  # executables of a candidate are never reused


if __name__ == "__main__":
  sys.exit(child_main(serve))
