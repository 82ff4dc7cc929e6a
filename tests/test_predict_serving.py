"""tools/predict_serving.py on a small real slice of aiconfigurator's measured sample."""

import csv
import json
import os
import subprocess
import sys

import pytest

from autoscout_jax.sim import silicon
from autoscout_jax.tools import aic_serving, predict_serving

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUMMARY_KEYS = ("rows", "covered", "ttft_mape", "tpot_mape", "aic_ttft_mape", "aic_tpot_mape")


def _slice(tmp_path, extra=()):
  """Llama-3.1-70B on H200 with TRT-LLM (24 measured rows) plus `extra` rows."""
  with open(silicon.sample_path(), newline="") as f:
    reader = csv.DictReader(f)
    header = reader.fieldnames
    rows = [r for r in reader if r["model_path"] == "meta-llama/Llama-3.1-70B" and r["system"] == "h200_sxm"
            and r["backend"] == "trtllm" and r["isl"] == "1024" and r["osl"] == "1024"]
  assert len(rows) >= 20
  rows = rows + [dict(rows[0], **e) for e in extra]
  path = tmp_path / "slice.csv"
  with open(path, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=header)
    w.writeheader()
    w.writerows(rows)
  return str(path), rows


def test_predicts_real_rows_and_names_the_unplaceable(tmp_path):
  unplaceable = {"id": "llama70b_bf16_on_one_h100", "system": "h100_sxm", "gemm_quant_mode": "bf16",
                 "moe_quant_mode": "bf16", "tp_size": "1", "batch_size": "8"}
  unknown = {"id": "unknown_model", "model_path": "acme/Unknown-1T"}
  garbage = {"id": "garbage_isl", "isl": "many"}
  path, rows = _slice(tmp_path, [unplaceable, unknown, garbage])
  out, summ = str(tmp_path / "out.csv"), str(tmp_path / "s.json")
  s = predict_serving.predict_file(path, out, summ, aic="off")
  with open(out, newline="") as f:
    got = list(csv.DictReader(f))
  assert [r["id"] for r in got] == [r["id"] for r in rows]  # every row, in order
  status = {r["id"]: r["pred_status"] for r in got}
  assert status["llama70b_bf16_on_one_h100"].startswith("unsupported: ") and "weights need" in status[
      "llama70b_bf16_on_one_h100"]
  assert "not in the serving catalog" in status["unknown_model"]
  assert status["garbage_isl"].startswith("unsupported: ") and "isl" in status["garbage_isl"]
  ok = [r for r in got if r["pred_status"] == "ok"]
  assert len(ok) == len(rows) - 3
  assert all(float(r["pred_ttft_ms"]) > 0 and float(r["pred_tpot_ms"]) > 0 for r in ok)
  with open(summ) as f:
    js = json.load(f)
  for k in SUMMARY_KEYS:
    assert k in js
  assert js == s
  assert js["rows"] == len(rows) and js["covered"] == len(rows)
  assert js["aic_ttft_mape"] is None and js["aic_tpot_mape"] is None  # --aic=off
  # The model is informative on this dense slice: TPOT within 25 % on average.
  assert 0 < js["tpot_mape"] < 25
  assert js["ttft_mape"] > 0


def test_bad_input_is_one_line_and_nonzero(tmp_path):
  bad = tmp_path / "bad.csv"
  bad.write_text("a,b\n1,2\n")
  cmd = [sys.executable, "-m", "autoscout_jax.tools.predict_serving", f"--input={bad}",
         f"--output={tmp_path / 'o.csv'}", f"--summary={tmp_path / 's.json'}", "--aic=off"]
  p = subprocess.run(cmd, cwd=_ROOT, capture_output=True, text=True, timeout=120)
  assert p.returncode == 2
  assert p.stderr.strip().count("\n") == 0 and "missing columns" in p.stderr
  assert not (tmp_path / "o.csv").exists()


@pytest.mark.slow
@pytest.mark.skipif(aic_serving.aic_version() is None, reason="aiconfigurator (extra 'serving') not installed")
def test_aiconfigurator_side_by_side(tmp_path):
  path, rows = _slice(tmp_path)
  with open(path, newline="") as f:
    header = csv.DictReader(f).fieldnames
  with open(path, "w", newline="") as f:  # two rows keep aiconfigurator's seconds-per-row cost small
    w = csv.DictWriter(f, fieldnames=header)
    w.writeheader()
    w.writerows(rows[:2])
  cache = str(tmp_path / "aic.jsonl")
  s = predict_serving.predict_file(path, str(tmp_path / "o.csv"), None, aic="auto", aic_cache=cache)
  assert s["aic_rows_asked"] == 2 and s["aic_version"] == aic_serving.aic_version()
  if s["aic_predicted"]:
    assert s["aic_ttft_mape"] is not None and s["both_ttft_mape"] is not None
  with open(cache) as f:
    assert len(f.readlines()) == 2
  # --aic=cached answers from the cache alone: the same numbers, nothing run.
  again = predict_serving.predict_file(path, str(tmp_path / "o2.csv"), None, aic="cached", aic_cache=cache)
  assert again["aic_ttft_mape"] == s["aic_ttft_mape"] and again["aic_rows_asked"] == 2
  # the version looked up once and passed is the one cli_estimate picks itself: the same answer
  from aiconfigurator.cli.api import cli_estimate
  ok = [r for r in rows[:2] if aic_serving.aic_predict(r)[2] == "ok"]
  if ok:
    t, p, _ = aic_serving.aic_predict(ok[0])
    own = cli_estimate(**aic_serving.estimate_kwargs(ok[0]))
    assert (t, p) == (float(own.ttft), float(own.tpot))


def test_aiconfigurators_refusals_are_counted_by_kind():
  rows = [{"pred_status": "ok", "aic_status": s} for s in (
      'unsupported: PerfDataNotAvailableError: MoE data missing for MoeKey { quant: "fp8", tokens: 64 } at 1.3.0',
      'unsupported: PerfDataNotAvailableError: MoE data missing for MoeKey { quant: "fp8", tokens: 128 } at 1.3.0',
      "unsupported: ValueError: prefill_batch_size is required for disagg mode.", "ok")]
  s = predict_serving.summarize(rows, aic_ran=True, aic_stride=1)
  assert sorted(s["aic_unsupported_reasons"].values()) == [1, 2]
  assert predict_serving.summarize(rows, aic_ran=False, aic_stride=1)["aic_unsupported_reasons"] is None


def test_cached_mode_without_a_cache_refuses(tmp_path):
  path, _ = _slice(tmp_path)
  if aic_serving.aic_version() is None:
    pytest.skip("aiconfigurator (extra 'serving') not installed")
  with pytest.raises(ValueError, match="aic_cache"):
    predict_serving.predict_file(path, str(tmp_path / "o.csv"), None, aic="cached")


def test_heldout_split_is_a_fifth_and_reported(tmp_path):
  with open(silicon.sample_path(), newline="") as f:
    ids = [r["id"] for r in csv.DictReader(f)]
  share = sum(silicon.is_calibration(i) for i in ids) / len(ids)
  assert 0.17 < share < 0.23
  path, rows = _slice(tmp_path)
  s = predict_serving.predict_file(path, str(tmp_path / "o.csv"), None, aic="off")
  held = [r for r in rows if not silicon.is_calibration(r["id"])]
  assert s["heldout_rows"] == len(held) and s["heldout_tpot_mape"] is not None
