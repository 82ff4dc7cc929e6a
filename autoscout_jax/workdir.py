"""The workdir: its checks, its lock and its identity.

Where it sits: `experiment.run_experiment` checks every input without
writing anything, then calls `check_reusable` (reads only) and
`open_workdir`, which creates the directory, takes an exclusive lock and
writes `identity.json` on a first run. Only then do the store, the writers
and `config.gin` touch the workdir, so a refused run leaves it byte for byte
as it was.

- Identity: `fingerprint(...)` describes everything that determines the
  measurements a workdir holds (workload, cluster, space, fidelities, each
  evaluator's measurement settings, injected faults). A later run whose
  fingerprint differs is refused with one line naming the first difference
  and both values. Budget, designer, seed and round counts are not part of
  it: a run may continue or extend a workdir with another budget or designer
  and reuse its measurements.
- Lock: `run.lock` held with `flock(LOCK_EX)` for the whole run; it names its
  holder (pid, host, start time). A second run on the workdir is refused with
  one line naming the holder. The kernel drops the lock when the holder dies,
  so a killed run never leaves a stale lock.
- `fresh_workdir(path)`: what `--fresh` uses -- `path` itself when it does not
  exist or is an empty directory, else the first of `path-1`, `path-2`, ...
  that does not exist. The named workdir is never touched.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import re
import socket
import time
from typing import Any, Iterator, Mapping

IDENTITY = "identity.json"
LOCK = "run.lock"
STORE = "measurements.jsonl"  # store.FILENAME (not imported: the store imports nothing of this)
FORMAT = 1  # bump when the fingerprint's layout changes


class WorkdirError(ValueError):
  """The workdir cannot be used for this run; the message says why."""


def _stable_str(obj: Any) -> str:
  # A function or object repr carries its address, which differs per process.
  return re.sub(r" at 0x[0-9a-fA-F]+", "", str(obj))


def _jsonable(obj: Any) -> Any:
  return json.loads(json.dumps(obj, sort_keys=True, default=_stable_str))


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
  if isinstance(obj, Mapping) and obj:
    out: dict[str, Any] = {}
    for k, v in obj.items():
      out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out
  return {prefix: obj}


def _asdict(obj: Any) -> Any:
  if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
    return dataclasses.asdict(obj)
  return _stable_str(repr(obj))


def _knob(knob: Any) -> Any:
  """A knob's domain, default and conditions (its doc is prose, not identity)."""
  d = _asdict(knob)
  if isinstance(d, dict):
    d.pop("doc", None)
    d["kind"] = type(knob).__name__
  return d


def fingerprint(workload: Any, cluster: Any, space: Any, evaluators: Mapping[str, Any],
                faults: Any = ()) -> dict[str, Any]:
  """A JSON value of what determines a workdir's measurements."""
  wl = _asdict(workload)
  if isinstance(wl, dict):
    wl.pop("default", None)  # a comparison point, not part of the job
  evals = {}
  for fid, ev in evaluators.items():
    settings = getattr(ev, "settings", None)
    evals[fid] = {"evaluator": type(ev).__name__, **(settings() if settings else {})}
  return _jsonable({
      "format": FORMAT,
      "workload": wl,
      "cluster": _asdict(cluster),
      "space": {"name": getattr(space, "name", ""),
                "knobs": {k.name: _knob(k) for k in getattr(space, "knobs", ())},
                "constraints": sorted(getattr(c, "name", repr(c))
                                      for c in getattr(space, "constraints", ()))},
      "fidelities": list(evaluators),
      "evaluators": evals,
      "faults": [list(f) if isinstance(f, (tuple, list)) else f for f in faults],
  })


def differences(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
  """(dotted path, value in this run, value in the workdir), in a stable order."""
  a, b = _flatten(_jsonable(current)), _flatten(_jsonable(stored))
  return [(k, a.get(k, "<absent>"), b.get(k, "<absent>"))
          for k in sorted(set(a) | set(b)) if a.get(k, "<absent>") != b.get(k, "<absent>")]


def _short(v: Any, n: int = 100) -> str:
  s = repr(v)
  return s if len(s) <= n else s[:n - 3] + "..."


def _problem_with_path(path: str) -> str | None:
  """Why `path` cannot be (or become) a writable directory, without writing."""
  if os.path.exists(path):
    if not os.path.isdir(path):
      return f"workdir {path!r} is a file, not a directory"
    probe = path
  else:
    probe = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(probe):
      probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
      return f"cannot create workdir {path!r}: {probe!r} is a file, not a directory"
  try:
    read_only = bool(os.statvfs(probe).f_flag & os.ST_RDONLY)
  except OSError:
    read_only = False
  what = "workdir" if probe == path else f"cannot create workdir {path!r}:"
  if read_only:
    return f"{what} {probe!r} is on a read-only file system"
  if not os.access(probe, os.W_OK | os.X_OK):
    return f"{what} {probe!r} is not writable"
  return None


def read_identity(path: str) -> dict[str, Any] | None:
  try:
    with open(os.path.join(path, IDENTITY), encoding="utf-8") as f:
      return json.load(f)
  except FileNotFoundError:
    return None
  except (OSError, ValueError) as e:
    raise WorkdirError(f"workdir {path!r}: cannot read {IDENTITY} ({e})") from e


def _has_measurements(path: str) -> bool:
  try:
    return os.path.getsize(os.path.join(path, STORE)) > 0
  except OSError:
    return False


def check_reusable(path: str, fp: Mapping[str, Any]) -> None:
  """Raises WorkdirError if this run may not use `path`. Writes nothing."""
  problem = _problem_with_path(path)
  if problem:
    raise WorkdirError(problem)
  if not os.path.isdir(path):
    return
  stored = read_identity(path)
  if stored is None:
    if _has_measurements(path):
      raise WorkdirError(f"workdir {path!r} holds measurements but no {IDENTITY} (written by an older "
                         f"version), so its configuration cannot be checked; nothing was changed; "
                         f"use --fresh for a new workdir")
    return
  diff = differences(stored, fp)
  if diff:
    key, here, there = diff[0]
    more = f" (and {len(diff) - 1} more difference(s))" if len(diff) > 1 else ""
    raise WorkdirError(f"workdir {path!r} holds measurements of another configuration: {key} is "
                       f"{_short(here)} in this run but {_short(there)} in the workdir{more}; "
                       f"nothing was changed; use --fresh for a new workdir")


def fresh_workdir(path: str) -> str:
  """`path` if unused, else the first free `path-N` (what --fresh picks)."""
  if not os.path.exists(path) or (os.path.isdir(path) and not os.listdir(path)):
    return path
  base = path.rstrip(os.sep) or path
  n = 1
  while os.path.lexists(f"{base}-{n}"):
    n += 1
  return f"{base}-{n}"


def _makedirs(path: str) -> list[str]:
  """Like os.makedirs; returns the directories it created, outermost first."""
  missing = []
  p = os.path.abspath(path)
  while not os.path.exists(p):
    missing.append(p)
    p = os.path.dirname(p)
  for d in reversed(missing):
    os.mkdir(d)
  return list(reversed(missing))


def _holder(fd: int) -> str:
  try:
    text = os.pread(fd, 4096, 0).decode(errors="replace").strip()
  except OSError:
    text = ""
  return text or "another process"


@contextlib.contextmanager
def open_workdir(path: str, fp: Mapping[str, Any]) -> Iterator[str]:
  """Create (if needed) and lock `path` for this run; write its identity on
  a first run. A failure undoes what this call created and raises
  WorkdirError. The lock is held until the block ends (or the process dies)."""
  created: list[str] = []
  lock_path = os.path.join(path, LOCK)
  lock_existed = os.path.exists(lock_path)
  fd = -1
  try:
    created = _makedirs(path)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _holder(fd)
      os.close(fd)
      fd = -1
      raise WorkdirError(f"workdir {path!r} is in use by {holder}; nothing was changed; wait for "
                         f"it, or use --fresh for a new workdir") from None
    check_reusable(path, fp)  # again, under the lock
    if read_identity(path) is None:
      tmp = os.path.join(path, IDENTITY + ".tmp")
      with open(tmp, "w", encoding="utf-8") as f:
        json.dump(fp, f, indent=1, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
      os.replace(tmp, os.path.join(path, IDENTITY))
    os.ftruncate(fd, 0)
    os.pwrite(fd, (f"pid {os.getpid()} on {socket.gethostname()} since "
                   f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n").encode(), 0)
  except BaseException as e:
    if fd >= 0:
      os.close(fd)
    if not lock_existed and created:
      with contextlib.suppress(OSError):
        os.unlink(lock_path)
    for d in reversed(created):
      with contextlib.suppress(OSError):
        os.rmdir(d)
    if isinstance(e, OSError):
      reason = e.strerror or str(e)
      if e.errno == errno.EROFS:
        reason = "read-only file system"
      raise WorkdirError(f"cannot write workdir {path!r}: {reason}") from e
    raise
  try:
    yield path
  finally:
    os.close(fd)  # releases the lock; the file stays, naming the last holder
