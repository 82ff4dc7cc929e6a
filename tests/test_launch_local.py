"""The local launch artifact: launch.py, run as a user would in a fresh
process, builds the layout the profiler recorded for the candidate and
trains for --steps steps."""

import json
import math
import os
import subprocess
import sys

import jax

from autoscout_jax.local.launch_script import script
from autoscout_jax.local.probe import compile_figures
from autoscout_jax.workload import ModelConfig, Workload

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = ModelConfig("tiny", num_layers=2, hidden_size=64, num_heads=8, num_kv_heads=4,
                    ffn_hidden_size=128, vocab_size=256, seq_len=32, gated_mlp=True)
WORKLOAD = Workload("tiny", MODEL, global_batch=16, precision="fp32", default=(("data", 8),))
VALUES = {"data": 2, "fsdp": 2, "tensor": 2, "num_microbatches": 2, "remat_policy": "full",
          "scan_layers": True, "scan_unroll": 1, "xla_latency_hiding_scheduler": True}


def test_launch_py_runs_three_steps_with_the_profiled_layout(tmp_path):
  devices = jax.devices()[:8]
  _, _, fig = compile_figures(WORKLOAD, VALUES, devices)  # what the profiler records
  path = tmp_path / "launch.py"
  path.write_text(script(WORKLOAD, "cpu", 8, VALUES, summary="a test layout"))
  env = dict(os.environ, PYTHONPATH=ROOT)
  env.pop("XLA_FLAGS", None)  # launch.py sets the device count itself
  proc = subprocess.run([sys.executable, str(path), "--steps=3"], cwd=tmp_path, env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert out["layout"] == fig["layout"]
  assert out["layout"]["mesh"] == {"data": 2, "fsdp": 2, "tensor": 2}
  assert len(out["losses"]) == 3 and all(math.isfinite(l) for l in out["losses"])
  assert out["losses"][-1] < out["losses"][0]  # it trains
  assert "step 2: loss" in proc.stdout and "tokens/s" in proc.stdout


def test_launch_py_refuses_bad_steps(tmp_path):
  path = tmp_path / "launch.py"
  path.write_text(script(WORKLOAD, "cpu", 8, VALUES))
  proc = subprocess.run([sys.executable, str(path), "--steps=0"], capture_output=True, text=True,
                        timeout=120, env=dict(os.environ, PYTHONPATH=ROOT))
  assert proc.returncode != 0 and "--steps must be at least 1" in proc.stderr
