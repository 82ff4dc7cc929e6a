"""The host side of a step on this machine's devices (virtual CPU devices):
the fits of the micro-benchmarks' fixed costs (a collective call, the
dispatch of a step, a transcendental element) and how F0/F1 charge them."""

import dataclasses
import math

import pytest

from autoscout_jax.local import devices as devices_lib
from autoscout_jax.local.sim_evaluators import LocalAnalyticEvaluator, LocalEventEvaluator
from autoscout_jax.problem import Problem
from autoscout_jax.sim import costs
from autoscout_jax.sim.measured import MeasuredDevices, sim_constants
from autoscout_jax.targets import local as local_target
from autoscout_jax.workload import LocalCluster, ModelConfig, Workload

N = 8
CLUSTER = LocalCluster(num_devices=N, memory_bytes_per_device=2 * 2**30, platform="cpu")
TINY = Workload("tiny", ModelConfig(name="tiny", num_layers=2, hidden_size=64, num_heads=4, ffn_hidden_size=256,
                                    vocab_size=256, seq_len=32), global_batch=16)
BASE = dict(data=8, fsdp=1, tensor=1, num_microbatches=1, remat_policy="none", scan_layers=False)
BW, LAT = 2e9, 2e-5


def _collectives(fixed, groups=(2, 4, 8)):
  """Timings that follow the simulators' alpha-beta law plus `fixed` per call."""
  rows = []
  for g in groups:
    lg = math.log2(g)
    for b in (1e3, 1e5, 1e7):
      rows += [{"op": "all_reduce", "bytes": b, "group": g, "s": 2 * (g - 1) / g * b / BW + 2 * lg * LAT + fixed},
               {"op": "all_gather", "bytes": b, "group": g, "s": (g - 1) * b / BW + lg * LAT + fixed}]
  return tuple(rows)


def _devices(fixed=0.0, dispatch=(), transcendental=(), platform="cpu", groups=(2, 4, 8)):
  mm = tuple({"dtype": "float32", "m": d, "k": d, "n": d, "s": 2 * d**3 * (d + 40) / (5e10 * d)}
             for d in (32, 64, 128, 256))
  prov = {"platform": platform, "device_kind": platform, "device_count": N}
  return MeasuredDevices("k", platform, platform, N, prov, mm, ({"bytes": 1e6, "s": 1e-3},), ({"ops": 1, "s": 1e-6},),
                         _collectives(fixed, groups), tuple(dispatch), tuple(transcendental))


def test_fits_recover_the_fixed_costs_they_assume():
  md = _devices(fixed=3e-5, dispatch=[{"buffers": k, "s": 1e-4 + 5e-6 * k} for k in (1, 16, 64)],
                transcendental=[{"fn": "exp", "elems": 1e4, "s": 1e4 * 4e-9 + 8e4 / 2e9}])
  assert md.link_fit() == pytest.approx((BW, LAT, 3e-5), rel=1e-6)
  assert md.dispatch_fit() == pytest.approx((1e-4, 5e-6), rel=1e-6)
  assert md.transc_s == pytest.approx(4e-9, rel=1e-6)  # the memory traffic at mem_bw (2 GB/s) is not counted
  c = sim_constants(md, "fp32")
  assert (c.host_serial, c.step_host_s, c.buffer_host_s) == (1.0, pytest.approx(1e-4), pytest.approx(5e-6))
  assert c.coll_fixed_s == pytest.approx(3e-5) and c.transc_s == pytest.approx(4e-9)
  assert sim_constants(dataclasses.replace(md, platform="gpu"), "fp32").host_serial == 0.0
  # a file of the older format (one group size, no dispatch or transcendental
  # rows) models none of them: the fixed cost cannot be told from the latency
  old = _devices(fixed=0.0, groups=(8,))
  assert old.link_fit() == pytest.approx((BW, LAT, 0.0), rel=1e-6)
  assert old.dispatch_fit() == (0.0, 0.0) and old.transc_s == 0.0
  # the accelerators' constants stay as they were
  assert (costs.SimConstants().host_serial, costs.SimConstants().step_host_s, costs.SimConstants().transc_s) == (0, 0, 0)
  with pytest.raises(ValueError, match="host_serial"):
    costs.SimConstants(host_serial=0.5)


def _score(cls, md, tmp_path, layouts, name):
  path = tmp_path / f"{name}.json"
  devices_lib.save(md, path)
  space = local_target.space(TINY, CLUSTER)
  problem = Problem(TINY, CLUSTER, space, ("analytic", "event", "profile"))
  ms = cls(devices_file=str(path)).evaluate(problem, [space.make(v) for v in layouts])
  assert all(m.feasible for m in ms), [m.metrics.error for m in ms]
  return [m.metrics for m in ms]


@pytest.mark.parametrize("cls", [LocalAnalyticEvaluator, LocalEventEvaluator])
def test_the_simulators_charge_the_step_dispatch_once_per_step(cls, tmp_path):
  layouts = [BASE, {**BASE, "data": 2, "tensor": 4, "num_microbatches": 4}]
  bare = _score(cls, _devices(), tmp_path, layouts, "bare")
  call, per = 2e-4, 1e-5
  disp = _score(cls, _devices(dispatch=[{"buffers": k, "s": call + per * k} for k in (1, 64)]), tmp_path, layouts,
                "dispatch")
  m = TINY.model
  buffers = 3 * (m.num_layers * (6 + 2) + 2 + 1)  # q k v o, 2 norms, 2 MLP matrices; embedding, norm, head
  for a, b in zip(bare, disp):
    assert b.breakdown["host_s"] == pytest.approx(call + per * buffers, rel=1e-4)
    assert b.step_time_s - a.step_time_s == pytest.approx(call + per * buffers, rel=1e-3)
    assert a.breakdown["host_s"] == 0.0


def test_a_collective_call_pays_its_fixed_cost_where_it_talks(tmp_path):
  layouts = [BASE, {**BASE, "data": 2, "tensor": 4}, {**BASE, "data": 2, "tensor": 4, "num_microbatches": 4}]
  base = _score(LocalAnalyticEvaluator, _devices(), tmp_path, layouts, "base")
  fixed = _score(LocalAnalyticEvaluator, _devices(fixed=1e-4), tmp_path, layouts, "fixed")
  tp_extra = [b.breakdown["tp_comm_s"] - a.breakdown["tp_comm_s"] for a, b in zip(base, fixed)]
  assert tp_extra[0] == 0.0 and tp_extra[1] > 0  # no tensor parallelism, no TP collectives
  assert tp_extra[2] == pytest.approx(4 * tp_extra[1], rel=1e-3)  # once per micro-batch's collective
  assert fixed[0].breakdown["dp_comm_s"] > base[0].breakdown["dp_comm_s"]  # the gradient all-reduce too


def test_transcendentals_cost_what_was_measured_and_recompute_pays_again(tmp_path):
  layouts = [BASE, {**BASE, "remat_policy": "full"}]
  base = _score(LocalAnalyticEvaluator, _devices(), tmp_path, layouts, "base")
  tr = _score(LocalAnalyticEvaluator, _devices(transcendental=[{"fn": "exp", "elems": 1e4, "s": 1e-4}]), tmp_path,
              layouts, "transc")
  extra = [b.step_time_s - a.step_time_s for a, b in zip(base, tr)]
  assert 0 < extra[0] < extra[1]
