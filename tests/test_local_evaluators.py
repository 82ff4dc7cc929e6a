"""F2 / F3 evaluators end to end: real child processes on 8 virtual CPU devices.

Each evaluate() call starts at least one child (~2 s of JAX import), so the
tests batch what they check into few calls."""

import dataclasses

import pytest

from autoscout_jax.local import CompileEvaluator, LocalSetupError, ProfileEvaluator
from autoscout_jax.local import local_training_space
from autoscout_jax.problem import Problem
from autoscout_jax.workload import LocalCluster, ModelConfig, Workload

MODEL = ModelConfig("tiny", num_layers=2, hidden_size=64, num_heads=4, num_kv_heads=2,
                    ffn_hidden_size=128, vocab_size=256, seq_len=32, gated_mlp=True)
WORKLOAD = Workload("tiny", MODEL, global_batch=16, precision="fp32")
CLUSTER = LocalCluster(num_devices=8, platform="cpu")
SPACE = local_training_space(WORKLOAD, CLUSTER)
PROBLEM = Problem(WORKLOAD, CLUSTER, SPACE, ("compile", "profile"))


def cand(**values):
  base = {"data": 1, "fsdp": 1, "tensor": 1}
  c = SPACE.make({**base, **values})
  assert SPACE.is_valid(c), SPACE.validate(c)
  return c


def test_compile_records_memory_and_flops_and_survives_a_crash():
  crash = cand(data=4, fsdp=2)
  plain = cand(data=8)
  looped = cand(data=2, fsdp=2, tensor=2, scan_layers=True, num_microbatches=2)
  ev = CompileEvaluator(timeout_s=240, faults={crash.key: "crash"})
  ms = ev.evaluate(PROBLEM, [crash, plain, looped])
  assert [m.candidate for m in ms] == [crash, plain, looped]
  assert all(m.fidelity == "compile" for m in ms)
  assert ms[0].metrics.failure_kind == "crash" and "SIGABRT" in ms[0].metrics.error
  for m in ms[1:]:  # measured by a fresh child after the crash
    assert m.feasible, m.metrics.error
    assert m.metrics.peak_mem_bytes > 0 and m.metrics.flops_per_step > 0
    assert m.metrics.step_time_s is None  # compiled, never run
    assert m.cost_s == pytest.approx(8 * m.wall_s) and m.wall_s > 0
    assert m.workload_key == WORKLOAD.key and m.cluster_key == CLUSTER.key
  a, b = ms[1].metrics, ms[2].metrics
  # per-device flops of a step do not depend on looping over layers and
  # micro-batches, although XLA counts a loop body once
  assert 0.8 < a.flops_per_step / b.flops_per_step < 1.25
  assert b.extra["xla_flops_loop_bodies_once"] < 0.6 * b.flops_per_step
  # sharding over 8 devices holds fewer parameter bytes per device than replication
  assert b.extra["argument_bytes"] < a.extra["argument_bytes"]


def test_hang_oom_and_oom_kill_become_failures_and_the_batch_goes_on():
  hang, killed, oom = cand(data=8), cand(fsdp=8), cand(data=2, fsdp=4)
  ev = CompileEvaluator(timeout_s=3, faults={hang.key: "hang", killed.key: "oom_kill",
                                             oom.key: "oom"})
  ms = ev.evaluate(PROBLEM, [hang, killed, oom])
  kinds = [m.metrics.failure_kind for m in ms]
  assert kinds == ["timeout", "oom", "oom"]
  assert ms[0].wall_s >= 3 and ms[0].cost_s >= 24
  assert "SIGKILL" in ms[1].metrics.error and "RESOURCE_EXHAUSTED" in ms[2].metrics.error
  assert all(not m.feasible for m in ms)


def test_profile_times_steps_with_provenance():
  c = cand(data=2, fsdp=2, tensor=2, remat_policy="dots_saveable")
  ev = ProfileEvaluator(warmup_steps=1, timed_steps=3, timeout_s=240)
  (m,) = ev.evaluate(PROBLEM, [c])
  assert m.fidelity == "profile" and m.feasible, m.metrics.error
  met = m.metrics
  assert met.step_time_s > 0 and len(met.extra["step_times_s"]) == 3
  assert met.step_time_s == sorted(met.extra["step_times_s"])[1]  # the median
  assert met.tokens_per_s == pytest.approx(16 * 32 / met.step_time_s)
  assert met.mfu is None  # no nominal peak for CPUs
  assert met.peak_mem_bytes > 0 and met.flops_per_step > 0  # the F2 figures too
  p = m.provenance
  assert p["platform"] == "cpu" and p["device_count"] == 8 and p["evaluator"] == "local.profile"
  assert p["jax_version"] and p["jaxlib_version"] and p["device_kind"]
  assert not any("host" in k for k in p)


def test_a_machine_that_cannot_serve_the_cluster_is_one_clear_error():
  # more GPUs than any machine has: no GPU backend here, too few GPUs elsewhere
  gpu = LocalCluster(num_devices=4096, platform="gpu")
  with pytest.raises(LocalSetupError, match="gpu"):
    CompileEvaluator(startup_timeout_s=120).evaluate(dataclasses.replace(PROBLEM, cluster=gpu),
                                                     [cand(data=8)])


def test_bad_arguments_are_rejected():
  with pytest.raises(ValueError, match="unknown fault"):
    CompileEvaluator(faults={"abc": "explode"})
  with pytest.raises(ValueError, match="timed_steps"):
    ProfileEvaluator(timed_steps=0)
  moe = Workload("moe", ModelConfig("moe", 2, 64, 4, 128, 256, 32, num_experts=4, moe_top_k=2), 16)
  with pytest.raises(ValueError, match="mixture-of-experts"):
    CompileEvaluator().evaluate(dataclasses.replace(PROBLEM, workload=moe), [cand(data=8)])
  assert CompileEvaluator().evaluate(PROBLEM, []) == []
