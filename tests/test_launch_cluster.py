"""Cluster launch artifacts: Megatron-LM's launch.sh is valid bash around one
complete torchrun line that carries every knob of the candidate, the model,
the sequence length and the precision (and Megatron-LM's own argument
parser accepts it where megatron-core ships it); the JAX-mesh family writes
a MaxText config and the platform's XLA flag export."""

import os
import shlex
import subprocess
import sys

import pytest

from autoscout_jax.sim import catalog, hardware
from autoscout_jax.targets import jax_mesh, launch_files, megatron


def _torchrun(text):
  """The torchrun command of launch.sh as argv (continuations joined)."""
  joined = text.replace("\\\n", " ")
  line = next(l for l in joined.splitlines() if l.strip().startswith("torchrun"))
  return shlex.split(line)


def _flags(argv):
  out, i = {}, 0
  while i < len(argv):
    a = argv[i]
    if a.startswith("--"):
      if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
        out[a] = argv[i + 1]
        i += 2
        continue
      out[a] = True
    i += 1
  return out


def _gpt3():
  w = catalog.make_workload("gpt3_175b", 1024)
  c = hardware.make_cluster("dgx_a100_80gb", 1024, 8, name="a100_1024")
  return w, c, megatron.space(w, c)


def test_megatron_launch_sh_is_one_complete_torchrun_line(tmp_path):
  w, c, space = _gpt3()
  cand = space.make(w.default_values)
  text = launch_files(space, cand, w, c, summary="a test")["launch.sh"]
  path = tmp_path / "launch.sh"
  path.write_text(text)
  assert subprocess.run(["bash", "-n", str(path)]).returncode == 0  # parses as bash
  argv = _torchrun(text)
  f = _flags(argv)
  assert (int(f["--nnodes"]), int(f["--nproc-per-node"])) == (128, 8)
  assert argv[argv.index("--master-port") + 2].endswith("pretrain_gpt.py")
  v = cand.values
  for k in ("tensor_model_parallel_size", "pipeline_model_parallel_size", "context_parallel_size",
            "micro_batch_size", "ddp_bucket_size"):
    assert f["--" + k.replace("_", "-")] == str(v[k]), k
  for k in ("sequence_parallel", "use_distributed_optimizer", "overlap_grad_reduce", "overlap_param_gather",
            "tp_comm_overlap"):
    assert (("--" + k.replace("_", "-")) in f) == bool(v.get(k)), k
  assert f["--recompute-granularity"] == v["recompute_granularity"]
  m = w.model
  assert f["--num-layers"] == str(m.num_layers) and f["--hidden-size"] == str(m.hidden_size)
  assert f["--num-attention-heads"] == str(m.num_heads) and f["--seq-length"] == str(m.seq_len)
  assert f["--ffn-hidden-size"] == str(m.ffn_hidden_size) and f["--global-batch-size"] == str(w.global_batch)
  assert f["--vocab-size"] == str(m.vocab_size) and f["--bf16"] is True
  vstage = m.num_layers // (v["pipeline_model_parallel_size"] * v["virtual_pipeline_model_parallel_size"])
  assert f["--num-layers-per-virtual-pipeline-stage"] == str(vstage)
  assert "--data-parallel-size" not in f  # Megatron derives it from the world size


def test_megatron_launch_sh_passes_megatrons_own_argument_validation(monkeypatch):
  arguments = pytest.importorskip(
      "megatron.training.arguments",
      reason="needs Megatron-LM's argument parser (megatron-core >= 0.19 ships it; Python 3.12)")
  w, c, space = _gpt3()
  argv = _torchrun(launch_files(space, space.make(w.default_values), w, c)["launch.sh"])
  script = next(i for i, a in enumerate(argv) if a.endswith("pretrain_gpt.py"))
  args = [a.replace("${TRAIN_ITERS}", "10") for a in argv[script + 1:]]
  monkeypatch.setattr(sys, "argv", ["pretrain_gpt.py", *args])
  monkeypatch.setenv("WORLD_SIZE", str(c.num_devices))
  monkeypatch.setenv("RANK", "0")
  parsed = arguments.parse_args()
  arguments.validate_args(parsed)
  assert parsed.tensor_model_parallel_size == space.make(w.default_values).values["tensor_model_parallel_size"]


def test_jax_mesh_writes_a_maxtext_config_and_the_libtpu_export():
  w = catalog.make_workload("llama3_70b", 128, space="jax_mesh", devices_per_slice=64)
  c = hardware.make_cluster("tpu_v5p", 128, 64, name="tpu_v5p_128")
  space = jax_mesh.space(w, c)
  cand = space.make(w.default_values)
  files = launch_files(space, cand, w, c)
  assert set(files) == {"launch.sh", "maxtext.yml"}
  yml = dict(line.split(": ", 1) for line in files["maxtext.yml"].splitlines() if not line.startswith("#"))
  v = cand.values
  assert yml["ici_fsdp_parallelism"] == str(v["ici_fsdp"]) and yml["dcn_data_parallelism"] == str(v["dcn_data"])
  assert yml["per_device_batch_size"] == str(v["per_device_batch_size"])
  assert yml["remat_policy"] == f'"{v["remat_policy"]}"'
  assert yml["base_num_decoder_layers"] == str(w.model.num_layers) and yml["max_target_length"] == str(w.model.seq_len)
  sh = files["launch.sh"]
  export = next(l for l in sh.splitlines() if l.startswith("export "))
  assert export.startswith("export LIBTPU_INIT_ARGS=") and "--xla_tpu_" in export
  assert "python3 -m MaxText.train" in sh and f"ici_fsdp_parallelism={v['ici_fsdp']}" in sh
  gpu = hardware.make_cluster("dgx_h100", 128, 8, name="h100_128")
  assert "export XLA_FLAGS=" in launch_files(jax_mesh.space(w, gpu), cand, w, gpu)["launch.sh"]
