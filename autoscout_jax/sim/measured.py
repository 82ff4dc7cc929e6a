"""The simulators' model of measured devices: this machine's devices as a
hardware description, from micro-benchmarks (local/microbench.py).

Where it sits: `local/devices.py` runs the micro-benchmarks once per
machine (cached in the workdir by `key`) and hands the reply to
`MeasuredDevices.from_reply`; the local F0/F1 evaluators
(local/sim_evaluators.py: sim/analytic.py's and sim/event.py's with their
hardware hook changed) score candidates on `sim_cluster(...)` with
`sim_constants(...)`. Plain numpy.

Everything here is physical and comes from the micro-benchmarks alone
(never from the profiles the simulators are compared with):
  peak, gemm_knee  least squares of the simulators' own GEMM law
                   t = flops / (peak * d / (d + knee)) (sim/costs.py) over
                   the measured square matmuls of the compute dtype, so the
                   datasheet efficiency is 1 (the peak IS what a device
                   reaches, all devices busy at once)
  mem_bw           bytes read + written per second of the largest copy
  link bw, latency least squares of the simulators' alpha-beta collective
                   formulas (sim/collectives.py) over every measured
                   all-reduce, all-gather, reduce-scatter and all-to-all;
                   comm efficiency is then 1
  collective_fixed the fixed cost of one collective call (on a CPU host the
                   rendezvous of the devices' threads), the third term of
                   that fit where collectives of several group sizes were
                   measured (the per-step latency scales with log2 of the
                   group, this does not)
  op_s             the per-kernel floor of a compiled program (a chain of
                   tiny dependent kernels), which sets the host floor of a
                   layer pass
  transc_s         seconds per exp / tanh element per device beyond the
                   element's memory traffic at `mem_bw` (median of both)
  dispatch         the fixed cost of dispatching a step's program to all
                   devices and of each argument buffer it updates (least
                   squares over the measured calls)
On a CPU platform the devices are threads of the host, so a kernel's
launch cost adds to its work (`host_serial`); older files without the
group collectives or the dispatch rows model neither (0).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from typing import Any, Mapping, Sequence

import numpy as np

from autoscout_jax.sim import hardware
from autoscout_jax.sim.constants import CALIBRATED
from autoscout_jax.sim.costs import SimConstants

FORMAT = "autoscout-measured-devices-v1"
# Kernels of one decoder layer's forward pass (q, k, v, scores, context,
# out, two or three MLP matmuls, two norms, softmax, rope, residuals): the
# layer pass pays at least this many per-kernel floors.
KERNELS_PER_LAYER = 14
_DTYPES = {"bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "bfloat16", "fp32": "float32",
           "float32": "float32"}


def compute_dtype(precision: str) -> str:
  """The matmul dtype a workload precision runs in (fp8 runs in bf16 here)."""
  p = str(precision).lower()
  return _DTYPES.get(p, "bfloat16")


def _lstsq_pos(a: np.ndarray, y: np.ndarray) -> np.ndarray:
  """Least squares in relative error (rows scaled by 1/y), coefficients >= 0
  (a negative one is dropped and the rest refitted)."""
  a, y = np.asarray(a, float), np.asarray(y, float)
  keep = list(range(a.shape[1]))
  while True:
    w = a[:, keep] / y[:, None]
    coef, *_ = np.linalg.lstsq(w, np.ones(len(y)), rcond=None)
    if (coef >= 0).all() or len(keep) == 1:
      out = np.zeros(a.shape[1])
      out[keep] = np.maximum(coef, 0.0)
      return out
    keep.pop(int(np.argmin(coef)))


@dataclasses.dataclass(frozen=True)
class MeasuredDevices:
  """What the micro-benchmarks measured (raw rows, kept) and the physical
  numbers fitted to them. `key` names the machine it was measured on
  (platform, device count, versions, host; local/devices.py)."""

  key: str
  platform: str
  device_kind: str
  num_devices: int
  provenance: Mapping[str, Any]
  matmul: tuple[Mapping[str, Any], ...]
  copy: tuple[Mapping[str, Any], ...]
  op: tuple[Mapping[str, Any], ...]
  collectives: tuple[Mapping[str, Any], ...]
  dispatch: tuple[Mapping[str, Any], ...] = ()
  transcendental: tuple[Mapping[str, Any], ...] = ()

  def __post_init__(self):
    if self.num_devices < 1 or not self.matmul or not self.copy or not self.op:
      raise ValueError("measured devices need a device count and matmul, copy and op timings")
    for row in (*self.matmul, *self.copy, *self.op, *self.collectives, *self.dispatch, *self.transcendental):
      if not float(row["s"]) > 0:
        raise ValueError(f"a micro-benchmark timing is not positive: {dict(row)}")
    if self.num_devices > 1 and not self.collectives:
      raise ValueError(f"{self.num_devices} devices but no collective timings")

  # --- (de)serialization ---------------------------------------------------------------
  @classmethod
  def from_reply(cls, key: str, reply: Mapping[str, Any]) -> "MeasuredDevices":
    prov = dict(reply.get("provenance") or {})
    tup = lambda rows: tuple(dict(r) for r in rows or ())
    return cls(key=key, platform=str(prov.get("platform", "")), device_kind=str(prov.get("device_kind", "")),
               num_devices=int(prov.get("device_count", 0)), provenance=prov, matmul=tup(reply.get("matmul")),
               copy=tup(reply.get("copy")), op=tup(reply.get("op")), collectives=tup(reply.get("collectives")),
               dispatch=tup(reply.get("dispatch")), transcendental=tup(reply.get("transcendental")))

  def to_json(self) -> dict[str, Any]:
    return {"format": FORMAT, "key": self.key, "provenance": dict(self.provenance),
            "matmul": list(map(dict, self.matmul)), "copy": list(map(dict, self.copy)),
            "op": list(map(dict, self.op)), "collectives": list(map(dict, self.collectives)),
            **({"dispatch": list(map(dict, self.dispatch))} if self.dispatch else {}),
            **({"transcendental": list(map(dict, self.transcendental))} if self.transcendental else {}),
            "fitted": self.fitted()}

  @classmethod
  def from_json(cls, obj: Mapping[str, Any]) -> "MeasuredDevices":
    if obj.get("format") != FORMAT:
      raise ValueError(f"not a measured-devices file (format {obj.get('format')!r}, expected {FORMAT!r})")
    return cls.from_reply(str(obj["key"]), obj)

  @property
  def digest(self) -> str:
    raw = {k: v for k, v in self.to_json().items() if k != "fitted"}
    return hashlib.sha1(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()[:12]

  # --- fitted physical numbers ---------------------------------------------------------------
  def gemm(self, dtype: str) -> tuple[float, float]:
    """(peak flop/s, knee) of square matmuls of `dtype` (float32 where the
    dtype was not measured), under the simulators' GEMM law."""
    rows = [r for r in self.matmul if r["dtype"] == dtype] or [r for r in self.matmul if r["dtype"] == "float32"]
    if not rows:
      raise ValueError(f"no matmul timings of dtype {dtype!r}")
    flops = np.array([2.0 * r["m"] * r["k"] * r["n"] for r in rows])
    dim = np.array([float(min(r["m"], r["k"], r["n"])) for r in rows])
    s = np.array([float(r["s"]) for r in rows])
    inv_peak, knee_over_peak = _lstsq_pos(np.stack([flops, flops / dim], 1), s)
    if not inv_peak > 0:  # every size equally slow per flop/dim: take the best measured rate
      return float(np.max(flops / s)), 0.0
    return float(1.0 / inv_peak), float(knee_over_peak / inv_peak)

  @property
  def mem_bw(self) -> float:
    """Bytes read + written per second per device (the largest copy)."""
    r = max(self.copy, key=lambda r: r["bytes"])
    return 2.0 * float(r["bytes"]) / float(r["s"])

  @property
  def op_s(self) -> float:
    return float(np.median([float(r["s"]) for r in self.op]))

  def link_fit(self) -> tuple[float, float, float]:
    """(bandwidth bytes/s, latency s per step, fixed s per call) of the
    simulators' one link tier, fitted to every collective timing with the
    simulators' formulas plus a fixed cost per call; the fixed cost is 0
    unless groups of more than one size were measured (with one size it
    cannot be told from the per-step latency)."""
    n = self.num_devices
    if n < 2:
      return 1e12, 0.0, 0.0
    rows_a, ys = [], []
    for r in self.collectives:
      b, g = float(r["bytes"]), int(r.get("group", n))  # per device, the op's input; the group size
      lg = math.log2(g)
      if r["op"] == "all_reduce":  # 2 (g-1)/g B / bw + 2 log2 g lat
        rows_a.append((2 * (g - 1) / g * b, 2 * lg, 1.0))
      elif r["op"] == "all_gather":  # full buffer g B: (g-1)/g g B / bw + log2 g lat
        rows_a.append(((g - 1) * b, lg, 1.0))
      elif r["op"] in ("reduce_scatter", "all_to_all"):  # (g-1)/g B / bw + log2 g lat
        rows_a.append(((g - 1) / g * b, lg, 1.0))
      else:
        continue
      ys.append(float(r["s"]))
    a = np.array(rows_a)
    if len({int(r.get("group", n)) for r in self.collectives}) < 2:
      a[:, 2] = 0.0  # one group size: no fixed term (the column stays, fitted to 0)
    inv_bw, lat, fixed = _lstsq_pos(a, np.array(ys))
    return (float(1.0 / inv_bw) if inv_bw > 0 else 1e12), float(lat), float(fixed)

  def link(self) -> tuple[float, float]:
    """(bandwidth bytes/s, latency s per step) of the one link tier."""
    return self.link_fit()[:2]

  @property
  def collective_fixed_s(self) -> float:
    return self.link_fit()[2]

  @property
  def transc_s(self) -> float:
    """Seconds per transcendental element per device beyond its memory
    traffic (0 without transcendental timings)."""
    if not self.transcendental:
      return 0.0
    per = [max(float(r["s"]) - 8.0 * float(r["elems"]) / self.mem_bw, 0.0) / float(r["elems"])
           for r in self.transcendental]
    return float(np.median(per))

  def dispatch_fit(self) -> tuple[float, float]:
    """(s per program call, s per argument buffer) of dispatching a step;
    (0, 0) when the file has no dispatch timings."""
    if not self.dispatch:
      return 0.0, 0.0
    k = np.array([float(r["buffers"]) for r in self.dispatch])
    s = np.array([float(r["s"]) for r in self.dispatch])
    if len(set(k)) < 2:
      return float(np.min(s)), 0.0
    call, per = _lstsq_pos(np.stack([np.ones_like(k), k], 1), s)
    return float(call), float(per)

  def fitted(self) -> dict[str, float]:
    bw, lat, fixed = self.link_fit()
    call, per = self.dispatch_fit()
    out = {"mem_bw": self.mem_bw, "op_s": self.op_s, "link_bw": bw, "link_latency": lat,
           "collective_fixed_s": fixed, "dispatch_s": call, "dispatch_buffer_s": per,
           "transcendental_s": self.transc_s}
    for dt in sorted({r["dtype"] for r in self.matmul}):
      peak, knee = self.gemm(dt)
      out[f"peak_{dt}"], out[f"gemm_knee_{dt}"] = peak, knee
    return out


def sim_cluster(md: MeasuredDevices, memory_bytes_per_device: float, precision: str = "bf16",
                name: str = "local") -> hardware.Cluster:
  """The local devices as a simulated cluster: one node of `num_devices`,
  its peak the measured matmul peak of the workload's compute dtype, its
  memory the cluster's per-device budget, one measured link tier."""
  peak, _ = md.gemm(compute_dtype(precision))
  platform = md.platform if md.platform in ("cpu", "gpu", "tpu") else "cpu"
  dev = hardware.DeviceSpec(f"measured:{md.device_kind or md.platform}", peak, None,
                            float(memory_bytes_per_device), md.mem_bw, platform)
  bw, lat = md.link()
  link = hardware.Link("measured", bw, lat)
  return hardware.Cluster(name=name, device=dev, num_devices=md.num_devices, devices_per_node=md.num_devices,
                          intra=link, inter=link)


def sim_constants(md: MeasuredDevices, precision: str = "bf16", base: SimConstants = CALIBRATED) -> SimConstants:
  """`base` with the efficiencies the measurement already contains set to
  1 (GEMM, collectives), the measured GEMM knee, the host floor of a
  layer pass from the measured per-kernel floor (an XLA program pays a
  tenth of `launch_s`, sim/costs.py), the measured fixed cost of a
  collective call and of dispatching a step (per call and per buffer), the
  cost of a transcendental element; on
  a CPU the launches add to the kernels' work (`host_serial`)."""
  _, knee = md.gemm(compute_dtype(precision))
  call, per = md.dispatch_fit()
  return dataclasses.replace(base, gemm_eff=1.0, gemm_knee=max(knee, 1e-6), comm_eff=1.0,
                             launch_s=10.0 * KERNELS_PER_LAYER * md.op_s,
                             host_serial=1.0 if md.platform == "cpu" else 0.0, step_host_s=call,
                             buffer_host_s=per, coll_fixed_s=md.collective_fixed_s, transc_s=md.transc_s)


def fit_summary(md: MeasuredDevices, precision: str = "bf16") -> str:
  """One line: the numbers the simulators use."""
  peak, knee = md.gemm(compute_dtype(precision))
  bw, lat, fixed = md.link_fit()
  call, per = md.dispatch_fit()
  return (f"{md.num_devices} x {md.device_kind or md.platform}: {peak / 1e9:.1f} GFLOP/s per device "
          f"({compute_dtype(precision)}, knee {knee:.0f}), memory {md.mem_bw / 1e9:.1f} GB/s, link "
          f"{bw / 1e9:.2f} GB/s + {lat * 1e6:.0f} us per step + {fixed * 1e6:.0f} us per call, kernel floor "
          f"{md.op_s * 1e6:.2f} us, step dispatch {call * 1e6:.0f} us + {per * 1e6:.1f} us per buffer, "
          f"exp/tanh {md.transc_s * 1e9:.1f} ns per element")

