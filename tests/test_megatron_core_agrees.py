"""The Megatron space's hand constraints (targets/megatron.py) against
megatron-core's own verdict (autoscout_jax/megatron_core.py) on every
candidate of the bench Megatron spaces. Needs the 'megatron' extra."""

import itertools
import os

import pytest

from autoscout_jax import megatron_core
from autoscout_jax.bench import tasks
from autoscout_jax.bench.__main__ import load_task_file

pytestmark = pytest.mark.skipif(not megatron_core.available(),
                                reason="the 'megatron' extra (megatron-core) is not installed: "
                                       "pip install -e '.[megatron]'")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Hand constraints about what megatron-core itself checks. The others are
# not megatron-core's: batch and micro-batch arithmetic, tp_comm_overlap and
# MoE-with-tp needing sequence parallelism (Megatron-LM's argument
# validation), the expert rank grid (parallel_state at start-up), the
# context-parallel sequence chunks (the data path), and recompute_layers_fit
# (megatron-core accepts a larger recompute_num_layers and clamps it; the
# space leaves those duplicates out).
COVERED = {"tp_divides_heads", "pp_divides_layers", "ep_divides_experts", "etp_divides_expert_ffn"}
STRUCTURAL = ("expert_model_parallel_size", "expert_tensor_parallel_size", "virtual_pipeline_model_parallel_size",
              "sequence_parallel", "tp_comm_overlap", "recompute_granularity", "recompute_method",
              "recompute_num_layers")
DEGREES = ("tensor_model_parallel_size", "pipeline_model_parallel_size", "context_parallel_size",
           "data_parallel_size")


def _bench_megatron_spaces():
  out = []
  for name in sorted(os.listdir(os.path.join(ROOT, "gin", "bench"))):
    import gin
    gin.add_config_file_search_path(ROOT)
    spec = load_task_file(os.path.join(ROOT, "gin", "bench", name))
    space = spec.space_fn(spec.workload, spec.cluster, **spec.space_kwargs)
    if space.family != "megatron":  # the space names its family (targets/megatron.py)
      continue
    out.append((spec.name, spec.workload, tasks.restrict_space(space, spec.restrict)))
  return out


def _candidates(space, n):
  """Every combination of the knobs megatron-core sees (the other knobs at
  their defaults), valid or not; data parallelism, which megatron-core does
  not see, at its first value that completes the device count."""
  extra = {k: space[k].finite_values() for k in STRUCTURAL if k in space}
  seen = set()
  for degrees in itertools.product(*(space[k].values for k in DEGREES)):
    if degrees[0] * degrees[1] * degrees[2] * degrees[3] != n or degrees[:3] in seen:
      continue
    seen.add(degrees[:3])
    for rest in itertools.product(*extra.values()):
      v = dict(zip(DEGREES, degrees), **dict(zip(extra, rest)))
      if v["pipeline_model_parallel_size"] == 1:
        v.pop("virtual_pipeline_model_parallel_size", None)
      if v["tensor_model_parallel_size"] == 1:
        v.pop("sequence_parallel", None)
        v.pop("tp_comm_overlap", None)
      if v["recompute_granularity"] != "full":
        v.pop("recompute_method", None)
        v.pop("recompute_num_layers", None)
      yield space.make(v)


@pytest.mark.slow
def test_hand_constraints_agree_with_megatron_core_on_the_bench_spaces():
  spaces = _bench_megatron_spaces()
  assert {n for n, _, _ in spaces} >= {"gpt3_175b_a100_1024", "llama3_70b_h100_256", "mixtral_8x7b_h100_64"}
  disagree, checked = [], 0
  for name, workload, space in spaces:
    seen = set()
    for cand in _candidates(space, space.facts["num_devices"]):
      if cand in seen:
        continue
      seen.add(cand)
      hand = sorted({v.constraint for v in space.validate(cand)} & COVERED)
      ours_ok = not hand
      theirs = megatron_core.verdict(workload, cand.values)
      checked += 1
      if ours_ok != (theirs is None):
        disagree.append((name, {k: cand.values.get(k) for k in DEGREES + STRUCTURAL if k in cand.values},
                         hand, theirs))
  assert checked > 500
  assert not disagree, f"{len(disagree)} of {checked} disagree, e.g. {disagree[:3]}"


def test_verdict_names_megatron_cores_reason():
  from autoscout_jax.sim.catalog import make_workload
  w = make_workload("llama3_8b", 8)
  assert megatron_core.verdict(w, {"tensor_model_parallel_size": 2, "sequence_parallel": True}) is None
  assert "sequence parallel" in megatron_core.verdict(w, {"sequence_parallel": True}).lower()
  assert megatron_core.verdict(w, {"tensor_model_parallel_size": 16}) is not None  # 8 query groups
  c = megatron_core.constraint(w)
  assert c.check({"tensor_model_parallel_size": 3}, {}).startswith("megatron-core rejects it")


def test_validated_space_rejects_what_megatron_core_rejects():
  from autoscout_jax.sim.catalog import make_workload
  from autoscout_jax.sim.hardware import make_cluster
  from autoscout_jax.targets.megatron import space as megatron_training_space
  w = make_workload("llama3_8b", 8)
  space = megatron_training_space(w, make_cluster("dgx_h100", 8))
  checked = megatron_core.validated_space(space, w)
  good = space.make(w.default_values)
  assert not checked.validate(good)
  # 2 stages x 3 virtual stages cannot split 32 layers (+ embedding/loss)
  bad = dict(good.values, pipeline_model_parallel_size=2, data_parallel_size=4,
             virtual_pipeline_model_parallel_size=3)
  names = {v.constraint for v in checked.validate(checked.make(bad))}
  assert {"megatron_core", "pp_divides_layers"} <= names
  assert "megatron_core" not in {v.constraint for v in space.validate(space.make(bad))}
