"""What TensorBoard shows for a planning run: a handful of runs, x axes that
are trial indices, and an HParams session for every trial (failed ones
included, with their failure kind as a metric) whose columns come in the
order of the designer's learned importances."""

import json
import os

import pytest
from tensorboard.backend.event_processing import event_accumulator, event_multiplexer
from tensorboard.plugins.hparams import metadata as hp_metadata

from autoscout_jax.tracking import FAILURE_CODES

@pytest.fixture(scope="module")
def plan_run(planning_run):
  return planning_run


def _scalars(path, tag):
  acc = event_accumulator.EventAccumulator(path, size_guidance={"scalars": 0, "tensors": 0})
  acc.Reload()
  return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_tensorboard_has_a_handful_of_runs_with_trial_axes(plan_run):
  workdir, _, rows = plan_run
  mux = event_multiplexer.EventMultiplexer()
  mux.AddRunsFromDirectory(os.path.join(workdir, "tb"))
  mux.Reload()
  runs = set(mux.Runs())
  assert runs == {"search", "best", "analytic", "event"}, runs
  assert len(runs) <= 10
  # One point per trial at each fidelity; the x axis is the trial index.
  n = len(rows) + 0  # every stored measurement was one trial of this run
  steps = sorted(s for f in ("analytic", "event")
                 for s, _ in _scalars(os.path.join(workdir, "tb", f), "trial/cost_s"))
  assert steps == list(range(n))
  # Best-so-far: starts at the default (trial 0), never decreases, ends at the report's best.
  best = _scalars(os.path.join(workdir, "tb", "best"), "answer/tokens_per_s")
  report = json.load(open(os.path.join(workdir, "report.json")))
  assert best[0] == (0, pytest.approx(report["default"]["tokens_per_s"], rel=1e-6))
  values = [v for _, v in best]
  assert values == sorted(values)
  assert values[-1] == pytest.approx(report["best"]["tokens_per_s"], rel=1e-6)
  cost = _scalars(os.path.join(workdir, "tb", "search"), "trial/cumulative_cost_s")
  assert cost[-1][1] == pytest.approx(report["cost_s"], rel=1e-5)
  acc = mux.GetAccumulator("search")
  assert "report" in acc.Tags()["tensors"]


def test_every_trial_is_an_hparams_session_failures_included(plan_run):
  workdir, _, rows = plan_run
  root = os.path.join(workdir, "hparams")
  sessions = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
  assert len(sessions) == len(rows)
  assert sessions[0].startswith("t0000-event-") and sessions[0].endswith("-default")
  by_key = {(r["candidate_key"][:8], r["fidelity"]): r for r in rows}
  failed = 0
  for t, name in enumerate(sessions):
    acc = event_accumulator.EventAccumulator(os.path.join(root, name), size_guidance={"scalars": 0})
    acc.Reload()
    assert hp_metadata.SESSION_START_INFO_TAG in acc.Tags()["tensors"]
    start = hp_metadata.parse_session_start_info_plugin_data(
        acc.SummaryMetadata(hp_metadata.SESSION_START_INFO_TAG).plugin_data.content)
    fid = start.hparams["fidelity"].string_value
    row = by_key[(name.split("-")[2], fid)]
    metrics = {tag: acc.Scalars(tag)[-1].value for tag in acc.Tags()["scalars"]}
    assert metrics["trial"] == t and "round" in metrics and "cost_s" in metrics
    assert metrics["failure_kind"] == FAILURE_CODES[row["metrics"]["failure_kind"]]
    if row["metrics"]["failure_kind"]:
      failed += 1
      assert "tokens_per_s" not in metrics
    else:
      assert metrics["tokens_per_s"] == pytest.approx(row["metrics"]["tokens_per_s"], rel=1e-6)
  assert failed > 0, "the planning run had no failed trial to check"


def test_hparams_columns_follow_learned_importance(plan_run):
  workdir, _, _ = plan_run
  acc = event_accumulator.EventAccumulator(os.path.join(workdir, "hparams"))
  acc.Reload()
  exp = hp_metadata.parse_experiment_plugin_data(
      acc.SummaryMetadata(hp_metadata.EXPERIMENT_TAG).plugin_data.content)
  # TensorBoard sorts the columns by name: the rank prefix makes that the importance order.
  names = sorted(h.name for h in exp.hparam_infos)
  knobs = [n.split("_", 1)[1] for n in names if n[:2].isdigit()]
  report = json.load(open(os.path.join(workdir, "report.json")))
  imp = report["designer"]["importances"]
  assert report["designer"]["importance_source"] == "learned"
  assert knobs == sorted(imp, key=lambda k: -imp[k])
  assert {m.name.tag for m in exp.metric_infos} >= {"tokens_per_s", "failure_kind", "trial", "round",
                                                     "cost_s", "step_time_s"}


def test_console_shows_progress_and_the_log_goes_to_the_workdir(plan_run):
  workdir, proc, _ = plan_run
  out = proc.stdout
  for r in (1, 2, 3):
    assert f"round {r}/3" in out
  assert "ETA" in out and "vs default" in out
  assert "wall time" in out and "tensorboard --logdir" in out and "report.html" in out
  # INFO lines are in the log file, not on the console.
  assert " writers.py:" not in out + proc.stderr
  assert "Unable to initialize backend" not in out + proc.stderr
  log = open(os.path.join(workdir, "run.log")).read()
  assert "round/valid" in log
