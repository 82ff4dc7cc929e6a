"""Deliberate re-measurement: a repeat is a new measurement with its own index,
stored and charged under its own key, replayed as the next recorded repeat,
resumed exactly; the answer decides on all repeats; AutoScout's contenders
ask for repeats only within the measured noise and within their budget."""

import math

import numpy as np

from autoscout_jax.bench import metrics
from autoscout_jax.bench.replay import MemoryStore, ReplayEvaluator, repeat_index
from autoscout_jax.designers.autoscout.contenders import Contenders, expected_loss
from autoscout_jax.designers.base import Designer
from autoscout_jax.measurement import Measurement, Metrics, Repeats, incumbent
from autoscout_jax.problem import Problem
from autoscout_jax.search import run_search
from autoscout_jax.space import Candidate
from autoscout_jax.store import MeasurementStore
from test_bench_replay import synthetic_task


class Scripted(Designer):
  """Suggests a fixed list, one per round (repeats as `again(r)`)."""

  def __init__(self, problem, script):
    super().__init__(problem, 0)
    self.script = list(script)
    self.seen: list[Measurement] = []

  def suggest(self, n):
    out, self.script = self.script[:n], self.script[n:]
    return out

  def update(self, ms):
    self.seen.extend(ms)


def _problem(task):
  return Problem(task.workload, task.cluster, task.space, ("profile",))


def _feasible_pair(task):
  ok = [c for c in task.candidates if task.table.true_value(c) is not None]
  return ok[0], ok[1]


def test_repeat_is_a_new_paid_measurement_served_as_the_next_recorded_repeat():
  task = synthetic_task(repeats=3, noise=0.05)
  a, b = _feasible_pair(task)
  t, seed = task.table, 4
  script = [a, b, a.again(1), a.again(1), a.again(2), a]  # a.again(1) twice and `a` again: cached, not paid
  ev = ReplayEvaluator(t, seed)
  res = run_search(_problem(task), Scripted(_problem(task), script), {"profile": ev}, MemoryStore(),
                   batch_size=2, compare_default=False)
  i = t.index[a]
  first = repeat_index(seed, a, 3)
  assert [r for k, r, _ in ev.served if k == a.key] == [first, (first + 1) % 3, (first + 2) % 3]
  assert len(ev.served) == 4  # a, b, a#1, a#2: nothing paid twice by accident
  want = sum(t.cost_s[i, (first + k) % 3] for k in range(3)) + t.cost_s[t.index[b], repeat_index(seed, b, 3)]
  assert math.isclose(res.cost_s, want)
  assert [m.repeat for m in res.measurements if m.candidate == a] == [0, 1, 1, 2, 0]
  # the answer: a by the lower median of its three repeats (= its median) unless b beats that
  a_med = float(np.median(t.tokens_per_s[i]))
  b_obs = t.tokens_per_s[t.index[b], repeat_index(seed, b, 3)]
  assert math.isclose(res.best.objective, max(a_med, b_obs))
  # the bench's scoring agrees with the loop and counts the repeats
  tr = metrics.trace_run("t", "scripted", seed, res.measurements, t, "profile")
  assert tr.paid_top == 4 and tr.repeats_paid == 2 and math.isclose(tr.costs[-1], want)
  assert tr.incumbent == dict(res.best.candidate.values)


def test_answer_is_lower_median_and_never_a_candidate_that_failed():
  a, b, c = (Candidate.of({"x": i}) for i in range(3))

  def m(cand, y, r=0):
    met = Metrics(True, step_time_s=1 / y, tokens_per_s=y) if y else Metrics.failed("crash", "flaky")
    return Measurement(cand, "profile", met, 1.0, repeat=r)

  # a's lucky first repeat (120) loses once repeats show it at 90; b failed once: out for good
  ms = [m(a, 120), m(b, 110), m(c, 95), m(a, 90, 1), m(b, None, 1), m(a, 100, 2)]
  assert incumbent(ms[:1], "profile").objective == 120
  assert incumbent(ms[:4], "profile").candidate == b  # a: lower median of (120, 90) = 90
  assert incumbent(ms[:5], "profile").candidate == c  # b failed a repeat: never the answer
  assert incumbent(ms, "profile").candidate == a and incumbent(ms, "profile").objective == 100
  book = Repeats("profile")
  for x in ms:
    book.add(x)
  assert book.score(b.key) is None and b.key in book.failed


def test_store_keys_repeats_and_reads_old_lines(tmp_path):
  store = MeasurementStore(str(tmp_path))
  c = Candidate.of({"x": 1})
  for r, y in ((0, 10.0), (1, 12.0)):
    store.append(Measurement(c, "profile", Metrics(True, step_time_s=1 / y, tokens_per_s=y), 1.0, "w", "k",
                             repeat=r))
  again = MeasurementStore(str(tmp_path))
  assert again.get("w", "k", c.key, "profile").objective == 10.0
  assert again.get("w", "k", c.key, "profile", repeat=1).objective == 12.0
  assert again.get("w", "k", c.key, "profile", repeat=2) is None
  old = Measurement(c, "event", Metrics(True, tokens_per_s=3.0), 1.0, "w", "k").to_json()
  del old["repeat"]  # a line written before repeats existed
  assert Measurement.from_json(old).repeat == 0


def test_resumed_run_with_repeats_ends_where_the_uninterrupted_one_did(tmp_path):
  task = synthetic_task(repeats=3, noise=0.05)
  a, b = _feasible_pair(task)
  script = [a, b, a.again(1), b.again(1), a.again(2), b.again(2)]
  p = _problem(task)
  whole = run_search(p, Scripted(p, script), {"profile": ReplayEvaluator(task.table, 1)},
                     MeasurementStore(str(tmp_path / "whole")), batch_size=1, compare_default=False)
  # killed after 3 measurements (a budget that stops it), then resumed on the same store
  part = str(tmp_path / "part")
  run_search(p, Scripted(p, script), {"profile": ReplayEvaluator(task.table, 1)}, MeasurementStore(part),
             batch_size=1, max_rounds=3, compare_default=False)
  ev = ReplayEvaluator(task.table, 1)
  resumed = run_search(p, Scripted(p, script), {"profile": ev}, MeasurementStore(part), batch_size=1,
                       compare_default=False)
  assert len(ev.served) == 3  # only what the first run did not measure
  assert math.isclose(resumed.cost_s, whole.cost_s)
  assert [(m.candidate.key, m.repeat, m.objective) for m in resumed.measurements] == \
         [(m.candidate.key, m.repeat, m.objective) for m in whole.measurements]
  assert resumed.best.candidate == whole.best.candidate and resumed.best.objective == whole.best.objective


def _told(cont, cand, ys, start=0):
  cont.update([Measurement(cand, "profile", Metrics(True, step_time_s=1 / y, tokens_per_s=y), 1.0, repeat=start + r)
               for r, y in enumerate(ys)])


def test_contenders_remeasure_only_within_the_measured_noise_and_budget():
  a, b, c, d = (Candidate.of({"x": i}) for i in range(4))
  far = Contenders("profile", max_repeats=3, share=0.5, prior_noise=0.05)
  for cand, y in ((a, 100.0), (b, 60.0), (c, 50.0), (d, 40.0)):
    _told(far, cand, [y])
  assert far.offer()[1] < 1e-6  # a leads by 50 %: ten noise widths, nothing to re-measure

  close = Contenders("profile", max_repeats=3, share=0.5, prior_noise=0.05)
  for cand, y in ((a, 100.0), (b, 99.0), (c, 50.0), (d, 40.0)):
    _told(close, cand, [y])
  cand, value = close.offer()
  assert cand == a and value > 1e-3  # the incumbent first (the winner's curse)
  again = close.ask(cand, "profile")
  assert again == a and again.repeat == 1 and again.fidelity == "profile"
  _told(close, a, [100.0], start=1)
  # a's repeat agrees exactly: the measured noise shrinks, and so does the offer
  assert close.noise() < 0.05 and close.offer()[1] < value
  # budget: at most max_repeats measurements of a candidate...
  tight = Contenders("profile", max_repeats=2, share=1.0, prior_noise=0.05)
  for cand, y in ((a, 100.0), (b, 99.0)):
    _told(tight, cand, [y])
  assert tight.ask(tight.offer()[0], "profile") == a
  _told(tight, a, [97.0], start=1)
  assert tight.offer()[0] == b  # now the less-measured of the pair
  tight.ask(b, "profile")
  _told(tight, b, [98.0], start=1)
  assert tight.offer()[0] is None
  # ...and re-measurements at most `share` of the top-fidelity measurements
  scarce = Contenders("profile", max_repeats=3, share=0.3, prior_noise=0.05)
  for cand, y in ((a, 100.0), (b, 99.0)):
    _told(scarce, cand, [y])
  assert scarce.offer()[0] is None  # 1 of 3 would be a share of 0.33
  assert expected_loss(0.0, 0.1) > expected_loss(0.1, 0.1) > expected_loss(0.3, 0.1) > 0
