"""End to end: `python -m autoscout_jax.run` on the tiny experiment, killed
with SIGKILL mid-run and started again on the same workdir; then the
artifacts a user reads (config.gin, operative config, report, TensorBoard
scalars and HParams sessions) are checked."""

import glob
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from tensorboard.backend.event_processing import event_accumulator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A small device budget (256 MiB): the report must print sizes in a unit that fits.
ARGS = ["--gin_file=experiments/quickstart/tiny.gin", "--gin_bindings=MAX_ROUNDS = 2",
        "--gin_bindings=BATCH_SIZE = 2", "--gin_bindings=LOCAL_MEMORY_BYTES = 268435456"]
MEMORY_LINE = re.compile(r"peak memory \d+(\.\d)? (KiB|MiB) of 256 MiB per device")


def _run(workdir, wait=True):
  cmd = [sys.executable, "-m", "autoscout_jax.run", *ARGS, f"--workdir={workdir}"]
  proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, start_new_session=True)
  if wait:
    out, _ = proc.communicate(timeout=900)
    return proc.returncode, out
  return proc


def _lines(path):
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [l for l in f.read().split("\n") if l.strip()]


@pytest.mark.slow
def test_killed_run_resumes_and_leaves_a_full_record(tmp_path):
  workdir = str(tmp_path / "run")
  store = os.path.join(workdir, "measurements.jsonl")
  proc = _run(workdir, wait=False)
  deadline = time.time() + 600
  while len(_lines(store)) < 3 and time.time() < deadline and proc.poll() is None:
    time.sleep(0.5)
  assert proc.poll() is None, "the run ended before it could be killed:\n" + proc.stdout.read()
  os.killpg(proc.pid, signal.SIGKILL)  # the run and its profiling child
  proc.wait()
  before = _lines(store)
  assert len(before) >= 3

  code, out = _run(workdir)
  assert code == 0, out
  assert "resuming with" in out and "speedup over the default" in out
  after = _lines(store)
  assert after[:len(before)] == before  # nothing lost or rewritten
  rows = [json.loads(l) for l in after]
  keys = [(r["candidate_key"], r["fidelity"]) for r in rows]
  assert len(keys) == len(set(keys)), "a candidate was measured twice"
  # default + 2 rounds x 2 candidates, each screened (compile) then profiled
  assert len({k for k, f in keys if f == "profile"}) == 5

  for name in ("config.gin", "operative_config.gin", "report.json", "report.md"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  assert "experiment.run_experiment.designer_fn" in open(os.path.join(workdir, "operative_config.gin")).read()
  report = json.load(open(os.path.join(workdir, "report.json")))
  best_profile = max(r["metrics"]["tokens_per_s"] for r in rows
                     if r["fidelity"] == "profile" and r["metrics"]["feasible"])
  assert report["best"]["tokens_per_s"] == pytest.approx(best_profile)
  assert report["launch"]["mesh_axis_names"] == ["data", "fsdp", "tensor"]
  # memory in the unit that fits (the tiny model's peak is a few MiB; not '0.0 GiB of 0')
  assert MEMORY_LINE.search(out), out
  md = open(os.path.join(workdir, "report.md")).read()
  assert MEMORY_LINE.search(md) and "GiB" not in md, md
  assert re.search(r"peak memory / device<b>\d+(\.\d)? (KiB|MiB) of 256 MiB<",
                   open(os.path.join(workdir, "report.html")).read())

  acc = event_accumulator.EventAccumulator(os.path.join(workdir, "tb", "search"))
  acc.Reload()
  tags = acc.Tags()
  for t in ("round/best_tokens_per_s", "round/valid", "round/oom", "round/failed",
            "round/cumulative_cost_s", "trial/cumulative_cost_s"):
    assert t in tags["scalars"], t
  assert "report" in tags["tensors"] and "config" in tags["tensors"]
  tb_report = acc.Tensors("report")[-1].tensor_proto.string_val[0].decode()
  assert MEMORY_LINE.search(tb_report), tb_report
  best = event_accumulator.EventAccumulator(os.path.join(workdir, "tb", "best"))
  best.Reload()
  assert "answer/tokens_per_s" in best.Tags()["scalars"]
  sessions = [d for d in glob.glob(os.path.join(workdir, "hparams", "*")) if os.path.isdir(d)]
  # one session per trial, written when the (resumed) run ends: every
  # measurement, the killed run's replayed from the store
  assert len(sessions) == len(rows)
  s = event_accumulator.EventAccumulator(sessions[0])
  s.Reload()
  assert "_hparams_/session_start_info" in s.Tags()["tensors"]
  assert "cost_s" in s.Tags()["scalars"]


@pytest.mark.parametrize("args,needle", [
    (["--gin_file=experiments/quickstart/tiny.gin", "--gin_bindings=NO_SUCH = @nothing()"], "gin"),
    (["--gin_file=does/not/exist.gin"], "does not exist"),
    (["--gin_file=experiments/quickstart/tiny.gin", "--gin_bindings=TINY_DEFAULT = {'bogus': 1}"],
     "unknown knob"),
    (["--gin_file=experiments/quickstart/tiny.gin", "--gin_bindings=TINY_GLOBAL_BATCH = 3",
      "--gin_bindings=TINY_DEFAULT = {}"], "no valid candidate"),
    (["--gin_file=experiments/quickstart/tiny.gin", "--gin_bindings=LOCAL_MEMORY_BYTES = 1000"],
     "cannot fit"),
])
def test_bad_input_is_one_clear_message_and_store_untouched(tmp_path, args, needle):
  workdir = tmp_path / "w"
  workdir.mkdir()
  store = workdir / "measurements.jsonl"
  store.write_text('{"sentinel": true}\n')
  proc = subprocess.run([sys.executable, "-m", "autoscout_jax.run", *args, f"--workdir={workdir}"],
                        cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0
  err = proc.stderr.strip().splitlines()
  assert err and err[-1].startswith("autoscout_jax: error:"), proc.stderr[-2000:]
  assert needle in err[-1], err[-1]
  assert "Traceback" not in proc.stderr
  assert store.read_text() == '{"sentinel": true}\n'


def test_a_bug_is_not_mistaken_for_bad_input():
  """run.py shows input errors as one line and bugs (TypeError, KeyError, an
  import error inside our own packages) with their traceback."""
  from autoscout_jax.experiment import is_input_error as _is_input_error

  def raised(exc, cause=None):
    try:
      try:
        raise cause or exc
      except Exception as inner:
        if cause is None:
          raise
        raise exc from inner
    except Exception as e:  # the exception as run.py sees it
      return e

  assert _is_input_error(ValueError("budget_s must be positive"))
  assert _is_input_error(FileNotFoundError("no such file"))
  assert _is_input_error(raised(ImportError("install the bench extra"), ModuleNotFoundError(name="optuna")))
  assert not _is_input_error(KeyError("remat_policy"))
  assert not _is_input_error(TypeError("unsupported operand"))
  assert not _is_input_error(ModuleNotFoundError(name="autoscout_jax.targets.nope"))
  assert not _is_input_error(ImportError("cannot import name 'x'", name="surrogates.model"))
