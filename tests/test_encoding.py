"""encoding.to_arrays: measurements of a conditional space -> surrogate arrays
(features, active mask, fidelity index, log time, log memory, feasible)."""

import math

import numpy as np
import pytest

from autoscout_jax import encoding
from autoscout_jax.targets.local import space as local_training_space
from autoscout_jax.measurement import Measurement, Metrics
from autoscout_jax.workload import LocalCluster, ModelConfig, Workload


def space():
  w = Workload("tiny", ModelConfig("tiny", 2, 64, 4, 256, 256, 32), 16)
  return local_training_space(w, LocalCluster(num_devices=8))


def meas(sp, fidelity, step=None, mem=None, failure=None, **values):
  cand = sp.make(values)
  if failure:
    met = Metrics.failed(failure, "boom", peak_mem_bytes=mem)
  else:
    met = Metrics(True, step_time_s=step, peak_mem_bytes=mem, flops_per_step=1e9)
  return Measurement(cand, fidelity, met, cost_s=1.0)


def test_round_trip_shapes_masks_fidelities_and_targets():
  sp = space()
  scan = dict(data=8, scan_layers=True, scan_unroll=2)
  ms = [
      meas(sp, "profile", step=0.5, mem=2e6, data=8),
      meas(sp, "compile", mem=3e6, tensor=2, data=4),
      meas(sp, "profile", step=0.25, mem=1e6, **scan),
      meas(sp, "analytic", step=9.0, data=8),  # not a model fidelity: left out
      meas(sp, "profile", failure="invalid", data=8),  # never ran: left out
  ]
  data = encoding.to_arrays(ms, sp, ["compile", "profile"],
                            step_time={"compile": lambda m: m.metrics.flops_per_step / 1e10})
  assert data.num_rows == 3 and data.num_features == sp.width == len(sp.feature_names())
  np.testing.assert_array_equal(data.fidelity, [1, 0, 1])
  np.testing.assert_allclose(data.log_time, np.log([0.5, 0.1, 0.25]), rtol=1e-6)
  np.testing.assert_allclose(data.log_mem, np.log([2e6, 3e6, 1e6]), rtol=1e-6)
  np.testing.assert_array_equal(data.feasible, [1, 1, 1])
  # scan_unroll exists only under scan_layers: inactive (mask 0, value 0) elsewhere.
  col = sp.feature_names().index("scan_unroll")
  np.testing.assert_array_equal(data.active[:, col], [0, 0, 1])
  assert data.x[0, col] == 0 and data.x[2, col] > 0
  # Rows are the selected measurements, in order, encoded like space.encode.
  rows = encoding.select(ms, ["compile", "profile"])
  assert rows == ms[:3]
  x, act = sp.encode([m.candidate for m in rows])
  np.testing.assert_array_equal(data.x, x)
  np.testing.assert_array_equal(data.active, act)


def test_failures_are_infeasible_rows_with_nan_time_and_kept_memory():
  sp = space()
  ms = [meas(sp, "profile", step=0.5, data=8),
        meas(sp, "profile", failure="oom", mem=5e9, tensor=4, data=2),
        meas(sp, "profile", failure="crash", data=4, fsdp=2)]
  data = encoding.to_arrays(ms, sp, ["profile"])
  np.testing.assert_array_equal(data.feasible, [1, 0, 0])
  assert np.isfinite(data.log_time[0]) and np.isnan(data.log_time[1:]).all()
  assert data.log_mem[1] == pytest.approx(math.log(5e9))
  assert np.isnan(data.log_mem[[0, 2]]).all()


def test_prior_is_looked_up_per_candidate():
  sp = space()
  ms = [meas(sp, "profile", step=0.5, data=8), meas(sp, "profile", step=0.7, data=4, tensor=2)]
  prior = {ms[0].candidate: -1.0, ms[1].candidate: -2.0}
  data = encoding.to_arrays(ms, sp, ["profile"], prior=prior)
  np.testing.assert_allclose(data.prior, [-1.0, -2.0])
  x, _ = sp.encode([m.candidate for m in ms])
  np.testing.assert_array_equal(x, data.x)
  with pytest.raises(ValueError, match="no prior .* candidate"):
    encoding.to_arrays(ms, sp, ["profile"], prior={ms[0].candidate: -1.0})


def test_bad_input_gets_one_clear_error():
  sp = space()
  ok = [meas(sp, "profile", step=0.5, data=8)]
  with pytest.raises(ValueError, match="unknown fidelity"):
    encoding.to_arrays(ok, sp, ["profile", "hardware"])
  with pytest.raises(ValueError, match="distinct"):
    encoding.to_arrays(ok, sp, ["profile", "profile"])
  with pytest.raises(ValueError, match="no measurement to encode"):
    encoding.to_arrays(ok, sp, ["compile"])
  # A feasible compile record has no step time unless a rule gives one.
  with pytest.raises(ValueError, match="no positive step time.*step_time rule.*'compile'"):
    encoding.to_arrays([meas(sp, "compile", data=8)], sp, ["compile"])
  foreign = Measurement(ok[0].candidate.replace(tp_comm_overlap=True), "profile",
                        ok[0].metrics, 1.0)
  with pytest.raises(ValueError, match=r"knob\(s\) \['tp_comm_overlap'\]"):
    encoding.to_arrays([foreign], sp, ["profile"])
  with pytest.raises(ValueError, match="not among the model fidelities"):
    encoding.to_arrays(ok, sp, ["profile"], step_time={"compile": lambda m: 1.0})
