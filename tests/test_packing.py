"""Sequence packing of fine-tuning examples: the packer's layouts, the
segment masks, the real local step (8 virtual CPU devices) training the same
model packed and padded, and the simulators' useful-token throughput."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autoscout_jax import packing
from autoscout_jax.local import sim_evaluators
from autoscout_jax.local.model import attention_mask, segment_positions
from autoscout_jax.local.train_step import build_train_setup
from autoscout_jax.sim import analytic, catalog, costs, event, hardware
from autoscout_jax.space import Candidate
from autoscout_jax.targets import local as local_target
from autoscout_jax.targets import jax_mesh, megatron
from autoscout_jax.workload import LocalCluster, ModelConfig, Workload

MODEL = ModelConfig("tiny", num_layers=2, hidden_size=64, num_heads=8, num_kv_heads=4,
                    ffn_hidden_size=128, vocab_size=256, seq_len=32, gated_mlp=True)
LENS = (12, 5, 20, 7)
FT = Workload("tiny_ft", MODEL, global_batch=8, task="finetune", example_lens=LENS)


def test_packer_places_every_example_once_and_never_overflows():
  for packed in (False, True):
    steps = packing.steps(LENS, 8, 32, packed, num_steps=6)
    for step in steps:
      assert len(step) == 8 and all(sum(row) <= 32 for row in step)
    if not packed:
      assert [row for step in steps for row in step] == [(LENS[i % 4],) for i in range(48)]
  # packed: the examples placed are the stream's, in order, apart from the
  # few still waiting for room at the end (nothing dropped or truncated)
  placed = sorted(x for step in packing.steps(LENS, 8, 32, True, num_steps=6) for row in step for x in row)
  stream = sorted(LENS[i % 4] for i in range(len(placed)))
  assert abs(sum(placed) - sum(stream)) <= 2 * max(LENS)
  pad, pack = packing.stats(LENS, 8, 32, False), packing.stats(LENS, 8, 32, True)
  assert pad.fill == pytest.approx(sum(LENS) / 4 / 32)
  assert pack.fill > 0.9 > 2 * pad.fill and pack.examples > 2.5 * pad.examples
  assert packing.stats((), 8, 32, True) == packing.PackingStats(1.0, 1.0, 8.0)
  with pytest.raises(ValueError, match="does not fit"):
    packing.steps((40,), 2, 32, True)


def test_segment_masks_and_positions():
  seg = jnp.asarray([[1, 1, 1, 2, 2, 0], [1, 1, 1, 1, 1, 1]], jnp.int32)
  np.testing.assert_array_equal(segment_positions(seg), [[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 4, 5]])
  mask = np.asarray(attention_mask(seg, 6))
  want0 = np.zeros((6, 6), bool)
  want0[:3, :3] = np.tril(np.ones((3, 3), bool))  # example 1 sees itself, causally
  want0[3:5, 3:5] = np.tril(np.ones((2, 2), bool))  # example 2 never sees example 1
  want0[5, 5] = True  # padding sees padding only
  np.testing.assert_array_equal(mask[0], want0)
  np.testing.assert_array_equal(mask[1], np.tril(np.ones((6, 6), bool)))
  ids = packing.segment_ids([(3, 2), (6,)], 6)
  assert ids == [[1, 1, 1, 2, 2, 0], [1, 1, 1, 1, 1, 1]]


@pytest.mark.parametrize("values", [
    dict(data=2, fsdp=2, tensor=2, num_microbatches=2),
    pytest.param(dict(data=4, tensor=2, scan_layers=True, remat_policy="full"), marks=pytest.mark.slow)])
def test_packed_and_padded_steps_train_the_same_model_on_8_devices(values):
  devices = jax.devices()[:8]
  lens = (12, 5, 10, 7) * 4  # 136 positions: 16 padded rows of 32, or 8 packed rows
  pad_wl = dataclasses.replace(FT, example_lens=lens, global_batch=16)
  pack_wl = dataclasses.replace(FT, example_lens=lens, global_batch=8)
  padded = build_train_setup(pad_wl, {**values, "sequence_packing": False}, devices)
  packed = build_train_setup(pack_wl, {**values, "sequence_packing": True}, devices)
  assert padded.layout == tuple((n,) for n in lens) and padded.useful_tokens == sum(lens)
  # the packed setup's own batch: several examples share a row, more trained tokens than 8 padded rows
  assert all(len(row) > 1 for row in packed.layout) and packed.useful_tokens > sum(lens[:8])
  pack_rows = [(12, 5, 10), (7,)] * 4  # the same 16 examples, in order, 8 rows of at most 32
  rng = np.random.default_rng(0)
  exs = [rng.integers(0, MODEL.vocab_size, n + 1) for n in lens]
  b_pad, b_pack = padded.example_batch(exs), packed.example_batch(exs, pack_rows)
  assert int(jnp.sum(b_pad[2] > 0)) == int(jnp.sum(b_pack[2] > 0)) == sum(lens)
  params, _ = padded.init(0)
  host = jax.tree.map(np.asarray, params)
  p_pad, o_pad = padded.place(host)
  p_pack, o_pack = packed.place(host)
  l_pad, l_pack = float(padded.loss(p_pad, b_pad)), float(packed.loss(p_pack, b_pack))
  assert l_pack == pytest.approx(l_pad, rel=1e-5)
  g_pad = jax.grad(padded.loss)(p_pad, b_pad)
  g_pack = jax.grad(packed.loss)(p_pack, b_pack)
  for a, b in zip(jax.tree.leaves(g_pad), jax.tree.leaves(g_pack)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-3, atol=1e-6)
  # a token in padding or in another example changes nothing: masks hold
  inp, tgt, seg = (np.asarray(x) for x in b_pack)
  inp2 = inp.copy()
  first = pack_rows[0][0]
  inp2[0, first] = (inp2[0, first] + 1) % MODEL.vocab_size  # row 0's 2nd example
  inp2[1, 20] = (inp2[1, 20] + 1) % MODEL.vocab_size  # padding after row 1's one example of 7
  apply = jax.jit(lambda p, i, sg: packed.model.apply({"params": p}, i, sg))
  both = apply(p_pack, jnp.asarray(np.concatenate([inp, inp2])), jnp.asarray(np.concatenate([seg, seg])))
  logits, logits2 = np.asarray(both[:8]), np.asarray(both[8:])
  np.testing.assert_array_equal(logits[0, :first], logits2[0, :first])
  assert not np.array_equal(logits[0, first:], logits2[0, first:])
  np.testing.assert_array_equal(logits[1, :7], logits2[1, :7])
  # the step (micro-batches, remat, scan as the candidate says) reports that loss and trains
  _, _, step_pad = padded.step(p_pad, o_pad, b_pad)
  _, _, step_pack = packed.step(p_pack, o_pack, b_pack)
  assert float(step_pad) == pytest.approx(l_pad, rel=1e-5)
  assert float(step_pack) == pytest.approx(l_pad, rel=1e-5)


def test_the_knob_exists_only_for_example_mixes():
  cluster = LocalCluster(8, memory_bytes_per_device=2**30, platform="cpu")
  assert "sequence_packing" in local_target.space(FT, cluster).names
  assert "sequence_packing" not in local_target.space(dataclasses.replace(FT, example_lens=()), cluster).names
  with pytest.raises(ValueError, match="example_lens"):
    Workload("x", MODEL, global_batch=8, example_lens=(8,))  # pre-training
  with pytest.raises(ValueError, match="1..seq_len"):
    dataclasses.replace(FT, example_lens=(33,))
  assert dataclasses.replace(FT, example_lens=()).key != FT.key  # the mix is part of the job


def test_local_simulators_count_useful_tokens_and_packing_wins():
  cluster = LocalCluster(8, memory_bytes_per_device=2**30, platform="cpu")
  space = local_target.space(FT, cluster)
  cands = [Candidate({**space.default().values, "sequence_packing": p}) for p in (False, True)]
  plan = local_target.plan(cands, FT)
  np.testing.assert_array_equal(plan["packed"], [0.0, 1.0])
  m = costs.model_scalars(FT)
  hw = hardware.cluster_scalars(hardware.make_cluster("dgx_h100", 8))
  for run in (analytic.simulate_f0, event.simulate_f1):
    out = run(plan, m, hw)
    # materialized scores: the same step time, more trained tokens in it
    np.testing.assert_allclose(out["step_time_s"][0], out["step_time_s"][1], rtol=1e-6)
    ratio = out["tokens_per_s"][1] / out["tokens_per_s"][0]
    assert ratio == pytest.approx(m["fill_packed"] / m["fill"], rel=1e-5) and ratio > 2


@pytest.mark.parametrize("sim", ["f0", "f1"])
def test_cluster_simulators_pay_attention_per_segment(sim):
  """Megatron plans with flash attention: packed rows pay attention per
  example (less time), padded rows pay for padding tokens (fewer useful)."""
  cluster = hardware.make_cluster("dgx_h100", 8)
  base = catalog.make_workload("llama3_8b", 64)
  wl = dataclasses.replace(base, task="finetune", example_lens=(512, 1024, 256, 2048))
  space = megatron.space(wl, cluster)
  cands = space.sample(np.random.default_rng(0), 8)
  plan = analytic.candidates_to_arrays(space, cands, wl, cluster)
  p0 = dataclasses.replace(plan, packed=np.zeros_like(plan["packed"]))  # the knob may be sampled on
  p1 = dataclasses.replace(plan, packed=np.ones_like(plan["packed"]))
  run = analytic.simulate_f0 if sim == "f0" else event.simulate_f1
  hw = hardware.cluster_scalars(cluster)
  m = costs.model_scalars(wl)
  pad, pack = run(p0, m, hw), run(p1, m, hw)
  ok = np.isfinite(pad["step_time_s"]) & np.isfinite(pack["step_time_s"])
  assert ok.any()
  assert np.all(pack["step_time_s"][ok] < pad["step_time_s"][ok])
  assert np.all(pack["tokens_per_s"][ok] > 2 * pad["tokens_per_s"][ok])
  # full rows (pre-training): packing is a no-op
  full = costs.model_scalars(base)
  np.testing.assert_allclose(run(p1, full, hw)["tokens_per_s"][ok], run(p0, full, hw)["tokens_per_s"][ok])


def test_the_report_counts_trained_tokens():
  from autoscout_jax import report
  assert report._units({"example_lens": [24, 9]}) == ("trained tokens/s", "step")
  assert report._units({"example_lens": None}) == ("tokens/s", "step")


def test_jax_mesh_family_searches_maxtexts_packing_for_example_mixes():
  cluster = hardware.make_cluster("tpu_v5p", 64)
  base = catalog.make_workload("llama3_8b", 64)
  wl = dataclasses.replace(base, task="finetune", example_lens=(512, 1024, 256, 2048))
  assert "packing" not in jax_mesh.space(base, cluster).names  # full rows: nothing to pack
  space = jax_mesh.space(wl, cluster)
  cands = space.sample(np.random.default_rng(0), 6)
  pairs = [space.make({**c.values, "packing": p}) for c in cands for p in (False, True)]
  plan = analytic.candidates_to_arrays(space, pairs, wl, cluster)
  np.testing.assert_array_equal(plan["packed"], [0.0, 1.0] * 6)
  out = analytic.simulate_f0(plan, costs.model_scalars(wl), hardware.cluster_scalars(cluster))
  pad, pack = out["step_time_s"][0::2], out["step_time_s"][1::2]
  ok = np.isfinite(pad) & np.isfinite(pack)
  assert ok.any() and np.all(pack[ok] < pad[ok])  # MaxText's flash kernels pay attention per example
  assert np.all(out["tokens_per_s"][1::2][ok] > 2 * out["tokens_per_s"][0::2][ok])
  assert jax_mesh.maxtext_config(pairs[1], wl)["packing"] is True  # the launch config says so
  assert "packing" not in jax_mesh.maxtext_config(jax_mesh.space(base, cluster).default(), base)
