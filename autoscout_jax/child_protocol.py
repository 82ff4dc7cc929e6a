"""The child side of the JSON-lines protocol that local/runner.py (the
parent) speaks with every measuring child: standard library only.

Where it sits: a leaf module every child imports -- local/child.py (F2/F3
of the local family), compile/child.py (F2 at cluster scale),
local/microbench.py, and the maxtext_child/ children, which run in
MaxText's Python 3.12 and import nothing else of autoscout_jax (the
package's __init__ is lazy, so importing this module loads nothing but
the standard library). `faults.py` runs this very file by path (`python -I
-S child_protocol.py`, no package import, ~20 ms to start) as the bare
child that acts out injected faults for evaluators without a child of
their own (the simulators): the parent cannot tell it from a real child
that failed.

Protocol: the parent writes one JSON request to the child's stdin; the
child writes one JSON object per line on its original stdout (everything
else that writes to fd 1, e.g. a C library or absl, goes to stderr):
  request  {"candidates": [{"index", "key", "values"}], "options": {...},
            "faults": {candidate key: kind}, ...the child's own fields}
  events   {"event": "ready", "provenance": {...}}
           {"event": "start", "index": i}
           {"event": "result", "index": i, "metrics": {...}, "wall_s": s}
           {"event": "fatal", "error": "..."}   (this machine cannot serve it)
           {"event": "done"}
`metrics` is autoscout_jax.measurement.Metrics' JSON (`failed` builds a
failed one here, where that class cannot be imported; `failed_at` from an
exception at a stage). `classify` and OOM_MARKERS are the one reading of
"ran out of device memory" in an error text, for the children and the
parent alike.

Dying with the parent: on Linux `prctl(PR_SET_PDEATHSIG, SIGKILL)` makes the
kernel kill the child the moment its parent dies (even by SIGKILL); a
watchdog thread also polls the parent's pid (where prctl is not available,
and for the instant before prctl took effect) and kills the child's whole
process group when the parent is gone.

Fault kinds (a test hook: gin macro FAULTS, faults.py): 'crash' aborts
(SIGABRT), 'hang' sleeps until the parent's timeout kills it, 'oom' reports
an XLA-like RESOURCE_EXHAUSTED error, 'oom_kill' SIGKILLs itself like the
kernel's OOM killer, 'garbage' prints a line that is not the protocol's and
then hangs.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import signal
import sys
import threading
import time
from typing import Any, Callable, Mapping, TextIO

FAULT_KINDS = ("crash", "hang", "oom", "oom_kill", "garbage")
PARENT_ENV = "AUTOSCOUT_PARENT_PID"  # the parent's pid, set by local/runner.py
OOM_TEXT = "RESOURCE_EXHAUSTED: Out of memory while trying to allocate (injected fault)"
# What an error text says when a device ran out of memory (XLA's RESOURCE_EXHAUSTED, allocators, a
# TPU compile over its HBM): the children and the parent (local/runner.py) classify by these alone.
OOM_MARKERS = ("resource_exhausted", "out of memory", "oom when allocating", "failed to allocate",
               "allocator ran out", "exceeds available hbm")
_PR_SET_PDEATHSIG = 1


def _kill_own_group() -> None:
  try:
    if os.getpgid(0) == os.getpid():  # we lead our group: take our helpers with us
      os.killpg(0, signal.SIGKILL)
  except OSError:
    pass
  os.kill(os.getpid(), signal.SIGKILL)


def die_with_parent(parent_pid: int | None = None, poll_s: float = 0.2) -> None:
  """Arrange for this process to die as soon as its parent does. Call it
  first thing, before slow imports, so a killed search takes the child at once."""
  if parent_pid is None:
    parent_pid = int(os.environ.get(PARENT_ENV, "0") or 0) or os.getppid()
  if sys.platform.startswith("linux"):
    try:
      libc = ctypes.CDLL(None, use_errno=True)
      libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
      pass  # the watchdog below still covers it
  if os.getppid() != parent_pid:  # the parent died before prctl took effect
    _kill_own_group()

  def watch() -> None:
    while True:
      time.sleep(poll_s)
      if os.getppid() != parent_pid:
        _kill_own_group()

  threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def claim_stdout() -> TextIO:
  """Keep the real stdout for the protocol; fd 1 and print go to stderr."""
  proto = os.fdopen(os.dup(1), "w", buffering=1)
  os.dup2(2, 1)
  sys.stdout = sys.stderr
  return proto


def _finite(obj: Any) -> Any:
  # Strict JSON has no NaN/inf (a diverged loss): send null instead.
  if isinstance(obj, float):
    return obj if math.isfinite(obj) else None
  if isinstance(obj, dict):
    return {str(k): _finite(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_finite(v) for v in obj]
  return obj


def emit(out: TextIO, **event: Any) -> None:
  """One protocol line (strict JSON: NaN/inf become null)."""
  out.write(json.dumps(_finite(event), allow_nan=False, default=str) + "\n")
  out.flush()


def failed(kind: str, error: str, **extra: Any) -> dict[str, Any]:
  """A failed candidate's metrics, in autoscout_jax.measurement.Metrics' JSON."""
  return {"feasible": False, "failure_kind": kind, "error": error[-2000:], **extra}


def classify(text: str, default: str) -> str:
  """'oom' when an error text reads like running out of device memory, else `default`."""
  low = text.lower()
  return "oom" if any(m in low for m in OOM_MARKERS) else default


def failed_at(stage: str, kind: str, exc: BaseException, **extra: Any) -> dict[str, Any]:
  """A failed candidate's metrics for the exception being handled at `stage`:
  `kind`, or 'oom' when the exception reads like running out of device
  memory; the error is the stage, the exception and the end of its
  traceback; the metrics' extra keeps the stage."""
  import traceback  # only on a failure: the bare child starts without it
  text = f"{stage}: {type(exc).__name__}: {exc}"
  return failed(classify(text, kind), text + "\n" + traceback.format_exc(limit=6), extra={"stage": stage, **extra})


def inject_fault(kind: str, out: TextIO) -> str:
  """Act out `kind`. Returns the error text of an 'oom' (the caller reports
  it as the candidate's result); every other kind never returns."""
  if kind == "crash":
    os.abort()
  if kind == "hang":
    while True:
      time.sleep(3600)
  if kind == "oom":
    return OOM_TEXT
  if kind == "oom_kill":
    os.kill(os.getpid(), signal.SIGKILL)
  if kind == "garbage":
    out.write("\x00garbage {not json\n")
    out.flush()
    while True:
      time.sleep(3600)
  raise ValueError(f"unknown fault {kind!r}; known: {FAULT_KINDS}")


def serve_candidates(request: Mapping[str, Any], out: TextIO,
                     measure: Callable[[Mapping[str, Any]], Mapping[str, Any]],
                     after_each: Callable[[], None] | None = None) -> int:
  """The per-candidate part of a child (after its 'ready'): for each request
  item, 'start', then the metrics JSON of `measure(item)` (or of the item's
  injected fault) timed as `wall_s` in 'result'; `after_each` runs after
  every candidate (e.g. jax.clear_caches); 'done' at the end."""
  faults = request.get("faults") or {}
  for item in request["candidates"]:
    emit(out, event="start", index=item["index"])
    t0 = time.perf_counter()
    kind = faults.get(item["key"])
    metrics = failed("oom", inject_fault(kind, out)) if kind else measure(item)
    emit(out, event="result", index=item["index"], metrics=metrics, wall_s=time.perf_counter() - t0)
    if after_each is not None:
      after_each()
  emit(out, event="done")
  return 0


def serve_faults(request: Mapping[str, Any], out: TextIO) -> int:
  """The bare child: every candidate of the request carries a fault."""
  emit(out, event="ready", provenance={"child": "bare"})
  return serve_candidates(request, out, lambda item: failed("crash", "bare child: no fault for this candidate"))


def child_main(serve: Callable[[Mapping[str, Any], TextIO], int]) -> int:
  """A child's main: die with the parent first (before any slow import, so a
  killed search takes the child at once), claim stdout, read the one request
  from stdin and serve it; returns the exit status."""
  die_with_parent()
  out = claim_stdout()
  return serve(json.loads(sys.stdin.read()), out)


if __name__ == "__main__":
  sys.exit(child_main(serve_faults))
