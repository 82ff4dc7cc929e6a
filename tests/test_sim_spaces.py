"""The Megatron and JAX-mesh simulator spaces: valid samples, conditional
knobs, named constraints, and the vectorized enumeration."""

import numpy as np
import pytest

from autoscout_jax.sim import catalog, hardware
from autoscout_jax.space import SpaceError
from autoscout_jax.targets import jax_mesh, megatron
from autoscout_jax.workload import ModelConfig, Workload


@pytest.fixture(scope="module")
def gpt_space():
  wl = catalog.make_workload("gpt_18.4b", 64)
  return megatron.space(wl, hardware.make_cluster("dgx_h100", 64)), wl


@pytest.fixture(scope="module")
def moe_space():
  wl = catalog.make_workload("mixtral_8x7b", 64)
  return megatron.space(wl, hardware.make_cluster("dgx_h100", 64)), wl


def test_knob_names_are_megatrons(gpt_space):
  space, _ = gpt_space
  for name in ("tensor_model_parallel_size", "pipeline_model_parallel_size", "context_parallel_size",
               "sequence_parallel", "use_distributed_optimizer", "micro_batch_size", "recompute_granularity",
               "recompute_method", "recompute_num_layers", "overlap_grad_reduce", "overlap_param_gather",
               "ddp_bucket_size", "tp_comm_overlap", "virtual_pipeline_model_parallel_size"):
    assert name in space.names
  assert "expert_model_parallel_size" not in space.names  # dense model


def test_samples_are_valid_and_respect_the_device_count(gpt_space):
  space, wl = gpt_space
  for c in space.sample(np.random.default_rng(0), 60):
    assert space.validate(c) == []
    v = c.values
    assert (v["tensor_model_parallel_size"] * v["pipeline_model_parallel_size"] * v["context_parallel_size"]
            * v["data_parallel_size"]) == 64
    assert wl.global_batch % (v["data_parallel_size"] * v["micro_batch_size"]) == 0


def test_conditional_knobs_exist_only_under_their_parent(gpt_space):
  space, _ = gpt_space
  seen = set()
  for c in space.sample(np.random.default_rng(1), 300):
    v = c.values
    assert ("sequence_parallel" in v) == (v["tensor_model_parallel_size"] > 1)
    assert ("tp_comm_overlap" in v) == (v["tensor_model_parallel_size"] > 1)
    assert ("virtual_pipeline_model_parallel_size" in v) == (v["pipeline_model_parallel_size"] > 1)
    assert ("recompute_method" in v) == (v["recompute_granularity"] == "full")
    assert ("recompute_num_layers" in v) == (v["recompute_granularity"] == "full")
    assert ("overlap_grad_reduce" in v) == v["use_distributed_optimizer"]
    assert ("overlap_param_gather" in v) == v["use_distributed_optimizer"]
    seen.add((v["tensor_model_parallel_size"] > 1, v["recompute_granularity"]))
  assert len(seen) == 6  # both sides of every condition were sampled


def test_named_constraints_explain_themselves():
  wl = catalog.make_workload("gpt_18.4b", 64, global_batch=64)
  space = megatron.space(wl, hardware.make_cluster("dgx_h100", 64))
  base = dict(wl.default_values)
  cases = {
      "tp_divides_heads": dict(tensor_model_parallel_size=32, data_parallel_size=2),
      "pp_divides_layers": dict(tensor_model_parallel_size=8, pipeline_model_parallel_size=8, data_parallel_size=1,
                                virtual_pipeline_model_parallel_size=3),
      "micro_batches_fill_pipeline": dict(tensor_model_parallel_size=1, pipeline_model_parallel_size=4,
                                          data_parallel_size=16, micro_batch_size=2,
                                          virtual_pipeline_model_parallel_size=2),
      "batch_divides": dict(micro_batch_size=16, tensor_model_parallel_size=1, data_parallel_size=64),
      "tp_comm_overlap_needs_sp": dict(sequence_parallel=False, tp_comm_overlap=True),
  }
  for name, change in cases.items():
    if "tensor_model_parallel_size" in change and change["tensor_model_parallel_size"] not in \
        space["tensor_model_parallel_size"].values:
      continue
    cand = space.make({**base, **change})
    names = [v.constraint for v in space.validate(cand)]
    assert name in names, (name, names)


def test_tp_not_dividing_heads_is_named():
  model = ModelConfig("odd", 12, 768, 12, 3072, 1000, 512)
  wl = Workload("odd", model, global_batch=64)
  space = megatron.space(wl, hardware.make_cluster("dgx_h100", 16))
  assert 8 not in space["tensor_model_parallel_size"].values  # 12 heads: tp in {1, 2, 4}
  cand = space.make(tensor_model_parallel_size=4, pipeline_model_parallel_size=1, context_parallel_size=1,
                    data_parallel_size=4, micro_batch_size=1)
  assert space.validate(cand) == []


def test_moe_space_folds_expert_parallelism_into_data_parallelism(moe_space):
  space, _ = moe_space
  for c in space.sample(np.random.default_rng(2), 100):
    v = c.values
    assert 8 % v["expert_model_parallel_size"] == 0
    ranks = v["tensor_model_parallel_size"] * v["context_parallel_size"] * v["data_parallel_size"]
    assert ranks % (v["expert_model_parallel_size"] * v["expert_tensor_parallel_size"]) == 0
    if v["tensor_model_parallel_size"] > 1:
      assert v["sequence_parallel"]


def test_a_layout_that_cannot_exist_is_one_clear_error():
  model = ModelConfig("prime", 9, 70, 7, 280, 100, 14)  # 7 heads, 9 layers
  wl = Workload("prime", model, global_batch=3)
  with pytest.raises(SpaceError, match="no tensor x pipeline x context x data layout of 8 devices"):
    megatron.space(wl, hardware.make_cluster("dgx_h100", 8))


def test_vectorized_enumeration_equals_the_core_recursion():
  model = ModelConfig("tiny", 4, 64, 4, 256, 128, 64)
  wl = Workload("tiny", model, global_batch=16)
  space = megatron.space(wl, hardware.make_cluster("dgx_h100", 4), max_tp=2, max_cp=2,
                                         micro_batch_sizes=(1, 2))
  fast = set(space.candidates_from_table(space.enumerate_table()))
  slow = set(super(type(space), space).enumerate())  # the core SearchSpace recursion
  assert fast == slow and len(fast) > 100


def test_jax_mesh_space_products_and_conditions():
  wl = catalog.make_workload("gpt_22b", 128, space="jax_mesh", devices_per_slice=64)
  space = jax_mesh.space(wl, hardware.make_cluster("tpu_v5p", 128, devices_per_node=64))
  for c in space.sample(np.random.default_rng(3), 100):
    v = c.values
    assert space.validate(c) == []
    assert np.prod([v[k] for k in jax_mesh.ICI]) == 64
    assert np.prod([v[k] for k in jax_mesh.DCN]) == 2
    assert ("collective_matmul" in v) == (v["ici_tensor"] > 1)
  for flag in ("latency_hiding_scheduler", "async_collectives", "remat_policy", "per_device_batch_size"):
    assert flag in space.names


def test_plan_arrays_place_groups_on_the_right_tier(gpt_space):
  space, wl = gpt_space
  cluster = hardware.make_cluster("dgx_h100", 64)
  inside = space.make({**wl.default_values, "tensor_model_parallel_size": 8, "data_parallel_size": 8})
  plan = space.plan(space.table_from_candidates([inside]), wl, cluster)
  assert plan["tp_local"][0] == 8  # tp = 8 rides NVLink
  assert plan["dp_local"][0] == 1  # its data-parallel peers sit in other nodes
  assert plan["zero"][0] == 1 and plan["shard"][0] == 8  # distributed optimizer = ZeRO-1 over dp


def _mixed_batch(space, rng, n=120):
  """Valid samples, unconstrained tree samples (many break a constraint) and
  structurally broken points (unknown knob, wrong product, bad domain)."""
  from autoscout_jax.space import Candidate
  out = list(space.sample(rng, n // 3))
  out += [Candidate.of(space._sample_raw(rng)) for _ in range(n // 3)]
  first = space.groups[0].names[0]
  for c in out[: n // 9]:
    out.append(c.replace(**{first: c[first] * 2}))  # product off
  out.append(out[0].replace(**{first: 3}))  # outside the domain
  out.append(Candidate.of({**out[0].values, "no_such_knob": 1}))
  return out


@pytest.mark.parametrize("which", ["gpt", "moe", "mesh"])
def test_batch_validation_equals_one_by_one(which, gpt_space, moe_space):
  if which == "mesh":
    wl = catalog.make_workload("gpt_22b", 128, space="jax_mesh", devices_per_slice=64)
    space = jax_mesh.space(wl, hardware.make_cluster("tpu_v5p", 128, devices_per_node=64))
  else:
    space = (gpt_space if which == "gpt" else moe_space)[0]
  batch = _mixed_batch(space, np.random.default_rng(7))
  one = [space.validate(c) for c in batch]
  assert space.validate_many(batch) == one
  assert space.validate_many([]) == []
  named = {v.constraint for vs in one for v in vs}
  assert len(named) >= 4 and any(not vs for vs in one), named  # valid points and several kinds of violation


def test_table_rows_decode_to_the_same_candidates_as_cell_by_cell(gpt_space):
  from autoscout_jax.space import Candidate
  space, _ = gpt_space
  table = space.table()
  idx = np.random.default_rng(5).integers(len(table["micro_batch_size"]), size=200)
  one = [Candidate.of({k.name: v for k in space.knobs if (v := space.value(table, k.name, int(i))) is not None})
         for i in idx]
  got = space.candidates_from_table(table, idx)
  assert got == one and [c.items for c in got] == [c.items for c in one]
  assert len({c.key for c in got}) > 50  # many distinct rows, with inactive knobs among them
  assert any(len(c.items) < len(space.knobs) for c in got)


def test_constraints_read_only_knobs_a_full_space_has(gpt_space, moe_space):
  """A space may lack knobs its constraints read (one device: no
  sequence_parallel, no virtual pipeline); those read as inactive. So that
  a misspelled name cannot pass silently, every name a constraint reads is
  a knob of the family's full (multi-device) spaces."""
  class Recorder(dict):
    def __getitem__(self, key):
      seen.add(key)
      return dict.__getitem__(self, key)

  for space, _ in (gpt_space, moe_space):
    seen: set = set()
    table = space.table_from_candidates(space.sample(np.random.default_rng(0), 4))
    for vc in space.vec_constraints:
      vc.ok(Recorder(table), space.facts)
    assert seen <= set(space.names), sorted(seen - set(space.names))


def test_one_device_megatron_space_enumerates_and_validates_alike():
  wl = Workload(name="g", model=ModelConfig(name="g", num_layers=24, hidden_size=1024, num_heads=16,
                                            ffn_hidden_size=4096, vocab_size=51200, seq_len=2048), global_batch=16)
  space = megatron.space(wl, hardware.make_cluster("dgx_h200", 1, devices_per_node=1))
  assert "sequence_parallel" not in space.names and "virtual_pipeline_model_parallel_size" not in space.names
  cands = space.enumerate()
  assert cands and all(space.validate(c) == [] for c in cands[:200])
  assert all(v == [] for v in space.validate_many(cands))
