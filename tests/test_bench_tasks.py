"""scoutbench tasks: every gin/bench file declares one task; restricting a
space narrows it as declared; stale or foreign truth tables are refused."""


import numpy as np
import pytest

from autoscout_jax.bench import tasks, truth
from autoscout_jax.bench.__main__ import load_tasks, select
from autoscout_jax.targets.local import space as local_training_space
from autoscout_jax.workload import LocalCluster, ModelConfig, Workload


def tiny():
  w = Workload("tiny_transformer", ModelConfig("tiny", 2, 64, 4, 256, 256, 32), 16,
               default={"data": 8, "fsdp": 1, "tensor": 1, "num_microbatches": 1, "remat_policy": "none",
                        "scan_layers": False})
  return w, LocalCluster()


def test_every_task_file_declares_a_task():
  specs = load_tasks("gin/bench")
  names = {s.name for s in specs}
  assert {"real_tiny_cpu8", "gpt3_175b_a100_1024", "llama3_70b_h100_256", "mixtral_8x7b_h100_64",
          "llama3_8b_tpu_v5p_128", "smoke_llama3_8b_h100_8"} <= names
  quick = {s.name for s in select(specs, "quick", [])}
  assert "real_tiny_cpu8" in quick and "smoke_llama3_8b_h100_8" not in quick
  assert {s.name for s in select(specs, "full", [])} >= quick
  for s in specs:
    assert len(s.budget_evals) == 3 and s.workload.default_values


def test_restrict_local_space_drops_dead_conditional_knobs():
  w, c = tiny()
  full = local_training_space(w, c, microbatch_choices=(1, 4), remat_policies=("none", "full"))
  small = tasks.restrict_space(full, {"scan_layers": [False]})
  assert "scan_unroll" not in small and small["scan_layers"].finite_values() == (False,)
  cands = small.enumerate()
  assert set(cands) == {x for x in full.enumerate() if not x["scan_layers"]}
  assert len(cands) == 28
  with pytest.raises(tasks.BenchError, match=r"knob 'remat_policy' has no value\(s\) \['dots_saveable'\]"):
    tasks.restrict_space(full, {"remat_policy": ["dots_saveable"]})
  with pytest.raises(tasks.BenchError, match=r"unknown knob\(s\) \['nope'\]"):
    tasks.restrict_space(full, {"nope": [1]})


def test_restrict_simulator_space_pins_categoricals_by_constraint():
  from autoscout_jax.sim import catalog, hardware
  from autoscout_jax.targets import megatron
  w = catalog.make_workload("llama3_8b", 8)
  c = hardware.make_cluster("dgx_h100", 8)
  full = megatron.space(w, c, micro_batch_sizes=(1, 2))
  small = tasks.restrict_space(full, {"use_distributed_optimizer": [True], "ddp_bucket_size": [40_000_000]})
  cands = small.enumerate()
  assert cands and all(x["use_distributed_optimizer"] and x["ddp_bucket_size"] == 40_000_000 for x in cands)
  expect = [x for x in full.enumerate() if x["use_distributed_optimizer"] and x["ddp_bucket_size"] == 40_000_000]
  assert set(cands) == set(expect)
  bad = small.make(cands[0].values, use_distributed_optimizer=False)
  assert any(v.constraint == "bench_restrict_use_distributed_optimizer" for v in small.validate(bad))


def test_stale_or_foreign_tables_are_refused(tmp_path):
  w, c = tiny()
  space = tasks.restrict_space(local_training_space(w, c, microbatch_choices=(1, 4),
                                                    remat_policies=("none", "full")), {"scan_layers": [False]})
  cands = space.enumerate()
  n = len(cands)
  table = truth.TruthTable("t", w.key, c.key, "profile", cands[:-1], np.ones((n - 1, 2)), np.ones((n - 1, 2)),
                           np.ones((n - 1, 2)), [[None, None]] * (n - 1), np.ones(n - 1))
  path = tmp_path / "t.json"
  truth.save_table(table, str(path))
  spec = tasks.task_spec("t", w, c, local_training_space, tasks.RecordedProfiling(str(path)),
                         space_kwargs={"microbatch_choices": (1, 4), "remat_policies": ("none", "full")},
                         restrict={"scan_layers": [False]})
  with pytest.raises(tasks.BenchError, match="1 valid candidate\\(s\\) are not in its truth table"):
    tasks.build_task(spec, str(tmp_path))
  other = Workload("other", w.model, 16, default=w.default_values)
  spec2 = tasks.task_spec("t", other, c, local_training_space, tasks.RecordedProfiling(str(path)),
                          space_kwargs=dict(spec.space_kwargs), restrict=dict(spec.restrict))
  with pytest.raises(tasks.BenchError, match="the truth table was made for workload tiny_transformer-"):
    tasks.build_task(spec2, str(tmp_path))
  missing = tasks.task_spec("t", w, c, local_training_space, tasks.RecordedProfiling(str(tmp_path / "none.json")))
  with pytest.raises(tasks.BenchError, match="does not exist; measure it with --remeasure"):
    tasks.build_task(missing, str(tmp_path))


def test_task_spec_rejects_bad_budgets():
  w, c = tiny()
  for bad in [(0, 1, 2), (1, 2), (3, 2, 1)]:
    with pytest.raises(tasks.BenchError, match="budget_evals must be three increasing positive numbers"):
      tasks.task_spec("t", w, c, local_training_space, tasks.RecordedProfiling("x.json"), budget_evals=bad)


def test_cached_simulated_truth_is_keyed_by_the_simulator_version(monkeypatch):
  from autoscout_jax.sim import analytic
  spec = next(s for s in load_tasks("gin/bench") if s.name == "smoke_llama3_8b_h100_8")
  space = tasks.restrict_space(spec.space_fn(spec.workload, spec.cluster, **dict(spec.space_kwargs)), spec.restrict)
  before = tasks._truth_digest(spec, space)
  assert tasks._truth_digest(spec, space) == before
  monkeypatch.setattr(analytic, "SIMULATOR_VERSION", analytic.SIMULATOR_VERSION + "+next")
  assert tasks._truth_digest(spec, space) != before


def test_the_committed_serving_table_keeps_every_repeats_latencies(tmp_path):
  # a recorded serving truth keeps each repeat's p50/p90 TTFT and TPOT and its SLO margins, per latency and
  # their minimum (a miss's too), and the minimum agrees with the verdict: negative exactly where the repeat
  # missed an SLO
  from autoscout_jax.bench.__main__ import load_task
  from autoscout_jax.bench.truth import KEPT_EXTRA
  from autoscout_jax.targets.serving import slo_log_margins
  spec = load_task("real_serve_tiny_cpu8")
  table = tasks.build_task(spec, str(tmp_path)).table
  rows = [(e, f) for es, fs in zip(table.extra, table.failure_kind) for e, f in zip(es, fs)]
  assert len(rows) == len(table.candidates) * table.repeats > 0
  for extra, failure in rows:
    assert set(KEPT_EXTRA) <= set(extra), extra
    margins = slo_log_margins(spec.workload.serving, extra)
    assert set(margins) == {"slo_log_margin", "ttft_log_margin", "tpot_log_margin"}
    assert {k: extra[k] for k in margins} == pytest.approx(margins)
    assert (extra["slo_log_margin"] < 0) == (failure == "slo"), (extra, failure)
