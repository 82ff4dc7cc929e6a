"""Sequence packing in the Megatron family: the knob exists for fine-tuning
jobs that name their example lengths, the simulators' recommendation turns
to packing when examples are short (useful tokens per second, padding not
counted), and the launch artifact carries Megatron-LM's packing flags."""

import dataclasses

import numpy as np

from autoscout_jax.sim import analytic, catalog, hardware
from autoscout_jax.targets import launch_artifact, launch_files, megatron, megatron_launch

CLUSTER = hardware.make_cluster("dgx_h100", 8)
PRETRAIN = catalog.make_workload("llama3_8b", 8, global_batch=64)
# chat-style examples, far shorter than the model's 8192-token sequence
FINETUNE = dataclasses.replace(PRETRAIN, task="finetune", example_lens=(512, 1024, 256, 2048))


def _best(space, table, out, mask):
  tps = np.where(np.isfinite(out["tokens_per_s"]) & mask, out["tokens_per_s"], -np.inf)
  i = int(np.argmax(tps))
  return space.candidates_from_table(table, [i])[0], float(tps[i])


def test_the_knob_exists_only_for_example_mixes():
  assert "sequence_packing" not in megatron.space(PRETRAIN, CLUSTER).names
  space = megatron.space(FINETUNE, CLUSTER)
  assert space["sequence_packing"].default is False  # padded rows are the expert default
  cands = space.sample(np.random.default_rng(0), 6)
  pairs = [space.make({**c.values, "sequence_packing": p}) for c in cands for p in (False, True)]
  plan = space.plan(space.table_from_candidates(pairs), FINETUNE, CLUSTER)
  np.testing.assert_array_equal(plan["packed"], [0.0, 1.0] * 6)
  assert [megatron.Config.from_candidate(c).sequence_packing for c in pairs[:2]] == [False, True]


def test_short_examples_make_the_recommendation_pack():
  space = megatron.space(FINETUNE, CLUSTER)
  table, out = analytic.score_space(space, FINETUNE, CLUSTER)
  packed = table["sequence_packing"] == space.code("sequence_packing", True)
  best, best_tps = _best(space, table, out, np.ones_like(packed))
  padded, padded_tps = _best(space, table, out, ~packed)
  assert best.values["sequence_packing"] is True and padded.values["sequence_packing"] is False
  # padded rows of 8192 slots hold one example of ~950 tokens: packing trains
  # several times the useful tokens per second
  assert best_tps > 4 * padded_tps
  # the same examples as full pre-training rows: nothing to pack, and packing
  # changes nothing in the simulators
  full = dataclasses.replace(FINETUNE, example_lens=(8192,))
  full_space = megatron.space(full, CLUSTER)
  t_full, o_full = analytic.score_space(full_space, full, CLUSTER)
  on = t_full["sequence_packing"] == full_space.code("sequence_packing", True)
  assert np.nanmax(np.where(on, o_full["tokens_per_s"], np.nan)) == np.nanmax(
      np.where(~on, o_full["tokens_per_s"], np.nan))


def test_the_artifact_carries_megatron_lms_packing_flags():
  space = megatron.space(FINETUNE, CLUSTER)
  base = space.default()
  packed, padded = base.replace(sequence_packing=True), base.replace(sequence_packing=False)
  art = launch_artifact(space, packed, FINETUNE, CLUSTER)
  assert "--dataloader-inter-document-masking" in art["args"] and "--eod-mask-loss" in art["args"]
  assert "--sequence-packing" not in art["args"]  # not a Megatron-LM argument
  assert "cu_seqlens" in art["sequence_packing"]
  plain = launch_artifact(space, padded, FINETUNE, CLUSTER)
  assert not set(megatron_launch.PACKED_ARGS) & set(plain["args"]) and "--sft" in plain["sequence_packing"]
  sh = launch_files(space, packed, FINETUNE, CLUSTER)["launch.sh"]
  assert "--dataloader-inter-document-masking" in sh and "# Fine-tuning examples: packed" in sh
  pre = megatron.space(PRETRAIN, CLUSTER)
  art = launch_artifact(pre, pre.default(), PRETRAIN, CLUSTER)
  assert "sequence_packing" not in art and not set(megatron_launch.PACKED_ARGS) & set(art["args"])
