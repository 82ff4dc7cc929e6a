"""The search loop and the store: routing, screening, caching, resume."""

import json
import math

import numpy as np
import pytest

from autoscout_jax.designers import ExhaustiveSearch, RandomSearch
from autoscout_jax.evaluator import Evaluator
from autoscout_jax.local.space import local_training_space
from autoscout_jax.measurement import Measurement, Metrics
from autoscout_jax.problem import Problem
from autoscout_jax.search import run_search
from autoscout_jax.store import MeasurementStore
from autoscout_jax.workload import LocalCluster, ModelConfig, Workload


class Recorder(Evaluator):
  """A deterministic evaluator over the local space that records its calls:
  the loop's bookkeeping is what these tests check, not the evaluator."""

  def __init__(self, fidelity, oom_tensor=None):
    self.fidelity = fidelity
    self.calls = []
    self.oom_tensor = oom_tensor

  def evaluate(self, problem, candidates):
    self.calls.append(list(candidates))
    out = []
    for c in candidates:
      if self.oom_tensor is not None and c["tensor"] == self.oom_tensor:
        out.append(Measurement(c, self.fidelity, Metrics.failed("oom", "too big"), 1.0))
        continue
      t = 1.0 + 0.3 * math.log2(c["tensor"]) + 0.1 * c["num_microbatches"] + 0.05 * (c["remat_policy"] != "none")
      out.append(Measurement(c, self.fidelity, Metrics(True, step_time_s=t, tokens_per_s=512 / t), 2.0))
    return out


def setup():
  w = Workload("tiny", ModelConfig("tiny", 2, 64, 4, 256, 256, 32), 16,
               default={"data": 8, "fsdp": 1, "tensor": 1})
  c = LocalCluster()
  return w, c, local_training_space(w, c)


def problem(w, c, s, fidelities=("profile",), default=None):
  return Problem(w, c, s, fidelities, default=default)


def test_screen_blocks_expensive_fidelity_and_invalid_never_evaluated(tmp_path):
  w, c, s = setup()
  screen, top = Recorder("compile", oom_tensor=4), Recorder("profile")
  store = MeasurementStore(str(tmp_path))
  p = problem(w, c, s, ("compile", "profile"))
  d = RandomSearch(p, seed=0)
  res = run_search(p, d, {"compile": screen, "profile": top}, store, batch_size=6, max_rounds=5)
  profiled = [x for call in top.calls for x in call]
  assert profiled and all(x["tensor"] != 4 for x in profiled)
  screened = [x for call in screen.calls for x in call]
  assert any(x["tensor"] == 4 for x in screened)
  assert res.best is not None and res.best.fidelity == "profile"
  assert res.best.objective == max(m.objective for m in store.measurements(fidelity="profile"))
  # one batched call per fidelity per round
  assert len(top.calls) <= 5 and len(screen.calls) <= 5

  class Bad(RandomSearch):
    def suggest(self, n):
      cand = s.make(data=2, fsdp=2, tensor=2)
      return [cand.replace(tensor=8)]  # product 32 != 8
  top2 = Recorder("profile")
  p1 = problem(w, c, s)
  res = run_search(p1, Bad(p1), {"profile": top2}, MeasurementStore(str(tmp_path / "b")), max_rounds=2)
  assert not top2.calls
  assert res.rounds[0].invalid == 1 and res.measurements[0].metrics.failure_kind == "invalid"


def test_budget_in_device_seconds_and_default_speedup(tmp_path):
  w, c, s = setup()
  ev = Recorder("profile")
  p = problem(w, c, s, default=s.make(w.default_values))
  res = run_search(p, ExhaustiveSearch(p, seed=1), {"profile": ev},
                   MeasurementStore(str(tmp_path)), budget_s=9.0, batch_size=2, max_rounds=100)
  # default (2 s) + rounds of 2 x 2 s until >= 9 s
  assert res.stop_reason == "budget" and 9.0 <= res.cost_s < 9.0 + 4.0
  assert res.default.candidate == s.make(w.default_values)
  assert res.speedup_vs_default == pytest.approx(res.best.objective / res.default.objective)
  costs = [x for x, _ in res.curve]
  assert costs == sorted(costs)


def test_resume_replays_without_remeasuring(tmp_path):
  w, c, s = setup()
  p = problem(w, c, s)
  ev = Recorder("profile")
  store = MeasurementStore(str(tmp_path))
  part = run_search(p, RandomSearch(p, seed=7), {"profile": ev}, store, batch_size=3, max_rounds=2)
  n_first = sum(len(x) for x in ev.calls)
  assert n_first == 6
  # simulate a kill mid-write: a half line at the end of the file
  with open(store.path, "a") as f:
    f.write('{"candidate": {"data": 8')
  ev2 = Recorder("profile")
  resumed = run_search(p, RandomSearch(p, seed=7), {"profile": ev2}, MeasurementStore(str(tmp_path)),
                       batch_size=3, max_rounds=4)
  fresh = run_search(p, RandomSearch(p, seed=7), {"profile": Recorder("profile")},
                     MeasurementStore(str(tmp_path / "fresh")), batch_size=3, max_rounds=4)
  assert sum(len(x) for x in ev2.calls) == 6  # only rounds 3 and 4 measured
  assert resumed.best.candidate == fresh.best.candidate
  assert resumed.cost_s == fresh.cost_s
  assert [m.candidate for m in resumed.measurements] == [m.candidate for m in fresh.measurements]
  lines = [json.loads(l) for l in open(store.path) if l.strip().startswith("{") and l.strip().endswith("}")]
  keys = [(l["candidate_key"], l["fidelity"]) for l in lines]
  assert len(keys) == len(set(keys)) == 12
  assert len(MeasurementStore(str(tmp_path)).skipped_lines) == 1


def test_designer_done_and_exhaustive_covers_space(tmp_path):
  w, c, s = setup()
  ev = Recorder("profile")
  p = problem(w, c, s)
  res = run_search(p, ExhaustiveSearch(p), {"profile": ev}, MeasurementStore(str(tmp_path)),
                   batch_size=64, max_rounds=100)
  assert res.stop_reason == "designer_done"
  assert {m.candidate for m in res.measurements} == set(s.enumerate())
  best_true = max(res.measurements, key=lambda m: m.objective)
  assert res.best.objective == best_true.objective
