"""The ladder on this machine: micro-benchmarks of the local devices, their
cache, the simulators scoring local candidates on them, and a search that
screens real profiles with F0/F1."""

import dataclasses
import json
import math
import os

import numpy as np
import pytest

from autoscout_jax.local import devices as devices_lib
from autoscout_jax.local.sim_evaluators import LocalAnalyticEvaluator, LocalEventEvaluator
from autoscout_jax.problem import Problem
from autoscout_jax.sim.measured import MeasuredDevices, sim_cluster, sim_constants
from autoscout_jax.targets import local as local_target
from autoscout_jax.workload import LocalCluster, ModelConfig, Workload

CLUSTER = LocalCluster(num_devices=8, memory_bytes_per_device=2 * 2**30, platform="cpu")
TINY = Workload("tiny", ModelConfig(name="tiny", num_layers=2, hidden_size=64, num_heads=4, ffn_hidden_size=256,
                                    vocab_size=256, seq_len=32), global_batch=16)


@pytest.fixture(scope="module")
def measured():
  """One quick measurement of the 8 virtual CPU devices (a few seconds)."""
  return devices_lib.measure(CLUSTER, quick=True)


@pytest.fixture()
def devices_file(measured, tmp_path):
  path = tmp_path / "devices.json"
  devices_lib.save(measured, path)
  return str(path)


def test_microbenchmarks_give_sane_positive_numbers(measured):
  assert measured.num_devices == 8 and measured.platform == "cpu"
  assert {r["dtype"] for r in measured.matmul} == {"float32", "bfloat16"}
  assert all(r["s"] > 0 for r in (*measured.matmul, *measured.copy, *measured.op, *measured.collectives))
  assert {r["op"] for r in measured.collectives} == {"all_reduce", "all_gather", "reduce_scatter", "all_to_all"}
  fit = measured.fitted()
  # a CPU core does 1e8 .. 1e13 flop/s, moves 1e8 .. 1e12 bytes/s; a collective
  # between virtual devices costs microseconds to milliseconds of latency
  for dt in ("float32", "bfloat16"):
    assert 1e8 < fit[f"peak_{dt}"] < 1e13, fit
    assert fit[f"gemm_knee_{dt}"] >= 0
  assert 1e8 < fit["mem_bw"] < 1e12
  assert 1e7 < fit["link_bw"] < 1e12 and 0 <= fit["link_latency"] < 1e-2
  assert 0 < fit["op_s"] < 1e-3
  # the host side: collectives inside smaller groups, the dispatch of a
  # step by its buffers, exp / tanh
  assert {r["group"] for r in measured.collectives} == {2, 4, 8}
  assert sorted(r["buffers"] for r in measured.dispatch) == [1, 16, 64]
  assert {r["fn"] for r in measured.transcendental} == {"exp", "tanh"}
  assert 0 <= fit["collective_fixed_s"] < 1e-2 and 0 < fit["dispatch_s"] + fit["dispatch_buffer_s"] < 0.1
  assert 0 <= fit["transcendental_s"] < 1e-6
  # a bigger all-reduce takes longer than a small one
  ar = sorted((r["bytes"], r["s"]) for r in measured.collectives if r["op"] == "all_reduce")
  assert ar[-1][1] > ar[0][1]
  # the file round-trips
  again = MeasuredDevices.from_json(json.loads(json.dumps(measured.to_json())))
  assert again.digest == measured.digest and again.fitted() == pytest.approx(fit)


def test_fits_recover_the_law_they_assume():
  peak, knee, bw, lat, n = 5e10, 40.0, 3e9, 2e-5, 8
  mm = [{"dtype": "float32", "m": d, "k": d, "n": d, "s": 2 * d**3 * (d + knee) / (peak * d)}
        for d in (32, 64, 128, 256)]
  lg = math.log2(n)
  coll = []
  for b in (1e3, 1e5, 1e7):
    coll += [{"op": "all_reduce", "bytes": b, "s": 2 * (n - 1) / n * b / bw + 2 * lg * lat},
             {"op": "all_gather", "bytes": b, "s": (n - 1) * b / bw + lg * lat},
             {"op": "reduce_scatter", "bytes": b, "s": (n - 1) / n * b / bw + lg * lat}]
  md = MeasuredDevices("k", "cpu", "cpu", n, {}, tuple(mm), ({"bytes": 1e6, "s": 1e-3},),
                       ({"ops": 1, "s": 1e-6},), tuple(coll))
  assert md.gemm("float32") == pytest.approx((peak, knee), rel=1e-6)
  assert md.gemm("bfloat16") == pytest.approx((peak, knee), rel=1e-6)  # falls back to float32
  assert md.link() == pytest.approx((bw, lat), rel=1e-6)
  assert md.mem_bw == pytest.approx(2e9)
  cl = sim_cluster(md, 2**31, "fp32")
  assert cl.device.peak_bf16 == pytest.approx(peak) and cl.intra.latency == pytest.approx(lat)
  c = sim_constants(md, "fp32")
  assert c.gemm_eff == 1.0 and c.comm_eff == 1.0 and c.gemm_knee == pytest.approx(knee)


def test_cache_is_reused_and_keyed(measured, tmp_path, monkeypatch):
  key = devices_lib.machine_key(CLUSTER)
  first = dataclasses.replace(measured, key=key)
  devices_lib.save(first, devices_lib.cache_path(str(tmp_path), key))

  def no_measure(*a, **k):
    raise AssertionError("measured again although the cache holds this machine")

  monkeypatch.setattr(devices_lib, "measure", no_measure)
  again = devices_lib.load_or_measure(CLUSTER, str(tmp_path))
  assert again.digest == first.digest
  # another device count is another machine key: it is measured, not reused
  other = dataclasses.replace(CLUSTER, num_devices=4)
  assert devices_lib.machine_key(other) != key
  with pytest.raises(AssertionError, match="measured again"):
    devices_lib.load_or_measure(other, str(tmp_path))


def _score(evaluator, values_list, space=None):
  space = space or local_target.space(TINY, CLUSTER)
  problem = Problem(TINY, CLUSTER, space, ("analytic", "event", "profile"))
  cands = [space.make(v) for v in values_list]
  return evaluator.evaluate(problem, cands)


BASE = dict(data=8, fsdp=1, tensor=1, num_microbatches=1, remat_policy="none", scan_layers=False)


@pytest.mark.parametrize("cls", [LocalAnalyticEvaluator, LocalEventEvaluator])
def test_simulators_score_local_candidates_by_layout(cls, devices_file):
  tp = {**BASE, "data": 4, "tensor": 2}
  layouts = [BASE, {**BASE, "data": 2, "tensor": 4}, {**BASE, "data": 1, "fsdp": 8}, tp,
             {**tp, "num_microbatches": 4}, {**BASE, "remat_policy": "full"}]
  ms = _score(cls(devices_file=devices_file), layouts)
  assert all(m.feasible for m in ms), [m.metrics.error for m in ms]
  t = [m.metrics.step_time_s for m in ms]
  b = [m.metrics.breakdown for m in ms]
  assert len(set(t)) == len(t)  # every layout its own time
  assert b[0]["tp_comm_s"] == 0 and b[1]["tp_comm_s"] > b[3]["tp_comm_s"] > 0  # TP talks per layer
  assert b[2]["dp_comm_s"] > b[0]["dp_comm_s"]  # fsdp gathers parameters on top of reducing gradients
  assert t[4] > t[3]  # four micro-batches of 1 run slower than one of 4 on these devices
  assert b[5]["recompute_s"] > 0 and t[5] > t[0]
  assert ms[0].provenance["devices_digest"]


def test_f0_responds_to_the_measured_link(measured, tmp_path):
  """A slower link between the devices slows tensor parallelism more than
  data parallelism (the measurement, not a constant, prices them)."""
  slow_rows = tuple({**r, "s": r["s"] * 20} for r in measured.collectives)
  slow = dataclasses.replace(measured, collectives=slow_rows)
  paths = {}
  for name, md in (("fast", measured), ("slow", slow)):
    paths[name] = str(tmp_path / f"{name}.json")
    devices_lib.save(md, paths[name])
  layouts = [BASE, {**BASE, "data": 2, "tensor": 4}]
  fast = [m.metrics.step_time_s for m in _score(LocalAnalyticEvaluator(devices_file=paths["fast"]), layouts)]
  slow_t = [m.metrics.step_time_s for m in _score(LocalAnalyticEvaluator(devices_file=paths["slow"]), layouts)]
  assert slow_t[0] > fast[0] and slow_t[1] > fast[1]
  assert slow_t[1] / fast[1] > slow_t[0] / fast[0]


def test_local_plan_follows_the_knobs():
  space = local_target.space(TINY, CLUSTER)
  cands = [space.make({**BASE, "data": 2, "fsdp": 2, "tensor": 2, "num_microbatches": 2,
                       "remat_policy": "dots_saveable"}), space.make(BASE)]
  p = local_target.plan(cands, TINY)
  assert list(p["tp"]) == [2, 1] and list(p["dp"]) == [4, 8] and list(p["shard"]) == [2, 1]
  assert list(p["zero"]) == [3, 0] and list(p["num_micro"]) == [2, 1] and list(p["mbs"]) == [2, 2]
  assert list(p["recompute"]) == [3, 0] and list(p["flash"]) == [0, 0]


def test_local_simulators_refuse_a_simulated_cluster():
  from autoscout_jax.sim.hardware import make_cluster
  assert "LocalCluster" in LocalAnalyticEvaluator().check_fits(TINY, make_cluster("dgx_h100", 8))


@pytest.mark.slow
def test_ladder_search_end_to_end(tmp_path):
  """A small AutoScout search with F0, F1, F2 and F3 on this machine: the
  devices are measured into the workdir, F0/F1 screen, F3 profiles."""
  from autoscout_jax.designers.autoscout import AutoScoutDesigner
  from autoscout_jax.experiment import run_experiment
  from autoscout_jax.local.evaluators import CompileEvaluator, ProfileEvaluator
  workdir = str(tmp_path / "run")
  space_fn = lambda w, c: local_target.space(w, c, microbatch_choices=(1, 4), remat_policies=("none", "full"))
  evals = [LocalAnalyticEvaluator(), LocalEventEvaluator(), CompileEvaluator(timeout_s=120),
           ProfileEvaluator(warmup_steps=1, timed_steps=2, timeout_s=120)]
  wl = dataclasses.replace(TINY, default=tuple(sorted(BASE.items())))
  res = run_experiment(workdir, wl, CLUSTER, space_fn, AutoScoutDesigner, evals, batch_size=2, max_rounds=1,
                       printer=lambda s: None)
  with open(os.path.join(workdir, "measurements.jsonl")) as f:
    rows = [json.loads(l) for l in f]
  fids = {r["fidelity"] for r in rows}
  assert {"analytic", "profile"} <= fids, fids
  cached = os.listdir(os.path.join(workdir, devices_lib.SUBDIR))
  assert cached == [devices_lib.machine_key(CLUSTER) + ".json"]
  assert res.best is not None and res.best.fidelity == "profile"
  sims = [r for r in rows if r["fidelity"] == "analytic" and r["metrics"]["feasible"]]
  assert sims and all(r["provenance"]["devices_key"] == devices_lib.machine_key(CLUSTER) for r in sims)
  # the designer tracks how far F0 is from the real profiles
  errors = res.designer_summary["fidelity_errors"]["analytic"]
  assert errors["pairs"] >= 1 and errors["mape"] is not None
  from autoscout_jax.tools.ladder_report import from_workdir
  rep = from_workdir(workdir)
  assert rep["profiled"] >= 1 and rep["analytic"]["candidates"] >= 1


def test_a_maxtext_space_on_this_machine_scores_through_its_own_plan(devices_file):
  """A simulator space of another family (MaxText's keys) on the local
  cluster: the local F0/F1 use that space's plan and the measured devices."""
  from autoscout_jax.targets import maxtext
  moe = Workload("tiny_moe", ModelConfig(name="tiny_moe", num_layers=4, hidden_size=128, num_heads=8,
                                         ffn_hidden_size=256, vocab_size=256, seq_len=64, num_experts=4,
                                         moe_top_k=2, moe_ffn_hidden_size=256, gated_mlp=True), global_batch=16)
  space = maxtext.space(moe, CLUSTER)
  cands = space.sample(np.random.default_rng(0), 6)
  problem = Problem(moe, CLUSTER, space, ("analytic", "event", "profile"))
  for cls in (LocalAnalyticEvaluator, LocalEventEvaluator):
    ms = cls(devices_file=devices_file).evaluate(problem, cands)
    tput = [m.metrics.tokens_per_s for m in ms if m.feasible]
    assert len(tput) == len(cands) and len(set(tput)) > 1
    assert ms[0].provenance["simulator"].endswith("-local")
