"""The F3 child of the maxtext family: `python -m autoscout_jax.maxtext_child.profile_child`.

Where it sits: started with a Python that has MaxText (3.12) by
`local/runner.run_candidates` on the 3.11 side (evaluator:
autoscout_jax/maxtext_profile.py; table: autoscout_jax/tools/maxtext_table.py),
or by `autoscout_jax.maxtext_child/multiproc.py` once per process of a multi-process
cluster. It reads one JSON request from stdin and measures its candidates
one after another with `steps.measure` (a long-lived worker: the parent
restarts a fresh one after a crash, for the candidates still to do).

Protocol: autoscout_jax/child_protocol.py (JSON lines on the real stdout;
everything else written to fd 1 goes to stderr; injected faults):
  request  {"candidates": [{"index", "key", "values": {MaxText key: value}}],
            "options": {"warmup_steps", "timed_steps", "repeats", "seed"},
            "faults": {candidate key: kind},
            "distributed": {"coordinator", "num_processes", "process_id"}}  (optional)
  events   ready (provenance: versions, devices) / start / result / done / fatal
With "distributed", `jax.distributed.initialize` joins the processes first
(CPU collectives over gloo); every process measures every candidate (SPMD)
and reports its own results.
"""

from __future__ import annotations

import sys
from typing import Any, Mapping, TextIO

from autoscout_jax.child_protocol import child_main, emit, serve_candidates


def _join(dist: Mapping[str, Any]) -> None:
  import jax
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=dist["coordinator"], num_processes=int(dist["num_processes"]),
                             process_id=int(dist["process_id"]),
                             initialization_timeout=int(dist.get("timeout_s", 120)))


def serve(request: Mapping[str, Any], out: TextIO) -> int:
  try:
    if request.get("distributed"):
      _join(request["distributed"])
    from autoscout_jax.maxtext_child import steps
    prov = {**steps.versions(), **steps.device_info()}
  except Exception as e:  # no MaxText / no devices: the machine cannot serve this
    emit(out, event="fatal", error=f"{type(e).__name__}: {e}")
    return 2
  emit(out, event="ready", provenance=prov)
  import jax
  options = request.get("options") or {}
  return serve_candidates(request, out, lambda item: steps.measure(item["values"], options),
                          after_each=jax.clear_caches)


if __name__ == "__main__":
  sys.exit(child_main(serve))
