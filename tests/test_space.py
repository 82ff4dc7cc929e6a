"""Search space: conditions, constraints, sampling, encoding, neighbours, JSON."""

import json

import numpy as np
import pytest

from autoscout_jax.targets.local import space as local_training_space
from autoscout_jax.space import (Boolean, Candidate, Categorical, Constraint, Float, IntRange,
                                 Ordinal, ProductGroup, SearchSpace, SpaceError, When)
from autoscout_jax.workload import LocalCluster, ModelConfig, Workload


def nested_space():
  # three levels of conditions, a product group and a cross-knob constraint
  knobs = [
      Ordinal("tp", values=(1, 2, 4, 8)),
      Ordinal("pp", values=(1, 2, 4, 8)),
      Ordinal("dp", values=(1, 2, 4, 8)),
      Boolean("seq_par", when=(When("tp", (2, 4, 8)),)),
      Categorical("recompute", choices=("none", "selective", "full")),
      Categorical("method", choices=("uniform", "block"), when=(When("recompute", "full"),)),
      IntRange("num_layers", 1, 4, when=(When("method", "block"),)),
      Float("mem_frac", low=0.5, high=0.95),
      Float("lr_scale", low=1e-3, high=1.0, log=True, when=(When("pp", (2, 4, 8)),)),
  ]
  cons = [Constraint("tp_le_4_when_pp_8",
                     lambda v, f: "tp*pp must be <= 16" if v["tp"] * v["pp"] > 16 else None)]
  return SearchSpace(knobs, cons, groups=[ProductGroup(("tp", "pp", "dp"), 32)], name="nested")


def tiny_workload(**kw):
  m = ModelConfig("tiny", 2, 64, 4, 256, 256, 32)
  return Workload("tiny", m, kw.pop("global_batch", 16), **kw)


def test_conditions_three_levels():
  s = nested_space()
  c = s.make(tp=1, pp=4, dp=8, recompute="full", method="block")
  assert "seq_par" not in c and c["num_layers"] == 1 and "lr_scale" in c
  c2 = s.make(tp=2, pp=2, dp=8, recompute="none")
  assert c2["seq_par"] is False and "method" not in c2 and "num_layers" not in c2
  bad = Candidate.of({**c2.values, "num_layers": 2})
  names = [v.constraint for v in s.validate(bad)]
  assert names == ["conditions"]
  assert "only exists when" in str(s.validate(bad)[0])


def test_named_constraints_explain_themselves():
  s = nested_space()
  c = Candidate.of({**s.make(tp=8, pp=4, dp=1).values})
  viol = {v.constraint: v.message for v in s.validate(c)}
  assert "tp_le_4_when_pp_8" in viol
  c = Candidate.of({**s.make(tp=8, pp=4, dp=1).values, "dp": 2})
  viol = {v.constraint: v.message for v in s.validate(c)}
  assert "mesh_product" in viol and "must equal 32" in viol["mesh_product"]


def test_thousands_of_samples_are_valid_and_cover_the_tree():
  s = nested_space()
  rng = np.random.default_rng(0)
  cands = s.sample(rng, 3000)
  assert all(not s.validate(c) for c in cands)
  assert any("num_layers" in c for c in cands) and any("seq_par" in c for c in cands)
  assert len(set(cands)) > 500


def test_uniform_sampling_on_enumerable_space():
  s = local_training_space(tiny_workload(), LocalCluster())
  pool = s.enumerate()
  rng = np.random.default_rng(1)
  counts = {}
  for c in s.sample(rng, 20 * len(pool)):
    counts[c] = counts.get(c, 0) + 1
  assert set(counts) == set(pool)
  # tree sampling would pick scan_layers=True half the time; uniform over valid
  # candidates picks it in proportion to the candidates under it (2/3 here)
  share_pool = np.mean([c["scan_layers"] for c in pool])
  share_drawn = sum(n for c, n in counts.items() if c["scan_layers"]) / sum(counts.values())
  assert abs(share_pool - 0.5) > 0.1
  assert share_drawn == pytest.approx(share_pool, abs=0.03)


def test_empty_space_is_a_clear_error():
  w = tiny_workload(global_batch=3)  # no data*fsdp split divides 3 with 8 devices
  s = local_training_space(w, LocalCluster())
  with pytest.raises(SpaceError, match="no valid candidate.*batch_split"):
    s.sample(np.random.default_rng(0), 1)


def test_encoding_round_trip_and_relaxed_rounding():
  s = nested_space()
  rng = np.random.default_rng(2)
  cands = s.sample(rng, 300)
  x, mask = s.encode(cands)
  assert x.shape == (300, s.width) and mask.shape == x.shape
  assert np.all(x[mask == 0] == 0)
  for i, c in enumerate(cands):
    r = s.round(x[i])
    assert not s.validate(r)
    # continuous knobs come back to within float precision, discrete exactly
    for k, v in c.values.items():
      if isinstance(v, float):
        assert r[k] == pytest.approx(v, rel=1e-5)
      else:
        assert r[k] == v
  noisy = np.clip(x + rng.normal(0, 0.2, x.shape), 0, 1)
  for row in noisy[:100]:
    assert not s.validate(s.round(row))


def test_neighbours_stay_valid_and_transfer_factors():
  s = local_training_space(tiny_workload(), LocalCluster())
  c = s.make(data=8, fsdp=1, tensor=1)
  nb = s.neighbours(c)
  assert nb and all(not s.validate(n) for n in nb)
  meshes = {(n["data"], n["fsdp"], n["tensor"]) for n in nb}
  assert (4, 2, 1) in meshes and (4, 1, 2) in meshes
  for n in nb:
    assert n["data"] * n["fsdp"] * n["tensor"] == 8
  rng = np.random.default_rng(3)
  for c in s.sample(rng, 50):
    assert all(not s.validate(n) for n in s.neighbours(c))


def test_candidate_json_round_trip_and_stable_key():
  s = nested_space()
  for c in s.sample(np.random.default_rng(4), 200):
    blob = json.dumps(c.to_json())
    back = s.from_json(json.loads(blob))
    assert back == c and hash(back) == hash(c) and back.key == c.key
  a = Candidate.of({"x": 1, "y": "a"})
  assert a.key == Candidate.of({"y": "a", "x": 1}).key
  assert a.at("compile") == a and a.at("compile").fidelity == "compile"


def test_bad_space_definitions():
  with pytest.raises(SpaceError, match="not declared before"):
    SearchSpace([Boolean("b", when=(When("a", 1),)), Ordinal("a", values=(1, 2))])
  with pytest.raises(SpaceError, match="never takes"):
    SearchSpace([Ordinal("a", values=(1, 2)), Boolean("b", when=(When("a", 3),))])
  with pytest.raises(SpaceError, match="multiply to 6"):
    SearchSpace([Ordinal("a", values=(1, 2, 4)), Ordinal("b", values=(1, 2, 4))],
                groups=[ProductGroup(("a", "b"), 6)])
  s = nested_space()
  with pytest.raises(SpaceError, match="unknown knob"):
    s.make(bogus=1)


def test_enumeration_matches_validity():
  s = local_training_space(tiny_workload(), LocalCluster())
  pool = s.enumerate()
  assert len(pool) == len(set(pool))
  # brute force over the raw product agrees
  import itertools
  count = 0
  for d, f, t, mb, rp, sc, un in itertools.product((1, 2, 4, 8), (1, 2, 4, 8), (1, 2, 4, 8),
                                                    (1, 2, 4, 8), ("none", "dots_saveable", "full"),
                                                    (False, True), (1, 2)):
    if not sc and un == 2:
      continue
    c = s.make(data=d, fsdp=f, tensor=t, num_microbatches=mb, remat_policy=rp, scan_layers=sc,
               **({"scan_unroll": un} if sc else {}))
    count += not s.validate(c)
  assert count == len(pool)
