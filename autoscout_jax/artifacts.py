"""Launchable artifacts: turn a recommended candidate into what a user runs.

Where it sits: the report (report.py) calls `launch_artifact(space.family, values)` on the
best validated candidate. Megatron-LM spaces become command-line arguments;
JAX spaces become a mesh (axis names and shape), the sharding rules the
train step uses, and the XLA flags.
"""

from __future__ import annotations

from typing import Any, Mapping

# Megatron-LM argument names for the knobs that carry them verbatim.
_MEGATRON_INT = ("tensor_model_parallel_size", "pipeline_model_parallel_size",
                 "context_parallel_size", "expert_model_parallel_size",
                 "expert_tensor_parallel_size", "micro_batch_size",
                 "recompute_num_layers", "ddp_bucket_size")
_MEGATRON_STR = ("recompute_granularity", "recompute_method")
_MEGATRON_BOOL = ("sequence_parallel", "use_distributed_optimizer", "overlap_grad_reduce",
                  "overlap_param_gather", "tp_comm_overlap")

# XLA flag knobs -> the flags that set them, per platform: GPU flags go in
# XLA_FLAGS, TPU flags in LIBTPU_INIT_ARGS (libtpu reads them). A boolean
# knob sets each of its flags to true/false, except where a flag is given
# with an explicit "on" value: that one is set only when the knob is on
# (off keeps XLA's default, which is off).
_XLA_FLAGS: dict[str, dict[str, tuple[tuple[str, str | None], ...]]] = {
    "gpu": {
        "latency_hiding_scheduler": (("--xla_gpu_enable_latency_hiding_scheduler", None),),
        "triton_gemm": (("--xla_gpu_enable_triton_gemm", None),),
        "async_collectives": (("--xla_gpu_enable_async_collectives", None),),
        # windowed einsum from 0 MiB up; XLA's default threshold leaves it off
        "collective_matmul": (("--xla_gpu_threshold_for_windowed_einsum_mib", "0"),),
    },
    "tpu": {
        "latency_hiding_scheduler": (("--xla_tpu_enable_latency_hiding_scheduler", None),),
        "async_collectives": (("--xla_tpu_enable_async_collective_fusion", None),
                              ("--xla_tpu_enable_async_collective_fusion_fuse_all_gather", None),
                              ("--xla_tpu_overlap_compute_collective_tc", None)),
        "collective_matmul": (("--xla_tpu_enable_windowed_einsum_for_all_gather", None),
                              ("--xla_tpu_enable_windowed_einsum_for_reduce_scatter", None)),
    },
}
_FLAG_ENV = {"gpu": "XLA_FLAGS", "tpu": "LIBTPU_INIT_ARGS"}


def _flag_knob(name: str) -> str:
  """Knob name -> its flag table key: the local spaces prefix 'xla_'."""
  return name[len("xla_"):] if name.startswith("xla_") else name


JAX_LOCAL_AXES = ("data", "fsdp", "tensor")

# Parameter sharding rules of the local train step (logical dim -> mesh axes).
JAX_LOCAL_RULES = {
    "batch": ("data", "fsdp"),
    "embed (model width)": "fsdp",
    "heads / mlp (column-parallel)": "tensor",
    "vocab": "tensor",
}


def megatron_args(values: Mapping[str, Any], global_batch: int | None = None,
                  num_layers: int | None = None) -> list[str]:
  args: list[str] = []
  vp = int(values.get("virtual_pipeline_model_parallel_size", 1))
  pp = int(values.get("pipeline_model_parallel_size", 1))
  for k in _MEGATRON_INT:
    if k in values:
      args += [f"--{k.replace('_', '-')}", str(int(values[k]))]
  for k in _MEGATRON_STR:
    if k in values and values[k] not in (None, "none"):
      args += [f"--{k.replace('_', '-')}", str(values[k])]
  for k in _MEGATRON_BOOL:
    if values.get(k):
      args.append(f"--{k.replace('_', '-')}")
  if vp > 1 and num_layers:
    # Megatron takes the interleaving as layers per virtual stage.
    args += ["--num-layers-per-virtual-pipeline-stage", str(max(1, num_layers // (pp * vp)))]
  if global_batch is not None:
    args += ["--global-batch-size", str(int(global_batch))]
  return args


def xla_flags(values: Mapping[str, Any], platform: str = "gpu") -> list[str]:
  """The XLA flags a candidate's flag knobs ask for on `platform` ('gpu',
  'tpu'; the CPU takes the GPU spelling, which it parses and ignores)."""
  table = _XLA_FLAGS["tpu" if platform == "tpu" else "gpu"]
  out = []
  for k, v in values.items():
    for flag, on_value in table.get(_flag_knob(k), ()):
      if on_value is None:
        out.append(f"{flag}={'true' if v else 'false'}")
      elif v:
        out.append(f"{flag}={on_value}")
  return out


def is_flag_knob(name: str) -> bool:
  return any(_flag_knob(name) in t for t in _XLA_FLAGS.values())


def launch_artifact(family: str, values: Mapping[str, Any], global_batch: int | None = None,
                    num_layers: int | None = None, platform: str = "gpu") -> dict[str, Any]:
  """The artifact of a candidate of a space of `family` (SearchSpace.family)."""
  if family == "megatron":
    return {"kind": "megatron", "args": megatron_args(values, global_batch, num_layers),
            "data_parallel_size (derived)": values.get("data_parallel_size")}
  if family not in ("local", "jax_mesh"):
    return {"kind": "values", "values": dict(values)}  # an ad-hoc space: nothing to translate
  mesh_axes = [a for a in JAX_LOCAL_AXES if a in values]
  ici = {k: v for k, v in values.items() if k.startswith("ici_")}
  dcn = {k: v for k, v in values.items() if k.startswith("dcn_")}
  art: dict[str, Any] = {"kind": "jax", "xla_flags": xla_flags(values, platform),
                         "xla_flags_env": _FLAG_ENV["tpu" if platform == "tpu" else "gpu"]}
  if mesh_axes:
    art["mesh_axis_names"] = mesh_axes
    art["mesh_shape"] = [int(values[a]) for a in mesh_axes]
    art["sharding_rules"] = JAX_LOCAL_RULES
  if ici or dcn:
    # MaxText-style hybrid mesh: ICI degrees inside a slice, DCN across.
    art["ici_parallelism"] = ici
    art["dcn_parallelism"] = dcn
  art["train_step"] = {k: v for k, v in values.items()
                       if k not in mesh_axes and k not in ici and k not in dcn and not is_flag_knob(k)}
  return art
