"""Prediction intervals of the simulators and the memory verdict.

Where it sits: `analytic.f0` and `event.simulate_f1` call `intervals` on
their point predictions (same `xp` arrays, inside the one vectorized call);
the evaluators turn the verdict into a Measurement (sim/analytic.py),
`calibration.predictions` into the `pred_*_lo/_hi` and `pred_feasible`
columns. The widths come from SimConstants: `tput_spread` is fitted by
sim/calibration.py (`fit_spread`: the narrowest half-width holding >= 80 %
of every source's calibration rows); `mem_spread` and `extrap_gain` are set from first
principles (the calibration set publishes no memory).

Outside the calibrated range the intervals widen: `CALIBRATED_RANGE` is
the box of the calibration rows (model size, sequence length, devices,
tokens per micro-batch, device peak) and `distance` counts, in factors of
4 (log base 4), how far a candidate lies outside it, plus one unit for
each mechanism no calibration row exercised (eager FSDP / ZeRO-3 prefetch
with PyTorch, activation offload, fp4 GEMMs) or no fitted constant saw
(Mamba-2 layers and LatentMoE: the calibration set's Nemotron 3 Nano and
Super rows postdate the fit).
The throughput interval also widens by one unit on a device no calibration
row ran on (`CALIBRATED_DEVICES`: its kernels' efficiencies, clocks under
its power limit and its software are what the fitted constants never saw;
the memory model is bytes, and its interval does not widen for it), and with how host-bound a dense model's
layer passes are beyond any calibration row's (`DENSE_HOST_RATIO`, log-4
units): the host floor of an eager layer (`launch_s`) is fitted only through
MoE layers' host time (no dense calibration row comes near it), so where a
dense layer's kernels are short enough for it to matter (small models,
micro-batches, wide tensor parallelism) its value is an extrapolation.
Memory does not depend on it; its interval does not widen for it.

Memory verdict: 2 fits (even the pessimistic bound fits the device), 1
uncertain (only the optimistic bound fits: worth a compile or a profile,
not an OOM), 0 does not fit (even the optimistic bound exceeds it).
"""

from __future__ import annotations

from typing import Any, Mapping

from autoscout_jax.sim import costs, hardware

# The calibration set's box (shared/calibration/published_points.csv, 167
# supported rows): min and max of each feature.
CALIBRATED_RANGE = {
    "params": (1.6e9, 1.0e12),
    "seq": (2048.0, 8192.0),
    "devices": (8.0, 8192.0),
    "tokens_mb": (2048.0, 65536.0),
    "peak": (197e12, 2250e12),
}
# The largest host time / kernel time of a dense layer's forward among the
# calibration rows' dense models (costs.layer_costs `dense_host_ratio`, at
# the calibrated constants): 0.164, a NeMo 24.07 row.
DENSE_HOST_RATIO = 0.164
# The devices the calibration rows ran on (A100-80GB, H100 SXM, B200, TPU
# v4 / v5e / v5p), told apart by their bf16 and fp4 peaks and memory
# bandwidth (B300 has B200's bf16 peak and bandwidth, not its fp4 peak).
CALIBRATED_DEVICES = ("a100_80gb", "h100_sxm", "b200", "tpu_v4", "tpu_v5e", "tpu_v5p")
FITS, UNCERTAIN, NO_FIT = 2, 1, 0
VERDICT_NAMES = {FITS: "yes", UNCERTAIN: "uncertain", NO_FIT: "no"}


def distance(xp, plan: Mapping[str, Any], m: Mapping[str, Any], hw: Mapping[str, Any]) -> Any:
  """How far outside the calibrated range, in log-4 units (0 inside)."""
  n = plan["tp"] * plan["pp"] * plan["cp"] * plan["dp"]
  feats = {"params": costs.total_params(xp, m), "seq": m["s"], "devices": n,
           "tokens_mb": plan["mbs"] * m["s"] / plan["cp"], "peak": hw["peak_bf16"]}
  d = 0.0
  for k, (lo, hi) in CALIBRATED_RANGE.items():
    x = xp.maximum(feats[k], 1e-30)
    d = d + xp.maximum(xp.maximum(xp.log(x / hi), xp.log(lo / x)), 0.0) / xp.log(4.0)
  eager_fsdp = (plan["zero"] == 3) & (plan["xla"] == 0) & (plan["rails"] > 0)
  return (d + xp.where(eager_fsdp, 1.0, 0.0) + xp.where(plan["offload"] > 0, 1.0, 0.0)
          + xp.where(m["fp4"] > 0, 1.0, 0.0) + xp.where(m["f_ssm"] > 0, 1.0, 0.0)
          + xp.where(m["lat"] > 0, 1.0, 0.0))


def uncalibrated_device(xp, hw: Mapping[str, Any]) -> Any:
  """1 on a device none of the calibration rows ran on, else 0."""
  seen = 0.0
  for name in CALIBRATED_DEVICES:
    dev = hardware.DEVICES[name]
    fp4 = dev.peak_fp4 or dev.peak_fp8 or dev.peak_bf16
    same = ((xp.abs(hw["peak_bf16"] / dev.peak_bf16 - 1) < 1e-3) & (xp.abs(hw["hbm_bw"] / dev.hbm_bw - 1) < 1e-3)
            & (xp.abs(hw["peak_fp4"] / fp4 - 1) < 1e-3))
    seen = xp.maximum(seen, xp.where(same, 1.0, 0.0))
  return 1.0 - seen


def intervals(xp, plan: Mapping[str, Any], m: Mapping[str, Any], hw: Mapping[str, Any], c: Mapping[str, Any],
              tokens_per_s: Any, mem: Any, dense_host_ratio: Any = 0.0, mem_optional: Any = 0.0) -> dict[str, Any]:
  """80 % intervals of throughput and peak memory, and the memory verdict;
  `extrapolation` is the throughput interval's distance (the memory
  interval's without the host term). `mem_optional`: bytes of `mem` that
  depend on a stack version the input does not name (memory.py); the
  optimistic bound leaves them out."""
  d = distance(xp, plan, m, hw)
  d_host = xp.maximum(xp.log(xp.maximum(dense_host_ratio, 1e-30) / DENSE_HOST_RATIO), 0.0) / xp.log(4.0)
  d_host = d_host + uncalibrated_device(xp, hw)
  wt = c["tput_spread"] * (1 + c["extrap_gain"] * (d + d_host))
  wm = c["mem_spread"] * (1 + c["extrap_gain"] * d)
  mem_lo, mem_hi = (mem - mem_optional) / (1 + wm), mem * (1 + wm)
  cap = hw["hbm_bytes"]
  verdict = xp.where(mem_hi <= cap, float(FITS), xp.where(mem_lo <= cap, float(UNCERTAIN), float(NO_FIT)))
  return dict(tokens_per_s_per_device_lo=tokens_per_s * xp.exp(-wt),
              tokens_per_s_per_device_hi=tokens_per_s * xp.exp(wt), tput_spread=wt,
              peak_mem_lo=mem_lo, peak_mem_hi=mem_hi, mem_verdict=verdict, extrapolation=d + d_host)
