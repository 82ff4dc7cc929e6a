"""The maxtext family's launch for processes mapped as slices on this
machine: MaxText's own jax.distributed initialisation joins them
(`skip_jax_distributed_system=false` + its CPU variables), and launch.sh
trains with MaxText's trainer in 2 real processes x 4 CPU devices."""

import os
import re
import subprocess

import pytest

from autoscout_jax import maxtext_env
from autoscout_jax.sim import hardware
from autoscout_jax.targets import launch_artifact, launch_files
from autoscout_jax.targets import maxtext as mt
from autoscout_jax.workload import LocalCluster, ModelConfig, Workload

TINY = ModelConfig("tiny_moe", num_layers=4, hidden_size=64, num_heads=4, ffn_hidden_size=128, vocab_size=256,
                   seq_len=64, gated_mlp=True, num_experts=4, moe_top_k=2)
WL = Workload("tiny_moe", TINY, global_batch=16)
TWO = LocalCluster(8, platform="cpu", num_slices=2)
MISSING = maxtext_env.missing()


def _two_slice():
  space = mt.space(WL, TWO)
  cand = space.make({mt.dcn("data"): 2, mt.ici("fsdp"): 2, mt.ici("expert"): 2})
  assert not space.validate(cand)
  return space, cand


def test_processes_are_joined_by_maxtext_and_one_process_is_not():
  space, cand = _two_slice()
  art = launch_artifact(space, cand, WL, TWO)
  assert "skip_jax_distributed_system=false" in art["overrides"] and "num_slices=2" in art["overrides"]
  assert art["command"][:3] == ["python", "-m", mt.MULTIPROCESS_TRAINER]
  assert art["processes"]["count"] == 2 and art["processes"]["devices_each"] == 4
  assert set(art["processes"]["env"]) == set(mt.PROCESS_ENV)
  sh = launch_files(space, cand, WL, TWO)["launch.sh"]
  assert "JAX_PROCESS_COUNT=2" in sh and "--xla_force_host_platform_device_count=4" in sh
  one = LocalCluster(8, platform="cpu")
  s1 = mt.space(WL, one)
  art1 = launch_artifact(s1, s1.default(), WL, one)
  assert "skip_jax_distributed_system=true" in art1["overrides"] and "processes" not in art1
  assert art1["command"][2] == "maxtext.trainers.pre_train.train"
  # a TPU cluster's slices are MaxText's own business: no CPU keys, no process variables
  tpu = hardware.make_cluster("tpu_v5p", 128, devices_per_node=64)
  wl = Workload("tiny_moe", TINY, global_batch=128)
  st = mt.space(wl, tpu)
  art_t = launch_artifact(st, st.default(), wl, tpu)
  assert "processes" not in art_t and not any(ln.startswith("skip_jax") for ln in art_t["overrides"])


@pytest.mark.slow
@pytest.mark.skipif(MISSING is not None, reason=f"MaxText's Python 3.12 env: {MISSING}")
def test_launch_sh_trains_in_two_processes_joined_by_maxtext(tmp_path):
  space, cand = _two_slice()
  for name, text in launch_files(space, cand, WL, TWO).items():
    (tmp_path / name).write_text(text)
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  py_dir = os.path.dirname(maxtext_env.find_python())
  env = maxtext_env.child_env(None)
  env.update(PATH=py_dir + os.pathsep + env.get("PATH", ""), AUTOSCOUT_JAX=root, RUN_NAME="two_proc",
             BASE_OUTPUT_DIRECTORY=str(tmp_path / "out"), LOG_DIR=str(tmp_path))
  proc = subprocess.run(["bash", str(tmp_path / "launch.sh"), "steps=2"], env=env, cwd=tmp_path,
                        capture_output=True, text=True, timeout=900)
  logs = [(tmp_path / f"process_{i}.log").read_text() for i in range(2)]
  assert proc.returncode == 0, proc.stderr[-2000:] + logs[0][-2000:] + logs[1][-2000:]
  losses = []
  for log in logs:
    assert "Jax distributed system initialized on CPUs!" in log  # MaxText's own initialisation
    assert "Jax process id is" in log and "completed step: 1" in log
    losses.append(re.findall(r"completed step: 1,.*? loss: ([0-9.]+)", log))
  assert losses[0] and losses[0] == losses[1]  # one job over both processes: the same global loss
