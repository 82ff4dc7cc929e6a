"""The child side of the JSON-lines protocol autoscout_jax/local/runner.py
speaks (events: ready, start, result, done, fatal), standard library only.

Where it sits: every `autoscout_jax.maxtext_child` child calls `die_with_parent()`
first, then `claim_stdout()` (fd 1 and print go to stderr so MaxText's and
absl's chatter never corrupts the stream), then `emit(...)` per event.
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
from typing import Any, TextIO

PARENT_ENV = "AUTOSCOUT_PARENT_PID"  # set by autoscout_jax/local/runner.py
_PR_SET_PDEATHSIG = 1


def _kill_own_group() -> None:
  try:
    if os.getpgid(0) == os.getpid():
      os.killpg(0, signal.SIGKILL)
  except OSError:
    pass
  os.kill(os.getpid(), signal.SIGKILL)


def die_with_parent(poll_s: float = 0.2) -> None:
  """Die as soon as the parent does (prctl on Linux, plus a watchdog)."""
  parent = int(os.environ.get(PARENT_ENV, "0") or 0) or os.getppid()
  if sys.platform.startswith("linux"):
    try:
      ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
      pass
  if os.getppid() != parent:
    _kill_own_group()

  def watch() -> None:
    while True:
      time.sleep(poll_s)
      if os.getppid() != parent:
        _kill_own_group()

  threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def claim_stdout() -> TextIO:
  """Keep the real stdout for the protocol; fd 1 and print go to stderr."""
  proto = os.fdopen(os.dup(1), "w", buffering=1)
  os.dup2(2, 1)
  sys.stdout = sys.stderr
  return proto


def _finite(obj: Any) -> Any:
  if isinstance(obj, float):
    return obj if math.isfinite(obj) else None
  if isinstance(obj, dict):
    return {str(k): _finite(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_finite(v) for v in obj]
  return obj


def emit(out: TextIO, **event: Any) -> None:
  out.write(json.dumps(_finite(event), allow_nan=False, default=str) + "\n")
  out.flush()


def failed(kind: str, error: str, **extra: Any) -> dict[str, Any]:
  """A failed candidate's metrics, in autoscout_jax.measurement.Metrics' JSON."""
  return {"feasible": False, "failure_kind": kind, "error": error[-2000:], **extra}
