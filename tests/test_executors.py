"""Executors: a batch split over worker processes (or Ray tasks) gives the
same measurements as one evaluated in this process, the results stream in
as chunks finish, and a search run with the process executor stores the
same set of measurements as the serial planning run with the same seed."""

import json
import os
import subprocess
import sys
import time

import pytest

from autoscout_jax.evaluator import Evaluator
from autoscout_jax.executors import ProcessExecutor, SerialExecutor, chunks, portable
from autoscout_jax.measurement import Measurement, Metrics
from autoscout_jax.problem import Problem
from autoscout_jax.space import Candidate, Constraint, IntRange, SearchSpace
from autoscout_jax.workload import LocalCluster, ModelConfig, Workload

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Square(Evaluator):
  """x -> x*x tokens/s; reports its process id; holds an unpicklable cache.
  With `meet` (a folder, and how many chunks), each call waits there until
  that many calls are running: it returns `met` True only if they ran at once."""

  fidelity = "analytic"

  def __init__(self, meet=None):
    self._cache = {"fn": lambda v: v}  # like a built space: lambdas do not pickle
    self.meet = meet

  def evaluate(self, problem, candidates):
    self._cache.setdefault("seen", 0)
    assert all(not problem.space.validate(c) for c in candidates)  # the problem arrived whole
    met = None
    if self.meet:
      folder, n = self.meet
      open(os.path.join(folder, str(os.getpid())), "w").close()
      deadline = time.time() + 120
      while len(os.listdir(folder)) < n and time.time() < deadline:
        time.sleep(0.05)
      met = len(os.listdir(folder)) >= n
    return [Measurement(c, self.fidelity, Metrics(True, tokens_per_s=float(c.values["x"] ** 2)), 0.1,
                        provenance={"pid": os.getpid(), "met": met}) for c in candidates]


class Profiler(Square):
  contends_for_devices = True


def _cands(n):
  return [Candidate.of({"x": i}) for i in range(n)]


# A space whose constraint is a closure: plain pickle cannot send it, the
# executors must (they ship the problem with cloudpickle).
_LIMIT = 100
SPACE = SearchSpace([IntRange("x", 0, 1000)],
                    [Constraint("small", lambda v, f: None if v["x"] < _LIMIT else "too big", "x < 100")])
PROBLEM = Problem(Workload("w", ModelConfig("m", 2, 64, 4, 256, 256, 32), 16), LocalCluster(), SPACE,
                  ("analytic",))


def test_chunks_cover_the_batch_in_order():
  assert chunks(5, 2) == [[0, 1, 2], [3, 4]]
  assert chunks(2, 8) == [[0], [1]]
  assert sum(chunks(17, 4), []) == list(range(17))


def test_portable_empties_only_unpicklable_private_caches():
  ev = Square()
  clone = portable(ev)
  assert clone is not ev and clone._cache == {} and "fn" in ev._cache


def test_process_executor_matches_serial_and_streams_chunks(tmp_path):
  cands = _cands(7)
  serial = SerialExecutor().evaluate(Square(), PROBLEM, cands)
  arrived = []
  ex = ProcessExecutor(workers=2)
  try:
    got = ex.evaluate(Square(meet=(str(tmp_path), 2)), PROBLEM, cands,
                      lambda idx, ms: arrived.append(list(idx)))
    # a device-bound evaluator stays in this process, however many workers
    local = ex.evaluate(Profiler(), PROBLEM, cands)
  finally:
    ex.close()
  assert [m.objective for m in got] == [m.objective for m in serial] == [float(i * i) for i in range(7)]
  assert sorted(arrived) == [[0, 1, 2, 3], [4, 5, 6]]
  # the two chunks ran at the same time, each in a child process
  assert all(m.provenance["met"] for m in got)
  pids = {m.provenance["pid"] for m in got}
  assert os.getpid() not in pids and len(pids) == 2
  assert {m.provenance["pid"] for m in local} == {os.getpid()}


def _stored(workdir):
  rows = [json.loads(l) for l in open(os.path.join(workdir, "measurements.jsonl"))]
  # wall_s and the provenance's CPU time are what it took this time; the
  # candidate, the fidelity, what was measured and what it was charged agree.
  return {(r["candidate_key"], r["fidelity"], json.dumps(r["metrics"], sort_keys=True), r["cost_s"])
          for r in rows}


def _run_with(executor_gin, workdir):
  cmd = [sys.executable, "-m", "autoscout_jax.run",
         "--gin_file=experiments/plan_llama3_70b_tpu_v5p/plan_llama3_70b_tpu_v5p.gin",
         f"--gin_file={executor_gin}", "--gin_bindings=MAX_ROUNDS = 3", f"--workdir={workdir}"]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


@pytest.mark.slow
def test_process_run_stores_what_the_serial_run_stores(planning_run, tmp_path):
  serial_dir, _, _ = planning_run
  proc = _run_with("gin/executors/process.gin", str(tmp_path / "p"))
  assert "executor process (2 workers)" in proc.stdout
  assert _stored(str(tmp_path / "p")) == _stored(serial_dir)


@pytest.mark.slow
def test_ray_run_stores_what_the_serial_run_stores(planning_run, tmp_path):
  pytest.importorskip("ray", reason="needs the optional extra: pip install -e '.[ray]'")
  serial_dir, _, _ = planning_run
  proc = _run_with("gin/executors/ray.gin", str(tmp_path / "r"))
  assert "executor ray (2 workers)" in proc.stdout
  assert _stored(str(tmp_path / "r")) == _stored(serial_dir)
