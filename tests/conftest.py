"""Test set-up: 8 virtual CPU devices, set before JAX initializes."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import json
import subprocess
import sys

import pytest

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def planning_run(tmp_path_factory):
  """A 3-round simulator-only planning run (seconds), shared by the tests
  of what a user reads: (workdir, CompletedProcess, stored rows)."""
  workdir = str(tmp_path_factory.mktemp("plan") / "run")
  cmd = [sys.executable, "-m", "autoscout_jax.run",
         "--gin_file=experiments/plan_llama3_70b_tpu_v5p/plan_llama3_70b_tpu_v5p.gin",
         "--gin_bindings=MAX_ROUNDS = 3", f"--workdir={workdir}"]
  proc = subprocess.run(cmd, cwd=_ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(os.path.join(workdir, "measurements.jsonl")) as f:
    rows = [json.loads(l) for l in f]
  return workdir, proc, rows
