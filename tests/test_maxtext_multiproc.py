"""The multi-process launcher of the maxtext F3 (autoscout_jax.maxtext_child/multiproc.py):
two processes joined by jax.distributed on localhost; one of them dies ->
the candidate is a recorded failure and no process of the job is left.

Runs without MaxText: injected faults act out before anything MaxText
would do, and a candidate without a fault fails as data (no maxtext module)
in this interpreter.
"""

import os
import sys
import time

import pytest

from autoscout_jax.local.runner import run_candidates

ARGV = [sys.executable, "-m", "autoscout_jax.maxtext_child.multiproc"]


def _env():
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  return {**os.environ, "PYTHONPATH": root, "JAX_PLATFORMS": "cpu",
          "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}


def _gone(pid: int, wait_s: float = 10.0) -> bool:
  t0 = time.monotonic()
  while time.monotonic() - t0 < wait_s:
    try:
      os.kill(pid, 0)
    except ProcessLookupError:
      return True
    try:  # a zombie not yet reaped by init counts as gone
      with open(f"/proc/{pid}/stat") as f:
        if f.read().split(")")[-1].split()[0] == "Z":
          return True
    except OSError:
      return True
    time.sleep(0.1)
  return False


@pytest.mark.parametrize("kind,failure,words", [("crash", "crash", "process 1 of 2 died with SIGABRT"),
                                                ("oom_kill", "oom", "process 1 of 2 died with SIGKILL")])
def test_one_process_dies_the_candidate_fails_and_nothing_is_left(kind, failure, words):
  items = [{"index": 0, "key": "k0", "values": {}}, {"index": 1, "key": "k1", "values": {}}]
  request = {"options": {}, "faults": {"k0": kind, "k1": "oom"},
             "processes": {"count": 2, "timeout_s": 60, "fault_process": 1}}
  out = run_candidates(request, items, _env(), timeout_s=60, startup_timeout_s=120, argv=ARGV)
  first, second = out[0], out[1]
  assert not first.metrics.feasible and first.metrics.failure_kind == failure
  assert words in first.metrics.error
  pids = first.provenance["pids"]
  assert first.provenance["processes"] == 2 and first.provenance["process_count"] == 2
  assert len(pids) == 3 and all(_gone(p) for p in pids)
  # a fresh pair of processes took the next candidate (its injected 'oom' is acted out by process 1 only)
  assert second.metrics.failure_kind == "oom" and second.provenance["pids"] != pids
  assert all(_gone(p) for p in second.provenance["pids"])


def test_a_hung_job_is_killed_at_the_timeout_with_every_process():
  items = [{"index": 0, "key": "k0", "values": {}}]
  request = {"options": {}, "faults": {"k0": "hang"}, "processes": {"count": 2, "timeout_s": 60}}
  out = run_candidates(request, items, _env(), timeout_s=3, startup_timeout_s=120, argv=ARGV)
  assert out[0].metrics.failure_kind == "timeout"
  assert all(_gone(p) for p in out[0].provenance["pids"])


class _Scripted:
  """A launcher process whose events are written in advance (the real
  processes race; this pins one order): `script` holds (process, event)."""
  script: list = []

  def __init__(self, index, request, events):
    self.index = index
    self.proc = _ExitedProc(4000 + index)
    if index == 0:  # every event once, in the scripted order
      for item in _Scripted.script:
        events.put(item)


class _ExitedProc:
  def __init__(self, pid):
    self.pid = pid

  def poll(self):
    return -6

  def kill(self):
    pass

  def wait(self):
    return -6


def test_a_process_that_dies_in_a_candidate_before_its_peer_is_ready_fails_that_candidate(monkeypatch):
  import io
  import json
  from autoscout_jax.maxtext_child import multiproc
  _Scripted.script = [(1, {"event": "ready", "provenance": {"process": 1}}),
                      (1, {"event": "start", "index": 7}),
                      (1, {"event": "exit"}),
                      (0, {"event": "ready", "provenance": {"process": 0}})]
  monkeypatch.setattr(multiproc, "_Proc", _Scripted)
  out = io.StringIO()
  rc = multiproc.run({"processes": {"count": 2}}, out)
  events = [json.loads(line) for line in out.getvalue().splitlines()]
  assert rc == multiproc.EXIT_PROCESS_DIED
  assert [e["event"] for e in events] == ["ready", "start", "result"]
  assert events[1]["index"] == events[2]["index"] == 7
  assert events[2]["metrics"]["failure_kind"] == "crash"
  assert "process 1 of 2 died with SIGABRT" in events[2]["metrics"]["error"]
  assert events[0]["provenance"]["pids"][1:] == [4000, 4001]
  # and a job whose processes never got as far as a candidate is not said to be ready
  _Scripted.script = [(1, {"event": "ready", "provenance": {}}), (1, {"event": "exit"})]
  out = io.StringIO()
  assert multiproc.run({"processes": {"count": 2}}, out) == multiproc.EXIT_PROCESS_DIED
  assert out.getvalue() == ""
