"""Parent side of the local evaluators' child processes (jax-free).

Where it sits: `local/evaluators.py` hands `run_candidates` one group of
candidates that share a child environment; this module starts
`python -m autoscout_jax.local.child`, feeds it the request, reads its
event stream (the protocol of child_protocol.py) with per-candidate timeouts and turns every way a child can die
into a per-candidate outcome, restarting a fresh child for the candidates
still to do. Nothing here raises for a failing candidate; only a machine
that cannot serve the cluster at all (`LocalSetupError`) ends the call.

Children never outlive the search: each runs in its own process group and
dies with its parent (child_protocol.py: PR_SET_PDEATHSIG plus a watchdog
on the parent's pid, for a parent killed with SIGKILL); every live child is
registered here, and `kill_children` (called at exit, and by run.py on
SIGTERM/SIGINT) kills each one's whole process group. A line on the protocol
stream that is not an event ('garbage') fails the candidate as a crash.
"""

from __future__ import annotations

import atexit
import collections
import copy
import dataclasses
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Mapping, Sequence

from autoscout_jax.child_protocol import FAULT_KINDS, PARENT_ENV, classify
from autoscout_jax.faults import faults_by_key
from autoscout_jax.measurement import CRASH, OOM, TIMEOUT, Measurement, Metrics

__all__ = ["FAULT_KINDS", "ChildFaults", "LocalSetupError", "Outcome", "classify", "classify_exit",
           "kill_children", "run_candidates"]

_LIVE: set["_Child"] = set()  # children started and not yet reaped
_LIVE_LOCK = threading.RLock()  # re-entrant: a signal handler may run while the main thread holds it


def kill_children() -> int:
  """SIGKILL the process group of every live child; returns how many."""
  with _LIVE_LOCK:
    live = list(_LIVE)
  for child in live:
    child.signal_group()
  return len(live)


atexit.register(kill_children)

_STDERR_KEEP = 8000  # characters of child stderr kept for error messages


class LocalSetupError(ValueError):
  """This machine cannot evaluate the cluster at all (e.g. too few devices)."""


@dataclasses.dataclass(frozen=True)
class Outcome:
  """What became of one candidate: its metrics, the seconds it held the
  child, and the child's provenance (empty if the child never got ready)."""

  metrics: Metrics
  wall_s: float
  provenance: Mapping[str, Any]

  def measurement(self, cand: Any, fidelity: str, workload: Any, cluster: Any, cost_s: float,
                  provenance: Mapping[str, Any], defaults: Mapping[str, Any] | None = None) -> Measurement:
    """The candidate's Measurement: these metrics and wall seconds, charged
    `cost_s`; its provenance is the child's over `defaults`, under the
    evaluator's own `provenance`."""
    return Measurement(candidate=cand, fidelity=fidelity, metrics=self.metrics, cost_s=cost_s,
                       workload_key=workload.key, cluster_key=cluster.key, wall_s=self.wall_s,
                       wallclock=time.time(), provenance={**(defaults or {}), **self.provenance, **provenance})


class ChildFaults:
  """The fault hooks (a test tool, faults.py) of an evaluator whose own
  child acts faults out: `faults` {candidate key: kind} from its arguments,
  rules (faults.Fault, matched on knob values) added by `with_faults`; both
  are settings (they change what is measured) and go to the child as the
  request's `faults`."""

  fidelity: str = ""

  def _init_faults(self, faults: Mapping[str, str] | None) -> None:
    bad = {k: v for k, v in dict(faults or {}).items() if v not in FAULT_KINDS}
    if bad:
      raise ValueError(f"unknown fault kind(s) {bad}; known: {FAULT_KINDS}")
    self.faults = dict(faults or {})
    self.fault_rules: tuple[Any, ...] = ()

  def with_faults(self, rules: Sequence[Any]) -> Any:
    """A copy that also acts out `rules` (faults.Fault) in its child."""
    new = copy.copy(self)
    new.fault_rules = tuple(self.fault_rules) + tuple(rules)
    return new

  def fault_settings(self) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if self.faults:
      out["fault_keys"] = dict(sorted(self.faults.items()))
    if self.fault_rules:
      out["faults"] = [r.to_json() for r in self.fault_rules]
    return out

  def faults_for(self, candidates: Sequence[Any]) -> dict[str, str]:
    """{candidate key: fault kind} of a batch: the request's `faults`."""
    return faults_by_key(candidates, self.faults, self.fault_rules, self.fidelity)


def classify_exit(returncode: int, stderr: str) -> tuple[str, str]:
  """(failure_kind, message) for a child that died while measuring."""
  oom_text = classify(stderr, CRASH) == OOM
  if returncode < 0:
    sig = -returncode
    try:
      name = signal.Signals(sig).name
    except ValueError:
      name = f"signal {sig}"
    if sig == signal.SIGKILL:
      # Nobody here sent it (timeouts are recorded before we kill), so it
      # is almost always the kernel's OOM killer.
      return OOM, f"child was killed by SIGKILL (likely the OOM killer)\n{stderr}"
    return (OOM if oom_text else CRASH), f"child died with {name}\n{stderr}"
  return (OOM if oom_text else CRASH), f"child exited with status {returncode}\n{stderr}"


class _Child:
  """One child process and the threads that drain its pipes."""

  def __init__(self, env: Mapping[str, str], request: Mapping[str, Any], argv: Sequence[str]):
    with _LIVE_LOCK:  # registered before it exists: a signal between the two still finds it
      self.proc = subprocess.Popen(
          list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
          env={**env, PARENT_ENV: str(os.getpid())},
          start_new_session=True)  # its own process group: a kill takes its helpers too
      _LIVE.add(self)
    self.events: queue.Queue = queue.Queue()
    self._err: collections.deque[str] = collections.deque()
    self._err_len = 0
    self._lock = threading.Lock()
    self._threads = [threading.Thread(target=self._read_out, daemon=True),
                     threading.Thread(target=self._read_err, daemon=True)]
    for t in self._threads:
      t.start()
    try:
      self.proc.stdin.write(json.dumps(request).encode())
      self.proc.stdin.close()
    except (BrokenPipeError, OSError):  # died at once: the stream's EOF says so
      pass

  def _read_out(self) -> None:
    for raw in self.proc.stdout:
      try:
        ev = json.loads(raw)
      except ValueError:
        ev = None
      if isinstance(ev, dict) and "event" in ev:
        self.events.put(ev)
      else:  # the child owns this stream (fd 1 goes to stderr): anything else is broken
        self.events.put({"event": "garbage", "text": raw[:200].decode(errors="replace")})
    self.events.put({"event": "exit"})

  def _read_err(self) -> None:
    for raw in self.proc.stderr:
      text = raw.decode(errors="replace")
      with self._lock:
        self._err.append(text)
        self._err_len += len(text)
        while self._err_len > _STDERR_KEEP and len(self._err) > 1:
          self._err_len -= len(self._err.popleft())

  def stderr_tail(self) -> str:
    with self._lock:
      return "".join(self._err)[-_STDERR_KEEP:]

  def clear_stderr(self) -> None:
    with self._lock:
      self._err.clear()
      self._err_len = 0

  def next_event(self, timeout: float) -> dict[str, Any] | None:
    try:
      return self.events.get(timeout=max(timeout, 0.0))
    except queue.Empty:
      return None

  def signal_group(self) -> None:
    """SIGKILL the child's process group (the child and anything it started)."""
    try:
      os.killpg(self.proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
      pass

  def kill(self) -> int:
    if self.proc.poll() is None:
      self.signal_group()
    return self.close()

  def wait(self) -> int:
    try:
      self.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
      return self.kill()
    return self.close()

  def close(self) -> int:
    """Reap the process and its pipe readers (they end at EOF)."""
    rc = self.proc.wait()
    with _LIVE_LOCK:
      _LIVE.discard(self)
    for t in self._threads:
      t.join(timeout=5)
    for f in (self.proc.stdout, self.proc.stderr):
      if not f.closed and not any(t.is_alive() for t in self._threads):
        f.close()
    return rc


def _session(child: _Child, todo: Sequence[Mapping[str, Any]], timeout_s: float,
             startup_timeout_s: float, out: dict[int, Outcome]) -> None:
  """Drive one child until it finishes, dies or hangs; record outcomes."""
  prov: dict[str, Any] = {}
  current, t_start = None, time.monotonic()
  deadline = time.monotonic() + startup_timeout_s
  while True:
    ev = child.next_event(deadline - time.monotonic())
    now = time.monotonic()
    if ev is None:  # timed out
      child.kill()
      if current is not None:
        out[current] = Outcome(Metrics.failed(TIMEOUT, f"no result within timeout_s={timeout_s:g}s"
                                              f"\n{child.stderr_tail()}"), now - t_start, prov)
      elif not prov:  # never got ready: blame the whole group (its environment)
        msg = f"child did not start within {startup_timeout_s:g}s\n{child.stderr_tail()}"
        for item in todo:
          out.setdefault(item["index"], Outcome(Metrics.failed(TIMEOUT, msg), 0.0, prov))
      return  # hung between candidates: the caller restarts with the rest
    kind = ev["event"]
    if kind == "fatal":
      child.kill()
      raise LocalSetupError(ev.get("error", "the local child could not start"))
    if kind == "ready":
      prov = dict(ev.get("provenance") or {})
    elif kind == "start":
      current, t_start = int(ev["index"]), now
      child.clear_stderr()
    elif kind == "result":
      try:
        idx = int(ev["index"])
        metrics = Metrics.from_json(ev["metrics"])
        wall = float(ev.get("wall_s", now - t_start))
      except (KeyError, TypeError, ValueError) as e:
        ev = {"event": "garbage", "text": f"a malformed result ({type(e).__name__}: {e})"}
      else:
        out[idx] = Outcome(metrics, wall, prov)
        current = None
    if ev["event"] == "garbage":
      child.kill()
      if current is not None:
        out[current] = Outcome(Metrics.failed(CRASH, f"child printed invalid output: {ev['text']!r}\n"
                                              f"{child.stderr_tail()}"), now - t_start, prov)
      return
    if kind == "done":
      child.wait()
      return
    elif kind == "exit":  # stdout closed: the child died (or exited early)
      rc = child.wait()
      fkind, msg = classify_exit(rc, child.stderr_tail())
      if current is not None:
        out[current] = Outcome(Metrics.failed(fkind, msg), now - t_start, prov)
      elif not prov:  # died before it was ready: the environment is broken
        for item in todo:
          out.setdefault(item["index"], Outcome(Metrics.failed(fkind, msg), 0.0, prov))
      return
    # Every step of the stream must come within one candidate's timeout.
    deadline = now + (timeout_s if prov else startup_timeout_s)


def run_candidates(request: Mapping[str, Any], items: Sequence[Mapping[str, Any]],
                   env: Mapping[str, str], timeout_s: float, startup_timeout_s: float,
                   max_per_child: int | None = None,
                   python: str | None = None,
                   argv: Sequence[str] | None = None) -> dict[int, Outcome]:
  """Outcomes by item index for `items` ({"index", "key", "values"}), all
  measured in fresh children started with `env` (the command `argv`; default
  `python -m autoscout_jax.local.child`). After a child dies or hangs, a new
  one takes the remaining candidates."""
  argv = list(argv or [python or sys.executable, "-m", "autoscout_jax.local.child"])
  out: dict[int, Outcome] = {}
  pending = list(items)
  while pending:
    chunk = pending[:max_per_child] if max_per_child else pending
    child = _Child(env, {**request, "candidates": list(chunk)}, argv)
    before = len(out)
    try:
      _session(child, chunk, timeout_s, startup_timeout_s, out)
    finally:
      child.kill()  # no-op reap when it already ended
    if len(out) == before:  # no progress (died between candidates): never loop
      first = chunk[0]["index"]
      out[first] = Outcome(Metrics.failed(CRASH, f"child ended without a result\n"
                                          f"{child.stderr_tail()}"), 0.0, {})
    pending = [it for it in pending if it["index"] not in out]
  return out
