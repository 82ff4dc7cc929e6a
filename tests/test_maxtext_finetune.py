"""The maxtext family refuses fine-tuning jobs it would measure as
something else (MaxText 0.2.5 trains LoRA only in its SFT trainer, not in
the pre-training step the family compiles and times; its synthetic rows
have no example lengths), with one clear error; full fine-tuning runs."""

import dataclasses
import os
import subprocess
import sys

import pytest

from autoscout_jax.targets import maxtext as mt
from autoscout_jax.workload import LocalCluster, ModelConfig, Workload

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = ModelConfig("tiny", num_layers=2, hidden_size=64, num_heads=4, ffn_hidden_size=128, vocab_size=256,
                    seq_len=64, gated_mlp=True)
FULL = Workload("tiny_ft", MODEL, global_batch=16, task="finetune")
CPU8 = LocalCluster(8, platform="cpu")


def test_lora_and_example_lengths_are_refused_full_finetuning_runs():
  lora = dataclasses.replace(FULL, lora_rank=8)
  with pytest.raises(ValueError, match="cannot run LoRA.*SFT trainer"):
    mt.space(lora, CPU8)
  with pytest.raises(ValueError, match="cannot run LoRA"):
    mt.overrides({}, lora, "cpu")  # every path to MaxText's keys
  with pytest.raises(ValueError, match="example_lens"):
    mt.space(dataclasses.replace(FULL, example_lens=(20, 40)), CPU8)
  space = mt.space(FULL, CPU8)  # full fine-tuning is MaxText's training step
  assert mt.overrides(space.default(), FULL, "cpu")["base_emb_dim"] == 64


def test_a_lora_run_of_the_maxtext_family_is_one_line_and_exit_2(tmp_path):
  cmd = [sys.executable, "-m", "autoscout_jax.run", "--gin_file=experiments/quickstart/all_axes.gin",
         "--gin_bindings=tiny_moe/wl.Workload.task = 'finetune'",
         "--gin_bindings=tiny_moe/wl.Workload.lora_rank = 4", f"--workdir={tmp_path / 'run'}"]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                        env={**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"})
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert "cannot run LoRA" in proc.stderr and "Traceback" not in proc.stderr
  assert not (tmp_path / "run").exists()  # a refused run writes nothing
