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
from autoscout_jax.targets import FAMILIES, jax_mesh, launch_artifact, megatron
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
