"""F2 at cluster scale: compile tiny models for a TPU v5e 2x2 topology from
this CPU host (needs the 'tpu' extra; skipped with a reason without it)."""

import importlib.util

import pytest

from autoscout_jax.compile import CompileAtScaleEvaluator, TargetError, compile_target, missing_extra
from autoscout_jax.measurement import INVALID, OOM
from autoscout_jax.problem import Problem
from autoscout_jax.sim.hardware import make_cluster
from autoscout_jax.sim.spaces import jax_mesh_training_space
from autoscout_jax.workload import ModelConfig, Workload

needs_tpu = pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                               reason="the 'tpu' extra (libtpu) is not installed: pip install -e '.[tpu]'")

# Parameters and Adam state dominate (wide layers, short sequences), so the
# per-device memory must follow how they are sharded.
WIDE = ModelConfig("wide", num_layers=2, hidden_size=512, num_heads=4, ffn_hidden_size=2048,
                   vocab_size=4096, seq_len=128, num_kv_heads=2, gated_mlp=True)
# 2 x 262144 x 4096 embedding/output parameters: ~34 GB of weights and Adam
# state replicated on each 16 GiB v5e chip.
HUGE = ModelConfig("huge", num_layers=1, hidden_size=4096, num_heads=8, ffn_hidden_size=512,
                   vocab_size=262144, seq_len=128)


def _cand(space, **axes):
  values = dict(ici_data=1, ici_fsdp=1, ici_tensor=1, ici_sequence=1, ici_expert=1, ici_stage=1,
                dcn_data=1, dcn_fsdp=1, dcn_stage=1, per_device_batch_size=1, remat_policy="full",
                latency_hiding_scheduler=True, async_collectives=True)
  values.update(axes)
  if values["ici_tensor"] > 1:
    values.setdefault("collective_matmul", False)
  return space.make(values)


@pytest.fixture(scope="module")
def v5e_2x2():
  return make_cluster("tpu_v5e", 4)


@pytest.fixture(scope="module")
def wide_run(v5e_2x2, tmp_path_factory):
  workload = Workload("wide", WIDE, global_batch=4)
  space = jax_mesh_training_space(workload, v5e_2x2)
  ev = CompileAtScaleEvaluator(cache_dir=str(tmp_path_factory.mktemp("cache")), timeout_s=300)
  cands = [_cand(space, ici_data=4), _cand(space, ici_data=2, ici_fsdp=2), _cand(space, ici_fsdp=4),
           _cand(space, ici_tensor=4)]  # the last: 2 kv heads cannot split 4 ways
  return workload, space, ev, cands, ev.evaluate(Problem(workload, v5e_2x2, space, ('compile',)), cands)


def test_cluster_carries_its_compile_target():
  t = compile_target(make_cluster("tpu_v5p", 128, devices_per_node=64))
  assert (t.platform, t.topology, t.num_slices, t.num_devices) == ("tpu", "v5p:4x4x4", 2, 128)
  assert compile_target(make_cluster("tpu_v5e", 256)).topology == "v5e:16x16"
  g = compile_target(make_cluster("dgx_h100", 64))
  assert (g.platform, g.topology, g.gpu_config) == ("gpu", "8x1x8", "h100_sxm.txtpb")
  assert g.usable_bytes < make_cluster("dgx_h100", 64).device.hbm_bytes


def test_refuses_without_the_extra_in_one_line(monkeypatch, v5e_2x2):
  from autoscout_jax.compile import targets
  from autoscout_jax.workload import LocalCluster
  workload = Workload("wide", WIDE, global_batch=4)
  ev = CompileAtScaleEvaluator(cache_dir="")
  assert "simulated cluster" in ev.check_fits(workload, LocalCluster())
  monkeypatch.setitem(targets.EXTRAS, "tpu", ("no_such_compiler_module", 'pip install -e ".[tpu]"'))
  msg = ev.check_fits(workload, v5e_2x2)
  assert "'tpu' extra" in msg and '.[tpu]' in msg and "\n" not in msg
  space = jax_mesh_training_space(workload, v5e_2x2)
  with pytest.raises(ValueError, match="'tpu' extra"):
    ev.evaluate(Problem(workload, v5e_2x2, space, ('compile',)), [])


@needs_tpu
def test_memory_falls_as_fsdp_grows(wide_run):
  ms = wide_run[-1][:3]
  assert all(m.feasible for m in ms), [m.metrics.error for m in ms]
  peaks = [m.metrics.peak_mem_bytes for m in ms]
  assert peaks[0] > peaks[1] > peaks[2], peaks
  # fsdp=4 holds a quarter of the float32 weights + grads + two Adam moments
  assert peaks[0] > 2.5 * peaks[2]
  for m in ms:
    assert m.provenance["cost_unit"] == "host_s" and m.cost_s > 0
    assert m.metrics.extra["collectives"], "a sharded step has collectives"
  # every mesh computes the same arithmetic: one flop figure, near 8*N*tokens/devices
  flops = {round(m.metrics.flops_per_step) for m in ms}
  assert len(flops) == 1


@needs_tpu
def test_the_cache_prevents_a_second_compile(wide_run, v5e_2x2):
  workload, space, ev, cands, first = wide_run
  values = dict(cands[1].values, latency_hiding_scheduler=False)  # a runtime flag: same program
  again = ev.evaluate(Problem(workload, v5e_2x2, space, ('compile',)), [cands[1], space.make(values)])
  assert not first[1].metrics.extra["cache_hit"]
  assert all(m.metrics.extra["cache_hit"] for m in again)
  assert {m.metrics.extra["program_key"] for m in again} == {first[1].metrics.extra["program_key"]}
  assert again[0].metrics.peak_mem_bytes == first[1].metrics.peak_mem_bytes
  assert again[0].cost_s < first[1].cost_s


@needs_tpu
def test_over_budget_candidate_is_an_oom_measurement(v5e_2x2, tmp_path):
  workload = Workload("huge", HUGE, global_batch=4)
  space = jax_mesh_training_space(workload, v5e_2x2)
  ev = CompileAtScaleEvaluator(cache_dir=str(tmp_path), timeout_s=300)
  [m] = ev.evaluate(Problem(workload, v5e_2x2, space, ('compile',)), [_cand(space, ici_data=4)])
  assert not m.feasible and m.metrics.failure_kind == OOM, m.metrics.error
  # XLA's verdict names what the program needed: more than the chip's 16 GiB
  assert m.metrics.peak_mem_bytes > 16 * 2**30 and m.metrics.extra["peak_from"] == "xla_oom_message"


@needs_tpu
def test_topology_that_cannot_hold_the_mesh_is_one_line(tmp_path):
  cluster = make_cluster("tpu_v5e", 6, torus=(2, 3))
  workload = Workload("wide", WIDE, global_batch=6)
  space = jax_mesh_training_space(workload, cluster)
  ev = CompileAtScaleEvaluator(cache_dir=str(tmp_path), timeout_s=60)
  with pytest.raises(TargetError) as err:
    ev.evaluate(Problem(workload, cluster, space, ('compile',)), [_cand(space, ici_data=6)])
  assert "v5e:2x3" in str(err.value) and "\n" not in str(err.value)


@needs_tpu
def test_layout_the_model_cannot_take_is_invalid(wide_run):
  m = wide_run[-1][3]
  assert m.metrics.failure_kind == INVALID and "kv heads" in m.metrics.error


@pytest.mark.skipif(importlib.util.find_spec("jax_cuda12_plugin") is None,
                    reason="the 'gpu' extra (CUDA plugin, ~5.5 GB) is not installed: pip install -e '.[gpu]'")
def test_compiles_for_an_h100_node(tmp_path):
  cluster = make_cluster("dgx_h100", 8)
  workload = Workload("wide", WIDE, global_batch=8)
  space = jax_mesh_training_space(workload, cluster)
  ev = CompileAtScaleEvaluator(cache_dir=str(tmp_path), timeout_s=300)
  small, big = ev.evaluate(Problem(workload, cluster, space, ('compile',)), [_cand(space, ici_data=8), _cand(space, ici_fsdp=8)])
  assert small.feasible and big.feasible, (small.metrics.error, big.metrics.error)
  assert small.metrics.peak_mem_bytes > big.metrics.peak_mem_bytes
