"""What the compiler needs to know about a simulated cluster: its compile
target (a TPU topology name and slice count, or a GPU target config), the
optional extra that provides the compiler, and the usable device memory.

Where it sits: `compile/evaluator.py` (parent, no JAX) asks
`compile_target(cluster)` and `missing_extra(target)` before it starts a
child; the child (`compile/probe.py`) calls `target_devices(target)` to get
compile-only devices from `jax.experimental.topologies`. The cluster catalog
(sim/hardware.py) names the systems; this module maps them:

- TPU clusters carry XLA's topology name of a slice (`Cluster.xla_topology`:
  `v5p:4x4x4`, `v5e:16x16`) and the number of slices (`num_slices`).
- GPU clusters carry a `GpuTargetConfigProto` text file
  (`Cluster.gpu_target_config`, shipped in
  `autoscout_jax/data/gpu_target_configs/` from XLA's
  `xla/backends/gpu/target_config/specs/`, Apache-2.0, see its README) and a
  `nodes x 1 x gpus-per-node` topology.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import subprocess
from pathlib import Path
from typing import Any

# Share of HBM a JAX program may use on a GPU: XLA's client preallocates
# 75 % of device memory by default (XLA_PYTHON_CLIENT_MEM_FRACTION) and has
# no compile-time OOM check there, so we compare against this share.
GPU_USABLE_FRACTION = 0.75
EXTRAS = {"tpu": ("libtpu", 'pip install -e ".[tpu]"'), "gpu": ("jax_cuda12_plugin", 'pip install -e ".[gpu]"')}
CONFIG_DIR = Path(__file__).resolve().parents[1] / "data" / "gpu_target_configs"
# Fields of the shipped (newer) target configs that an older jaxlib's
# GpuTargetConfigProto does not know: dropped, on a parse failure, before
# one more try (jaxlib 0.10.2 rejects collective_memory_granularity).
NEWER_CONFIG_FIELDS = ("collective_memory_granularity",)


class TargetError(ValueError):
  """The cluster has no compile target, or the target cannot hold the mesh."""


@dataclasses.dataclass(frozen=True)
class CompileTarget:
  """platform 'tpu' or 'gpu'; `topology` the XLA topology name (TPU) or
  'nodes x 1 x gpus' (GPU); `gpu_config` the target config file name (GPU);
  `dcn_groups` the groups the JAX mesh's DCN axes span (GPU nodes; 0: the
  TPU slices, `num_slices`)."""

  platform: str
  topology: str
  num_slices: int
  num_devices: int
  usable_bytes: float
  gpu_config: str = ""
  dcn_groups: int = 0

  @property
  def mesh_groups(self) -> int:
    """What the candidate's DCN degrees must multiply to."""
    return self.dcn_groups or self.num_slices

  @property
  def label(self) -> str:
    return self.topology + (f" x{self.num_slices} slices" if self.num_slices > 1 else "")

  def to_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


def compile_target(cluster: Any) -> CompileTarget:
  """The compile target a sim `Cluster` carries (TargetError when it has none)."""
  dev = cluster.device
  topo = getattr(cluster, "xla_topology", "")
  if not topo:
    raise TargetError(f"cluster {cluster.name!r} ({dev.name}) has no XLA compile target "
                      f"(sim.hardware.XLA_TARGETS)")
  if dev.platform == "tpu":
    return CompileTarget("tpu", topo, cluster.num_slices, cluster.num_devices, float(dev.hbm_bytes))
  return CompileTarget("gpu", topo, 1, cluster.num_devices, float(dev.hbm_bytes) * GPU_USABLE_FRACTION,
                       gpu_config=cluster.gpu_target_config, dcn_groups=cluster.num_nodes)


def missing_extra(target: CompileTarget, python: str | None = None) -> str | None:
  """One line naming the extra to install, or None when the compiler is
  importable (in `python`, the child's interpreter, when given)."""
  module, cmd = EXTRAS[target.platform]
  if python:
    probe = [python, "-c", f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"]
    found = subprocess.run(probe, capture_output=True, timeout=60, check=False).returncode == 0
  else:
    found = importlib.util.find_spec(module) is not None
  if not found:
    return (f"compiling for {target.platform.upper()} {target.label} needs the '{target.platform}' extra "
            f"({cmd})")
  return None


def child_env_vars(target: CompileTarget) -> dict[str, str]:
  """Environment of a compile child: the host CPU is the only real backend;
  libtpu's one-process lock is skipped so a search process that loaded the
  TPU plugin does not block its children."""
  env = {"JAX_PLATFORMS": "cpu", "ALLOW_MULTIPLE_LIBTPU_LOAD": "1", "TPU_SKIP_MDS_QUERY": "1"}
  if target.platform == "gpu":
    env["JAX_SKIP_CUDA_CONSTRAINTS_CHECK"] = "1"
  return env


def target_devices(target: CompileTarget) -> list[Any]:
  """Compile-only devices of the target (in the child; imports JAX)."""
  from jax.experimental import topologies
  try:
    if target.platform == "tpu":
      kw = {"num_slices": target.num_slices} if target.num_slices > 1 else {}
      topo = topologies.get_topology_desc(topology_name=target.topology, platform="tpu", **kw)
    else:
      text = (CONFIG_DIR / target.gpu_config).read_text()
      try:
        topo = topologies.get_topology_desc(topology_name="", platform="cuda", target_config=text,
                                            topology=target.topology)
      except Exception:
        older = "\n".join(l for l in text.splitlines()
                          if l.strip().split(":")[0] not in NEWER_CONFIG_FIELDS)
        topo = topologies.get_topology_desc(topology_name="", platform="cuda", target_config=older,
                                            topology=target.topology)
  except Exception as e:  # XLA's own message, on one line
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise TargetError(f"XLA has no {target.platform.upper()} topology {target.label!r}: {first}") from None
  devices = list(topo.devices)
  if len(devices) != target.num_devices:
    raise TargetError(f"topology {target.label} has {len(devices)} devices but the cluster has "
                      f"{target.num_devices}")
  return devices
