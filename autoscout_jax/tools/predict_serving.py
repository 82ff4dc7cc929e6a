"""Predicts measured serving runs (TTFT, TPOT) with the F0 serving model, next to aiconfigurator.

    python -m autoscout_jax.tools.predict_serving --input=IN.csv --output=OUT.csv --summary=S.json
        [--aic=auto|off] [--aic_stride=N] [--aic_cache=CACHE.jsonl]

Where it sits: a program over sim/silicon.py (a row -> the model's inputs)
and sim/serving.py (`predict`); tools/aic_serving.py runs aiconfigurator
itself when the optional extra `serving` is installed. IN.csv has the
columns of aiconfigurator's `silicon_sample.csv`; without --input the copy
shipped in autoscout_jax/data/aiconfigurator/ is read. OUT.csv is every input
row, in order, plus `pred_ttft_ms`, `pred_tpot_ms`, `pred_status` (`ok` or
`unsupported: <reason>`) and, where aiconfigurator ran, `aic_ttft_ms`,
`aic_tpot_ms`, `aic_status`. The summary JSON has `rows`, `covered` (rows
with a prediction or a named reason), `ttft_mape` / `tpot_mape` (ours, %,
on every row predicted and measured) and `aic_ttft_mape` / `aic_tpot_mape`
(aiconfigurator's, on the rows both predict; null without the extra),
with ours on those same rows as `both_ttft_mape` / `both_tpot_mape`; the
`*_any_quant` keys count in the rows aiconfigurator could answer only under
its checkpoint's quantization (tools/aic_serving.py, `CKPT_QUANT`); and
the same numbers on the rows held out from calibration (`heldout_*`: seven
of the serving model's constants are fitted on the other fifth, see
tools/calibrate_serving.py).

aiconfigurator takes seconds per row; --aic_stride=N runs it on every N-th
row only (the summary says which), --aic_cache keeps its answers so a rerun
costs nothing, and --aic=cached reads only what the cache holds.
"""

from __future__ import annotations

import collections
import csv
import json
import math
import re
import sys
from typing import Any

from absl import app, flags

from autoscout_jax.sim import serving, silicon
from autoscout_jax.tools import aic_serving

FLAGS = flags.FLAGS

PRED_COLUMNS = ("pred_ttft_ms", "pred_tpot_ms", "pred_status")
AIC_COLUMNS = ("aic_ttft_ms", "aic_tpot_ms", "aic_status")
MEASURED = ("silicon_ttft_ms", "silicon_tpot_ms")


def define_flags() -> None:
  """Flags are defined only when run as a program (importing stays side-effect free)."""
  flags.DEFINE_string("input", None, "CSV with silicon_sample.csv's columns (default: the shipped sample)")
  flags.DEFINE_string("output", None, "where to write the rows with pred_* columns")
  flags.DEFINE_string("summary", None, "where to write the summary JSON")
  flags.DEFINE_enum("aic", "auto", ["auto", "cached", "off"],
                    "run aiconfigurator on the rows when it is installed (cached: only answers --aic_cache holds)")
  flags.DEFINE_integer("aic_stride", 1, "run aiconfigurator on every N-th row only", lower_bound=1)
  flags.DEFINE_string("aic_cache", None, "JSONL cache of aiconfigurator's answers (reused, appended)")


def read_input(path: str) -> tuple[list[dict[str, str]], list[str]]:
  """Rows and header of a sample-format CSV; ValueError for a file that is not one."""
  try:
    with open(path, newline="", encoding="utf-8-sig") as f:
      reader = csv.DictReader(f)
      header = list(reader.fieldnames or [])
      rows = list(reader)
  except UnicodeDecodeError as e:
    raise ValueError(f"{path}: not a text CSV ({e})") from None
  except csv.Error as e:
    raise ValueError(f"{path}: not a readable CSV ({e})") from None
  missing = [c for c in silicon.SAMPLE_COLUMNS if c not in header]
  if missing:
    raise ValueError(f"{path}: not a serving sample: missing columns {', '.join(missing)}")
  if not rows:
    raise ValueError(f"{path}: no rows")
  return rows, header


def predict_row(row: dict[str, str]) -> tuple[float | None, float | None, str]:
  """(ttft_ms, tpot_ms, status) of the F0 serving model for one row."""
  try:
    plan, arch, system, request = silicon.row_inputs(row)
    p = serving.predict(plan, arch, system, request)
  except silicon.Unsupported as e:
    return None, None, f"unsupported: {e}"
  except (ValueError, ArithmeticError) as e:  # one bad row never stops the others
    return None, None, f"unsupported: {type(e).__name__}: {e}"
  if not p.fits:
    return None, None, f"unsupported: the row's layout does not fit: {p.reason}"
  return p.ttft_s * 1e3, p.tpot_s * 1e3, "ok"


def _measured(row: dict[str, Any], key: str) -> float | None:
  try:
    v = float(row.get(key) or "nan")
  except ValueError:
    return None
  return v if v > 0 and math.isfinite(v) else None


def _mape(pairs: list[tuple[float, float]]) -> float | None:
  return round(100.0 * sum(abs(p - m) / m for p, m in pairs) / len(pairs), 2) if pairs else None


def summarize(rows: list[dict[str, Any]], aic_ran: bool, aic_stride: int) -> dict[str, Any]:
  ok = [r for r in rows if r["pred_status"] == "ok"]
  named = [r for r in rows if str(r["pred_status"]).startswith("unsupported: ") and len(r["pred_status"]) > 13]
  reasons = collections.Counter(r["pred_status"][len("unsupported: "):].split(" (")[0][:90] for r in named)
  aic_refused = collections.Counter(_aic_reason(r["aic_status"]) for r in rows
                                    if str(r.get("aic_status") or "").startswith("unsupported: "))

  def pairs(rs, pred, meas):
    out = []
    for r in rs:
      m = _measured(r, meas)
      if m is not None and r.get(pred) not in (None, ""):
        out.append((float(r[pred]), m))
    return out

  both = [r for r in ok if r.get("aic_status") == "ok"]
  # ... and with the rows aiconfigurator answered under its checkpoint's quantization (aic_serving.CKPT_QUANT)
  both_any = [r for r in ok if r.get("aic_status") in ("ok", aic_serving.CKPT_QUANT)]
  aic_asked = [r for r in rows if r.get("aic_status")]
  held = [r for r in ok if not silicon.is_calibration(r.get("id", ""))]
  held_both = [r for r in both if not silicon.is_calibration(r.get("id", ""))]
  return {
      "rows": len(rows),
      "covered": len(ok) + len(named),
      "predicted": len(ok),
      "ttft_mape": _mape(pairs(ok, "pred_ttft_ms", MEASURED[0])),
      "tpot_mape": _mape(pairs(ok, "pred_tpot_ms", MEASURED[1])),
      "aic_ttft_mape": _mape(pairs(both, "aic_ttft_ms", MEASURED[0])) if aic_ran else None,
      "aic_tpot_mape": _mape(pairs(both, "aic_tpot_ms", MEASURED[1])) if aic_ran else None,
      "both_rows": len(both) if aic_ran else None,
      "both_ttft_mape": _mape(pairs(both, "pred_ttft_ms", MEASURED[0])) if aic_ran else None,
      "both_tpot_mape": _mape(pairs(both, "pred_tpot_ms", MEASURED[1])) if aic_ran else None,
      # The rows tools/calibrate_serving.py did not fit on (sim/silicon.is_calibration).
      "heldout_rows": len(held),
      "heldout_ttft_mape": _mape(pairs(held, "pred_ttft_ms", MEASURED[0])),
      "heldout_tpot_mape": _mape(pairs(held, "pred_tpot_ms", MEASURED[1])),
      "heldout_both_rows": len(held_both) if aic_ran else None,
      "heldout_both_ttft_mape": _mape(pairs(held_both, "pred_ttft_ms", MEASURED[0])) if aic_ran else None,
      "heldout_both_tpot_mape": _mape(pairs(held_both, "pred_tpot_ms", MEASURED[1])) if aic_ran else None,
      "heldout_aic_ttft_mape": _mape(pairs(held_both, "aic_ttft_ms", MEASURED[0])) if aic_ran else None,
      "heldout_aic_tpot_mape": _mape(pairs(held_both, "aic_tpot_ms", MEASURED[1])) if aic_ran else None,
      "aic_version": aic_serving.aic_version() if aic_ran else None,
      "aic_rows_asked": len(aic_asked) if aic_ran else None,
      "aic_predicted": sum(r.get("aic_status") == "ok" for r in aic_asked) if aic_ran else None,
      "aic_predicted_ckpt_quant": sum(r.get("aic_status") == aic_serving.CKPT_QUANT for r in aic_asked)
                                  if aic_ran else None,
      "both_rows_any_quant": len(both_any) if aic_ran else None,
      "both_ttft_mape_any_quant": _mape(pairs(both_any, "pred_ttft_ms", MEASURED[0])) if aic_ran else None,
      "both_tpot_mape_any_quant": _mape(pairs(both_any, "pred_tpot_ms", MEASURED[1])) if aic_ran else None,
      "aic_ttft_mape_any_quant": _mape(pairs(both_any, "aic_ttft_ms", MEASURED[0])) if aic_ran else None,
      "aic_tpot_mape_any_quant": _mape(pairs(both_any, "aic_tpot_ms", MEASURED[1])) if aic_ran else None,
      "aic_stride": aic_stride if aic_ran else None,
      "unsupported_reasons": dict(reasons.most_common()),
      "aic_unsupported_reasons": dict(aic_refused.most_common()) if aic_ran else None,
  }


def _aic_reason(status: str) -> str:
  """aiconfigurator's refusal, without the row's own numbers (so equal
  reasons count together): its error class and first words."""
  text = status[len("unsupported: "):]
  text = re.sub(r"\{[^}]*\}?", "{...}", text)  # the key of the missing perf data
  text = re.sub(r"\d+(\.\d+)?", "N", text)
  return text[:100]


def predict_file(input_path: str, output_path: str, summary_path: str | None = None, aic: str = "auto",
                 aic_stride: int = 1, aic_cache: str | None = None) -> dict[str, Any]:
  """Reads, predicts (and runs aiconfigurator where asked), writes; returns the summary."""
  rows, header = read_input(input_path)
  out = []
  for row in rows:
    t, p, s = predict_row(row)
    out.append({**row, "pred_ttft_ms": "" if t is None else round(t, 4),
                "pred_tpot_ms": "" if p is None else round(p, 4), "pred_status": s})
  aic_ran = aic in ("auto", "cached") and aic_serving.aic_version() is not None
  if aic == "cached" and not aic_cache:
    raise ValueError("--aic=cached needs --aic_cache")
  if aic_ran:
    picked = [i for i in range(len(out)) if i % aic_stride == 0]
    answers = aic_serving.run_aic([rows[i] for i in picked], aic_cache, cached_only=aic == "cached")
    for i, ans in zip(picked, answers):
      if ans is None:
        continue
      t, p, s = ans
      out[i].update(aic_ttft_ms="" if t is None else round(t, 4), aic_tpot_ms="" if p is None else round(p, 4),
                    aic_status=s)
  columns = header + [c for c in PRED_COLUMNS if c not in header]
  if aic_ran:
    columns += [c for c in AIC_COLUMNS if c not in columns]
  with open(output_path, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
    w.writeheader()
    w.writerows(out)
  summary = summarize(out, aic_ran, aic_stride)
  summary["input"] = input_path
  if summary_path:
    with open(summary_path, "w") as f:
      json.dump(summary, f, indent=2)
      f.write("\n")
  return summary


def main(argv):
  del argv
  if not FLAGS.output or not FLAGS.summary:
    print("predict_serving: --output and --summary are required", file=sys.stderr)
    sys.exit(2)
  path = FLAGS.input or silicon.sample_path()
  try:
    s = predict_file(path, FLAGS.output, FLAGS.summary, FLAGS.aic, FLAGS.aic_stride, FLAGS.aic_cache)
  except (OSError, ValueError) as e:
    print(f"predict_serving: {e}", file=sys.stderr)
    sys.exit(2)
  print(json.dumps({k: v for k, v in s.items() if k not in ("unsupported_reasons", "input")}))


if __name__ == "__main__":
  define_flags()
  app.run(main)
