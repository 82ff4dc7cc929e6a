"""Hardware catalog: accelerators, interconnect tiers, and simulated clusters.

Where it sits: gin (`gin/clusters/*.gin`) binds `make_cluster` to build a
`Cluster`; the target spaces (targets/megatron.py, jax_mesh.py) read its device count and
node/slice size, and the simulators (sim/costs.py, sim/analytic.py, F1) read
its peak FLOP/s, HBM and per-tier link bandwidth/latency through
`cluster_scalars`. The calibration tools look systems up by the names the
published-runs CSV writes (`system_for_hardware_name`).

All numbers are per device, dense (no structured sparsity), from vendor
datasheets unless marked "approximate". Bandwidths are bytes/s in ONE
direction per device: NVLink 600 GB/s bidirectional is 300e9 here, an
8x200 Gb/s HDR node gives each GPU one 200 Gb/s NIC = 25e9. Inter-node
bandwidth is a property of the system/cluster, never a global constant.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re

GB = 1e9
GIB = 2**30
TFLOP = 1e12


@dataclasses.dataclass(frozen=True)
class DeviceSpec:
  """One accelerator. `peak_flops` maps a precision ('bf16', 'fp16', 'fp8')
  to dense FLOP/s; a precision a device lacks is absent."""

  name: str
  peak_bf16: float
  peak_fp8: float | None
  hbm_bytes: float
  hbm_bw: float
  platform: str  # gpu | tpu (| cpu: this machine's measured devices)
  peak_fp4: float | None = None  # dense NVFP4/MXFP4 GEMMs (Blackwell)
  # bytes/s one direction between the device and host memory (activation
  # offload); None: the PCIe figure of the simulators' constants
  host_bw: float | None = None
  # rate of a FlashAttention-2-generation fused attention kernel (warp-level
  # mma.sync, the Ampere instruction path) relative to the device's native
  # fused kernel; None: 1, that path is the native one (Ampere, Ada)
  fa2_rate: float | None = None

  def __post_init__(self):
    for f in ("peak_bf16", "hbm_bytes", "hbm_bw"):
      v = getattr(self, f)
      if not isinstance(v, (int, float)) or not v > 0:
        raise ValueError(f"device {self.name!r}: {f} must be positive, got {v!r}")
    if self.peak_fp8 is not None and not self.peak_fp8 > 0:
      raise ValueError(f"device {self.name!r}: peak_fp8 must be positive or None, got {self.peak_fp8!r}")
    if self.host_bw is not None and not self.host_bw > 0:
      raise ValueError(f"device {self.name!r}: host_bw must be positive or None, got {self.host_bw!r}")
    if self.fa2_rate is not None and not 0 < self.fa2_rate <= 1:
      raise ValueError(f"device {self.name!r}: fa2_rate must be in (0, 1] or None, got {self.fa2_rate!r}")
    if self.platform not in ("gpu", "tpu", "cpu"):  # cpu: measured local devices (sim/measured.py)
      raise ValueError(f"device {self.name!r}: platform must be gpu, tpu or cpu, got {self.platform!r}")

  def peak(self, precision: str) -> float:
    """Dense peak for a precision name; fp8 falls back to bf16 where the
    device has no fp8 units (A100, TPU v4/v5p: the GEMMs run in bf16)."""
    if _is_fp8(precision) and self.peak_fp8:
      return self.peak_fp8
    return self.peak_bf16


def _is_fp8(precision: str) -> bool:
  p = precision.lower()
  return "fp8" in p or "fp4" in p


@dataclasses.dataclass(frozen=True)
class Link:
  """One interconnect tier: bandwidth per device, one direction (bytes/s),
  and the latency of one collective step (s)."""

  name: str
  bw: float
  latency: float

  def __post_init__(self):
    if not self.bw > 0 or not self.latency >= 0:
      raise ValueError(f"link {self.name!r}: bandwidth must be positive and latency non-negative, "
                       f"got bw={self.bw!r} latency={self.latency!r}")


# --- devices (datasheets) -----------------------------------------------------
# NVIDIA A100 datasheet (2021): 312 TF dense bf16/fp16; 40 GB HBM2 1555 GB/s,
# 80 GB HBM2e 2039 GB/s; NVLink3 600 GB/s bidirectional.
# NVIDIA H100 SXM datasheet: 989 TF bf16, 1979 TF fp8 (dense); 80 GB HBM3
# 3.35 TB/s; NVLink4 900 GB/s bidirectional. H200: same compute, 141 GB, 4.8 TB/s.
# DGX/HGX B200 (2024): 2.25 PF bf16, 4.5 PF fp8 dense per GPU; 180 GB usable
# HBM3e 8 TB/s; NVLink5 1.8 TB/s bidirectional. B300 (Blackwell Ultra, HGX
# B300 datasheet, approximate): bf16/fp8 as B200, 288 GB HBM3e 8 TB/s.
# GB200/GB300 NVL72 rack datasheets: 2.5 PF bf16 / 5 PF fp8 dense per GPU;
# 186 GB (GB200) / 288 GB (GB300) HBM3e at 8 TB/s; 72 GPUs per NVLink domain.
# Dense FP4 per GPU (HGX/NVL72 datasheets, sparse figures halved): B200 9 PF,
# B300 13.5 PF, GB200 10 PF, GB300 15 PF.
# Host links (one direction, per GPU): PCIe Gen5 x16 on H100 / H200 / B200 /
# B300 boards (64 GB/s, ~50 GB/s reached); NVLink-C2C on Grace superchips
# (GB200 / GB300: 900 GB/s both ways between one Grace and its two GPUs,
# 225 GB/s per GPU per direction). A100's PCIe Gen4 is the constant's 25 GB/s.
# Google Cloud TPU system-architecture pages: v4 275 TF bf16, 32 GiB 1.2 TB/s;
# v5e 197 TF, 16 GiB 819 GB/s; v5p 459 TF, 95 GiB 2.765 TB/s; v6e (Trillium)
# 918 TF, 32 GiB 1.64 TB/s. ICI per chip (bidirectional, all links): v4
# 2400 Gb/s, v5e 1600 Gb/s, v5p 4800 Gb/s, v6e 3584 Gb/s.
# FlashAttention-2 on Hopper (fa2_rate): its kernels use the warp-level MMA
# of Ampere, not Hopper's asynchronous wgmma/TMA, and reach 35 % of H100's
# bf16 peak where Hopper-native kernels (FlashAttention-3, cuDNN's fused
# attention, which Transformer Engine and XLA call) reach 75 % (Shah et
# al. 2024, FlashAttention-3, sec. 1 and 4): 0.47 of the native rate. On
# Blackwell no published figure for the Ampere path is known here, so its
# devices keep None (1) and a PyTorch-native run there is priced as native.
DEVICES: dict[str, DeviceSpec] = {d.name: d for d in (
    DeviceSpec("a100_40gb", 312 * TFLOP, None, 40 * GIB, 1555 * GB, "gpu"),
    DeviceSpec("a100_80gb", 312 * TFLOP, None, 80 * GIB, 2039 * GB, "gpu"),
    DeviceSpec("h100_sxm", 989.4 * TFLOP, 1978.9 * TFLOP, 80 * GIB, 3350 * GB, "gpu", host_bw=50 * GB,
               fa2_rate=0.47),
    DeviceSpec("h200", 989.4 * TFLOP, 1978.9 * TFLOP, 141 * GB, 4800 * GB, "gpu", host_bw=50 * GB,
               fa2_rate=0.47),
    DeviceSpec("b200", 2250 * TFLOP, 4500 * TFLOP, 180 * GB, 8000 * GB, "gpu", peak_fp4=9000 * TFLOP,
               host_bw=50 * GB),
    DeviceSpec("b300", 2250 * TFLOP, 4500 * TFLOP, 288 * GB, 8000 * GB, "gpu", peak_fp4=13500 * TFLOP,
               host_bw=50 * GB),
    DeviceSpec("gb200", 2500 * TFLOP, 5000 * TFLOP, 186 * GB, 8000 * GB, "gpu", peak_fp4=10000 * TFLOP,
               host_bw=225 * GB),
    DeviceSpec("gb300", 2500 * TFLOP, 5000 * TFLOP, 288 * GB, 8000 * GB, "gpu", peak_fp4=15000 * TFLOP,
               host_bw=225 * GB),
    DeviceSpec("tpu_v4", 275 * TFLOP, None, 32 * GIB, 1228 * GB, "tpu"),
    DeviceSpec("tpu_v5e", 197 * TFLOP, None, 16 * GIB, 819 * GB, "tpu"),
    DeviceSpec("tpu_v5p", 459 * TFLOP, None, 95 * GIB, 2765 * GB, "tpu"),
    DeviceSpec("tpu_v6e", 918 * TFLOP, None, 32 * GIB, 1640 * GB, "tpu"),
    # Devices a local profile may run on (NVIDIA datasheets, dense): H100 PCIe
    # 756 TF bf16 / 1513 fp8, 80 GB 2.0 TB/s; L40S 362 / 733, 48 GB 864 GB/s;
    # L4 121 / 242.5, 24 GB 300 GB/s; V100 125 TF fp16 (no bf16), 32 GB 900 GB/s.
    DeviceSpec("h100_pcie", 756 * TFLOP, 1513 * TFLOP, 80 * GIB, 2000 * GB, "gpu", fa2_rate=0.47),
    DeviceSpec("l40s", 362 * TFLOP, 733 * TFLOP, 48 * GB, 864 * GB, "gpu"),
    DeviceSpec("l4", 121 * TFLOP, 242.5 * TFLOP, 24 * GB, 300 * GB, "gpu"),
    DeviceSpec("v100", 125 * TFLOP, None, 32 * GIB, 900 * GB, "gpu"),
)}

# What XLA compiles for (the compile-at-scale F2, autoscout_jax/compile/):
# TPU devices name their XLA topology prefix (a slice is "<prefix>:<torus>",
# e.g. "v5p:4x4x4"); GPU devices name the GpuTargetConfigProto shipped in
# autoscout_jax/data/gpu_target_configs/ (from XLA's target_config/specs).
# Devices not listed have no compile target.
XLA_TARGETS: dict[str, str] = {
    "a100_40gb": "a100_sxm_40.txtpb", "a100_80gb": "a100_sxm_80.txtpb", "h100_sxm": "h100_sxm.txtpb",
    "h200": "h200.txtpb", "b200": "b200.txtpb",
    "tpu_v4": "v4", "tpu_v5e": "v5e", "tpu_v5p": "v5p", "tpu_v6e": "v6e",
}

# JAX `device_kind` (lower case) substrings -> catalog device, more specific
# names first: the local profiler's MFU reads its peak from this catalog too.
DEVICE_KINDS: tuple[tuple[str, str], ...] = (
    ("h100 pcie", "h100_pcie"), ("h200", "h200"), ("h100", "h100_sxm"), ("h800", "h100_sxm"),
    ("b200", "b200"), ("a100", "a100_80gb"), ("a800", "a100_80gb"), ("l40s", "l40s"), ("l4", "l4"),
    ("v100", "v100"), ("tpu v6 lite", "tpu_v6e"), ("tpu v6e", "tpu_v6e"), ("tpu v5 lite", "tpu_v5e"),
    ("tpu v5e", "tpu_v5e"), ("tpu v5p", "tpu_v5p"), ("tpu v5", "tpu_v5p"), ("tpu v4", "tpu_v4"),
)


def device_for_kind(device_kind: str) -> DeviceSpec | None:
  """The catalog device a JAX `device.device_kind` names (None: unknown, e.g. a CPU)."""
  low = device_kind.lower()
  for sub, name in DEVICE_KINDS:
    if sub in low:
      return DEVICES[name]
  return None

# --- interconnect tiers ---------------------------------------------------------
LINKS: dict[str, Link] = {l.name: l for l in (
    Link("nvlink3", 300 * GB, 5e-6),          # A100 NVSwitch
    Link("nvlink4", 450 * GB, 5e-6),          # H100/H200 NVSwitch
    Link("nvlink5", 900 * GB, 5e-6),          # B200/B300/GB200/GB300 (NVL72 too)
    Link("ib_hdr_200", 25 * GB, 12e-6),       # one 200 Gb/s HDR NIC per GPU (Selene)
    Link("ib_ndr_400", 50 * GB, 12e-6),       # one 400 Gb/s NDR NIC per GPU (DGX H100/B200)
    Link("ib_xdr_800", 100 * GB, 12e-6),      # ConnectX-8 800 Gb/s per GPU (GB300)
    Link("gcp_tcpx", 12.5 * GB, 25e-6),       # GCP A3: 4x200 Gb/s per 8-GPU VM
    Link("gcp_tcpxo", 25 * GB, 25e-6),        # GCP A3 Mega: 8x200 Gb/s per 8-GPU VM
    Link("aws_efa_400", 6.25 * GB, 20e-6),    # AWS p4d/p4de: 400 Gb/s EFA per 8-GPU instance
    Link("aws_efa_3200", 50 * GB, 20e-6),     # AWS p5/p5e/p5en: 3200 Gb/s EFA per 8-GPU instance
    # the export variants' NVLink: 400 GB/s bidirectional (A800, H800)
    Link("nvlink_400", 200 * GB, 5e-6),
    Link("ici_v4", 150 * GB, 5e-6),
    Link("ici_v5e", 100 * GB, 5e-6),
    Link("ici_v5p", 300 * GB, 5e-6),
    Link("ici_v6e", 224 * GB, 5e-6),
    # DCN between TPU slices: approximate, not a datasheet number (Google
    # publishes per-host NIC speeds; a v5p/v6e host carries 4 chips on
    # 2x100-200 Gb/s). Multi-slice jobs are calibrated against MaxText runs.
    Link("dcn_v4", 6.25 * GB, 30e-6),
    Link("dcn_v5e", 6.25 * GB, 30e-6),
    Link("dcn_v5p", 12.5 * GB, 30e-6),
    Link("dcn_v6e", 12.5 * GB, 30e-6),
)}


@dataclasses.dataclass(frozen=True)
class System:
  """A building block of clusters: a device, how many share the fast tier
  (NVLink node/NVL72 rack, TPU slice), and the fast and slow tiers."""

  name: str
  device: str
  devices_per_node: int
  intra: str
  inter: str
  aliases: tuple[str, ...] = ()
  # a cloud instance or export variant of a GPU another system also names:
  # when its own name appears it wins over the system of the same device
  instance: bool = False


SYSTEMS: dict[str, System] = {s.name: s for s in (
    System("dgx_a100_40gb", "a100_40gb", 8, "nvlink3", "ib_hdr_200",
           ("a100-sxm4-40gb", "a100 40gb", "a100 40 gb", "a100 sxm 40gb")),
    System("dgx_a100_80gb", "a100_80gb", 8, "nvlink3", "ib_hdr_200",
           ("a100-sxm4-80gb", "a100 80gb", "a100 80 gb", "a100 sxm 80gb", "selene", "a100")),
    System("dgx_h100", "h100_sxm", 8, "nvlink4", "ib_ndr_400",
           ("dgx-h100", "h100 sxm", "h100 80gb", "h100 80 gb", "h100 sxm5", "h100")),
    System("gcp_a3_h100", "h100_sxm", 8, "nvlink4", "gcp_tcpx", ("gcp a3", "a3,", "gpudirect-tcpx", "gcp", "a3 high"),
           instance=True),
    System("dgx_h200", "h200", 8, "nvlink4", "ib_ndr_400", ("h200",)),
    # cloud instances and export variants of the same GPUs: the device is
    # the datasheet's, the tiers are the instance's (vendor instance pages)
    System("gcp_a3_mega", "h100_sxm", 8, "nvlink4", "gcp_tcpxo",
           ("gcp a3 mega", "a3 mega", "a3 megagpu", "tcpxo", "gpudirect tcpxo"), instance=True),
    System("gcp_a3_ultra", "h200", 8, "nvlink4", "ib_ndr_400", ("gcp a3 ultra", "a3 ultra", "a3 ultragpu"), instance=True),
    System("aws_p4d", "a100_40gb", 8, "nvlink3", "aws_efa_400", ("p4d", "p4d 24xlarge"), instance=True),
    System("aws_p4de", "a100_80gb", 8, "nvlink3", "aws_efa_400", ("p4de", "p4de 24xlarge"), instance=True),
    System("aws_p5", "h100_sxm", 8, "nvlink4", "aws_efa_3200", ("p5", "p5 48xlarge"), instance=True),
    System("aws_p5e", "h200", 8, "nvlink4", "aws_efa_3200", ("p5e", "p5en", "p5e 48xlarge", "p5en 48xlarge"), instance=True),
    System("hgx_a800", "a100_80gb", 8, "nvlink_400", "ib_hdr_200", ("a800", "a800 80gb", "a800 sxm4 80gb")),
    System("hgx_h800", "h100_sxm", 8, "nvlink_400", "ib_ndr_400", ("h800", "h800 80gb", "h800 sxm5")),
    System("dgx_b200", "b200", 8, "nvlink5", "ib_ndr_400", ("dgx-b200", "b200")),
    System("dgx_b300", "b300", 8, "nvlink5", "ib_xdr_800", ("dgx-b300", "b300")),
    System("gb200_nvl72", "gb200", 72, "nvlink5", "ib_ndr_400", ("gb200", "gb200 nvl72")),
    System("gb300_nvl72", "gb300", 72, "nvlink5", "ib_xdr_800", ("gb300", "gb300 nvl72")),
    System("tpu_v4", "tpu_v4", 0, "ici_v4", "dcn_v4", ("tpu v4",)),
    System("tpu_v5e", "tpu_v5e", 0, "ici_v5e", "dcn_v5e", ("tpu v5e", "tpu v5 lite")),
    System("tpu_v5p", "tpu_v5p", 0, "ici_v5p", "dcn_v5p", ("tpu v5p",)),
    System("tpu_v6e", "tpu_v6e", 0, "ici_v6e", "dcn_v6e", ("tpu v6e", "trillium")),
)}
# devices_per_node == 0: a TPU system, whose "node" is the slice the cluster
# is built with (make_cluster's devices_per_node argument).


def _digest(obj) -> str:
  blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
  return hashlib.sha1(blob.encode()).hexdigest()[:12]


@dataclasses.dataclass(frozen=True)
class Cluster:
  """A simulated cluster. `devices_per_node` is the size of the fast domain
  (8-GPU NVLink node, 72-GPU NVL72 rack, chips per TPU slice); `intra` and
  `inter` are the tiers inside and between domains."""

  name: str
  device: DeviceSpec
  num_devices: int
  devices_per_node: int
  intra: Link
  inter: Link
  torus: tuple[int, ...] = ()  # TPU slice ICI torus shape (chips per axis); () for GPUs

  def __post_init__(self):
    if not isinstance(self.num_devices, int) or self.num_devices <= 0:
      raise ValueError(f"cluster {self.name!r}: num_devices must be a positive integer, got {self.num_devices!r}")
    if not isinstance(self.devices_per_node, int) or self.devices_per_node <= 0:
      raise ValueError(f"cluster {self.name!r}: devices_per_node must be a positive integer, "
                       f"got {self.devices_per_node!r}")
    if self.num_devices > self.devices_per_node and self.num_devices % self.devices_per_node:
      raise ValueError(f"cluster {self.name!r}: {self.num_devices} devices is not a whole number of "
                       f"{self.devices_per_node}-device nodes/slices")
    if self.torus and math.prod(self.torus) != self.node_size:
      raise ValueError(f"cluster {self.name!r}: torus {self.torus} does not hold the {self.node_size} chips "
                       f"of a slice")

  @property
  def platform(self) -> str:
    return self.device.platform

  @property
  def num_nodes(self) -> int:
    return max(1, self.num_devices // self.devices_per_node)

  @property
  def node_size(self) -> int:
    """Devices that share the fast tier (the node, rack or slice)."""
    return min(self.devices_per_node, self.num_devices)

  @property
  def memory_bytes_per_device(self) -> float:
    return self.device.hbm_bytes

  @property
  def num_slices(self) -> int:
    """TPU slices joined over DCN (1 for GPU clusters: one NVLink/IB fabric)."""
    return self.num_nodes if self.platform == "tpu" else 1

  @property
  def xla_topology(self) -> str:
    """The topology XLA compiles for: a TPU slice name ("v5p:4x4x4"; the
    cluster has `num_slices` of them) or a GPU "nodes x 1 x gpus-per-node"
    shape; "" when the device has no compile target (XLA_TARGETS)."""
    target = XLA_TARGETS.get(self.device.name, "")
    if not target:
      return ""
    if self.platform == "tpu":
      return f"{target}:" + "x".join(str(v) for v in self.torus) if self.torus else ""
    return f"{self.num_nodes}x1x{self.node_size}"

  @property
  def gpu_target_config(self) -> str:
    """File name of the GPU target config XLA compiles for ("" for TPUs)."""
    return XLA_TARGETS.get(self.device.name, "") if self.platform == "gpu" else ""

  @property
  def key(self) -> str:
    d = dataclasses.asdict(self)
    # the host link joined the device spec after measured tables were keyed
    # by their clusters: keys of devices without one stay as they were, and
    # it enters a key only where it is not the catalog device's own
    dev = DEVICES.get(self.device.name)
    # (the same for the FlashAttention-2 rate, which joined later still)
    for f in ("host_bw", "fa2_rate"):
      if dev is not None and d["device"][f] == getattr(dev, f) or d["device"][f] is None:
        d["device"].pop(f)
    return f"{self.name}-{_digest(d)}"


def default_torus(device: str, chips: int) -> tuple[int, ...]:
  """ICI torus of a TPU slice: 3-D for v4/v5p (near-cubic), 2-D for
  v5e/v6e (near-square), each axis a power of two where the count allows."""
  dims = 3 if device in ("tpu_v4", "tpu_v5p") else 2
  shape = [1] * dims
  rest, i = chips, 0
  while rest % 2 == 0 and rest > 1:
    shape[i % dims] *= 2
    rest //= 2
    i += 1
  shape[0] *= rest
  return tuple(sorted(shape))


def make_cluster(system: str, num_devices: int, devices_per_node: int | None = None,
                 inter_bw: float | None = None, inter_latency: float | None = None,
                 name: str | None = None, torus: tuple[int, ...] | None = None) -> Cluster:
  """A cluster of `num_devices` devices of a catalog system. For TPU
  systems `devices_per_node` is the slice size (chips per slice; default:
  one slice of every device; `torus` its ICI shape, default near-cubic).
  `inter_bw`/`inter_latency` override the system's inter-node/DCN tier for
  this cluster (bytes/s per device, s)."""
  if system not in SYSTEMS:
    raise ValueError(f"unknown system {system!r}; known: {', '.join(sorted(SYSTEMS))}")
  sysm = SYSTEMS[system]
  dpn = devices_per_node or sysm.devices_per_node or num_devices
  if not devices_per_node and num_devices > dpn and num_devices % dpn:
    dpn = fast_domain(system, int(num_devices))
  if sysm.devices_per_node and devices_per_node and devices_per_node > sysm.devices_per_node:
    raise ValueError(f"system {system!r} has {sysm.devices_per_node} devices per node, "
                     f"not {devices_per_node}")
  inter = LINKS[sysm.inter]
  if inter_bw is not None or inter_latency is not None:
    inter = Link(inter.name + "*", inter_bw if inter_bw is not None else inter.bw,
                 inter_latency if inter_latency is not None else inter.latency)
  dev = DEVICES[sysm.device]
  if torus is None:
    torus = default_torus(sysm.device, min(int(dpn), int(num_devices))) if dev.platform == "tpu" else ()
  return Cluster(name=name or f"{system}_{num_devices}", device=dev, num_devices=int(num_devices),
                 devices_per_node=int(dpn), intra=LINKS[sysm.intra], inter=inter, torus=tuple(torus))


RACK_TRAY = 4  # GPUs per compute tray of an NVL72-class rack: the unit a scheduler hands out


def fast_domain(system: str, num_devices: int) -> int:
  """Devices per fast (NVLink) domain for a job of `num_devices` that is not
  a whole number of the system's nodes. A rack-scale system (NVL72: 72
  GPUs in 18 trays of 4) is modelled with equal NVLink domains of whole
  trays (128 GPUs = 2 racks x 64, 256 = 4 x 64); an 8-GPU-node system
  cannot be placed, and the error says why."""
  sysm = SYSTEMS[system]
  per = sysm.devices_per_node
  if per >= 32:
    for d in range(per - per % RACK_TRAY, 0, -RACK_TRAY):
      if num_devices % d == 0:
        return d
  raise ValueError(f"{num_devices} devices is not a whole number of {per}-device nodes of {system}"
                   + (f" nor of whole {RACK_TRAY}-GPU trays per rack" if per >= 32 else ""))


def system_for_hardware_name(hardware: str) -> System:
  """The catalog system a published run names ("A100-SXM4-80GB (Selene DGX
  A100)", "H100 80GB (DGX-H100)", "TPU v5p (2x v5p-128)", ...). The system
  with the most alias hits wins (then the longest alias), so "H100 80GB
  (GCP A3, ...)" is the A3 system, not a DGX."""
  norm = lambda t: " " + re.sub(r"[\s_/,().-]+", " ", t.lower()).strip() + " "
  text = norm(_spelled(hardware))
  best, best_score = None, (0, 0)
  for s in SYSTEMS.values():
    hits = [a for a in s.aliases + (s.name,) if norm(a) in text]
    # an instance's names count once: the device a name spells out outweighs them
    score = (min(len(hits), 1) if s.instance else len(hits), max((len(a) for a in hits), default=0))
    if hits and score > best_score:
      best, best_score = s, score
  if best is None:
    known = sorted({a for s in SYSTEMS.values() for a in s.aliases})
    raise ValueError(f"unknown hardware name {hardware!r}; known names contain one of: {', '.join(known)}")
  named = [s for s in SYSTEMS.values() if s.instance and s.device == best.device
           and any(norm(a) in text for a in s.aliases)]
  if named and not best.instance:  # "A100 40GB (p4d.24xlarge)": the instance's network
    best = max(named, key=lambda s: max(len(a) for a in s.aliases if norm(a) in text))
  return best


def _spelled(name: str) -> str:
  """A hardware name spelled the catalog's way: a count prefix split off
  ("8xH100" -> "8x H100"), "TPUv4" / "tpu-v5p" -> "TPU v4" / "tpu v5p", and a
  bare slice name ("v5p-128") given its "TPU v5p"."""
  t = re.sub(r"\b(\d+)\s*[x\u00d7]\s*(?=[a-z]+\d)", r"\1x ", name, flags=re.I)
  t = re.sub(r"\btpu[\s_-]*v", "tpu v", t, flags=re.I)
  if not re.search(r"tpu", t, re.I):
    t = re.sub(r"\b(v(?:4|5p|5e|6e))-(\d+)\b", r"TPU \1 \1-\2", t, flags=re.I)
  return t


def tpu_chips_from_name(name: str) -> int | None:
  """Chips in a TPU slice name: v4-N and v5p-N count TensorCores (2 per
  chip), v5e-N and v6e-N count chips."""
  m = re.search(r"v(4|5p|5e|6e)-(\d+)", name.lower())
  if not m:
    return None
  n = int(m.group(2))
  return n // 2 if m.group(1) in ("4", "5p") else n


def cluster_scalars(cluster: Cluster) -> dict[str, float]:
  """The numbers the simulators read, as plain floats (the jit boundary
  turns them into arrays, so changing cluster does not recompile)."""
  d = cluster.device
  return dict(
      peak_bf16=d.peak_bf16, peak_fp8=d.peak_fp8 or d.peak_bf16, peak_fp4=d.peak_fp4 or d.peak_fp8 or d.peak_bf16,
      hbm_bytes=d.hbm_bytes, hbm_bw=d.hbm_bw, host_bw=d.host_bw or 0.0,
      intra_bw=cluster.intra.bw, intra_lat=cluster.intra.latency,
      inter_bw=cluster.inter.bw, inter_lat=cluster.inter.latency,
      node_size=float(cluster.node_size), num_devices=float(cluster.num_devices),
      torus=float(d.platform == "tpu"))
