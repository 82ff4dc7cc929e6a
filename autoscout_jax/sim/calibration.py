"""Calibration of the simulators on published training runs.

Where it sits: a tool on top of the simulators (none imports it): the
SimConstants every simulator uses by default live in sim/constants.py
(`CALIBRATED`, fitted here); `prepare` + `simulate` run a fidelity over
published rows (sim/published.py parses them), `predictions` and `report`
serve tools/predict_published.py and tools/calibration_report.py; `fit`
re-derives the constants.

How the constants were fit (re-run with `python -m autoscout_jax.sim.calibration
--input=published_points.csv`): every supported row of
shared/calibration/published_points.csv is scored by F0 in ONE vectorized
call; the loss is the mean squared log ratio of predicted to published
tokens/s per device (single-layer timing rows: of the layer time), with
each source weighted equally so no one table dominates. Seven global
constants are free (`FITTED`: GEMM efficiency and knee, flash-attention
efficiency, collective bandwidth efficiency, fp8 GEMM efficiency, grouped
expert-GEMM efficiency, host time of an eager layer pass), each kept
inside a physical range by a sigmoid reparametrization; Nelder-Mead from
the defaults. The fit rests on the lower bound of attn_eff: the data would
rather make attention slower still. Then `tput_spread` (the half-width of
the 80 % throughput interval, sim/uncertainty.py) is the narrowest that
holds >= 80 % of EVERY source's rows under F0 and under F1 (`fit_spread`:
the largest per-source 80th percentile of |log error|, the wider
fidelity's). Nothing is fit per row or per source; memory constants
(framework overhead, fragmentation, loss bytes -- XLA's per platform from
compiled memory_analysis, targets/jax_mesh.xla_loss_bytes -- ZeRO-3 live
parameters, the memory interval) are set from first principles, not fit:
the set publishes no memory and no OOM (every published run must fit or be
uncertain, and does). vTrain's measured sweeps (sim/vtrain.py) are
validation only; nothing is fit to them.

Row conventions (sim/published.py): when a NeMo / Megatron-Bridge row does
not state its recompute policy, the least policy that fits memory is used
(none, then selective, then full), as recipes are tuned.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from autoscout_jax.sim import published, uncertainty
from autoscout_jax.sim.constants import CALIBRATED
from autoscout_jax.sim.costs import MODEL_FIELDS, PLAN_FIELDS, SimConstants, model_fields

FITTED = {  # name: (low, high) -- physical ranges, the fit never leaves them
    "gemm_eff": (0.5, 0.95),     # cuBLAS/XLA large-GEMM fraction of dense peak
    "gemm_knee": (32.0, 1024.0),  # elements: GEMMs with a side this small run at half speed
    "attn_eff": (0.35, 0.8),     # FlashAttention-2/3 forward reaches 35-75 % of peak
    "comm_eff": (0.4, 0.95),     # NCCL/ICI bus bandwidth over link bandwidth
    "fp8_eff": (0.5, 0.9),       # fp8 GEMMs: never the full 2x of the datasheet
    "moe_eff": (0.3, 1.0),       # grouped expert GEMMs vs dense GEMMs
    "launch_s": (0.0, 2e-3),     # host time of one eager layer forward, s (PyTorch: 0.1-1 ms)
}


@dataclasses.dataclass
class Prepared:
  """Supported rows stacked as arrays, plus the status of every row."""

  rows: list[dict[str, str]]
  index: list[int]  # row positions of the supported rows
  status: list[str]  # per row: "ok" or "unsupported: <reason>"
  plan: dict[str, np.ndarray]
  model: dict[str, np.ndarray]
  hw: dict[str, np.ndarray]
  auto_recompute: np.ndarray  # recompute unstated: the least policy that fits is used
  # micro-batch left to the stack (unstated or "auto", no pipeline): the
  # largest that fits, halving from the whole per-replica batch
  auto_microbatch: np.ndarray | None = None


def prepare(rows: Sequence[Mapping[str, str]]) -> Prepared:
  status, index, plans, models, hws = [], [], [], [], []
  for i, row in enumerate(rows):
    try:
      p, m, h = published.row_inputs(row)
    except published.Unsupported as e:
      status.append(f"unsupported: {e}")
      continue
    except (ValueError, KeyError, TypeError, ZeroDivisionError, OverflowError) as e:
      # one row the simulators cannot read never stops the others
      status.append(f"unsupported: row not understood ({type(e).__name__}: {e})")
      continue
    status.append("ok")
    index.append(i)
    plans.append(p)
    models.append(m)
    hws.append(h)
  stack = lambda ds, keys: {k: np.array([d[k] for d in ds], np.float64) for k in keys}
  hw_keys = tuple(hws[0]) if hws else ()
  auto = np.array([published.recompute_unstated(rows[i]) for i in index], bool)
  auto_mb = np.array([published.microbatch_unstated(rows[i]) for i in index], bool)
  models = [model_fields(m) for m in models]
  return Prepared(list(map(dict, rows)), index, status, stack(plans, PLAN_FIELDS), stack(models, MODEL_FIELDS),
                  stack(hws, hw_keys), auto, auto_mb)


def simulate(prep: Prepared, fidelity: str = "analytic", consts: SimConstants | None = None) -> dict[str, np.ndarray]:
  """Outputs of a fidelity over the supported rows (row-aligned with prep.index)."""
  if not prep.index:
    return {}
  consts = consts or CALIBRATED
  if fidelity == "analytic":
    from autoscout_jax.sim.analytic import simulate_f0 as sim
  elif fidelity == "event":
    sim = event_simulator()
    if sim is None:
      raise RuntimeError("the event fidelity (F1, autoscout_jax/sim/event.py) is not available")
  else:
    raise ValueError(f"unknown fidelity {fidelity!r}; known: analytic, event")
  out = {k: np.array(v) for k, v in sim(prep.plan, prep.model, prep.hw, consts).items()}
  # A run whose recompute policy is unstated fit in memory, so it used the
  # least recompute that fits: try selective, then full, where none does not.
  def redo_where(redo: np.ndarray, plan: Mapping[str, np.ndarray]) -> None:
    """Re-simulate `plan` and take its outputs where `redo` holds."""
    alt = sim(plan, prep.model, prep.hw, consts)
    for k in out:
      if k not in ("recompute", "mbs"):
        out[k] = np.where(redo, alt[k], out[k])

  out["recompute"] = np.array(prep.plan["recompute"], np.float64)
  for policy in (1.0, 2.0):
    redo = prep.auto_recompute & ~out["fits_point"].astype(bool) & (out["recompute"] < policy)
    if not redo.any():
      break
    redo_where(redo, dict(prep.plan, recompute=np.where(redo, policy, prep.plan["recompute"])))
    out["recompute"] = np.where(redo, policy, out["recompute"])
  # A run that left its micro-batch to the stack trained, so the stack found
  # one that fits: halve it (accumulating twice as many) until it does, as
  # automatic micro-batching does after an out-of-memory step.
  out["mbs"] = np.array(prep.plan["mbs"], np.float64)
  auto_mb = prep.auto_microbatch if prep.auto_microbatch is not None else np.zeros(len(prep.index), bool)
  for _ in range(16):
    redo = auto_mb & ~out["fits_point"].astype(bool) & (out["mbs"] >= 2)
    if not redo.any():
      break
    mbs = np.where(redo, np.floor(out["mbs"] / 2), out["mbs"])
    redo_where(redo, dict(prep.plan, recompute=out["recompute"], mbs=mbs,
                          num_micro=prep.plan["num_micro"] * prep.plan["mbs"] / mbs))
    out["mbs"] = mbs
  return out


def event_simulator() -> Callable[..., dict[str, np.ndarray]] | None:
  """F1's array entry point, if the event simulator module exists: a
  function (plan, model, hw, consts) -> the same outputs as simulate_f0."""
  try:
    from autoscout_jax.sim import event  # type: ignore[attr-defined]
  except ImportError:
    return None
  for name in ("simulate_f1", "simulate_event", "simulate"):
    fn = getattr(event, name, None)
    if callable(fn):
      return fn
  return None


def targets(prep: Prepared) -> tuple[np.ndarray, np.ndarray]:
  """(published value, is_layer_timing) per supported row: tokens/s per
  device, or seconds per layer for single-layer timing rows."""
  vals, layer = [], []
  for j, i in enumerate(prep.index):
    row = prep.rows[i]
    m = {k: float(prep.model[k][j]) for k in MODEL_FIELDS}
    if published.is_layer_timing(row):
      vals.append(published.published_layer_s(row) or np.nan)
      layer.append(True)
    else:
      v = published.published_tokens_per_s(row, m)
      vals.append(np.nan if v is None else v)
      layer.append(False)
  return np.array(vals), np.array(layer)


def log_errors(prep: Prepared, out: Mapping[str, np.ndarray]) -> np.ndarray:
  """log(predicted / published) throughput per supported row (NaN: no target)."""
  pub, layer = targets(prep)
  pred = np.where(layer, 1.0 / np.maximum(out["layer_s"], 1e-12), out["tokens_per_s_per_device"])
  pub_t = np.where(layer, 1.0 / pub, pub)
  return np.log(pred / pub_t)


def _oom(row) -> bool:
  return (row.get("oom") or "").strip().lower() in ("yes", "true", "1", "oom")


def predictions(prep: Prepared, out: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
  """Every row (supported or not) with the published.PRED_COLUMNS filled.
  Model TFLOP/s and MFU use the row's own source's FLOP definition, so they
  compare with its `tflops_per_device`; single-layer timing rows get the
  layer's forward+backward seconds as pred_step_time_s."""
  res = []
  pos = {i: j for j, i in enumerate(prep.index)}
  for i, row in enumerate(prep.rows):
    r = dict(row)
    for col in published.PRED_COLUMNS:
      r[col] = ""
    r["pred_status"] = prep.status[i]
    if i in pos:
      j = pos[i]
      m = {k: float(prep.model[k][j]) for k in MODEL_FIELDS}
      n = prep.plan["tp"][j] * prep.plan["pp"][j] * prep.plan["cp"][j] * prep.plan["dp"][j]
      # yes: even the pessimistic memory bound fits; uncertain: only the
      # optimistic one does (worth a compile/profile); no: neither
      r["pred_feasible"] = ("no" if "stalled" in out and bool(out["stalled"][j])
                            else uncertainty.VERDICT_NAMES[int(out["mem_verdict"][j])])
      r["pred_peak_mem_gb_per_device"] = f"{out['peak_mem_bytes'][j] / 1e9:.2f}"
      r["pred_peak_mem_gb_per_device_lo"] = f"{out['peak_mem_lo'][j] / 1e9:.2f}"
      r["pred_peak_mem_gb_per_device_hi"] = f"{out['peak_mem_hi'][j] / 1e9:.2f}"
      if published.is_layer_timing(row):
        r["pred_step_time_s"] = f"{out['layer_s'][j]:.6g}"
      else:
        tok = float(out["tokens_per_s_per_device"][j])
        tflops = tok * published.source_flops_per_token(row, m) / 1e12
        r["pred_step_time_s"] = f"{m['gbs'] * m['s'] / (tok * n):.6g}"
        r["pred_tokens_per_sec_per_device"] = f"{tok:.6g}"
        r["pred_tokens_per_sec_per_device_lo"] = f"{out['tokens_per_s_per_device_lo'][j]:.6g}"
        r["pred_tokens_per_sec_per_device_hi"] = f"{out['tokens_per_s_per_device_hi'][j]:.6g}"
        r["pred_model_tflops_per_device"] = f"{tflops:.6g}"
        r["pred_mfu_pct"] = f"{100 * tflops * 1e12 / float(prep.hw['peak_bf16'][j]):.4g}"
    res.append(r)
  return res


def report(prep: Prepared, out: Mapping[str, np.ndarray] | None) -> dict[str, dict[str, Any]]:
  """Per source and for all rows: coverage, throughput MAPE, mean Spearman
  rank correlation inside groups sharing model and hardware (groups of >= 3
  rows with distinct published values), and OOM agreement (published runs
  predicted feasible; published OOMs predicted infeasible)."""
  from scipy.stats import spearmanr
  sources = [r.get("source_id", "") for r in prep.rows]
  res: dict[str, dict[str, Any]] = {}
  err = log_errors(prep, out) if out is not None and prep.index else np.zeros(0)
  pub, layer = targets(prep) if prep.index else (np.zeros(0), np.zeros(0, bool))
  for name in sorted(set(sources)) + ["all"]:
    rows_i = [i for i, s in enumerate(sources) if name == "all" or s == name]
    sup = [j for j, i in enumerate(prep.index) if i in set(rows_i)]
    d: dict[str, Any] = dict(rows=len(rows_i), coverage=len(sup) / max(len(rows_i), 1))
    if out is not None and sup:
      e = err[sup]
      e = e[np.isfinite(e)]
      d["mape"] = float(np.mean(np.abs(np.exp(e) - 1))) if len(e) else float("nan")
      groups: dict[tuple, list[int]] = {}
      for j in sup:
        row = prep.rows[prep.index[j]]
        key = (re.sub(r"\s*\(.*\)", "", row.get("model", "")), row.get("hardware", "").split("(")[0].strip(),
               bool(layer[j]))
        groups.setdefault(key, []).append(j)
      rhos = []
      for js in groups.values():
        js = [j for j in js if np.isfinite(pub[j])]
        if len(js) >= 3 and len(set(pub[js])) > 1:
          pred = np.where(layer[js], -out["layer_s"][js], out["tokens_per_s_per_device"][js])
          truth = np.where(layer[js], -pub[js], pub[js])
          rho = spearmanr(pred, truth).statistic
          if np.isfinite(rho):
            rhos.append(float(rho))
      d["spearman"] = float(np.mean(rhos)) if rhos else float("nan")
      d["spearman_groups"] = len(rhos)
      tput = [j for j in sup if not layer[j] and np.isfinite(pub[j])]
      if tput:
        inside = ((pub[tput] >= out["tokens_per_s_per_device_lo"][tput])
                  & (pub[tput] <= out["tokens_per_s_per_device_hi"][tput]))
        d["interval_coverage"] = float(np.mean(inside))
      runs = [j for j in sup if not _oom(prep.rows[prep.index[j]]) and not layer[j]]
      ooms = [j for j in sup if _oom(prep.rows[prep.index[j]])]
      d["runs_pred_feasible"] = (float(np.mean(out["mem_verdict"][runs] == uncertainty.FITS)) if runs
                                 else float("nan"))
      d["runs_pred_feasible_or_uncertain"] = float(np.mean(out["feasible"][runs])) if runs else float("nan")
      d["ooms_pred_infeasible"] = float(np.mean(~out["feasible"][ooms].astype(bool))) if ooms else float("nan")
      d["published_ooms"] = len(ooms)
    res[name] = d
  return res


def fit_spread(prep: Prepared, out: Mapping[str, np.ndarray], coverage: float = 0.8,
               consts: SimConstants | None = None) -> float:
  """`tput_spread`: the narrowest half-width of the 80 % throughput
  interval (sim/uncertainty.py) that holds the published value of at least
  `coverage` of EVERY source's calibration rows: the largest over sources
  of that source's `coverage` quantile of |log(predicted/published)|
  (rows outside the calibrated box count at their widened interval)."""
  consts = consts or CALIBRATED
  _, layer = targets(prep)
  err = np.abs(log_errors(prep, out)) / (1 + consts.extrap_gain * np.asarray(out["extrapolation"], np.float64))
  ok = np.isfinite(err) & ~layer
  if not ok.any():
    return SimConstants().tput_spread
  sources = np.array([prep.rows[i].get("source_id", "") for i in prep.index])
  # (a hair wider than the boundary row's error: the simulators' float32
  # outputs would otherwise put that row just outside)
  return max(float(np.quantile(err[ok & (sources == s)], coverage, method="higher")) for s in set(sources[ok])) * (
      1 + 1e-4)


def _to_consts(z: np.ndarray, base: SimConstants) -> SimConstants:
  vals = {}
  for zi, (name, (lo, hi)) in zip(z, FITTED.items()):
    vals[name] = lo + (hi - lo) / (1 + math.exp(-zi))
  return dataclasses.replace(base, **vals)


def _from_consts(c: SimConstants) -> np.ndarray:
  out = []
  for name, (lo, hi) in FITTED.items():
    u = min(max((getattr(c, name) - lo) / (hi - lo), 1e-4), 1 - 1e-4)
    out.append(math.log(u / (1 - u)))
  return np.array(out)


def fit(rows: Sequence[Mapping[str, str]], start: SimConstants | None = None, maxiter: int = 600) -> SimConstants:
  """Re-fits the FITTED constants on published rows (see module docstring)."""
  from scipy.optimize import minimize
  start = start or CALIBRATED
  prep = prepare(rows)
  sources = np.array([prep.rows[i].get("source_id", "") for i in prep.index])
  pub, _ = targets(prep)
  use = np.isfinite(pub)
  weights = np.zeros(len(pub))
  for s in set(sources[use]):
    sel = use & (sources == s)
    weights[sel] = 1.0 / sel.sum()
  weights /= weights.sum()

  def loss(z):
    err = log_errors(prep, simulate(prep, "analytic", _to_consts(z, start)))
    return float(np.sum(weights[use] * err[use] ** 2))

  res = minimize(loss, _from_consts(start), method="Nelder-Mead",
                 options=dict(maxiter=maxiter, xatol=1e-3, fatol=1e-6))
  fitted = _to_consts(res.x, start)
  # one interval width serves both simulators: the wider of the two needs
  spread = max(fit_spread(prep, simulate(prep, fid, fitted), consts=fitted) for fid in ("analytic", "event"))
  return dataclasses.replace(fitted, tput_spread=spread)


def main(argv: Sequence[str]) -> None:
  from absl import flags
  del argv
  c = fit(published.read_rows(flags.FLAGS.input))
  print("fitted constants:")
  for name in FITTED:
    print(f"  {name} = {getattr(c, name):.4g}")
  # rounded up, so that the row on the interval's boundary stays inside it
  digits = 3 - math.floor(math.log10(c.tput_spread))
  print(f"  tput_spread = {math.ceil(c.tput_spread * 10 ** digits) / 10 ** digits:.4g}")


if __name__ == "__main__":
  from absl import app, flags
  flags.DEFINE_string("input", None, "published runs CSV", required=True)
  app.run(main)
