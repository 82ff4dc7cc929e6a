"""F2 of the maxtext family (MaxText's AOT compile in the 3.12 child) and
the launch artifact: the `key=value` lines of maxtext_overrides.txt start
MaxText's own trainer."""

import os
import subprocess

import pytest

from autoscout_jax import maxtext_env
from autoscout_jax.local.runner import Outcome
from autoscout_jax.maxtext_compile import MaxTextCompileEvaluator, compile_target, tpu_topology
from autoscout_jax.measurement import Metrics
from autoscout_jax.problem import Problem
from autoscout_jax.sim import hardware
from autoscout_jax.targets import launch_files
from autoscout_jax.targets import maxtext as mt
from autoscout_jax.workload import LocalCluster, ModelConfig, Workload

TINY = ModelConfig("tiny_moe", num_layers=4, hidden_size=64, num_heads=4, ffn_hidden_size=128, vocab_size=256,
                   seq_len=64, gated_mlp=True, num_experts=4, moe_top_k=2)
MISSING = maxtext_env.missing()
needs_maxtext = pytest.mark.skipif(MISSING is not None, reason=f"MaxText's Python 3.12 env: {MISSING}")


def test_tpu_topology_names_and_refusals():
  assert tpu_topology(hardware.make_cluster("tpu_v5p", 128, 64)) == "v5p-128"
  assert tpu_topology(hardware.make_cluster("tpu_v5e", 256)) == "v5e-256"
  assert compile_target(hardware.make_cluster("tpu_v5p", 128, 64)) == {"kind": "tpu", "topology": "v5p-128",
                                                                       "num_slices": 2}
  assert compile_target(LocalCluster(8)) == {"kind": "local"}
  ev = MaxTextCompileEvaluator(python="/nonexistent/python3.12")
  assert "cannot run MaxText" in ev.check_fits(Workload("t", TINY, 16), LocalCluster(8))
  why = MaxTextCompileEvaluator().check_fits(Workload("t", TINY, 16), hardware.make_cluster("dgx_h100", 8))
  assert (why == MISSING) if MISSING else ("TPU topologies" in why)


def test_a_compiled_peak_above_the_device_memory_is_oom():
  wl, cl = Workload("t", TINY, 16), LocalCluster(8, memory_bytes_per_device=1000)
  cand = mt.space(wl, cl).make({})
  fits = Outcome(Metrics(feasible=True, peak_mem_bytes=5000.0, extra={"temp_bytes": 4000}), 2.0, {})
  m = MaxTextCompileEvaluator()._measurement(wl, cl, {"kind": "local"}, cand, fits)
  assert not m.feasible and m.metrics.failure_kind == "oom" and m.metrics.peak_mem_bytes == 5000.0
  assert m.cost_s == 16.0 and m.provenance["cost_unit"] == "device_s"


@needs_maxtext
@pytest.mark.slow
def test_maxtext_compiles_candidates_for_this_machine():
  """One candidate compiles (XLA's per-device bytes and flops come back);
  one that MaxText's pipeline cannot shard fails at trace time: data."""
  wl, cl = Workload("tiny_moe", TINY, global_batch=16), LocalCluster(8, platform="cpu")
  space = mt.space(wl, cl)
  good = space.make({mt.ici("fsdp"): 2, mt.ici("tensor"): 2, mt.ici("expert"): 2})
  late = space.make({mt.ici("fsdp"): 2, mt.ici("pipeline"): 2, mt.ici("expert"): 2, "num_pipeline_microbatches": 4,
                     "per_device_batch_size": 1, "gradient_accumulation_steps": 2})
  assert not space.validate(good) and [v.constraint for v in space.validate(late)] == list(mt.LATER)
  ms = MaxTextCompileEvaluator(timeout_s=600).evaluate(Problem(wl, cl, space, ("compile",)), [good, late])
  assert ms[0].feasible and ms[0].metrics.peak_mem_bytes > 0 and ms[0].metrics.flops_per_step > 0, ms[0].metrics
  assert ms[0].metrics.extra["mesh_shape"] == {"fsdp": 2, "tensor": 2, "expert": 2}
  assert ms[0].provenance["maxtext_version"] and ms[0].provenance["device_count"] == 8
  assert not ms[1].feasible and ms[1].metrics.failure_kind == "compile_error"
  assert "not evenly divisible" in ms[1].metrics.error


@needs_maxtext
@pytest.mark.slow
def test_report_overrides_start_maxtexts_trainer(tmp_path):
  """maxtext_overrides.txt, as report.md shows it, trains 2 steps with
  `python -m maxtext.trainers.pre_train.train` on 8 CPU devices."""
  wl, cl = Workload("tiny_moe", TINY, global_batch=16), LocalCluster(8, platform="cpu")
  space = mt.space(wl, cl)
  cand = space.make({mt.ici("fsdp"): 2, mt.ici("tensor"): 2, mt.ici("expert"): 2, "per_device_batch_size": 1,
                     "gradient_accumulation_steps": 2, "remat_policy": "minimal"})
  text = launch_files(space, cand, wl, cl)["maxtext_overrides.txt"]
  lines = [l for l in text.splitlines() if l and not l.startswith("#")]
  cmd = [maxtext_env.find_python(), "-m", "maxtext.trainers.pre_train.train", *lines, "steps=2",
         "run_name=artifact_check", f"base_output_directory={tmp_path}"]
  proc = subprocess.run(cmd, env=maxtext_env.child_env(8), cwd=tmp_path, capture_output=True, text=True, timeout=900)
  out = proc.stdout + proc.stderr
  assert proc.returncode == 0, out[-3000:]
  assert "completed step: 1" in out, out[-3000:]


@needs_maxtext
@pytest.mark.slow
def test_maxtext_compiles_for_a_tpu_topology_and_reports_hbm_oom():
  """MaxText's AOT path for v5e-16 from this CPU host (libtpu): a small
  batch fits with XLA's per-device bytes; 64 sequences of a
  128k-vocabulary head per chip exceed v5e's 16 GiB: an 'oom' measurement,
  not an exception. Splash attention (a Pallas kernel) compiles: the child
  loads its own libtpu, not the one the search's JAX points
  TPU_LIBRARY_PATH at."""
  model = ModelConfig("small", num_layers=2, hidden_size=256, num_heads=2, ffn_hidden_size=512, vocab_size=128256,
                      seq_len=1024, gated_mlp=True, kv_channels=128)
  wl, cl = Workload("small", model, global_batch=1024), hardware.make_cluster("tpu_v5e", 16)
  space = mt.space(wl, cl)
  small = space.make({"per_device_batch_size": 1, "gradient_accumulation_steps": 64})
  big = space.make({"per_device_batch_size": 64, "gradient_accumulation_steps": 1, "remat_policy": "minimal"})
  assert small.values["attention"] == "flash"
  ms = MaxTextCompileEvaluator(timeout_s=900).evaluate(Problem(wl, cl, space, ("compile",)), [small, big])
  assert ms[0].feasible and 0 < ms[0].metrics.peak_mem_bytes < 16 * 2**30, ms[0].metrics
  assert ms[0].provenance["target"] == {"kind": "tpu", "topology": "v5e-16", "num_slices": 1}
  assert ms[0].provenance["cost_unit"] == "host_s" and ms[0].cost_s > 0
  assert not ms[1].feasible and ms[1].metrics.failure_kind == "oom", ms[1].metrics.error
