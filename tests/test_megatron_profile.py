"""The Megatron F3 evaluator (megatron_profile.py, megatron_child.py) and its
table tool, on a machine without a GPU: the real child process starts, finds
no CUDA device and the parent says so; what one rank can measure is decided
by the child's own rule; the one-device Megatron space enumerates. The
training step itself runs only where a GPU is lent (scripts/gpu_check.sh;
the measured table is committed under experiments/)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from autoscout_jax.megatron_child import _refusal
from autoscout_jax.megatron_profile import MegatronProfileEvaluator, child_request
from autoscout_jax.sim import hardware
from autoscout_jax.tools import megatron_table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = {"num_layers": 4, "hidden_size": 256, "num_heads": 8, "seq_len": 512, "vocab_size": 1024}

needs_megatron = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None or importlib.util.find_spec("megatron") is None,
    reason="torch and megatron-core (the megatron extra) are not installed")


def _cuda() -> bool:
  try:
    import torch
  except ImportError:
    return False
  return torch.cuda.is_available()


def test_one_device_megatron_space_keeps_its_constraints():
  problem, cands = megatron_table.problem_and_candidates("dgx_h200", MODEL, 12, seed=0)
  mbs = {c.values["micro_batch_size"] for c in cands}
  assert mbs == {1, 2, 4}  # 8 and 16 do not divide the global batch of 12
  rc = {c.values["recompute_granularity"] for c in cands}
  assert rc == {"none", "selective", "full"}
  # recompute_num_layers never exceeds the 4 layers of the one stage
  assert max(c.values.get("recompute_num_layers") or 1 for c in cands) <= 4
  assert all(c.values["tensor_model_parallel_size"] == 1 for c in cands)
  keys = [tuple(c.values.get(k) for k in megatron_table.ONE_RANK_KNOBS) for c in cands]
  assert len(keys) == len(set(keys))  # one candidate per one-rank class
  # the same seed gives the same order; another seed another one
  again = [c.key for c in megatron_table.problem_and_candidates("dgx_h200", MODEL, 12, seed=0)[1]]
  other = [c.key for c in megatron_table.problem_and_candidates("dgx_h200", MODEL, 12, seed=1)[1]]
  assert again == [c.key for c in cands] and other != again and sorted(other) == sorted(again)
  assert problem.cluster.num_devices == 1


def test_one_rank_refuses_what_needs_more_ranks():
  assert _refusal({"micro_batch_size": 2, "tensor_model_parallel_size": 1}, 16) is None
  why = _refusal({"micro_batch_size": 2, "tensor_model_parallel_size": 2, "pipeline_model_parallel_size": 2}, 16)
  assert "pipeline_model_parallel_size=2" in why and "tensor_model_parallel_size=2" in why
  assert "use_torch_fsdp2" in _refusal({"micro_batch_size": 1, "use_torch_fsdp2": True}, 16)
  assert "does not divide" in _refusal({"micro_batch_size": 3}, 16)


def test_check_fits_names_what_it_cannot_measure():
  problem, _ = megatron_table.problem_and_candidates("dgx_h200", MODEL, 8, seed=0)
  ev = MegatronProfileEvaluator()
  assert ev.check_fits(problem.workload, problem.cluster) is None
  eight = hardware.make_cluster("dgx_h200", 8)
  assert "8 devices" in ev.check_fits(problem.workload, eight)
  req = child_request(problem.workload)
  assert req["global_batch"] == 8 and req["model"]["num_layers"] == 4
  with pytest.raises(ValueError, match="timed_steps"):
    MegatronProfileEvaluator(timed_steps=0)


@needs_megatron
@pytest.mark.skipif(_cuda(), reason="this machine has a GPU: the child would train")
def test_without_a_gpu_the_real_child_says_so_and_the_tool_exits_1(tmp_path):
  out = tmp_path / "t.csv"
  env = {**os.environ, "PYTHONPATH": ROOT}
  proc = subprocess.run(
      [sys.executable, "-m", "autoscout_jax.tools.megatron_table", f"--out={out}", "--limit=2",
       "--num_layers=4", "--hidden_size=256", "--num_heads=8", "--seq_len=512", "--vocab_size=1024",
       "--global_batch=8"], capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
  assert proc.returncode == 1, proc.stderr[-2000:]
  assert "cannot run here" in proc.stderr and "no CUDA device" in proc.stderr
  assert not out.exists()  # nothing measured, nothing written


def test_bad_flag_is_one_line_and_exit_2(tmp_path):
  env = {**os.environ, "PYTHONPATH": ROOT}
  proc = subprocess.run([sys.executable, "-m", "autoscout_jax.tools.megatron_table", f"--out={tmp_path}/t.csv",
                         "--global_batch=0"], capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1] == "error: --global_batch must be >= 1, got 0"


def test_summary_compares_f0_with_what_was_measured(tmp_path):
  path = tmp_path / "t.csv"
  cols = ",".join(megatron_table.COLUMNS)
  rows = [
      # mbs, rc, method, layers, distopt, status, step, tok/s, mfu, mem, f0 tok/s, f0 mem, f0 ok, error, key
      "1,none,,,True,ok,0.5,1000,0.3,10,900,9,True,,a",
      "2,none,,,True,ok,0.4,1250,0.4,20,1100,18,True,,b",
      "4,none,,,True,ok,0.45,1100,0.35,40,1300,35,True,,c",
      "8,none,,,True,oom,,,,,1400,70,True,CUDA out of memory,d",
  ]
  path.write_text("# comment\n" + cols + "\n" + "\n".join(rows) + "\n")
  text, n_ok = megatron_table.summary(str(path))
  assert n_ok == 3
  assert "{'ok': 3, 'oom': 1}" in text
  # F0 ranks c > b > a, measured b > c > a: rho 0.5; F0's pick (c) is measured #2 at 1100/1250
  assert "spearman 0.50" in text and "measured #2 at 0.880 of the best" in text
