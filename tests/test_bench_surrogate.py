"""Surrogate TensorBoard logging (write_fit) and a smoke-sized run of the
surrogate benchmark program (simulated source only, tiny sizes)."""

import json
import math
import numpy as np
import pytest

import surrogates as S
from autoscout_jax.surrogate_logging import write_fit
from autoscout_jax.tools import bench_surrogate
from autoscout_jax.writers import JsonlWriter, MultiWriter, TensorBoardWriter, Writer


class Recorder(Writer):

  def __init__(self):
    self.scalars = []

  def write_scalars(self, step, scalars):
    self.scalars.append((step, dict(scalars)))


def _history(epochs=3, with_val=True):
  tr = np.linspace(1.0, 0.5, epochs)
  va = tr + 0.1 if with_val else np.full(epochs, np.nan)
  k = 2
  return S.FitHistory(train_loss=tr, val_loss=va, member_train_loss=np.stack([tr] * k, 1),
                      member_val_loss=np.stack([va] * k, 1), best_epoch=np.zeros(k, np.int32),
                      restarts=1, learning_rate=3e-3, train_rows=np.arange(8),
                      val_rows=np.arange(8, 10))


def _read_scalars(logdir):
  from tensorboard.backend.event_processing import event_accumulator
  acc = event_accumulator.EventAccumulator(logdir, size_guidance={"scalars": 0})
  acc.Reload()
  return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_write_fit_writes_the_expected_tensorboard_tags(tmp_path):
  logdir = str(tmp_path / "tb")
  writer = MultiWriter([TensorBoardWriter(logdir, flat=True), JsonlWriter(str(tmp_path))])
  metrics = {"spearman": 0.8, "kendall": 0.6, "coverage_2sigma": 0.9,
             "feasibility_auc": float("nan"), "top5_regret": 0.02}
  last = write_fit(writer, "local/multi_fidelity/seed_0/", _history(), metrics, step_offset=10)
  writer.close()
  assert last == 12
  got = _read_scalars(logdir)
  p = "local/multi_fidelity/seed_0"
  assert [s for s, _ in got[f"{p}/train_loss"]] == [10, 11, 12]
  np.testing.assert_allclose([v for _, v in got[f"{p}/train_loss"]], [1.0, 0.75, 0.5], rtol=1e-6)
  np.testing.assert_allclose([v for _, v in got[f"{p}/val_loss"]], [1.1, 0.85, 0.6], rtol=1e-6)
  for name, value in (("spearman", 0.8), ("kendall", 0.6), ("coverage_2sigma", 0.9),
                      ("top5_regret", 0.02)):
    assert got[f"{p}/validation/{name}"] == [(12, pytest.approx(value))]
  # An undefined metric (one class only) is left out, not written as NaN.
  assert f"{p}/validation/feasibility_auc" not in got
  assert got[f"{p}/restarts"] == [(12, 1.0)]
  # The JSONL record holds the same scalars.
  with open(tmp_path / "metrics.jsonl") as f:
    lines = [json.loads(l) for l in f]
  assert sum(f"{p}/train_loss" in l["values"] for l in lines) == 3


def test_write_fit_without_validation_split_and_bad_prefix():
  rec = Recorder()
  write_fit(rec, "fit", _history(epochs=2, with_val=False), {"spearman": 0.5})
  tags = {t for _, s in rec.scalars for t in s}
  assert "fit/train_loss" in tags and "fit/val_loss" not in tags
  assert rec.scalars[-1] == (1, {"fit/validation/spearman": 0.5, "fit/epochs": 2.0,
                                 "fit/restarts": 1.0})
  with pytest.raises(ValueError, match="prefix"):
    write_fit(rec, "/", _history(), {})


def test_heldout_metrics_rank_a_perfect_and_a_reversed_predictor():
  t = np.log(np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]))
  feas = np.array([1, 1, 1, 1, 1, 1, 0], np.float32)
  truth = S.make_data(np.zeros((7, 1)), None, None, np.where(feas > 0, t, np.nan), feas)
  good = bench_surrogate.Outcome(t, np.full(7, 0.01), feas.astype(float))
  bad = bench_surrogate.Outcome(-t, np.full(7, 0.01), 1.0 - feas)
  g = bench_surrogate.heldout_metrics(truth, good)
  b = bench_surrogate.heldout_metrics(truth, bad)
  assert g["spearman"] == pytest.approx(1.0) and b["spearman"] == pytest.approx(-1.0)
  assert g["top5_regret"] == 0.0 and g["coverage_2sigma"] == 1.0
  assert g["feasibility_auc"] == 1.0 and b["feasibility_auc"] == 0.0
  # Ranking by the reversed time and trusting every row: the 5 picks are the
  # infeasible row and the 4 slowest, the best of which (3.0) is 2x the best.
  reversed_ = bench_surrogate.Outcome(-t, np.full(7, 0.01), np.ones(7))
  assert bench_surrogate.heldout_metrics(truth, reversed_)["top5_regret"] == pytest.approx(2.0)


def test_targets_need_a_margin_and_no_worse_regret():
  def rec(mf, other):
    row = lambda s, r: {"spearman": s, "top5_regret": r, "coverage_2sigma": None,
                        "feasibility_auc": None}
    return {"sources": {"simulated": {"multi_fidelity": row(*mf), "top_only": row(*other),
                                      "cheapest_fidelity": row(*other)}}}
  t = bench_surrogate.targets(rec((0.95, 0.0), (0.90, 0.0)))
  assert t["simulated_beats_top_only"] and t["simulated_spearman_ge_0.9"]
  assert t["simulated_spearman_gain_vs_top_only"] == pytest.approx(0.05)
  # A gain inside the seed spread is a tie, not a win; so is a worse regret.
  assert not bench_surrogate.targets(rec((0.987, 0.0), (0.986, 0.0)))["simulated_beats_cheapest"]
  assert not bench_surrogate.targets(rec((0.95, 0.1), (0.90, 0.0)))["simulated_beats_cheapest"]
  assert not bench_surrogate.targets(rec((0.85, 0.0), (0.5, 0.0)))["simulated_spearman_ge_0.9"]


def test_smoke_run_writes_the_json_the_issue_names(tmp_path):
  workdir = tmp_path / "wd"
  record = bench_surrogate.run(sources=["simulated"], seeds=[0], n_train=8, n_cheap=64,
                               n_heldout=24, members=2, max_steps=20, with_speed=False,
                               workdir=str(workdir), log=lambda line: None)
  out = tmp_path / "bench.json"
  bench_surrogate.write_json(record, str(out))
  record = json.loads(out.read_text())
  res = record["sources"]["simulated"]
  assert set(res) == set(bench_surrogate.PREDICTORS)
  for pred in bench_surrogate.PREDICTORS:
    assert set(res[pred]) == {"spearman", "top5_regret", "coverage_2sigma", "feasibility_auc"}
    s = res[pred]["spearman"]
    assert s is None or -1.0 <= s <= 1.0
  assert record["details"]["simulated"]["heldout_rows"] > 0
  assert "fit_seconds" not in record  # no speed check asked for
  assert set(record["targets"]) >= {"simulated_beats_top_only", "simulated_beats_cheapest"}
  # Every ensemble fit left TensorBoard logs.
  tags = _read_scalars(str(workdir / "tb"))
  for pred in ("multi_fidelity", "top_only"):
    assert f"simulated/{pred}/seed_0/train_loss" in tags
    assert f"simulated/{pred}/seed_0/validation/spearman" in tags


def test_committed_local_table_replays_as_source_a():
  from autoscout_jax.tools import surrogate_bench_local as local_src
  src = bench_surrogate.local_source(local_src.LOCAL_TABLE)
  _, _, _, cands = local_src.local_task()
  # Every candidate of the (restricted) space has an F2 verdict; 50 are profiled.
  assert {m.candidate for m in src.cheap} == set(cands)
  assert len(src.top) == 50 and all(src.space.is_valid(m.candidate) for m in src.top)
  assert all(math.isfinite(v) for v in src.cheap_log_time.values())
  assert all(local_src.f3_step_time(m) > 0 for m in src.top if m.feasible)


def test_bad_source_and_missing_local_table_get_clear_errors(tmp_path):
  with pytest.raises(ValueError, match="unknown source"):
    bench_surrogate.run(sources=["hardware"], with_speed=False, workdir=str(tmp_path))
  with pytest.raises(FileNotFoundError, match="--gather_local"):
    bench_surrogate.run(sources=["local"], with_speed=False, workdir=str(tmp_path),
                        local_table=str(tmp_path / "missing.json"))
