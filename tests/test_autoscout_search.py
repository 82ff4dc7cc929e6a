"""AutoScout end to end through the search loop, on a synthetic conditional
space whose optimum is known: it finds the optimum on a small budget, never
suggests an invalid candidate, stops trusting a cheap fidelity that lies,
and a resumed run replays to the same suggestions."""

import math

import pytest

from autoscout_jax.designers.autoscout import AutoScoutConfig, AutoScoutDesigner, SurrogateSpec
from autoscout_jax.evaluator import Evaluator
from autoscout_jax.measurement import Measurement, Metrics
from autoscout_jax.problem import Problem
from autoscout_jax.search import run_search
from autoscout_jax.space import (Boolean, Categorical, Constraint, IntRange, Ordinal, ProductGroup,
                                 SearchSpace, When)
from autoscout_jax.store import MeasurementStore
from autoscout_jax.targets.serving import log_margins
from autoscout_jax.workload import LocalCluster, ModelConfig, Workload

SMALL = SurrogateSpec(ensemble_size=4, hidden_sizes=(32, 32), max_steps=200, max_epochs=200)
P2 = (1, 2, 4, 8)


def synth_space() -> SearchSpace:
  knobs = [
      Ordinal("a", values=P2, default=8), Ordinal("b", values=P2, default=1),
      Categorical("mode", choices=("x", "y", "z")),
      Boolean("flag"), IntRange("depth", 1, 4, when=(When("flag", True),)),
      Ordinal("mb", values=(1, 2, 4, 8, 16), default=1),
  ]
  fits = Constraint("mb_fits", lambda v, f: None if v["mb"] * v["a"] <= 64 else "mb * a > 64")
  return SearchSpace(knobs, [fits], groups=[ProductGroup(("a", "b"), 8)], name="synth")


def step_time(v) -> float:
  t = 1.0 + 0.3 * abs(math.log2(v["a"]) - 2) + {"x": 0.3, "y": 0.0, "z": 0.15}[v["mode"]]
  t += 0.1 * abs(v["depth"] - 3) if v["flag"] else 0.4
  return t + 0.05 * (math.log2(v["mb"]) - 3) ** 2


def oom(v) -> bool:
  return v["mb"] * v["b"] >= 32


OPTIMUM = 1000.0  # a=4 b=2 mode=y flag depth=3 mb=8


class Synthetic(Evaluator):
  """Throughput 1000 / step_time; `lie` inverts it (a wrong simulator)."""

  def __init__(self, fidelity, cost, lie=False):
    self.fidelity, self.cost, self.lie = fidelity, cost, lie
    self.seen = []

  def evaluate(self, problem, candidates):
    out = []
    for c in candidates:
      self.seen.append(c)
      v = c.values
      if oom(v):
        out.append(Measurement(c, self.fidelity, Metrics.failed("oom", "too big"), self.cost))
        continue
      t = step_time(v)
      t = 1.0 / t if self.lie else t
      out.append(Measurement(c, self.fidelity, Metrics(True, step_time_s=t, tokens_per_s=1000.0 / t,
                                                       peak_mem_bytes=1e6 * v["mb"]), self.cost))
    return out


class Recording(AutoScoutDesigner):
  """Logs each round's suggestions and the cheap fidelity's trust when the
  round was planned."""

  def __init__(self, *a, **kw):
    super().__init__(*a, **kw)
    self.suggested, self.trust_log = [], []

  def suggest(self, n):
    trust = self.plan.trust("analytic") if "analytic" in self.plan.cheap else None
    out = super().suggest(n)
    self.suggested.append([(c.key, c.fidelity) for c in out])
    self.trust_log.append(trust)
    return out


WORKLOAD = Workload("synth", ModelConfig("m", 2, 64, 4, 256, 256, 32), 16)
CLUSTER = LocalCluster()


def problem(space, fidelities, default=None) -> Problem:
  return Problem(WORKLOAD, CLUSTER, space, fidelities, default=default)


def designer(space, seed, fidelities, default=None, **config) -> "Recording":
  # These tests are about the sparse/dense search and its fidelity trust;
  # the cheap-order stage (which would lead on a space this small) has its own.
  config.setdefault("cheap_order", False)
  cfg = AutoScoutConfig(surrogate=SMALL, **config)
  return Recording(problem(space, fidelities, default), seed, cfg)


def search(designer, evals, workdir, **kw):
  return run_search(designer.problem, designer, evals, MeasurementStore(str(workdir)), **kw)


def test_space_has_the_stated_optimum():
  s = synth_space()
  best = max((c for c in s.iter_all() if not oom(c.values)), key=lambda c: -step_time(c.values))
  assert 1000.0 / step_time(best.values) == OPTIMUM
  assert len(s.enumerate()) > 200


def test_finds_optimum_on_small_budget_and_never_suggests_invalid(tmp_path):
  s = synth_space()
  valid = len(s.enumerate())
  d = designer(s, 0, ("profile",), default=s.default())
  top = Synthetic("profile", 10.0)
  res = search(d, {"profile": top}, tmp_path, budget_s=450.0, batch_size=2, max_rounds=40)
  assert res.best.objective == pytest.approx(OPTIMUM)
  # Random search needs half the space on average; this is under a sixth.
  first = next(i for i, c in enumerate(top.seen) if 1000.0 / step_time(c.values) == OPTIMUM)
  assert first + 1 <= 45 < valid / 6
  assert all(m.metrics.failure_kind != "invalid" for m in res.measurements)
  assert all(s.is_valid(c) for c in top.seen)
  keys = [k for rnd in d.suggested for k in rnd]
  assert len(keys) == len(set(keys))  # never asked twice
  imp = d.importances
  assert set(imp) == set(s.names) and sum(imp.values()) == pytest.approx(1.0)


def test_cheap_fidelity_screens_and_a_lying_one_is_bypassed(tmp_path):
  s = synth_space()
  honest = designer(s, 1, ("analytic", "profile"), extra_screens=4)
  cheap, top = Synthetic("analytic", 0.01), Synthetic("profile", 10.0)
  res = search(honest, {"analytic": cheap, "profile": top}, tmp_path / "honest", budget_s=120.0,
               max_rounds=40)
  assert res.best.objective == pytest.approx(OPTIMUM)
  assert len(cheap.seen) > 2 * len(top.seen)  # screened far more than profiled
  assert honest.plan.trust("analytic") == 1.0

  liar = designer(s, 1, ("analytic", "profile"), extra_screens=4)
  cheap, top = Synthetic("analytic", 0.01, lie=True), Synthetic("profile", 10.0)
  search(liar, {"analytic": cheap, "profile": top}, tmp_path / "liar", budget_s=150.0,
         max_rounds=40)
  err = liar.plan.errors["analytic"]
  assert liar.plan.trust("analytic") == 0.0 and "analytic" in liar.plan.bypassed()
  assert err.kendall_tau < 0  # it ranks backwards
  # Bypassed after a few profiles, never asked again once bypassed.
  first = liar.trust_log.index(0.0)
  profiles_before = sum(f == "profile" for rnd in liar.suggested[:first] for _, f in rnd)
  assert profiles_before <= 8
  assert all(f != "analytic" for rnd in liar.suggested[first:] for _, f in rnd)
  assert len(top.seen) > profiles_before  # and the search went on with profiles alone


def test_resumed_run_suggests_what_an_uninterrupted_one_does(tmp_path):
  s = synth_space()

  def run(workdir, rounds):
    d = designer(s, 3, ("analytic", "profile"), default=s.default(), extra_screens=2)
    evals = {"analytic": Synthetic("analytic", 0.01), "profile": Synthetic("profile", 10.0)}
    res = search(d, evals, workdir, max_rounds=rounds, batch_size=2)
    return d, evals, res

  full, _, res_full = run(tmp_path / "a", 8)
  run(tmp_path / "b", 4)  # killed after 4 rounds
  resumed, evals, res = run(tmp_path / "b", 8)
  assert resumed.suggested == full.suggested
  assert res.best.candidate == res_full.best.candidate
  assert res.cost_s == pytest.approx(res_full.cost_s)
  # Only the rounds after the interruption were evaluated again.
  fresh = len(evals["analytic"].seen) + len(evals["profile"].seen)
  total = sum(len(r) for r in full.suggested) + 1
  assert 0 < fresh < total


def test_cheap_order_stage_finds_the_optimum_even_behind_a_lying_cheap_fidelity(tmp_path):
  """Screens the whole space once, profiles the cheap argmax first, then
  learns the residual: an honest screen finds the optimum in one profile;
  one that ranks backwards is learned from the profiles (the slope of the
  residual on the cheap value turns negative) and the search leaves the
  cheap order to get within 5 % of the optimum, where the cheap order
  alone stays below 45 % of it for its first 60 profiles."""
  s = synth_space()
  valid = len(s.enumerate())
  d = designer(s, 0, ("analytic", "profile"), cheap_order=True)
  cheap, top = Synthetic("analytic", 0.01), Synthetic("profile", 10.0)
  res = search(d, {"analytic": cheap, "profile": top}, tmp_path / "honest", budget_s=200.0, max_rounds=40)
  assert len(cheap.seen) == valid and 1000.0 / step_time(top.seen[0].values) == OPTIMUM
  assert res.best.objective == pytest.approx(OPTIMUM)
  liar = designer(s, 0, ("analytic", "profile"), cheap_order=True)
  cheap, top = Synthetic("analytic", 0.01, lie=True), Synthetic("profile", 10.0)
  res = search(liar, {"analytic": cheap, "profile": top}, tmp_path / "liar", budget_s=600.0, max_rounds=80)
  assert res.best.objective >= 0.95 * OPTIMUM
  assert liar.ranked.departures > 0 and liar.ranked.slope > 1.0


def served(c, fidelity, tps, tpot, extra):
  """A serving measurement of `c`: an SLO miss (no objective, its step time
  and figures kept) when `extra`'s slo_log_margin is negative."""
  extra = {"tokens_per_s_per_device": tps, **extra}
  if extra["slo_log_margin"] < 0:
    return Measurement(c, fidelity, Metrics.failed("slo", "over an SLO", step_time_s=tpot, extra=extra), 1.0)
  return Measurement(c, fidelity, Metrics(True, step_time_s=tpot, tokens_per_s=tps, extra=extra), 1.0)


class Serving(Evaluator):
  """A serving-like measurement (issue 15): the step time is the TPOT, which
  grows with the batch while throughput per device grows faster; a TPOT
  above the SLO is infeasible (`slo`) yet still carries its step time."""

  def __init__(self, fidelity, slow=1.0):
    self.fidelity, self.seen, self.slow = fidelity, [], slow

  def evaluate(self, problem, candidates):
    out = []
    for c in candidates:
      self.seen.append(c)
      mb, tp = c.values["mb"], c.values["tp"]
      tpot = self.slow * 0.01 * (1.0 + 0.1 * mb) / math.sqrt(tp)
      out.append(served(c, self.fidelity, mb / tpot / tp, tpot, {"slo_log_margin": math.log(0.03 / tpot)}))
    return out


def test_cheap_order_ranks_by_throughput_not_step_time(tmp_path):
  """Where the step time is no inverse throughput (serving: TPOT), the
  cheap-order stage still profiles the cheap throughput argmax first, as
  cheap_topk does (it used to profile the shortest TPOT: the smallest batch)."""
  allowed = {(mb, tp) for mb in (1, 2, 4, 8, 16, 32, 64) for tp in (1, 2, 4, 8)} - {(16, 4), (2, 2)}
  s = SearchSpace([Ordinal("mb", values=(1, 2, 4, 8, 16, 32, 64), default=1), Ordinal("tp", values=(1, 2, 4, 8))],
                  [Constraint("measured", lambda v, f: None if (v["mb"], v["tp"]) in allowed else "not measured")],
                  name="serving_like")
  best = max(Serving("x").evaluate(None, s.enumerate()), key=lambda m: m.objective or 0.0)
  d = designer(s, 0, ("analytic", "profile"), cheap_order=True)
  cheap, top = Serving("analytic"), Serving("profile")
  res = search(d, {"analytic": cheap, "profile": top}, tmp_path, budget_s=60.0, max_rounds=10)
  assert d.ranked is not None and top.seen[0].values == best.candidate.values
  assert res.best.objective == pytest.approx(best.objective)


def test_cheap_order_profiles_what_a_pessimistic_latency_model_rules_out(tmp_path):
  """A cheap serving model 1.6x too slow calls the best configuration (tp 1,
  batch 16: 615 tok/s per device) an SLO miss, as it does every batch above
  8 at tp 1; cheap_topk would profile all 20 candidates it calls feasible
  first. The first profiles measure the model's error (throughput 1.6x the
  screen's, so latencies 1/1.6x), the SLO margins are corrected by it, and
  the ruled-out optimum is profiled within 12 profiles."""
  s = SearchSpace([Ordinal("mb", values=(1, 2, 4, 8, 16, 32, 64), default=1), Ordinal("tp", values=(1, 2, 4, 8))],
                  name="serving_like")
  cheap, top = Serving("analytic", slow=1.6), Serving("profile")
  screens = cheap.evaluate(None, s.enumerate())
  truth = top.evaluate(None, s.enumerate())
  best = max(truth, key=lambda m: m.objective or 0.0)
  assert best.candidate.values == {"mb": 16, "tp": 1}
  ruled_out = {m.candidate.key for m in screens if m.objective is None}
  assert best.candidate.key in ruled_out and len(screens) - len(ruled_out) == 20
  cheap.seen, top.seen = [], []
  d = designer(s, 0, ("analytic", "profile"), cheap_order=True)
  res = search(d, {"analytic": cheap, "profile": top}, tmp_path, budget_s=len(screens) + 12.0, max_rounds=60)
  assert len(top.seen) <= 12
  assert res.best.objective == pytest.approx(best.objective)


class Rescaled(Serving):
  """Serving whose model is off in one way only: throughput x `tput`, or
  latencies x `lat`; the SLO (TPOT <= `slo` s) verdict follows the latencies."""

  def __init__(self, fidelity, tput=1.0, lat=1.0, slo=0.02):
    super().__init__(fidelity)
    self.tput, self.lat, self.slo = tput, lat, slo

  def evaluate(self, problem, candidates):
    out = []
    for m in super().evaluate(problem, candidates):
      tps = m.metrics.extra["tokens_per_s_per_device"] * self.tput
      tpot = m.metrics.step_time_s * self.lat
      out.append(served(m.candidate, self.fidelity, tps, tpot, {"slo_log_margin": math.log(self.slo / tpot)}))
    return out


def test_measured_latencies_not_throughput_judge_the_slo(tmp_path):
  """A cheap serving model 1.7x pessimistic about throughput but right about
  latency: its SLO verdicts are all correct. Corrected by the throughput
  residual, the margins would call the misses likely to pass and the search
  would pay for them; the profiles' measured margins show the latency model
  is right, so no SLO miss is profiled, and the optimum is found."""
  s = SearchSpace([Ordinal("mb", values=(1, 2, 4, 8, 16, 32, 64), default=1), Ordinal("tp", values=(1, 2, 4, 8))],
                  name="serving_like")
  cheap, top = Rescaled("analytic", tput=0.6), Rescaled("profile")
  screens = cheap.evaluate(None, s.enumerate())
  ruled_out = {m.candidate.key for m in screens if m.objective is None}
  best = max(top.evaluate(None, s.enumerate()), key=lambda m: m.objective or 0.0)
  assert len(ruled_out) >= 8 and best.candidate.key not in ruled_out
  cheap.seen, top.seen = [], []
  d = designer(s, 0, ("analytic", "profile"), cheap_order=True)
  res = search(d, {"analytic": cheap, "profile": top}, tmp_path, budget_s=len(screens) + 12.0, max_rounds=60)
  assert res.best.objective == pytest.approx(best.objective)
  assert len(top.seen) == 12 and not [c for c in top.seen if c.key in ruled_out]


class NearTies(Evaluator):
  """Throughput 1000 - 4 a - 3 b (every candidate within 5 % of the best);
  `bias` divides it: the truth is the cheap model 3x slower, same order."""

  def __init__(self, fidelity, bias=1.0):
    self.fidelity, self.seen, self.bias = fidelity, [], bias

  def evaluate(self, problem, candidates):
    out = []
    for c in candidates:
      self.seen.append(c)
      tps = (1000.0 - 4 * c.values["a"] - 3 * c.values["b"]) / self.bias
      out.append(Measurement(c, self.fidelity, Metrics(True, step_time_s=1.0 / tps, tokens_per_s=tps), 10.0))
    return out


def test_a_constant_bias_does_not_move_the_search_off_the_cheap_order(tmp_path):
  """The first profile shows the cheap fidelity 3x optimistic: that is its
  bias (integrated out under a broad prior), not local evidence against the
  first profile's neighbours, so the next profiles still follow the cheap
  order, as cheap_topk's would, even where the cheap values nearly tie."""
  s = SearchSpace([Ordinal("a", values=(1, 2, 3, 4, 5, 6)), Ordinal("b", values=(1, 2, 3, 4))], name="ties")
  cheap, top = NearTies("analytic"), NearTies("profile", bias=3.0)
  order = sorted(cheap.evaluate(None, s.enumerate()), key=lambda m: -m.objective)
  cheap.seen = []
  d = designer(s, 0, ("analytic", "profile"), cheap_order=True)
  search(d, {"analytic": cheap, "profile": top}, tmp_path, budget_s=24 * 10.0 + 60.0, max_rounds=40)
  assert len(top.seen) >= 5
  assert [c.key for c in top.seen[:5]] == [m.candidate.key for m in order[:5]]
  assert d.ranked.departures == 0


class Plateau(Evaluator):
  """Two structures: on `fused` False a plateau of 24 candidates within 3 %
  of each other, on `fused` True 24 the cheap model calls 12 % slower. The
  truth is the cheap model 5 % slower on the plateau and 30 % faster on the
  fused structure (an effect the cheap model does not know), so every
  fused candidate beats every plateau one."""

  def __init__(self, fidelity, truth=False):
    self.fidelity, self.seen, self.truth = fidelity, [], truth

  def evaluate(self, problem, candidates):
    out = []
    for c in candidates:
      self.seen.append(c)
      v = c.values
      tps = (1000.0 - 4 * v["a"] - 3 * v["b"]) * (0.88 if v["fused"] else 1.0)
      if self.truth:
        tps *= 1.3 if v["fused"] else 0.95
      out.append(Measurement(c, self.fidelity, Metrics(True, step_time_s=1.0 / tps, tokens_per_s=tps), 10.0))
    return out


def test_a_flat_plateau_does_not_rule_out_a_structure_never_profiled():
  """Twelve profiles on one plateau fit the cheap model's error there almost
  exactly, which says nothing about the structure never profiled: the
  residual's scale keeps its floor, so the fused candidates keep an
  expected gain well above the stop threshold (the stage explores them
  rather than stopping), above that of the plateau's next candidate.
  This is what found gap_llama3_70b's optimum (a structure 18 % down the
  cheap order) in 3 of 5 seeds instead of 2."""
  from autoscout_jax.designers.autoscout.ranked import CheapOrder
  s = SearchSpace([Ordinal("a", values=(1, 2, 3, 4, 5, 6)), Ordinal("b", values=(1, 2, 3, 4)), Boolean("fused")],
                  name="plateau")
  stage = CheapOrder(s, "analytic", "profile", stop_gain=0.001)
  cands = s.enumerate()
  screens = Plateau("analytic").evaluate(None, cands)
  stage.update(screens)
  plateau = sorted((m for m in screens if not m.candidate.values["fused"]), key=lambda m: -m.objective)[:12]
  stage.update(Plateau("profile", truth=True).evaluate(None, [m.candidate for m in plateau]))
  for m in plateau:
    stage.asked.add(m.candidate.key)
  stage.scores()
  fused = [i for i, c in enumerate(cands) if c.values["fused"]]
  rest = [i for i, c in enumerate(cands) if not c.values["fused"] and c.key not in stage.asked]
  best_fused = max(stage._gain[i] for i in fused)
  assert best_fused > 5 * stage.stop_gain  # with the scale free to shrink to 0.1: 1.2x
  assert best_fused > max(stage._gain[i] for i in rest)  # the plateau's next: worth less


class Memory(Evaluator):
  """Throughput and peak memory of a two-knob space: `a` up -> faster and more
  memory; the cheap model calls `a` = 6 out of memory (limit 100). The truth
  (`oom_at`) runs out of memory where its own set says."""

  def __init__(self, fidelity, oom_at=()):
    self.fidelity, self.oom_at = fidelity, set(oom_at)

  def evaluate(self, problem, candidates):
    out = []
    for c in candidates:
      a, b = c.values["a"], c.values["b"]
      mem = 70.0 + 6.0 * a - 0.5 * b
      tps = 1000.0 + 20 * a - b
      if (a, b) in self.oom_at or mem > 100.0:
        m = Metrics(False, peak_mem_bytes=mem, failure_kind="oom", error="out of memory",
                    breakdown={"compute_s": 1.0 / tps})
      else:
        m = Metrics(True, step_time_s=1.0 / tps, tokens_per_s=tps, peak_mem_bytes=mem)
      out.append(Measurement(c, self.fidelity, m, 10.0))
    return out


def _memory_stage(profiled, oom_at):
  from autoscout_jax.designers.autoscout.ranked import CheapOrder
  s = SearchSpace([Ordinal("a", values=(1, 2, 3, 4, 5, 6)), Ordinal("b", values=(1, 2, 3, 4, 5, 6, 7, 8))],
                  name="memory")
  stage = CheapOrder(s, "analytic", "profile", stop_gain=0.001)
  cands = s.enumerate()
  stage.update(Memory("analytic").evaluate(None, cands))
  pick = [c for c in cands if (c.values["a"], c.values["b"]) in profiled]
  stage.update(Memory("profile", oom_at=oom_at).evaluate(None, pick))
  for c in pick:
    stage.asked.add(c.key)
  stage.scores()
  return stage, {(c.values["a"], c.values["b"]): i for i, c in enumerate(cands)}


def test_one_out_of_memory_profile_moves_the_memory_bias_by_what_one_point_supports():
  """The cheap argmax (a 5, b 1: 99 % of the cheap model's limit) runs out of
  memory for real. That one point is partly the cheap memory model's
  constant bias, integrated out under its prior (memory models are ~10 %
  off), and partly local: a 5, b 8 (96 % of the limit) stays about as
  likely to run as not (taking the whole residual as a constant shift, as
  before, made it 0.41). Three failures across the space do move the bias:
  then no candidate with a 5 is likely to run."""
  one, at = _memory_stage({(5, 1)}, {(5, 1)})
  assert one._pfeas[at[(5, 8)]] >= 0.45
  assert one._pfeas[at[(5, 2)]] < one._pfeas[at[(5, 8)]] < one._pfeas[at[(4, 8)]]
  three, at = _memory_stage({(5, 1), (5, 8), (4, 1)}, {(5, 1), (5, 8), (4, 1)})
  assert max(three._pfeas[at[(5, b)]] for b in range(2, 8)) < 0.05


def test_without_an_out_of_memory_screen_no_candidate_is_marked_down_for_its_memory():
  """A cheap fidelity that calls nothing out of memory gives no limit: the
  candidate with the largest peak is as likely to run as any other."""
  from autoscout_jax.designers.autoscout.ranked import CheapOrder
  s = SearchSpace([Ordinal("a", values=(1, 2, 3, 4, 5)), Ordinal("b", values=(1, 2))], name="nolimit")
  stage = CheapOrder(s, "analytic", "profile", stop_gain=0.001)
  cands = s.enumerate()
  stage.update(Memory("analytic").evaluate(None, cands))
  first = max(cands, key=lambda c: c.values["a"] * 10 - c.values["b"])
  stage.update(Memory("profile").evaluate(None, [first]))
  stage.asked.add(first.key)
  stage.scores()
  assert all(p == 1.0 for i, p in enumerate(stage._pfeas) if cands[i].key != first.key)


class Latencies(Evaluator):
  """Serving with both latencies measured and an SLO on each (TTFT <= 0.3 s,
  TPOT <= 0.013 s): the model's TPOT x `tpot`, its TTFT x `ttft`."""

  def __init__(self, fidelity, ttft=1.0, tpot=1.0):
    self.fidelity, self.seen, self.ttft, self.tpot = fidelity, [], ttft, tpot

  def evaluate(self, problem, candidates):
    out = []
    for c in candidates:
      self.seen.append(c)
      mb, tp = c.values["mb"], c.values["tp"]
      tpot = self.tpot * 0.01 * (1.0 + 0.03 * mb) / math.sqrt(tp)
      ttft = self.ttft * 0.008 * mb / tp
      out.append(served(c, self.fidelity, mb / tpot / tp, tpot, log_margins(ttft, tpot, 0.3, 0.013)))
    return out


def test_each_latency_error_is_learned_from_its_own_margin(tmp_path):
  """A cheap serving model 2x pessimistic about TPOT and 3x optimistic about
  TTFT. The configurations it rules out (TPOT) miss the TTFT SLO, and all
  but one of them really meet the TPOT one; the ones it admits are
  TPOT-bound, so the minimum of the margins shows only the TPOT error, and corrected by it the
  ruled-out ones look like 2x the throughput within the SLOs (the search
  used to profile all four). Each latency's residual is learned from its
  own margin on every profile: TTFT is 3x the model's, so none of them is
  worth a profile, the optimum is found, and no SLO miss is paid for."""
  s = SearchSpace([Ordinal("mb", values=(1, 2, 4, 8, 16, 32, 64), default=1), Ordinal("tp", values=(1, 2, 4, 8))],
                  name="serving_like")
  cheap, top = Latencies("analytic"), Latencies("profile", ttft=3.0, tpot=0.5)
  screens, truth = cheap.evaluate(None, s.enumerate()), top.evaluate(None, s.enumerate())
  ruled_out = {m.candidate.key for m in screens if m.objective is None}
  misses = {m.candidate.key for m in truth if m.objective is None}
  assert ruled_out == misses and len(misses) == 6
  missed = [m.metrics.extra for m in truth if m.objective is None]
  assert all(e["ttft_log_margin"] < 0 for e in missed) and sum(e["tpot_log_margin"] > 0 for e in missed) == 5
  best = max(truth, key=lambda m: m.objective or 0.0)
  cheap.seen, top.seen = [], []
  d = designer(s, 0, ("analytic", "profile"), cheap_order=True)
  res = search(d, {"analytic": cheap, "profile": top}, tmp_path, budget_s=len(screens) + 12.0, max_rounds=60)
  assert res.best.objective == pytest.approx(best.objective)
  assert not [c for c in top.seen if c.key in misses]
