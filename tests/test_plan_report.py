"""A planning experiment end to end: `python -m autoscout_jax.run` on the
Llama 3 70B / TPU v5p plan (simulators only, AutoScout designer), shortened;
then what the user reads: the learned knob importances in report.json,
report.md, stdout and TensorBoard, and a launch artifact in libtpu's
spelling. Plus the launch artifact's flag spelling per platform."""

import json
import math
import os
import subprocess
import sys

import pytest
from tensorboard.backend.event_processing import event_accumulator

from autoscout_jax.artifacts import launch_artifact, xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLAN = "experiments/plan_llama3_70b_tpu_v5p/plan_llama3_70b_tpu_v5p.gin"


def test_tpu_plan_reports_importances_and_libtpu_flags(tmp_path):
  workdir = tmp_path / "plan"
  cmd = [sys.executable, "-m", "autoscout_jax.run", f"--gin_file={PLAN}",
         "--gin_bindings=MAX_ROUNDS = 8", f"--workdir={workdir}"]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]

  report = json.load(open(workdir / "report.json"))
  des = report["designer"]
  assert des["importance_source"] == "learned"
  imp = des["importances"]
  assert set(report["best"]["candidate"]) <= set(imp)  # one share per knob of the space
  assert math.isclose(sum(imp.values()), 1.0, rel_tol=1e-6)
  assert max(imp.values()) > 1.5 / len(imp)  # learned, not uniform
  assert des["measurements"]["event"] >= 1 and des["rounds"] == 8

  top = max(imp, key=imp.get)
  md = open(workdir / "report.md").read()
  assert "## Knob importances" in md and f"| {top} | {imp[top]:.3f} |" in md
  assert "knobs that mattered most: " + top in proc.stdout

  launch = report["launch"]
  assert launch["xla_flags_env"] == "LIBTPU_INIT_ARGS"
  assert launch["xla_flags"] and all(f.startswith("--xla_tpu_") for f in launch["xla_flags"])
  assert "latency_hiding_scheduler" not in launch["train_step"]

  acc = event_accumulator.EventAccumulator(str(workdir / "tb" / "search"), size_guidance={"scalars": 0})
  acc.Reload()
  tags = acc.Tags()["scalars"]
  assert f"designer/autoscout/importance/{top}" in tags and "designer/autoscout/trust/analytic" in tags
  last = acc.Scalars(f"designer/autoscout/importance/{top}")[-1]
  assert last.step == 8 and last.value == pytest.approx(imp[top], rel=1e-5)


def test_flag_spelling_per_platform():
  v = {"latency_hiding_scheduler": True, "async_collectives": False, "collective_matmul": False,
       "ici_fsdp": 4, "dcn_data": 2, "per_device_batch_size": 2}
  tpu = xla_flags(v, "tpu")
  assert "--xla_tpu_enable_latency_hiding_scheduler=true" in tpu
  assert "--xla_tpu_enable_async_collective_fusion=false" in tpu
  assert "--xla_tpu_enable_windowed_einsum_for_all_gather=false" in tpu
  gpu = xla_flags(v, "gpu")
  assert "--xla_gpu_enable_latency_hiding_scheduler=true" in gpu
  # Collective matmul off keeps XLA's default threshold (off): no flag at all.
  assert not any("windowed_einsum" in f for f in gpu)
  assert "--xla_gpu_threshold_for_windowed_einsum_mib=0" in xla_flags(dict(v, collective_matmul=True))
  # The local space's knobs carry an "xla_" prefix and the same meaning.
  local = {"data": 2, "fsdp": 2, "tensor": 2, "xla_triton_gemm": False, "num_microbatches": 1}
  art = launch_artifact("local", local, platform="gpu")
  assert art["xla_flags"] == ["--xla_gpu_enable_triton_gemm=false"] and art["xla_flags_env"] == "XLA_FLAGS"
  assert art["mesh_shape"] == [2, 2, 2] and art["train_step"] == {"num_microbatches": 1}


@pytest.mark.parametrize("block", ["optuna_tpe", "smac"])
def test_peer_designer_blocks_run_a_plan(tmp_path, block):
  """The peers' gin blocks replace the plan's designer (a later file wins)."""
  workdir = tmp_path / block
  cmd = [sys.executable, "-m", "autoscout_jax.run", f"--gin_file={PLAN}",
         f"--gin_file=gin/designers/{block}.gin", "--gin_bindings=MAX_ROUNDS = 2",
         "--gin_bindings=BATCH_SIZE = 4", f"--workdir={workdir}"]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.load(open(workdir / "report.json"))
  assert report["rounds"] == 2 and report["designer"] == {}
  assert f"DESIGNER = @{block}." in open(workdir / "operative_config.gin").read()
