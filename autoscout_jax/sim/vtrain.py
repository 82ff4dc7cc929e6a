"""Validation of the simulators on vTrain's measured A100 runs (never fitted).

Where it sits: `tools/calibration_report --validate=vtrain` calls `report`;
the data are the vTrain artifact's tables shipped in
autoscout_jax/data/vtrain/ (README there). Nothing here feeds the
calibration (sim/calibration.py fits on the published set only).

What the runs were, from vTrain's own configurations (MICRO'24 artifact,
`config/validation/multi/*.json` and its model code): GPT-3-style models
(4h MLP with GELU, learned positions, 50,257-token vocabulary, embedding
on the first pipeline stage and the output layer on the last) trained with
Megatron-DeepSpeed in fp16 with Adam, activation checkpointing of every
layer (full recompute), attention scores materialized (fused softmax, no
FlashAttention), no sequence parallelism, plain data parallelism whose
fp16 gradients are all-reduced after the backward (no bucketing/overlap),
1F1B pipelining. The cluster: 8-GPU A100 nodes on NVLink with 800 Gb/s of
InfiniBand per node, i.e. 12.5 GB/s per GPU -- a property of this cluster,
set here, not fitted.

Sweeps: the rows sharing (model, GPU count) form one sweep (vTrain's four
multi-node sweeps: 3.6B on 64, 18.4B on 256, 39.1B and 175B on 512 GPUs).
Per sweep: mean absolute percentage error of the iteration time and the
Spearman rank correlation of predicted vs measured iteration time.
"""

from __future__ import annotations

import csv
import os
from typing import Any, Mapping

import numpy as np

from autoscout_jax.sim import costs, hardware
from autoscout_jax.targets.megatron import megatron_plan

DATA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "vtrain")
VOCAB = 50257.0
INTER_BW = 800e9 / 8 / 8  # 800 Gb/s per 8-GPU node, bytes/s per GPU
SYSTEM = "dgx_a100_80gb"


def read(name: str = "ground_truth_multi.csv") -> list[dict[str, float]]:
  """The rows of a vTrain table as floats, with the column names shortened."""
  keys = {"Parameters (billion)": "params_b", "# GPUs": "gpus", "global batch": "gbs", "micro batch": "mbs",
          "hidden size": "h", "attention heads": "a", "# layers": "L", "sequence length": "s",
          "tensor parallelism": "tp", "data parallelism": "dp", "pipeline parallelism": "pp",
          "iteration time (ms)": "ms"}
  with open(os.path.join(DATA_DIR, name), newline="") as f:
    return [{keys[k]: float(v) for k, v in r.items() if k in keys} for r in csv.DictReader(f)]


def inputs(rows: list[Mapping[str, float]]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray],
                                                     dict[str, np.ndarray]]:
  """(plan, model, hw) arrays of vTrain rows."""
  col = lambda k: np.array([r[k] for r in rows], np.float64)
  n = len(rows)
  one, zero = np.ones(n), np.zeros(n)
  h, a, L, s, gbs = col("h"), col("a"), col("L"), col("s"), col("gbs")
  model = dict(L=L, h=h, a=a, g=a, d=h / a, f=4 * h, V=VOCAB * one, s=s, gated=zero, E=zero, k=zero, fe=4 * h,
               fs=zero, Ld=L, tie=one, gbs=gbs, fp8=zero, fp4=zero, frozen=zero,
               lora_r=zero, lora_p=zero, lora_pm=zero, lora_pe=zero, frozen_bytes=2 * one, fill=one, fill_packed=one, attn_packed=one,
               **{k: v * one for k, v in costs.MODEL_DEFAULTS.items()})
  cluster = hardware.make_cluster(SYSTEM, 8, inter_bw=INTER_BW)
  hw = {k: v * one for k, v in hardware.cluster_scalars(cluster).items()}
  hw["num_devices"] = col("gpus")
  plan = megatron_plan(col("tp"), col("pp"), one, col("dp"), one, one, one, col("mbs"), zero, zero,
                       2 * one, zero, one, zero, zero, 40e6, zero, gbs, L, 8.0, flash=0.0, grad_bytes=2.0)
  return plan, model, hw


def simulate(rows, fidelity: str = "analytic", consts=None) -> dict[str, np.ndarray]:
  plan, model, hw = inputs(rows)
  if fidelity == "analytic":
    from autoscout_jax.sim.analytic import simulate_f0 as sim
  elif fidelity == "event":
    from autoscout_jax.sim.event import simulate_f1 as sim
  else:
    raise ValueError(f"unknown fidelity {fidelity!r}; known: analytic, event")
  return sim({k: plan[k] for k in costs.PLAN_FIELDS}, model, hw, consts)


def _scored(name: str, fidelity: str, consts):
  """A table's rows, the simulator's output on them, predicted and measured
  iteration times (ms), and whether each row's measured tokens/s per device
  lies in the 80 % interval."""
  rows = read(name)
  out = simulate(rows, fidelity, consts)
  pred = np.asarray(out["step_time_s"]) * 1e3
  meas = np.array([r["ms"] for r in rows])
  tps = np.array([r["gbs"] * r["s"] / (r["ms"] / 1e3) / r["gpus"] for r in rows])
  inside = (tps >= np.asarray(out["tokens_per_s_per_device_lo"])) & (tps <= np.asarray(out["tokens_per_s_per_device_hi"]))
  return rows, out, pred, meas, inside


def report(fidelity: str = "analytic", name: str = "ground_truth_multi.csv", consts=None) -> list[dict[str, Any]]:
  """One entry per sweep: model, gpus, rows, mape, spearman, fits (share of
  the measured runs predicted to fit in memory)."""
  from scipy.stats import spearmanr
  rows, out, pred, meas, inside = _scored(name, fidelity, consts)
  keys = sorted({(r["params_b"], r["gpus"]) for r in rows})
  res = []
  for p, g in keys:
    idx = np.array([i for i, r in enumerate(rows) if (r["params_b"], r["gpus"]) == (p, g)])
    err = np.abs(pred[idx] / meas[idx] - 1)
    rho = spearmanr(pred[idx], meas[idx]).statistic if len(idx) > 2 else float("nan")
    res.append(dict(model=f"{p:g}B", gpus=int(g), rows=len(idx), mape=float(np.nanmean(err)),
                    spearman=float(rho), fits=float(np.mean(out["feasible"][idx])),
                    bias=float(np.nanmean(pred[idx] / meas[idx] - 1)), in80=float(np.mean(inside[idx]))))
  return res


def report_single(fidelity: str = "analytic", consts=None, min_rows: int = 8) -> list[dict[str, Any]]:
  """The single-node table (ground_truth_single.csv), one entry per (GPU
  count, hidden size): its rows' mean absolute error and bias, and the
  median rank correlation inside its sweeps (rows sharing GPU count,
  hidden size, layers and global batch; sweeps of >= `min_rows` rows)."""
  from scipy.stats import spearmanr
  rows, out, pred, meas, inside = _scored("ground_truth_single.csv", fidelity, consts)
  res = []
  for g, h in sorted({(r["gpus"], r["h"]) for r in rows}):
    idx = np.array([i for i, r in enumerate(rows) if (r["gpus"], r["h"]) == (g, h)])
    ratio = pred[idx] / meas[idx]
    sweeps = {}
    for i in idx:
      sweeps.setdefault((rows[i]["L"], rows[i]["gbs"]), []).append(i)
    rhos = [spearmanr(pred[v], meas[v]).statistic for v in sweeps.values() if len(v) >= min_rows]
    res.append(dict(gpus=int(g), hidden=int(h), rows=len(idx), sweeps=len(rhos),
                    mape=float(np.nanmean(np.abs(ratio - 1))), bias=float(np.nanmean(ratio - 1)),
                    spearman=float(np.median(rhos)) if rhos else float("nan"),
                    fits=float(np.mean(out["feasible"][idx])), in80=float(np.mean(inside[idx]))))
  return res


def format_single(res: list[dict[str, Any]], fidelity: str) -> str:
  lines = [f"vTrain single-node table, fidelity {fidelity} (validation only; per GPU count and hidden size: "
           f"MAPE, bias, median within-sweep rank correlation over sweeps of >= 8 rows)",
           f"  {'gpus':>5s} {'hidden':>7s} {'rows':>5s} {'sweeps':>7s} {'MAPE':>7s} {'bias':>7s} {'spearman':>9s} "
           f"{'fit':>6s} {'in 80%':>7s}"]
  for d in res:
    lines.append(f"  {d['gpus']:5d} {d['hidden']:7d} {d['rows']:5d} {d['sweeps']:7d} {100 * d['mape']:6.1f}% "
                 f"{100 * d['bias']:+6.1f}% {d['spearman']:9.2f} {100 * d['fits']:5.0f}% {100 * d['in80']:6.0f}%")
  return "\n".join(lines)


def format_report(res: list[dict[str, Any]], fidelity: str) -> str:
  lines = [f"vTrain multi-node sweeps, fidelity {fidelity} (validation only; targets: MAPE <= 10 %, "
           f"rank correlation >= 0.85)",
           f"  {'model':>7s} {'gpus':>5s} {'rows':>5s} {'MAPE':>7s} {'bias':>7s} {'spearman':>9s} {'fit':>6s} "
           f"{'in 80%':>7s}"]
  for d in res:
    lines.append(f"  {d['model']:>7s} {d['gpus']:5d} {d['rows']:5d} {100 * d['mape']:6.1f}% {100 * d['bias']:+6.1f}% "
                 f"{d['spearman']:9.2f} {100 * d['fits']:5.0f}% {100 * d['in80']:6.0f}%")
  return "\n".join(lines)
