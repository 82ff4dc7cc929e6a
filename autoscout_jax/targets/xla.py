"""XLA flag knobs: the flags each one sets, spelled per platform.

Where it sits: the JAX targets (local.py, jax_mesh.py) declare which of
their knobs are flag knobs; their launch artifacts and the local
evaluators' child processes (local/xla_flags.py) take the flags' spelling
from this one table.
"""

from __future__ import annotations

from typing import Any, Mapping

# XLA flag knobs -> the flags that set them, per platform: GPU flags go in
# XLA_FLAGS, TPU flags in LIBTPU_INIT_ARGS (libtpu reads them). A boolean
# knob sets each of its flags to true/false, except where a flag is given
# with an explicit "on" value: that one is set only when the knob is on
# (off keeps XLA's default, which is off).
XLA_FLAGS: dict[str, dict[str, tuple[tuple[str, str | None], ...]]] = {
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
FLAG_ENV = {"gpu": "XLA_FLAGS", "tpu": "LIBTPU_INIT_ARGS"}


def _flag_knob(name: str) -> str:
  """Knob name -> its flag table key: the local spaces prefix 'xla_'."""
  return name[len("xla_"):] if name.startswith("xla_") else name


def xla_flags(values: Mapping[str, Any], platform: str = "gpu") -> list[str]:
  """The XLA flags a candidate's flag knobs ask for on `platform` ('gpu',
  'tpu'; the CPU takes the GPU spelling, which it parses and ignores)."""
  table = XLA_FLAGS["tpu" if platform == "tpu" else "gpu"]
  out = []
  for k, v in values.items():
    for flag, on_value in table.get(_flag_knob(k), ()):
      if on_value is None:
        out.append(f"{flag}={'true' if v else 'false'}")
      elif v:
        out.append(f"{flag}={on_value}")
  return out
