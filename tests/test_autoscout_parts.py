"""AutoScout's parts on their own: knob roles, dense relaxation + rounding,
knob importances, the bandit, cheap-fidelity trust, and bad input."""

import math

import jax
import numpy as np
import pytest

import surrogates
from autoscout_jax.designers.autoscout import (AutoScoutConfig, AutoScoutDesigner, Bandit, FidelityPlan,
                                               FusedSurrogate, Observations, SurrogateSpec,
                                               knob_roles, permutation_importance)
from autoscout_jax.designers.autoscout import dense as dense_lib
from autoscout_jax.targets.local import space as local_training_space
from autoscout_jax.measurement import Measurement, Metrics
from autoscout_jax.problem import Problem
from autoscout_jax.space import Candidate, Categorical, Constraint, IntRange, Ordinal, SearchSpace
from autoscout_jax.workload import LocalCluster, ModelConfig, Workload

SMALL = SurrogateSpec(ensemble_size=4, hidden_sizes=(32, 32), max_steps=300, max_epochs=300)


def sched_space() -> SearchSpace:
  cap = Constraint("mb_cap",
                   lambda v, f: None if v["sched"] == "a" or v["mb"] <= 16 else "mb > 16 under b")
  return SearchSpace([Categorical("sched", choices=("a", "b")),
                      Ordinal("mb", values=(1, 2, 4, 8, 16, 32)),
                      IntRange("bucket", 1, 10)], [cap], name="sched")


def step_time(v) -> float:
  return (1.0 + 0.1 * (math.log2(v["mb"]) - 3) ** 2 + 0.02 * abs(v["bucket"] - 6)
          + 0.2 * (v["sched"] == "a"))


def measure(c: Candidate, fidelity="profile", scale=1.0) -> Measurement:
  t = step_time(c.values) * scale
  return Measurement(c, fidelity, Metrics(True, step_time_s=t, tokens_per_s=1000.0 / t), 1.0)


@pytest.fixture(scope="module")
def fitted():
  s = sched_space()
  obs = Observations(s, ("profile",))
  obs.add([measure(c) for c in s.enumerate()])
  surr = FusedSurrogate(s.width, 1, seed=0, spec=SMALL)
  surr.fit(obs.to_data())
  return s, obs, surr


def test_knob_roles_split_structure_from_dense():
  w = Workload("tiny", ModelConfig("tiny", 2, 64, 4, 256, 256, 32), 16)
  roles = knob_roles(local_training_space(w, LocalCluster()))
  assert roles.dense == ("num_microbatches", "scan_unroll")
  assert {"data", "fsdp", "tensor", "remat_policy", "scan_layers"} <= set(roles.structural)
  with pytest.raises(ValueError, match="cannot be dense"):
    knob_roles(local_training_space(w, LocalCluster()), dense=("remat_policy",))


def test_relaxation_climbs_and_rounds_to_valid_candidates(fitted):
  s, _, surr = fitted
  bases = [s.make(sched="b", mb=1, bucket=1), s.make(sched="a", mb=32, bucket=10)]
  relaxed = dense_lib.relax(s, surr.state, bases, ("mb", "bucket"), np.random.default_rng(0),
                            kappa=0.0)
  assert len(relaxed) == 2 * 3
  out = []
  for base, feats in relaxed:
    cands = dense_lib.round_relaxed(s, feats, base, ("mb", "bucket"))
    assert cands and all(s.is_valid(c) for c in cands)
    assert all(c["sched"] == base["sched"] for c in cands)  # the structure is held
    out += cands
  # The relaxed points sit near the optimum of the dense knobs (mb 8, bucket 6),
  # far from where the first base started.
  best = min(out, key=lambda c: step_time(c.values))
  assert best["mb"] == 8 and abs(best["bucket"] - 6) <= 1
  # A relaxed vector off every valid grid point still rounds to a valid one.
  feats = s.encode([s.make(sched="b", mb=16)])[0][0]
  feats[s.knob_slice("mb")] = 1.0  # mb = 32 is invalid under sched b
  assert all(s.is_valid(c) for c in dense_lib.round_relaxed(s, feats, s.make(sched="b"), ("mb",)))


def test_permutation_importance_finds_the_knob_that_matters(fitted):
  s, obs, surr = fitted
  cands = s.enumerate()
  x, act = obs.encode(cands)
  imp = permutation_importance(s, surr.predict, x, act, np.random.default_rng(0))
  assert imp["mb"] > imp["bucket"] and imp["sched"] > imp["bucket"]


def test_bandit_shifts_budget_toward_the_arm_that_pays():
  rng = np.random.default_rng(0)
  b = Bandit(("sparse", "dense"))
  for _ in range(60):
    arm = b.choose()
    b.reward(arm, float(rng.random() < (0.7 if arm == "dense" else 0.05)))
  assert b.shares()["dense"] > 0.7
  # When the paying arm changes, the discounted bandit follows.
  picks = []
  for _ in range(60):
    arm = b.choose()
    picks.append(arm)
    b.reward(arm, float(rng.random() < (0.7 if arm == "sparse" else 0.0)))
  assert picks[-30:].count("sparse") > 20
  fixed = Bandit(("sparse", "dense"), fixed_split={"sparse": 1, "dense": 1})
  for _ in range(40):
    arm = fixed.choose()
    fixed.reward(arm, 1.0 if arm == "dense" else 0.0)
  assert fixed.shares() == {"sparse": 0.5, "dense": 0.5}


def test_cheap_fidelity_trust_from_pairs():
  s = sched_space()
  cands = s.enumerate()[:10]
  plan = FidelityPlan(("analytic", "event", "profile"), threshold=0.15)
  obs = Observations(s, plan.model_fidelities)
  # analytic: 2x too optimistic but ranks right; event: ranks backwards.
  obs.add([measure(c, "analytic", scale=0.5) for c in cands])
  obs.add([Measurement(c, "event", Metrics(True, tokens_per_s=1000.0 * step_time(c.values)), 1e-3)
           for c in cands])
  obs.add([measure(cands[0])])
  plan.refresh(obs)
  assert plan.trust("analytic") == plan.trust("event") == 1.0  # too few pairs to judge
  obs.add([measure(c) for c in cands[1:6]])
  plan.refresh(obs)
  a, e = plan.errors["analytic"], plan.errors["event"]
  assert a.trust == 1.0 and a.calibrated_mape == pytest.approx(0.0, abs=1e-9)
  assert a.mape == pytest.approx(1.0) and a.offset == pytest.approx(-math.log(2.0))
  assert e.trust == 0.0 and e.kendall_tau == -1.0
  assert plan.trusted() == plan.gates() == ["analytic"] and plan.bypassed() == ["event"]
  assert plan.top_cost(np.zeros(3)) == pytest.approx([1.0, 1.0, 1.0])


def problem(space, fidelities=("profile",), default=None) -> Problem:
  return Problem(Workload("w", ModelConfig("m", 2, 64, 4, 256, 256, 32), 16), LocalCluster(), space,
                 fidelities, default=default)


def test_bad_input_is_named():
  s = sched_space()
  with pytest.raises(ValueError, match="unknown fidelity 'bogus'"):
    problem(s, ("bogus", "profile"))
  with pytest.raises(ValueError, match="not knobs of space"):
    AutoScoutDesigner(problem(s), config=AutoScoutConfig(dense_knobs=("nope",)))
  with pytest.raises(ValueError, match="initial candidate .* is invalid"):
    AutoScoutDesigner(problem(s), initial=(Candidate.of({"sched": "b", "mb": 32, "bucket": 1}),))
  with pytest.raises(ValueError, match="acquisition"):
    AutoScoutConfig(acquisition="greedy")
  cfg = surrogates.ModelConfig(num_features=1, ensemble_size=2, hidden_sizes=(4,))
  other = surrogates.untrained_state(cfg, jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="warm-start surrogate does not fit this space"):
    AutoScoutDesigner(problem(s), warm_start=other)


def test_designer_takes_the_runs_fidelities_from_the_problem():
  """No guessing: the plan is the problem's fidelities from the first
  suggestion on (the loop's compile screen is left to the loop), and every
  suggestion names the fidelity it is for; the default comes first when
  the config asks for it."""
  s = sched_space()
  default = s.make({"sched": "b", "mb": 4, "bucket": 6})
  p = problem(s, ("profile", "analytic", "compile"), default=default)
  d = AutoScoutDesigner(p, seed=0, config=AutoScoutConfig(surrogate=SMALL, start_from_default=True))
  assert d.plan.top == "profile" and d.plan.cheap == ("analytic",)
  assert d.plan.model_fidelities == ("analytic", "profile")
  first = d.suggest(3)
  assert first[0] == default and {c.fidelity for c in first} == {"analytic"}
  top_only = AutoScoutDesigner(problem(s, ("compile", "profile")), seed=0,
                               config=AutoScoutConfig(surrogate=SMALL))
  assert top_only.plan.cheap == () and {c.fidelity for c in top_only.suggest(2)} == {"profile"}


def test_warm_start_surrogate_seeds_the_knob_order(fitted):
  s, _, surr = fitted
  d = AutoScoutDesigner(problem(s), seed=0, warm_start=surr.state, config=AutoScoutConfig(surrogate=SMALL))
  imp = d.importances  # before this workload measured anything
  assert imp["mb"] > imp["bucket"] and sum(imp.values()) == pytest.approx(1.0)
  assert d.prio.ranked()[-1] == "bucket"
  cold = AutoScoutDesigner(problem(s), seed=0, config=AutoScoutConfig(surrogate=SMALL))
  assert len(set(cold.importances.values())) == 1  # no prior: every knob alike


def test_residual_gp_carries_one_knobs_effect_across_the_other_knobs():
  """A residual that depends on one knob only (a tensor-parallel degree whose
  kernels the cheap model misjudges) is learned with the additive kernel
  share chosen by likelihood, and predicted at a configuration that differs
  from every profiled one in all other knobs; with the isotropic kernel
  alone the prediction there falls back toward the prior mean."""
  from autoscout_jax.designers.autoscout import residual
  rng = np.random.default_rng(3)
  x = rng.integers(0, 4, size=(16, 6)).astype(float) / 3.0
  y = np.where(x[:, 0] == 0.0, 0.3, -0.1) + rng.normal(0.0, 0.02, 16)
  h, hq = np.ones((16, 1)), np.ones((1, 1))  # the bias, integrated out as in ranked.py
  q = np.array([[0.0, 1.0, 1.0, 1.0, 1.0, 1.0]])
  kw = dict(own=16, h=h, hsd=(1.0,), amplitudes=(0.1, 0.2, 0.4, 0.8))
  add = residual.fit(x, y, 0.02, add_idx=np.arange(6), additives=(0.0, 0.5, 1.0), **kw)
  iso = residual.fit(x, y, 0.02, **kw)
  assert add.additive > 0.0
  assert add.predict(q, hq)[0][0] > 0.25 > iso.predict(q, hq)[0][0]


def test_parallel_degrees_are_categories_so_a_trend_is_not_extrapolated_to_an_unseen_degree():
  """Profiles at tensor-parallel 1 and 2 show the cheap fidelity growing
  more optimistic with the degree. Encoded as log2 of the degree, the
  residual model carries that trend on to tp 4, which it never saw, and
  ranks it worse still; as categories, tp 4 keeps the prior (its residual
  there is the workload's mean, with the prior's spread)."""
  from autoscout_jax.designers.autoscout import residual
  choices = {"tensor_model_parallel_size": (1, 2, 4, 8), "micro_batch_size": (1, 2, 4)}
  f = residual.knob_features({"tensor_model_parallel_size": 4, "micro_batch_size": 2}, choices)
  assert f == {"tensor_model_parallel_size=4": 1.0, "micro_batch_size": pytest.approx(1 / 3)}
  rows = [(tp, mb) for tp in (1, 2) for mb in (1, 2, 4)]
  y = np.array([0.1 if tp == 1 else 0.5 for tp, _ in rows])  # cheap log value minus profiled
  q = {"tensor_model_parallel_size": 4, "micro_batch_size": 2}

  def predict(encode):
    names: list[str] = []
    enc = [encode({"tensor_model_parallel_size": tp, "micro_batch_size": mb}) for tp, mb in rows] + [encode(q)]
    for e in enc:
      names += [k for k in e if k not in names]
    x = np.array([[e.get(k, 0.0) for k in names] for e in enc])
    h = np.ones((len(x), 1))
    gp = residual.fit(x[:-1], y, 0.02, own=len(rows), h=h[:-1], hsd=(1.0,), amplitudes=(0.4,))
    mu, sd = gp.predict(x[-1:], h[-1:])
    return float(mu[0]), float(sd[0])

  log2_mu, _ = predict(lambda v: {k: math.log2(x) / 3.0 for k, x in v.items()})
  cat_mu, cat_sd = predict(lambda v: residual.knob_features(v, choices))
  assert log2_mu > 0.5  # the trend, extrapolated: tp 4 worse than tp 2
  assert 0.1 < cat_mu < 0.5 and cat_sd > 0.2  # between what tp 1 and tp 2 showed, uncertain


def test_a_failed_profile_costs_what_its_launch_costs():
  """The cheap-order stage weighs a doubtful candidate by its chance of
  running per expected cost: the ratio of a failed profile's cost to that
  of one that ran is measured from the run's own profiles, 1 until both
  kinds were paid."""
  from autoscout_jax.designers.autoscout import ranked
  c = Candidate.of({"mb": 1})
  ran = [Measurement(c, "profile", Metrics(True, step_time_s=1.0, tokens_per_s=1.0), cost) for cost in (500., 520.)]
  oom = [Measurement(c, "profile", Metrics(False, failure_kind="oom"), 120.0) for _ in range(2)]
  assert ranked.failure_cost_ratio(ran) == 1.0
  assert ranked.failure_cost_ratio(oom) == 1.0
  assert ranked.failure_cost_ratio(ran + oom) == pytest.approx(120.0 / 510.0)
  slo = [Measurement(c, "profile", Metrics(False, failure_kind="slo"), 700.0)]
  assert ranked.failure_cost_ratio(ran + slo) == 1.0
