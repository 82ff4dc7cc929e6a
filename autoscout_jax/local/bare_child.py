"""Child-side helpers that need nothing but the standard library: dying with
the parent, injected faults, and a bare child that only injects faults.

Where it sits: `local/child.py` (the JAX child of the local evaluators) calls
`die_with_parent` first thing and `inject_fault` for a faulted candidate.
`faults.py` runs this file by path (`python -I -S bare_child.py`, no package
import, ~20 ms to start) for the faulted candidates of evaluators that have
no child of their own (the simulators), speaking the protocol of
local/child.py: the parent (local/runner.py) cannot tell it from a real
child that failed.

Dying with the parent: on Linux `prctl(PR_SET_PDEATHSIG, SIGKILL)` makes the
kernel kill the child the moment its parent dies (even by SIGKILL); a
watchdog thread also polls the parent's pid (where prctl is not available,
and for the instant before prctl took effect) and kills the child's whole
process group when the parent is gone.

Fault kinds: 'crash' aborts (SIGABRT), 'hang' sleeps until the parent's
timeout kills it, 'oom' reports an XLA-like RESOURCE_EXHAUSTED error,
'oom_kill' SIGKILLs itself like the kernel's OOM killer, 'garbage' prints a
line that is not the protocol's and then hangs.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import threading
import time
from typing import Any, Callable, TextIO

FAULT_KINDS = ("crash", "hang", "oom", "oom_kill", "garbage")
PARENT_ENV = "AUTOSCOUT_PARENT_PID"  # the parent's pid, set by local/runner.py
OOM_TEXT = "RESOURCE_EXHAUSTED: Out of memory while trying to allocate (injected fault)"
_PR_SET_PDEATHSIG = 1


def _kill_own_group() -> None:
  try:
    if os.getpgid(0) == os.getpid():  # we lead our group: take our helpers with us
      os.killpg(0, signal.SIGKILL)
  except OSError:
    pass
  os.kill(os.getpid(), signal.SIGKILL)


def die_with_parent(parent_pid: int | None = None, poll_s: float = 0.2) -> None:
  """Arrange for this process to die as soon as its parent does."""
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


def inject_fault(kind: str, out: TextIO) -> str | None:
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


def emit(out: TextIO, **event: Any) -> None:
  out.write(json.dumps(event, allow_nan=False, default=str) + "\n")
  out.flush()


def serve_faults(request: dict[str, Any], out: TextIO,
                 emit_fn: Callable[..., None] = emit) -> int:
  """The bare child: every candidate of the request carries a fault."""
  faults = request.get("faults") or {}
  emit_fn(out, event="ready", provenance={"child": "bare"})
  for item in request["candidates"]:
    emit_fn(out, event="start", index=item["index"])
    t0 = time.perf_counter()
    kind = faults.get(item["key"])
    error = inject_fault(kind, out) if kind else "bare child: no fault for this candidate"
    metrics = {"feasible": False, "failure_kind": "oom" if kind == "oom" else "crash", "error": error}
    emit_fn(out, event="result", index=item["index"], metrics=metrics, wall_s=time.perf_counter() - t0)
  emit_fn(out, event="done")
  return 0


def main() -> int:
  die_with_parent()
  out = os.fdopen(os.dup(1), "w", buffering=1)
  os.dup2(2, 1)
  return serve_faults(json.loads(sys.stdin.read()), out)


if __name__ == "__main__":
  sys.exit(main())
