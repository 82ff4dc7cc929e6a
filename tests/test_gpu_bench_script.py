"""scripts/gpu_bench.sh without a GPU: its --dry_run prints the measurement
it would start (device count rounded to a power of two, the GPUs it makes
visible, the table it writes) and writes nothing; every flag it passes is
one the table tool defines. Without --dry_run and without a GPU it refuses."""

import os
import re
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "gpu_bench.sh")


def _run(args, **env):
  return subprocess.run(["bash", SCRIPT, *args], capture_output=True, text=True, timeout=120,
                        env={**os.environ, **env}, cwd=ROOT)


def test_dry_run_prints_the_measurement_it_would_start(tmp_path):
  out = tmp_path / "table.csv"
  r = _run(["--dry_run", str(out)], GPU_BENCH_DEVICES="6", MAXTEXT_PYTHON=sys.executable)
  assert r.returncode == 0, r.stderr
  measure = [ln for ln in r.stdout.splitlines() if "autoscout_jax.tools.maxtext_table" in ln]
  assert len(measure) == 1, r.stdout
  cmd = measure[0]
  assert "CUDA_VISIBLE_DEVICES=0,1,2,3 " in cmd and "--num_devices=4" in cmd  # 6 GPUs: measured on 4
  assert f"--out={out}" in cmd and "--preset=gpu" in cmd and f"--python={sys.executable}" in cmd
  assert "pip install" not in r.stdout  # MAXTEXT_PYTHON given: nothing to install
  assert not out.exists()
  # every flag the script passes is one the table tool defines
  helptext = subprocess.run([sys.executable, "-m", "autoscout_jax.tools.maxtext_table", "--help"],
                            capture_output=True, text=True, timeout=120, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": ROOT}).stdout
  defined = set(re.findall(r"^\s+--(?:\[no\])?(\w+)", helptext, re.M))
  passed = set(re.findall(r"--(\w+)=", cmd))
  assert passed and passed <= defined, passed - defined
  # the default device count and table name without a GPU: one, real_maxtext_gpu1.csv
  r = _run(["--dry_run"], GPU_BENCH_DEVICES="1")
  assert r.returncode == 0 and "real_maxtext_gpu1.csv" in r.stdout and "pip install maxtext[cuda12]" in r.stdout


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has nvidia-smi")
def test_without_a_gpu_it_measures_nothing():
  r = _run([])
  assert r.returncode == 1 and "no NVIDIA GPU visible" in r.stdout
