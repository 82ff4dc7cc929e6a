"""Reliability of a run as a user meets it (issue 17): bad input is one line
and changes nothing; a workdir never mixes two configurations and never
serves two runs; a killed search leaves no process behind; injected faults
are stored as failures of their kinds. Real processes throughout."""

import collections
import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from reliability_util import (ROOT, SIM, TINY, command, env_with_marker, one_error_line,
                              processes_with, run, settled_tree_hash, start, tree_hash)


@pytest.fixture(scope="module")
def sim_workdir(tmp_path_factory):
  """A finished simulated run's workdir (identity, store, config, report, TensorBoard)."""
  w = str(tmp_path_factory.mktemp("sim") / "run")
  proc = run(SIM + ["--gin_bindings=MAX_ROUNDS = 2", "--gin_bindings=BATCH_SIZE = 3"], w)
  assert proc.returncode == 0, proc.stderr[-3000:]
  for name in ("identity.json", "measurements.jsonl", "config.gin", "report.md", "run.lock"):
    assert os.path.exists(os.path.join(w, name)), name
  return w


def _copy(src, tmp_path):
  dst = str(tmp_path / "copy")
  shutil.copytree(src, dst)
  return dst


@pytest.mark.parametrize("args,needle", [
    (SIM + ["--gin_bindings=BUDGET_S = 0"], "BUDGET_S"),
    (SIM + ["--gin_bindings=FOO = 3"], "FOO"),
    (TINY + ["--gin_bindings=local_target.space.microbatch_choices = ()"], "num_microbatches"),
])
def test_bad_input_on_a_used_workdir_is_one_line_and_changes_nothing(sim_workdir, tmp_path, args,
                                                                      needle):
  w = _copy(sim_workdir, tmp_path)
  before = tree_hash(w)
  line = one_error_line(run(args, w))
  assert needle in line
  assert tree_hash(w) == before


def test_a_file_as_workdir_is_one_line_and_changes_nothing(tmp_path):
  f = tmp_path / "not_a_dir"
  f.write_text("precious\n")
  line = one_error_line(run(SIM, str(f)))
  assert "is a file" in line
  assert f.read_text() == "precious\n"
  line = one_error_line(run(SIM, str(f / "sub")))  # not creatable under a file
  assert "is a file" in line and f.read_text() == "precious\n"


def _read_only_bind(src, dst):
  os.makedirs(dst)
  try:
    subprocess.run(["mount", "--bind", "-o", "ro", src, dst], check=True, capture_output=True)
  except (OSError, subprocess.CalledProcessError):
    os.rmdir(dst)
    return False
  if os.access(dst, os.W_OK) and not os.statvfs(dst).f_flag & os.ST_RDONLY:
    subprocess.run(["umount", dst], capture_output=True)
    os.rmdir(dst)
    return False
  return True


def test_a_read_only_workdir_is_one_line_and_changes_nothing(sim_workdir, tmp_path):
  w = _copy(sim_workdir, tmp_path)
  ro = str(tmp_path / "ro")
  if _read_only_bind(w, ro):  # a used workdir on a read-only mount
    try:
      before = tree_hash(ro)
      line = one_error_line(run(SIM, ro))
      assert "read-only" in line
      assert tree_hash(ro) == before
      line = one_error_line(run(SIM, os.path.join(ro, "new")))  # not creatable under it
      assert "read-only" in line and tree_hash(ro) == before
    finally:
      subprocess.run(["umount", ro], capture_output=True)
    return
  # No mount here: sysfs refuses new directories even to root.
  if not os.path.isdir("/sys/kernel"):
    pytest.skip("neither a read-only bind mount nor sysfs is available to test an unwritable workdir")
  target = "/sys/kernel/autoscout_test/w"
  one_error_line(run(SIM, target))
  assert not os.path.exists(target)


@pytest.mark.parametrize("change,needle", [
    (["--gin_bindings=SIM_GLOBAL_BATCH = 64"], "workload.global_batch"),
    (["--gin_bindings=analytic.AnalyticEvaluator.charge_s = 1.0"], "evaluators.analytic.charge_s"),
])
def test_a_workdir_of_another_configuration_is_refused_unchanged(sim_workdir, tmp_path, change,
                                                                   needle):
  w = _copy(sim_workdir, tmp_path)
  before = tree_hash(w)
  line = one_error_line(run(SIM + change, w))
  assert needle in line and "--fresh" in line, line
  assert tree_hash(w) == before
  # --fresh starts a new workdir beside it and leaves this one alone
  proc = run(SIM + change + ["--fresh", "--gin_bindings=MAX_ROUNDS = 1"], w)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert os.path.exists(w + "-1/identity.json") and tree_hash(w) == before


def test_changed_timed_steps_refuse_a_local_workdir_unchanged(tmp_path):
  # Every compile crashes (an injected fault), so the run is seconds long and
  # never profiles; its identity still records the profile settings.
  w = str(tmp_path / "tiny")
  base = TINY + ["--gin_bindings=MAX_ROUNDS = 1", "--gin_bindings=BATCH_SIZE = 1",
                 "--gin_bindings=FAULTS = [({}, 'compile', 'crash')]"]
  proc = run(base + ["--gin_bindings=PROFILE_TIMED_STEPS = 3"], w)
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = [json.loads(l) for l in open(os.path.join(w, "measurements.jsonl"))]
  assert rows and all(r["metrics"]["failure_kind"] == "crash" for r in rows)
  before = tree_hash(w)
  line = one_error_line(run(base + ["--gin_bindings=PROFILE_TIMED_STEPS = 7"], w))
  assert "evaluators.profile.timed_steps is 7 in this run but 3 in the workdir" in line, line
  assert tree_hash(w) == before


def test_second_run_is_refused_and_kill_9_leaves_no_process(tmp_path):
  """A run hangs in a fault child (held lock); a second run on its workdir is
  refused naming the holder; kill -9 of the first run's group leaves nothing."""
  w = str(tmp_path / "held")
  env, tag = env_with_marker()
  args = SIM + ["--gin_bindings=FAULTS = [({}, 'analytic', 'hang')]",
                "--gin_bindings=FAULT_TIMEOUT_S = 600.0"]
  first = start(args, w, env)
  try:
    deadline = time.time() + 300
    while time.time() < deadline and len(processes_with(tag)) < 2 and first.poll() is None:
      time.sleep(0.2)
    procs = processes_with(tag)
    assert len(procs) >= 2, f"the run did not reach its hung child: {procs}"
    before = settled_tree_hash(w)
    line = one_error_line(run(args, w))
    assert f"in use by pid {first.pid}" in line, line
    assert tree_hash(w) == before
  finally:
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
  time.sleep(2.0)
  assert processes_with(tag) == []


def test_kill_9_of_the_search_group_while_a_child_hangs_profiling(tmp_path):
  w = str(tmp_path / "hung")
  env, tag = env_with_marker()
  args = TINY + ["--gin_bindings=FAULTS = [({}, 'profile', 'hang')]",
                 "--gin_bindings=LOCAL_TIMEOUT_S = 600.0"]
  proc = start(args, w, env)
  store = os.path.join(w, "measurements.jsonl")
  try:
    deadline = time.time() + 400
    children = []
    while time.time() < deadline and proc.poll() is None:
      compiled = os.path.exists(store) and '"compile"' in open(store).read()
      children = [p for p in processes_with(tag) if "autoscout_jax.local.child" in p[1]]
      if compiled and children:
        break
      time.sleep(0.3)
    assert children and proc.poll() is None, "the run never reached its profiling child"
    assert all(os.getpgid(pid) != proc.pid for pid, _ in children)  # its own group: killpg misses it
    time.sleep(1.0)
    assert processes_with(tag), "the hung child is gone before the kill"
  finally:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
  time.sleep(2.0)
  assert processes_with(tag) == []


def test_sigterm_stops_the_run_and_its_children_with_one_line(tmp_path):
  env, tag = env_with_marker()
  args = SIM + ["--gin_bindings=FAULTS = [({}, 'analytic', 'hang')]",
                "--gin_bindings=FAULT_TIMEOUT_S = 600.0"]
  proc = subprocess.Popen(command(args, str(tmp_path / "t")), cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
  try:
    deadline = time.time() + 300
    while time.time() < deadline and len(processes_with(tag)) < 2 and proc.poll() is None:
      time.sleep(0.2)
    assert len(processes_with(tag)) >= 2
    os.kill(proc.pid, signal.SIGTERM)  # the parent only: it must take its child down
    _, err = proc.communicate(timeout=60)
  finally:
    if proc.poll() is None:
      os.killpg(proc.pid, signal.SIGKILL)
  assert proc.returncode == 128 + signal.SIGTERM
  assert "stopped by SIGTERM" in err and "Traceback" not in err
  time.sleep(2.0)
  assert processes_with(tag) == []


def test_100_injected_faults_of_mixed_kinds_are_stored_with_their_kinds(tmp_path):
  w = str(tmp_path / "faults")
  rules = [({'sequence_parallel': True}, 'analytic', 'oom'),
           ({'micro_batch_size': 1}, 'analytic', 'hang'),
           ({'micro_batch_size': 2}, 'analytic', 'garbage'),
           ({'use_distributed_optimizer': True}, 'analytic', 'oom_kill'),
           ({}, 'analytic', 'crash')]
  proc = run(SIM + ["--gin_file=gin/designers/exhaustive.gin", "--gin_bindings=BATCH_SIZE = 11",
                    "--gin_bindings=MAX_ROUNDS = 9", "--gin_bindings=FAULT_TIMEOUT_S = 0.3",
                    f"--gin_bindings=FAULTS = {rules!r}"], w)
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = [json.loads(l) for l in open(os.path.join(w, "measurements.jsonl"))]
  assert len(rows) == 100 and len({r["candidate_key"] for r in rows}) == 100
  expect = {"crash": "crash", "hang": "timeout", "oom": "oom", "oom_kill": "oom", "garbage": "crash"}
  seen = collections.Counter()
  for r in rows:
    values = r["candidate"]
    kind = next(k for pat, _, k in rules if all(values.get(a) == b for a, b in pat.items()))
    assert r["provenance"]["injected_fault"] == kind
    assert r["metrics"]["feasible"] is False and r["metrics"]["failure_kind"] == expect[kind]
    seen[kind] += 1
  assert set(seen) == set(expect), seen  # every kind happened
  err = {k: next(r["metrics"]["error"] for r in rows if r["provenance"]["injected_fault"] == k)
         for k in expect}
  assert "SIGABRT" in err["crash"] and "SIGKILL" in err["oom_kill"]
  assert "RESOURCE_EXHAUSTED" in err["oom"] and "invalid output" in err["garbage"]
  assert "timeout" in err["hang"]
