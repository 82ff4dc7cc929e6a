"""predict_published / calibration_report on a handful of published-style
rows: every row comes back with the pred_* columns, unsupported rows are
marked (never dropped), and the report's metrics behave."""

import csv
import dataclasses
import os

import numpy as np
import pytest

from autoscout_jax.sim import calibration, published
from autoscout_jax.tools import calibration_report, predict_published

COLUMNS = ["row_id", "source_id", "framework", "task", "model", "num_layers", "hidden_size", "ffn_hidden_size",
           "num_heads", "num_kv_heads", "seq_len", "vocab_size", "hardware", "num_devices", "num_nodes",
           "devices_per_node", "tp", "pp", "dp", "cp", "ep", "vp", "sharding", "sequence_parallel",
           "micro_batch_size", "global_batch_size", "recompute", "precision", "tflops_per_device",
           "tokens_per_sec_per_device", "step_time_s", "other_metrics", "oom", "notes"]

ROWS = [
    # Narayanan 2021 Table 1, GPT 1.7B on 32 A100 (137 TFLOP/s, eq. 3)
    dict(row_id="1", source_id="NARAYANAN2021", framework="Megatron-LM (PTD-P)", task="pretrain", model="GPT-1.7B",
         num_layers="24", hidden_size="2304", ffn_hidden_size="9216", num_heads="24", seq_len="2048",
         vocab_size="51200", hardware="A100-SXM4-80GB (Selene DGX A100)", num_devices="32", tp="1", pp="1",
         dp="32", cp="1", vp="1", sharding="none (DDP)", sequence_parallel="off", micro_batch_size="16",
         global_batch_size="512", recompute="full", precision="fp16 mixed precision", tflops_per_device="137"),
    # NeMo 24.07, Llama 3 70B on 64 H100, dims from the catalog
    dict(row_id="394", source_id="NEMO_2407", framework="NeMo 24.07 (Megatron-Core)", task="pretrain",
         model="LLAMA3-70B", seq_len="8192", hardware="H100 80GB (DGX-H100)", num_devices="64", tp="4", pp="4",
         dp="2", cp="2", vp="5", micro_batch_size="1", global_batch_size="128", precision="FP8",
         tflops_per_device="734", tokens_per_sec_per_device="1524"),
    # MaxText v5e 16B, FSDP over a slice, 2 slices
    dict(row_id="349", source_id="MAXTEXT", framework="MaxText (JAX/XLA, pjit)", task="pretrain",
         model="MaxText synthetic 16B", num_layers="32", hidden_size="4096", ffn_hidden_size="28672",
         num_heads="64", num_kv_heads="64", seq_len="2048", vocab_size="32000", hardware="TPU v5e (2x v5e-256)",
         num_devices="512", num_nodes="2", devices_per_node="256", tp="1", pp="1", dp="512",
         sharding="FSDP (ZeRO-3-like) over ICI 256-way x pure DP over DCN 2-way (#slices)", micro_batch_size="6",
         global_batch_size="3072", recompute="remat_policy=full", precision="bf16 activations, fp32 weights",
         tflops_per_device="117"),
    dict(row_id="398", source_id="NEMO_2407", task="LoRA", model="LLAMA2-7B", seq_len="4096",
         hardware="H100 80GB (DGX-H100)", num_devices="8", tp="1", pp="1", dp="8", micro_batch_size="1",
         global_batch_size="32", precision="FP8", tokens_per_sec_per_device="24824"),
    dict(row_id="900", source_id="OTHER", task="pretrain", model="llama3_8b", seq_len="8192",
         hardware="MI300X (some cloud)", num_devices="8", tp="1", pp="1", dp="8", micro_batch_size="1",
         global_batch_size="64", precision="bf16"),
    dict(row_id="346", source_id="MAXTEXT", task="pretrain", model="MaxText 1160B", hardware="TPU v5p-7680",
         num_devices="3840", tflops_per_device="295"),
]


def _write(path, rows):
  with open(path, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=COLUMNS)
    w.writeheader()
    for r in rows:
      w.writerow(r)


def test_predict_published_writes_every_row_with_pred_columns(tmp_path):
  src, dst = tmp_path / "in.csv", tmp_path / "out.csv"
  _write(src, ROWS)
  predict_published.predict_file(str(src), str(dst))
  with open(dst, newline="") as f:
    out = list(csv.DictReader(f))
  assert [r["row_id"] for r in out] == [r["row_id"] for r in ROWS]
  for col in published.PRED_COLUMNS:
    assert col in out[0]
  status = {r["row_id"]: r["pred_status"] for r in out}
  assert status["1"] == status["394"] == status["349"] == status["398"] == "ok"  # 398: LoRA
  assert status["900"].startswith("unsupported: unknown hardware name 'MI300X")
  assert status["346"].startswith("unsupported:")
  for r in out[:3]:
    assert float(r["pred_step_time_s"]) > 0 and r["pred_feasible"] in ("yes", "no")
    published_tflops = float(r["tflops_per_device"])
    # same FLOP definition as the source: within a factor of 1.5 of the table
    assert published_tflops / 1.5 < float(r["pred_model_tflops_per_device"]) < published_tflops * 1.5
  assert float(out[3]["pred_step_time_s"]) > 0  # the LoRA row is predicted
  assert out[4]["pred_step_time_s"] == ""


def test_event_fidelity_says_clearly_when_missing(tmp_path, monkeypatch):
  monkeypatch.setattr(calibration, "event_simulator", lambda: None)
  src = tmp_path / "in.csv"
  _write(src, ROWS[:1])
  with pytest.raises(RuntimeError, match="event.*not available"):
    predict_published.predict_file(str(src), str(tmp_path / "out.csv"), "event")


def test_narayanan_throughput_uses_equation_3():
  m = published.model_numbers(ROWS[0])
  per_token = 96 * 24 * 2304 ** 2 * (1 + 2048 / (6 * 2304) + 51200 / (16 * 24 * 2304))
  assert published.published_tokens_per_s(ROWS[0], m) == pytest.approx(137e12 / per_token)


def test_report_metrics_and_their_failure_modes():
  prep = calibration.prepare(ROWS)
  out = calibration.simulate(prep)
  rep = calibration.report(prep, out)
  assert rep["all"]["coverage"] == pytest.approx(4 / 6)
  assert rep["MAXTEXT"]["coverage"] == pytest.approx(1 / 2)
  assert 0 <= rep["all"]["mape"] < 0.5
  # predictions 2x off give a MAPE of 100 %: the metric is not vacuous
  bad = dict(out, tokens_per_s_per_device=out["tokens_per_s_per_device"] * 2, layer_s=out["layer_s"] / 2)
  assert calibration.report(prep, bad)["all"]["mape"] > 0.6
  text = calibration_report.format_report(rep, "analytic")
  assert "NARAYANAN2021" in text and "coverage" in text


def test_unstated_recompute_uses_the_least_policy_that_fits():
  row = dict(ROWS[1], micro_batch_size="4")  # too big for no recompute
  prep = calibration.prepare([row])
  out = calibration.simulate(prep)
  assert prep.plan["recompute"][0] == 0 and out["recompute"][0] > 0 and out["feasible"][0]


def test_fit_keeps_constants_inside_their_physical_ranges():
  fitted = calibration.fit(ROWS[:3], maxiter=15)
  for name, (lo, hi) in calibration.FITTED.items():
    assert lo <= getattr(fitted, name) <= hi
  assert dataclasses.replace(fitted, gemm_eff=0.8).gemm_eff == 0.8


def test_calibration_report_without_input_is_one_line_and_exit_2():
  # the calibration set is not shipped: no default path, the user names the CSV
  import subprocess
  import sys
  from autoscout_jax.bench.tasks import repo_root
  out = subprocess.run([sys.executable, "-m", "autoscout_jax.tools.calibration_report"], capture_output=True,
                       text=True, cwd=repo_root(), env={**os.environ, "PYTHONPATH": repo_root()}, timeout=120)
  assert out.returncode == 2 and out.stdout == ""
  assert out.stderr.strip().splitlines() == [
      "calibration_report: --input=<published runs CSV> is required (or --validate=vtrain)"]
