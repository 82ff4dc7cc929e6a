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
  why = ev.check_fits(problem.workload, problem.cluster)  # asks a real child interpreter
  if _cuda() and importlib.util.find_spec("megatron") is not None:
    assert why is None
  else:
    assert "cannot train here" in why and ".[megatron]" in why
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


def test_committed_h200_table_rows_and_what_the_space_learned_from_them():
  """The table measured on an H200 (experiments/quickstart/megatron_table_h200.csv):
  every trained or OOM row is a candidate of the tool's space under the
  recorded flags; the two rows megatron-core crashed on (uniform recompute in
  chunks of 16 over 24 layers: IndexError) are exactly what the space's
  uniform_recompute_divides_stage constraint now refuses; the README's
  figures come out of it."""
  import csv
  from autoscout_jax.space import Candidate
  path = os.path.join(ROOT, "experiments", "quickstart", "megatron_table_h200.csv")
  with open(path) as f:
    head = [l for l in f if l.startswith("#")]
  assert any("NVIDIA H200" in l for l in head) and any("megatron_core=0.16.1" in l for l in head)
  with open(path) as f:
    rows = list(csv.DictReader(l for l in f if not l.startswith("#")))
  model = {"num_layers": 24, "hidden_size": 1024, "num_heads": 16, "seq_len": 2048, "vocab_size": 51200}
  problem, cands = megatron_table.problem_and_candidates("dgx_h200", model, 16, seed=0)
  by_key = {c.key: c for c in cands}
  assert len(rows) == 24
  crashed = [r for r in rows if r["status"] == "crash"]
  assert len(crashed) == 2 and all("IndexError" in r["error"] for r in crashed)
  for r in rows:
    assert r["status"] in ("ok", "oom", "crash")
    assert (r["status"] == "ok") == bool(r["tokens_per_s"])
    if r["status"] != "crash":
      assert r["key"] in by_key and r["micro_batch_size"] == str(by_key[r["key"]].values["micro_batch_size"])
      continue
    assert r["key"] not in by_key
    # the same row with block recompute is a candidate; uniform is refused by that constraint alone
    twin = next(c for c in cands if c.values.get("recompute_method") == "block"
                and c.values["recompute_num_layers"] == int(r["recompute_num_layers"])
                and c.values["micro_batch_size"] == int(r["micro_batch_size"])
                and str(c.values["use_distributed_optimizer"]) == r["use_distributed_optimizer"])
    vals = dict(twin.values, recompute_method=r["recompute_method"])
    assert [v.constraint for v in problem.space.validate(Candidate(vals))] == ["uniform_recompute_divides_stage"]
  text, n_ok = megatron_table.summary(path)
  assert n_ok == 19 and "{'ok': 19, 'oom': 3, 'crash': 2}" in text
  # F0 prices the local spec the child ran (transformer_impl='local': scores stored)
  assert "spearman 0.92" in text and "measured #1 at 1.000 of the best" in text
  assert "F0 / measured tok/s 2.21-2.76 (median 2.34)" in text
  assert "measured / F0 memory 0.70-1.06 (median 0.89)" in text
  assert "measured OOMs F0 called infeasible: 2 of 3" in text
  assert "/work" not in open(path).read()


def test_refresh_f0_rewrites_only_the_f0_columns(tmp_path):
  """--refresh_f0 measures nothing: the committed table's F0 columns come
  back exactly (the simulator is deterministic) and the measured ones and
  comments are untouched; with the Transformer Engine stack F0 would charge
  no scores and the memory of micro-batch 8 without recompute drops by half."""
  import shutil
  src = os.path.join(ROOT, "experiments", "quickstart", "megatron_table_h200.csv")
  path = tmp_path / "t.csv"
  shutil.copy(src, path)
  model = {"num_layers": 24, "hidden_size": 1024, "num_heads": 16, "seq_len": 2048, "vocab_size": 51200}
  problem, cands = megatron_table.problem_and_candidates("dgx_h200", model, 16, seed=0)
  assert megatron_table.refresh_f0(str(path), problem, cands) == (22, 2)
  assert path.read_text() == open(src).read()
  from autoscout_jax.sim import AnalyticEvaluator
  from autoscout_jax.targets import megatron
  te = megatron.space(problem.workload, problem.cluster)
  assert "transformer_impl" not in te.facts and problem.space.facts["transformer_impl"] == "local"
  from autoscout_jax.problem import Problem
  cand = next(c for c in cands if c.values["micro_batch_size"] == 8 and c.values["recompute_granularity"] == "none")
  local_mem = AnalyticEvaluator().evaluate(problem, [cand])[0].metrics.peak_mem_bytes
  te_mem = AnalyticEvaluator().evaluate(Problem(problem.workload, problem.cluster, te, ("analytic",)),
                                        [cand])[0].metrics.peak_mem_bytes
  assert local_mem > 2 * te_mem
  from autoscout_jax.targets import megatron_launch
  args = megatron_launch.artifact(problem.space, cand, problem.workload)["args"]
  assert args[args.index("--transformer-impl") + 1] == "local"
  assert "--transformer-impl" not in megatron_launch.artifact(te, cand, problem.workload)["args"]
  with pytest.raises(ValueError, match="transformer_impl"):
    megatron.space(problem.workload, problem.cluster, transformer_impl="apex")


def test_committed_maxtext_gpu_table_is_complete_for_one_gpu():
  """experiments/scoutbench/real_maxtext_gpu1.csv (scripts/gpu_bench.sh on an
  H200): every candidate of the gpu preset on 1 device has its 3 timed blocks."""
  import csv
  from autoscout_jax.tools import maxtext_table as mt
  path = os.path.join(ROOT, "experiments", "scoutbench", "real_maxtext_gpu1.csv")
  with open(path) as f:
    rows = list(csv.DictReader(l for l in f if not l.startswith("#")))
  cands = mt.candidates(mt.GPU, 1)
  assert len(cands) == 3 and mt.done_keys(path) >= {mt.key_of(c) for c in cands}
  assert len(rows) == 9 and {r["status"] for r in rows} == {"ok"}
  assert sorted(int(r["repeat"]) for r in rows) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
  assert "device_kind=NVIDIA H200" in open(path).read()


@needs_megatron
@pytest.mark.skipif(_cuda(), reason="this machine has a GPU: the search would train")
def test_megatron_gpu_search_refuses_up_front_without_a_gpu(tmp_path):
  """experiments/quickstart/megatron_gpu.gin (F0 + megatron-core F3 on one
  GPU) on a machine without CUDA: one line, exit 2, nothing measured."""
  work = tmp_path / "w"
  proc = subprocess.run([sys.executable, "-m", "autoscout_jax.run",
                         "--gin_file=experiments/quickstart/megatron_gpu.gin", f"--workdir={work}"],
                        capture_output=True, text=True, timeout=300, cwd=ROOT,
                        env={**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"})
  assert proc.returncode == 2, proc.stderr[-2000:]
  last = proc.stderr.strip().splitlines()[-1]
  assert "cannot train here" in last and "no CUDA device" in last
  meas = work / "measurements.jsonl"
  assert not meas.exists() or meas.read_text() == ""
