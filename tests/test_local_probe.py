"""In-child measurement logic and the child's environment, tested in-process
(no child processes; 8 virtual CPU devices from conftest)."""

import signal

import jax
import pytest

from autoscout_jax.local.probe import measure, peak_flops
from autoscout_jax.local.runner import classify, classify_exit
from autoscout_jax.local.xla_flags import child_env
from autoscout_jax.sim.hardware import DEVICES
from autoscout_jax.workload import LocalCluster, ModelConfig, Workload

MODEL = ModelConfig("tiny", num_layers=2, hidden_size=64, num_heads=4, ffn_hidden_size=128,
                    vocab_size=256, seq_len=32)
WORKLOAD = Workload("tiny", MODEL, global_batch=16, precision="fp32")


@pytest.mark.parametrize("fidelity", ["compile", "profile"])
def test_over_budget_candidate_is_oom_and_never_runs(fidelity):
  devices = jax.devices()[:8]
  tiny = LocalCluster(num_devices=8, memory_bytes_per_device=4096, platform="cpu")
  m = measure(fidelity, WORKLOAD, tiny, {"data": 8}, devices, {"warmup_steps": 1, "timed_steps": 1})
  assert not m.feasible and m.failure_kind == "oom"
  assert "per device" in m.error and "but the cluster has 4.0 KiB;" in m.error  # not '0.0 MiB'
  # the compile figures are kept, the run never happened
  assert m.peak_mem_bytes > 4096 and m.flops_per_step > 0
  assert m.step_time_s is None and "step_times_s" not in m.extra and "losses" not in m.extra
  assert m.extra["argument_bytes"] > 0


def test_knob_values_the_model_cannot_take_are_invalid():
  m = measure("compile", WORKLOAD, LocalCluster(8), {"tensor": 8}, jax.devices()[:8], {})
  assert m.failure_kind == "invalid" and "tensor=8" in m.error


def test_unknown_fidelity_is_rejected():
  with pytest.raises(ValueError, match="'compile' or 'profile'"):
    measure("analytic", WORKLOAD, LocalCluster(8), {"data": 8}, jax.devices()[:8], {})


def test_peak_flops_by_device_kind():
  assert peak_flops("NVIDIA H100 80GB HBM3") == DEVICES["h100_sxm"].peak_bf16 == 989.4e12
  assert peak_flops("NVIDIA H100 PCIe") == 756e12
  assert peak_flops("NVIDIA H200") == DEVICES["h200"].peak_bf16
  assert peak_flops("TPU v5 lite") == DEVICES["tpu_v5e"].peak_bf16 == 197e12
  assert peak_flops("cpu") is None


def test_error_texts_and_exits_are_classified():
  assert classify("XlaRuntimeError: RESOURCE_EXHAUSTED: Out of memory allocating 1GiB", "crash") == "oom"
  assert classify("INVALID_ARGUMENT: bad shapes", "compile_error") == "compile_error"
  assert classify_exit(-signal.SIGKILL, "")[0] == "oom"  # the kernel OOM killer
  assert classify_exit(-signal.SIGSEGV, "")[0] == "crash"
  kind, msg = classify_exit(-signal.SIGABRT, "... Out of memory while trying to allocate ...")
  assert kind == "oom" and "SIGABRT" in msg
  assert classify_exit(3, "Traceback ...")[0] == "crash"


def test_child_env_sets_device_count_and_flag_knobs():
  base = {"XLA_FLAGS": "--xla_dump_to=somewhere --xla_force_host_platform_device_count=2",
          "JAX_PLATFORMS": "cpu"}
  env = child_env("auto", 4, {"xla_triton_gemm": False, "data": 4}, base=base)
  flags = env["XLA_FLAGS"].split()
  assert "--xla_dump_to=somewhere" in flags  # the user's own flags survive
  assert "--xla_force_host_platform_device_count=4" in flags
  assert "--xla_force_host_platform_device_count=2" not in flags
  assert "--xla_gpu_enable_triton_gemm=false" in flags
  assert "JAX_PLATFORMS" not in env  # 'auto': whatever the machine has
  assert child_env("cpu", 8, {}, base={})["JAX_PLATFORMS"] == "cpu"
  assert "device_count" not in child_env("gpu", 1, {}, base={})["XLA_FLAGS"]
