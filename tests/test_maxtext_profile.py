"""F3 of the maxtext family (local/maxtext_profile.py): MaxText's own train
step timed for real in a Python 3.12 child, on one process or on two
processes mapped as two slices; failures are recorded measurements."""

import os
import time

import pytest

from autoscout_jax import maxtext_env
from autoscout_jax.local.maxtext_profile import MaxTextProfileEvaluator
from autoscout_jax.problem import Problem
from autoscout_jax.sim import hardware
from autoscout_jax.targets import maxtext as mt
from autoscout_jax.workload import LocalCluster, ModelConfig, Workload

TINY = ModelConfig("tiny_moe", num_layers=2, hidden_size=64, num_heads=4, ffn_hidden_size=128, vocab_size=256,
                   seq_len=64, gated_mlp=True, num_experts=4, moe_top_k=2)
WL = Workload("tiny_moe", TINY, global_batch=16)
MISSING = maxtext_env.missing()
needs_maxtext = pytest.mark.skipif(MISSING is not None, reason=f"MaxText's Python 3.12 env: {MISSING}")


def _cand(space, **values):
  base = {"per_device_batch_size": 2, "gradient_accumulation_steps": 1, "remat_policy": "full"}
  ici = {k: 1 for k in space.names if k.startswith(("ici_", "dcn_"))}
  c = space.make({**ici, **base, **values})
  assert not space.validate(c), space.validate(c)
  return c


def _gone(pid: int, wait_s: float = 10.0) -> bool:
  t0 = time.monotonic()
  while time.monotonic() - t0 < wait_s:
    try:
      os.kill(pid, 0)
      with open(f"/proc/{pid}/stat") as f:
        if f.read().split(")")[-1].split()[0] == "Z":
          return True
    except (ProcessLookupError, OSError):
      return True
    time.sleep(0.1)
  return False


def test_refuses_what_it_cannot_run():
  ev = MaxTextProfileEvaluator(python="/nonexistent/python3.12")
  assert "LocalCluster" in ev.check_fits(WL, hardware.make_cluster("dgx_h100", 8))
  why = ev.check_fits(WL, LocalCluster(8, platform="gpu", num_slices=2))
  assert "num_slices=2" in why
  assert "cannot run MaxText" in ev.check_fits(WL, LocalCluster(8, platform="cpu"))
  with pytest.raises(ValueError, match="timed_steps"):
    MaxTextProfileEvaluator(timed_steps=0)
  # what it measures keys the cache; timeouts do not
  assert MaxTextProfileEvaluator(repeats=2).settings() != MaxTextProfileEvaluator(repeats=3).settings()
  assert MaxTextProfileEvaluator(timeout_s=5).settings() == MaxTextProfileEvaluator(timeout_s=9).settings()


@needs_maxtext
@pytest.mark.slow
def test_one_process_times_steps_and_records_a_crash():
  cluster = LocalCluster(8, platform="cpu")
  space = mt.space(WL, cluster)
  good = _cand(space, ici_tensor_parallelism=2, ici_expert_parallelism=4)
  crashed = _cand(space, ici_data_parallelism=8)
  ev = MaxTextProfileEvaluator(timed_steps=2, repeats=2, faults={crashed.key: "crash"})
  m_crash, m_good = ev.evaluate(Problem(WL, cluster, space), [crashed, good])
  assert m_crash.metrics.failure_kind == "crash" and m_crash.provenance["injected_fault"] == "crash"
  assert m_good.feasible and m_good.metrics.step_time_s > 0 and len(m_good.metrics.extra["step_times_s"]) == 2
  assert m_good.metrics.extra["mesh_shape"] == {"tensor": 2, "expert": 4}
  assert m_good.metrics.peak_mem_bytes > 0 and m_good.cost_s > 0
  assert m_good.provenance["maxtext"] and m_good.provenance["device_count"] == 8


@needs_maxtext
@pytest.mark.slow
def test_two_processes_run_dcn_and_a_dead_process_is_a_failure():
  cluster = LocalCluster(8, platform="cpu", num_slices=2)
  space = mt.space(WL, cluster)
  good = _cand(space, dcn_data_parallelism=2, ici_fsdp_parallelism=2, ici_expert_parallelism=2)
  killed = _cand(space, dcn_fsdp_parallelism=2, ici_tensor_parallelism=4)
  ev = MaxTextProfileEvaluator(timed_steps=2, repeats=1, faults={killed.key: "crash"}, fault_process=1)
  m_good, m_killed = ev.evaluate(Problem(WL, cluster, space), [good, killed])
  assert m_good.feasible, m_good.metrics.error
  assert m_good.metrics.extra["mesh_shape"] == {"data": 2, "fsdp": 2, "expert": 2}
  assert m_good.metrics.extra["process_count"] == 2 and m_good.provenance["processes"] == 2
  assert m_killed.metrics.failure_kind == "crash" and "process 1 of 2 died" in m_killed.metrics.error
  for m in (m_good, m_killed):
    assert all(_gone(p) for p in m.provenance["pids"])
