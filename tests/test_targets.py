"""Target families: one vocabulary per family. A knob added to a family's
target appears in its space, its plan and its launch artifact; the typed
config reads a candidate back; a space names its family, so nothing guesses
one from knob names."""

import dataclasses

import numpy as np
import pytest

from autoscout_jax.problem import Problem
from autoscout_jax.sim import analytic, catalog, hardware
from autoscout_jax.sim.plan import Plan, Recompute, Zero
from autoscout_jax.space import Boolean, Ordinal
from autoscout_jax.targets import FAMILIES, jax_mesh, launch_artifact, megatron, megatron_launch
from autoscout_jax.targets.common import Direct


def test_a_knob_added_to_megatron_reaches_space_plan_and_artifact(monkeypatch):
  # Megatron-LM's --use-flash-attn, declared once, feeding the plan's flash field
  flash = Direct(Boolean("use_flash_attn", default=True, doc="FlashAttention kernels"), "flash")
  monkeypatch.setattr(megatron, "DIRECT", megatron.DIRECT + (flash,))
  wl, cl = catalog.make_workload("llama3_8b", 8), hardware.make_cluster("dgx_h100", 8)
  space = megatron.space(wl, cl, micro_batch_sizes=(1,))
  assert "use_flash_attn" in space.names
  on = space.make({**wl.default_values, "use_flash_attn": True})
  off = on.replace(use_flash_attn=False)
  plan = space.plan(space.table_from_candidates([on, off]), wl, cl)
  assert isinstance(plan, Plan) and list(plan["flash"]) == [1.0, 0.0]
  assert "--use-flash-attn" in launch_artifact(space, on, wl, cl)["args"]
  assert "--use-flash-attn" not in launch_artifact(space, off, wl, cl)["args"]
  assert megatron.Config.from_candidate(off).direct["use_flash_attn"] is False
  # the simulator honours it without a change of its own: no flash, slower
  ms = analytic.AnalyticEvaluator().evaluate(Problem(wl, cl, space, ("analytic",)), [on, off])
  assert ms[0].metrics.step_time_s < ms[1].metrics.step_time_s


def test_a_knob_added_to_jax_mesh_reaches_space_plan_and_artifact(monkeypatch):
  bucket = Direct(Ordinal("bucket_mb", values=(25, 100), default=100), "bucket_bytes", scale=2.0**20)
  monkeypatch.setattr(jax_mesh, "DIRECT", (bucket,))
  wl, cl = catalog.make_workload("llama3_8b", 64), hardware.make_cluster("tpu_v5p", 64)
  space = jax_mesh.space(wl, cl)
  cand = space.sample(np.random.default_rng(0), 1)[0]
  small = cand.replace(bucket_mb=25)
  plan = space.plan(space.table_from_candidates([small]), wl, cl)
  assert plan["bucket_bytes"][0] == 25 * 2.0**20
  art = launch_artifact(space, small, wl, cl)
  assert art["train_step"]["bucket_mb"] == 25 and art["xla_flags_env"] == "LIBTPU_INIT_ARGS"


def test_plans_speak_in_codes_not_magic_numbers():
  wl, cl = catalog.make_workload("llama3_8b", 8), hardware.make_cluster("dgx_h100", 8)
  space = megatron.space(wl, cl)
  full = space.make({**wl.default_values, "recompute_granularity": "full", "use_distributed_optimizer": False})
  cfg = megatron.Config.from_candidate(full)
  assert cfg.recompute is Recompute.FULL and not cfg.use_distributed_optimizer
  plan = space.plan(space.table_from_candidates([full, space.make(wl.default_values)]), wl, cl)
  assert list(plan["recompute"]) == [Recompute.FULL, Recompute.SELECTIVE]
  assert list(plan["zero"]) == [Zero.NONE, Zero.OPTIMIZER]
  mesh = jax_mesh.space(wl, hardware.make_cluster("tpu_v5p", 8))
  minimal = mesh.sample(np.random.default_rng(1), 1)[0].replace(remat_policy="minimal")
  assert mesh.plan(mesh.table_from_candidates([minimal]), wl, cl)["recompute"][0] == Recompute.DOTS
  with pytest.raises(ValueError, match="unknown knob"):
    megatron.Config.from_candidate({**full.values, "ici_fsdp": 2})


def test_every_family_names_itself():
  assert set(FAMILIES) == {"local", "megatron", "jax_mesh", "maxtext", "serving"}
  for name, module in FAMILIES.items():
    assert module.FAMILY == name and callable(module.space) and dataclasses.is_dataclass(module.Config)


def test_megatron_fsdp2_knob_shards_state_and_launches_as_megatron_allows():
  # Megatron-LM's torch FSDP2: active only where Megatron runs it (no
  # pipeline, no distributed optimizer, untied embeddings)
  wl8 = catalog.make_workload("llama3_8b", 8, global_batch=128)
  space8 = megatron.space(wl8, hardware.make_cluster("dgx_h100", 8))
  assert "use_torch_fsdp2" in space8.names
  assert "use_torch_fsdp2" not in megatron.space(catalog.make_workload("gpt_3.6b", 8),
                                                 hardware.make_cluster("dgx_h100", 8)).names
  assert {w.parent for w in space8["use_torch_fsdp2"].when} == {"use_distributed_optimizer", "pipeline_model_parallel_size"}
  mems, steps = [], []
  for n in (8, 16, 64):
    wl, cl = catalog.make_workload("llama3_8b", n, global_batch=128), hardware.make_cluster("dgx_h100", n)
    space = megatron.space(wl, cl)
    base = {**wl.default_values, "use_distributed_optimizer": False, "pipeline_model_parallel_size": 1,
            "context_parallel_size": 1, "tensor_model_parallel_size": 1, "data_parallel_size": n,
            "micro_batch_size": 1}
    for k in ("sequence_parallel", "tp_comm_overlap", "virtual_pipeline_model_parallel_size"):
      base.pop(k, None)
    ddp, fsdp = space.make(base), space.make({**base, "use_torch_fsdp2": True})
    assert not space.validate(fsdp)
    plan = space.plan(space.table_from_candidates([ddp, fsdp]), wl, cl)
    assert list(plan["zero"]) == [Zero.NONE, Zero.FULL] and plan["shard"][1] == n
    assert plan["overlap_param"][1] == 1.0  # FSDP2 prefetches the next unit's gather
    ms = analytic.AnalyticEvaluator().evaluate(Problem(wl, cl, space, ("analytic",)), [ddp, fsdp])
    assert ms[1].metrics.peak_mem_bytes < ms[0].metrics.peak_mem_bytes
    mems.append(ms[1].metrics.peak_mem_bytes)
    cfg = megatron.Config.from_candidate(fsdp)
    assert cfg.use_torch_fsdp2 and not cfg.use_distributed_optimizer
    args = launch_artifact(space, fsdp, wl, cl)["args"]
    assert "--use-torch-fsdp2" in args and "--no-gradient-accumulation-fusion" in args
    assert "--use-torch-fsdp2" not in launch_artifact(space, ddp, wl, cl)["args"]
    sh = megatron_launch.launch_sh(space, fsdp, wl, cl)
    assert "--use-torch-fsdp2" in sh and "CUDA_DEVICE_MAX_CONNECTIONS=1 " not in sh  # Megatron asserts > 1
  # sharded parameters, gradients and Adam state: memory falls with the shard count
  assert mems[0] > mems[1] > mems[2]
  # the 8B model's replicated state (16 B/param) does not fit one H100; sharded 8 ways it does
  assert mems[0] < 80e9
