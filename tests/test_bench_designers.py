"""The Optuna TPE and SMAC3 wrappers suggest only valid, fresh candidates on a
conditional space with a product group and constraints, learn from
failures, and say how to install themselves when their library is absent."""

import math
import sys

import pytest

from autoscout_jax.bench import peers
from autoscout_jax.bench.tasks import BenchError
from autoscout_jax.measurement import Measurement, Metrics
from autoscout_jax.problem import Problem
from autoscout_jax.space import (Boolean, Categorical, Constraint, Ordinal, ProductGroup, SearchSpace,
                                 When)
from autoscout_jax.workload import LocalCluster, ModelConfig, Workload


def conditional_space():
  pow2 = (1, 2, 4, 8)
  knobs = [
      Ordinal("tp", values=pow2), Ordinal("pp", values=pow2), Ordinal("dp", values=pow2, default=8),
      Boolean("sp", when=(When("tp", (2, 4, 8)),)),  # conditioned on a mesh axis
      Ordinal("vp", values=(1, 2), when=(When("pp", (2, 4, 8)),)),
      Categorical("recompute", choices=("none", "selective", "full")),
      Ordinal("rc_layers", values=(1, 2, 4), when=(When("recompute", "full"),)),
      Ordinal("mbs", values=(1, 2, 4)),
  ]
  cons = [
      Constraint("batch", lambda v, f: None if 16 % (v["dp"] * v["mbs"]) == 0 else "batch does not split"),
      Constraint("rc_fit", lambda v, f: None if v.get("rc_layers", 1) * v["pp"] <= 8 else "too many layers"),
      Constraint("vp_fit", lambda v, f: None if v.get("vp", 1) * v["pp"] <= 8 else "too many stages"),
  ]
  return SearchSpace(knobs, cons, groups=[ProductGroup(("tp", "pp", "dp"), 8)], name="cond")


def problem(space, default=None) -> Problem:
  return Problem(Workload("w", ModelConfig("m", 2, 64, 4, 256, 256, 32), 16), LocalCluster(), space,
                 ("profile",), default=default)


def outcome(c):
  if c["tp"] == 1 and c["recompute"] == "none" and c["mbs"] >= 2:
    return Metrics.failed("oom", "does not fit")
  t = 1.0 + 0.2 * math.log2(c["pp"]) + 0.1 * math.log2(c["tp"]) - 0.05 * c.get("sp", False) + 0.1 / c["mbs"]
  return Metrics(True, step_time_s=t, tokens_per_s=1000 / t)


def drive(designer, space, rounds=10, batch=2):
  seen, failures = [], 0
  for _ in range(rounds):
    cands = designer.suggest(batch)
    assert cands
    for c in cands:
      assert space.validate(c) == [], (c, space.validate(c))
      assert c not in seen
      seen.append(c)
    ms = [Measurement(c, "profile", outcome(c), 1.0) for c in cands]
    failures += sum(not m.feasible for m in ms)
    designer.update(ms)
  return seen, failures


@pytest.mark.parametrize("name", ["optuna_tpe", "smac"])
def test_wrapper_suggests_only_valid_fresh_candidates(name):
  missing = peers.missing_requirements(name)
  if missing:
    pytest.skip(f"the bench extra is not installed ({', '.join(missing)}): pip install -e '.[bench]'")
  space = conditional_space()
  p = problem(space, default=space.make(dp=8))
  d = peers.make_designer(name, p, seed=1)
  # an outcome it did not suggest (e.g. the loop's default) is learned, not an error
  d.update([Measurement(p.default, "profile", outcome(p.default), 1.0)])
  seen, _ = drive(d, space, rounds=10)
  assert p.default not in seen
  assert any("sp" in c for c in seen) and any("rc_layers" in c for c in seen)
  assert d.stats["fallbacks"] < len(seen)  # the library, not the fallback, proposed most
  # the same seed proposes the same sequence
  fresh = peers.make_designer(name, p, seed=1)
  fresh.update([Measurement(p.default, "profile", outcome(p.default), 1.0)])
  assert drive(fresh, space, rounds=3)[0] == seen[:6]
  if hasattr(d, "close"):
    d.close()


def test_optuna_group_axes_are_named_by_the_remaining_product():
  pytest.importorskip("optuna", reason="the bench extra is not installed: pip install -e '.[bench]'")
  from autoscout_jax.designers.external import group_prefix_choices
  from autoscout_jax.designers.optuna_tpe import OptunaTPE
  space = conditional_space()
  choices = group_prefix_choices(space, ("tp", "pp", "dp"), 8)
  assert choices[(0, 8)] == [1, 2, 4, 8] and choices[(1, 2)] == [1, 2] and choices[(2, 4)] == [4]
  d = OptunaTPE(problem(space), seed=0)
  params, _ = d._params_of(space.make(tp=2, pp=2, dp=2, sp=True, vp=2))
  assert params["tp"] == 2 and params["pp|rest=4"] == 2 and "dp" not in params and params["vp"] == 1


@pytest.mark.parametrize("module, cls", [("autoscout_jax.designers.optuna_tpe", "OptunaTPE"),
                                         ("autoscout_jax.designers.smac", "SMACDesigner")])
def test_missing_extra_says_how_to_install(monkeypatch, module, cls):
  import importlib
  mod = importlib.import_module(module)
  monkeypatch.setitem(sys.modules, "optuna", None)
  monkeypatch.setitem(sys.modules, "smac", None)
  with pytest.raises(ImportError, match=r"pip install -e '\.\[bench\]'"):
    getattr(mod, cls)(problem(conditional_space()), seed=0)


def test_check_designers_messages():
  with pytest.raises(BenchError, match=r"unknown designer\(s\) \['nope'\]; known: .*random"):
    peers.check_designers(["random", "nope"])
  peers.register("needs_ghost", peers.DesignerEntry("ghost:Designer", requires=("ghost_module_xyz",),
                                                    install=peers.BENCH_EXTRA))
  try:
    with pytest.raises(BenchError, match=r"needs ghost_module_xyz, which is not installed; install the bench "
                                         r"extra: pip install -e '\.\[bench\]'"):
      peers.check_designers(["needs_ghost"])
  finally:
    del peers.DESIGNERS["needs_ghost"]


def test_importing_designers_does_not_need_the_extras(monkeypatch):
  import importlib
  monkeypatch.setitem(sys.modules, "optuna", None)
  monkeypatch.setitem(sys.modules, "smac", None)
  monkeypatch.delitem(sys.modules, "autoscout_jax.designers", raising=False)
  importlib.import_module("autoscout_jax.designers")


def test_smac_on_a_space_smaller_than_the_budget_ends_instead_of_crashing():
  """SMAC raises when it has tried every configuration of a small space (a
  15-row measured table); the wrapper ends the run like any designer that
  is done, having suggested each valid candidate at most once."""
  missing = peers.missing_requirements("smac")
  if missing:
    pytest.skip(f"the bench extra is not installed ({', '.join(missing)}): pip install -e '.[bench]'")
  space = SearchSpace([Ordinal("a", values=(1, 2, 4)), Ordinal("b", values=(1, 2))], name="tiny")
  d = peers.make_designer("smac", problem(space), seed=1)
  seen = []
  for _ in range(40):
    cands = d.suggest(1)
    if not cands:
      break
    seen += cands
    d.update([Measurement(c, "profile", Metrics(True, step_time_s=1.0, tokens_per_s=float(c["a"] * c["b"])), 1.0)
              for c in cands])
  assert not d.suggest(1)
  assert len(seen) == len(set(seen)) <= 6
  if hasattr(d, "close"):
    d.close()
