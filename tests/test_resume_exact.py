"""Resume is exact (issue 17): a simulated run killed after any number of
stored measurements and started again ends on the same recommendation, with
the same measurement sequence, as the run that was never interrupted; and a
resumed run writes no TensorBoard round step twice.

The store's prefixes stand for kills at every point (a kill leaves a prefix
of complete lines plus at most one torn line, which the store skips)."""

import json
import os
import shutil

import gin
import pytest
from tensorboard.backend.event_processing import event_accumulator

from autoscout_jax import experiment
from reliability_util import ROOT

PLAN = ["experiments/plan_gpt3_175b_a100/plan_gpt3_175b_a100.gin"]


def _run(workdir, files, bindings, printed=None):
  gin.clear_config()
  gin.add_config_file_search_path(ROOT)
  printer = printed.append if printed is not None else (lambda s: None)
  try:
    gin.parse_config_files_and_bindings([os.path.join(ROOT, f) for f in files], bindings,
                                        finalize_config=False)
    return gin.get_configurable(experiment.run_experiment)(workdir=workdir, printer=printer)
  finally:
    gin.clear_config()


def _rows(workdir):
  """The store's complete lines (a torn one is skipped, as the store does)."""
  out = []
  with open(os.path.join(workdir, "measurements.jsonl"), "rb") as f:
    for line in f.read().split(b"\n"):
      try:
        json.loads(line)
      except ValueError:
        continue
      out.append(line)
  return out


def _sequence(rows):
  return [(json.loads(r)["candidate_key"], json.loads(r)["fidelity"]) for r in rows]


def _resume_from_prefixes(tmp_path, files, bindings, fractions):
  full = str(tmp_path / "full")
  res = _run(full, files, bindings)
  assert res.best is not None and res.stop_reason == "budget", res.stop_reason
  rows = _rows(full)
  n = len(rows)
  cuts = sorted({0, 1, 2, n - 1, n} | {int(f * n) for f in fractions})
  for k in cuts:
    w = str(tmp_path / f"cut{k}")
    os.makedirs(w)
    shutil.copy(os.path.join(full, "identity.json"), w)
    with open(os.path.join(w, "measurements.jsonl"), "wb") as f:
      f.write(b"".join(r + b"\n" for r in rows[:k]))
      if 0 < k < n:
        f.write(rows[k][: len(rows[k]) // 2])  # the torn line a kill leaves
    printed = []
    again = _run(w, files, bindings, printed)
    if 0 < k < n:  # the skipped torn line is in the summary and the report, not only the log
      assert any(l.startswith("warning: ") and "skipped an unreadable line" in l
                 for l in "\n".join(printed).splitlines()), printed[-1]
      report = json.load(open(os.path.join(w, "report.json")))
      assert report["warnings"] and f"measurements.jsonl:{k + 1}:" in report["warnings"][0]
    assert again.best.candidate == res.best.candidate, k
    assert again.best.objective == res.best.objective, k
    assert again.cost_s == pytest.approx(res.cost_s, rel=1e-12), k
    assert _sequence(_rows(w)[k:]) == _sequence(rows[k:]), k  # the same measurements, in order
  return full


def test_resumed_random_search_ends_where_the_uninterrupted_one_did(tmp_path):
  # Budget-bound: the stop depends on every charged cost, F0 screens and F1.
  bindings = ["DESIGNER = @designers.RandomSearch", "BUDGET_S = 0.03", "BATCH_SIZE = 4",
              "MAX_ROUNDS = 100", "SCREEN = ['analytic']"]
  _resume_from_prefixes(tmp_path, PLAN + ["gin/designers/random.gin"], bindings,
                        [0.15, 0.35, 0.5, 0.65, 0.85])


@pytest.mark.slow
def test_resumed_autoscout_search_ends_where_the_uninterrupted_one_did(tmp_path):
  bindings = ["BUDGET_S = 0.05", "BATCH_SIZE = 8", "MAX_ROUNDS = 40"]
  _resume_from_prefixes(tmp_path, PLAN, bindings, [0.2, 0.5, 0.8])


def _round_steps(workdir):
  acc = event_accumulator.EventAccumulator(os.path.join(workdir, "tb", "search"))
  acc.Reload()
  return [e.step for e in acc.Scalars("round/valid")]


def test_resume_writes_no_round_step_twice(tmp_path):
  files = PLAN + ["gin/designers/random.gin"]
  bindings = ["BUDGET_S = 0.02", "BATCH_SIZE = 4", "SCREEN = ['analytic']"]
  full, cut = str(tmp_path / "full"), str(tmp_path / "cut")
  _run(full, files, bindings + ["MAX_ROUNDS = 100"])
  _run(cut, files, bindings + ["MAX_ROUNDS = 3"])  # stopped after round 3, as by a kill
  assert _round_steps(cut) == [0, 1, 2, 3]
  _run(cut, files, bindings + ["MAX_ROUNDS = 100"])
  steps = _round_steps(cut)
  assert len(steps) == len(set(steps)), steps
  assert sorted(steps) == sorted(_round_steps(full)) and len(steps) > 4
