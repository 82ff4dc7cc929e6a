"""The workdir's pieces in-process: its lock, its identity, --fresh's choice,
and a store that several threads append to at once."""

import json
import os
import threading

import pytest

from autoscout_jax import workdir as wd
from autoscout_jax.measurement import Measurement, Metrics
from autoscout_jax.space import Candidate
from autoscout_jax.store import MeasurementStore

FP = {"format": 1, "workload": {"name": "w", "global_batch": 8}, "evaluators": {"profile": {"timed_steps": 3}}}


def test_lock_is_exclusive_and_names_its_holder(tmp_path):
  path = str(tmp_path / "a" / "b")
  with wd.open_workdir(path, FP):
    assert json.load(open(os.path.join(path, wd.IDENTITY))) == FP
    with pytest.raises(wd.WorkdirError, match=f"in use by pid {os.getpid()} "):
      with wd.open_workdir(path, FP):
        pass
  with wd.open_workdir(path, FP):  # released at the end of the block
    pass


def test_identity_difference_names_the_key_and_both_values(tmp_path):
  path = str(tmp_path / "w")
  with wd.open_workdir(path, FP):
    pass
  changed = json.loads(json.dumps(FP))
  changed["evaluators"]["profile"]["timed_steps"] = 7
  with pytest.raises(wd.WorkdirError, match="evaluators.profile.timed_steps is 7 in this run but 3 "
                                            "in the workdir; nothing was changed; use --fresh"):
    wd.check_reusable(path, changed)
  wd.check_reusable(path, FP)


def test_a_failed_open_leaves_nothing_behind(tmp_path):
  path = str(tmp_path / "new" / "deeper")
  with wd.open_workdir(path, FP):
    pass
  other = {**FP, "workload": {"name": "other"}}
  before = sorted(os.listdir(path))
  with pytest.raises(wd.WorkdirError):
    with wd.open_workdir(path, other):
      pass
  assert sorted(os.listdir(path)) == before
  with pytest.raises(wd.WorkdirError, match="cannot write workdir"):  # a file in the way
    open(str(tmp_path / "f"), "w").close()
    with wd.open_workdir(str(tmp_path / "f" / "a" / "b"), FP):
      pass
  assert not os.path.exists(str(tmp_path / "f" / "a"))


def test_fresh_picks_an_unused_directory(tmp_path):
  d = str(tmp_path / "run")
  assert wd.fresh_workdir(d) == d
  os.makedirs(d)
  assert wd.fresh_workdir(d) == d  # empty: used as it is
  open(os.path.join(d, "x"), "w").close()
  assert wd.fresh_workdir(d) == d + "-1"
  os.makedirs(d + "-1")
  assert wd.fresh_workdir(d) == d + "-2"


def test_threads_appending_at_once_never_interleave_or_tear_a_line(tmp_path):
  store = MeasurementStore(str(tmp_path))
  blob = "x" * 200_000  # far past PIPE_BUF: one write per line is what keeps it whole

  def worker(t):
    for i in range(25):
      m = Measurement(Candidate.of({"t": t, "i": i}), "analytic", Metrics(feasible=True), 1.0,
                      provenance={"blob": blob})
      store.append(m)

  threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  again = MeasurementStore(str(tmp_path))
  assert len(again) == 200 and not again.skipped_lines
  assert {(m.candidate.values["t"], m.candidate.values["i"]) for m in again} == {
      (t, i) for t in range(8) for i in range(25)}
