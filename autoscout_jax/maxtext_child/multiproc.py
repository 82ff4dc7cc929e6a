"""Several processes as one MaxText job: `python -m autoscout_jax.maxtext_child.multiproc`.

Where it sits: the maxtext F3 evaluator (autoscout_jax/local/maxtext_profile.py)
starts this launcher through `local/runner.run_candidates` in place of
`profile_child` when the cluster has several processes (slices). It picks
a free port on localhost for JAX's coordinator, starts `count`
`profile_child` processes (each with the devices of one slice: the
parent's XLA_FLAGS), hands each the request plus its `distributed` part
(`jax.distributed.initialize`, process i of count), and speaks the usual
protocol upward: one `ready` once every process is ready, a candidate's
`start` as soon as any process starts it, and process 0's results. The
processes live in the launcher's process group, so the parent's kill of
the group (timeout, exit, SIGTERM) takes them all; each also dies with the
launcher.

A process that dies, or says something that is not the protocol, before
the job is done fails the job: the launcher kills the others and exits
non-zero. If a candidate was running, it first answers that candidate
itself, in the protocol: a failed result (crash, or oom for an OOM kill)
naming the process, after `ready` and the `start` should a slower peer not
have said `ready` yet. Stderr gets the same line, but stderr and stdout
reach the parent on separate pipes, so that line alone could be read
before the `start` and cleared with it.

Request: profile_child's plus {"processes": {"count": N, "timeout_s": s,
"fault_process": i | None}} (`fault_process`: a test hook, only process i
acts out the request's injected faults, the others hang on that candidate
as peers blocked in a collective would). The `ready` event's provenance
names the processes (`pids`: the launcher's, then each process's).
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from typing import Any, Mapping

from autoscout_jax.child_protocol import PARENT_ENV, child_main, classify, emit, failed

EXIT_PROCESS_DIED = 3


def free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return int(s.getsockname()[1])


class _Proc:
  def __init__(self, index: int, request: Mapping[str, Any], events: "queue.Queue"):
    self.index = index
    self.proc = subprocess.Popen([sys.executable, "-m", "autoscout_jax.maxtext_child.profile_child"],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 env={**os.environ, PARENT_ENV: str(os.getpid())})
    threading.Thread(target=self._read, args=(events,), daemon=True).start()
    try:
      self.proc.stdin.write(json.dumps(request).encode())
      self.proc.stdin.close()
    except (BrokenPipeError, OSError):
      pass

  def _read(self, events: "queue.Queue") -> None:
    for raw in self.proc.stdout:
      try:
        ev = json.loads(raw)
      except ValueError:
        ev = None
      if not (isinstance(ev, dict) and "event" in ev):
        ev = {"event": "garbage", "text": raw[:200].decode(errors="replace")}
      events.put((self.index, ev))
    events.put((self.index, {"event": "exit"}))


def _describe(rc: int | None) -> str:
  if rc is None:
    return "stopped answering"
  if rc < 0:
    try:
      return f"died with {signal.Signals(-rc).name}"
    except ValueError:
      return f"died with signal {-rc}"
  return f"exited with status {rc}"


def run(request: Mapping[str, Any], out) -> int:
  spec = dict(request.get("processes") or {})
  count = int(spec.get("count", 2))
  coordinator = f"127.0.0.1:{free_port()}"
  events: queue.Queue = queue.Queue()
  procs = []
  for i in range(count):
    sub = {k: v for k, v in request.items() if k != "processes"}
    if spec.get("fault_process") is not None and int(spec["fault_process"]) != i:
      # test hook: only that process acts out the fault; its peers wait for it, as they would in a collective
      # (an 'oom' is an error every process reports alike)
      sub["faults"] = {key: "oom" if kind == "oom" else "hang" for key, kind in (request.get("faults") or {}).items()}
    sub["distributed"] = {"coordinator": coordinator, "num_processes": count, "process_id": i,
                          "timeout_s": int(spec.get("timeout_s", 120))}
    procs.append(_Proc(i, sub, events))
  finished: set[int] = set()
  ready: dict[int, dict] = {}
  held: list[dict] = []  # what comes before every process is ready, in order
  started: set[int] = set()
  current: int | None = None  # the candidate started and not yet answered
  said_ready = False

  def say(ev: dict) -> None:
    if said_ready:
      emit(out, **ev)
    else:
      held.append(ev)

  def say_ready() -> None:
    nonlocal said_ready
    if said_ready:
      return
    said_ready = True
    emit(out, event="ready", provenance={**ready.get(0, {}), "processes": count, "coordinator": coordinator,
                                         "pids": [os.getpid()] + [p.proc.pid for p in procs]})
    for ev in held:
      emit(out, **ev)
    held.clear()

  def fail(i: int, why: str) -> int:
    for p in procs:
      if p.proc.poll() is None:
        p.proc.kill()
    rc = procs[i].proc.wait()
    for p in procs:
      p.proc.wait()
    what = why or _describe(rc)
    if rc == -signal.SIGKILL and not why:  # nobody here sent it: the kernel's OOM killer, most likely
      what += " (likely the OOM killer: out of memory)"
    text = f"multiproc: process {i} of {count} {what}; the job is stopped"
    if current is not None:
      # the job died in a candidate: that candidate's result, in the protocol
      # (stderr and stdout reach the parent on separate pipes, so a line on
      # stderr alone may be read before, and cleared with, its `start`)
      say_ready()
      emit(out, event="result", index=current, metrics=failed(classify(text, "crash"), text))
    print(text, file=sys.stderr, flush=True)
    return EXIT_PROCESS_DIED

  while True:
    i, ev = events.get()
    kind = ev["event"]
    if kind == "exit":
      if i in finished:
        if len(finished) == count:
          emit(out, event="done")
          return 0
        continue
      return fail(i, "")
    if kind == "garbage":
      return fail(i, f"printed invalid output {ev['text']!r}")
    if kind == "fatal":
      emit(out, event="fatal", error=f"process {i} of {count}: {ev.get('error')}")
      fail(i, "could not start")
      return 2
    if kind == "done":
      finished.add(i)
      continue
    if kind == "ready":
      ready[i] = dict(ev.get("provenance") or {})
      if len(ready) == count:
        say_ready()
    elif kind == "start":
      if int(ev["index"]) not in started:
        started.add(int(ev["index"]))
        current = int(ev["index"])
        say(ev)
    elif i == 0:
      if kind == "result":
        current = None
      say(ev)

if __name__ == "__main__":
  sys.exit(child_main(run))
