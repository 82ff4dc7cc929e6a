"""Measured-table tasks, reality-gap truth and the skeptic's baselines."""

import os
import subprocess
import sys

import numpy as np
import pytest

from autoscout_jax.bench import __main__ as bench_main
from autoscout_jax.bench import baselines, reality_gap, runner, tables, tasks
from autoscout_jax.bench.__main__ import load_task_file
from autoscout_jax.bench.tasks import repo_root

HEADER = ("num_devices,global_batch,hidden_size,num_layers,num_heads,seq_len,tp,pp,dp,mbs,"
          "step_time_s,status,peak_mem_gib\n")
ROWS = [
    "16,64,2048,16,16,2048,1,1,16,1,2.0,ok,30\n",
    "16,64,2048,16,16,2048,1,1,16,1,2.2,ok,30\n",  # a repeat of the row above
    "16,64,2048,16,16,2048,2,1,8,1,1.5,ok,20\n",
    "16,64,2048,16,16,2048,2,2,4,2,1.8,ok,25\n",
    "16,64,2048,16,16,2048,1,1,16,4,,oom,\n",
]


def _csv(tmp_path, rows=ROWS, name="sweep.csv"):
  path = tmp_path / name
  path.write_text("# a user's sweep\n" + HEADER + "".join(rows))
  return str(path)


def test_user_table_rows_are_the_candidates(tmp_path):
  spec = bench_main.table_task(_csv(tmp_path), "megatron", "dgx_h100")
  assert spec.truth_kind == "measured"
  task = tasks.build_task(spec, str(tmp_path / "wd"))
  assert len(task.candidates) == 4  # five rows, one a repeat
  t = task.table
  assert t.repeats == 2
  best = max(task.candidates, key=lambda c: t.true_value(c) or 0)
  assert best.values["tensor_model_parallel_size"] == 2 and best.values["pipeline_model_parallel_size"] == 1
  oom = [c for c in task.candidates if c.values["micro_batch_size"] == 4]
  assert len(oom) == 1 and t.true_value(oom[0]) is None and t.failure_kind[t.index[oom[0]]][0] == "oom"
  # the repeated row's truth is the median of its two measurements
  rep = next(c for c in task.candidates if c.values["micro_batch_size"] == 1
             and c.values["tensor_model_parallel_size"] == 1)
  assert t.true_value(rep) == pytest.approx(64 * 2048 / 2.1, rel=0.03)
  # a configuration that is no row is not in the space, however valid otherwise
  other = task.space.make({**dict(rep.values), "micro_batch_size": 2})
  assert any(v.constraint == "measured_rows" for v in task.space.validate(other))


def test_table_groups_split_a_sweep_into_one_task_per_group(tmp_path):
  # a second model (hidden 1024) in the same file: two groups; the small third group is left out
  other = [r.replace("16,64,2048,", "16,64,1024,", 1) for r in ROWS]
  third = ["16,32,2048,16,16,2048,1,1,16,1,1.0,ok,30\n"]
  path = _csv(tmp_path, ROWS + other + third)
  logged = []
  specs = bench_main.table_tasks(path, "megatron", "dgx_h100", groups=["hidden_size", "global_batch"],
                                 min_rows=3, log=logged.append)
  assert [s.name for s in specs] == ["sweep-hidden_size1024-global_batch64", "sweep-hidden_size2048-global_batch64"]
  small, big = (tasks.build_task(s, str(tmp_path / s.name)) for s in specs)
  assert small.workload.model.hidden_size == 1024 and big.workload.model.hidden_size == 2048
  assert len(small.candidates) == len(big.candidates) == 4
  # each group's truth is its own rows: same configuration, its own time
  c = next(c for c in small.candidates if c.values["tensor_model_parallel_size"] == 2
           and c.values["pipeline_model_parallel_size"] == 1)
  assert small.table.true_value(c) == pytest.approx(64 * 2048 / 1.5, rel=1e-6)
  # without groups: the whole table is one workload, which a mixed file is not
  with pytest.raises(tasks.BenchError, match="one table holds one workload"):
    bench_main.table_tasks(path, "megatron", "dgx_h100")
  with pytest.raises(tasks.BenchError, match=r"lacks.*columns"):
    bench_main.table_tasks(path, "megatron", "dgx_h100", groups=["hidden"])
  with pytest.raises(tasks.BenchError, match="largest group: 6 rows"):
    bench_main.table_tasks(path, "megatron", "dgx_h100", groups=["hidden_size"], min_rows=20)


def test_table_groups_leave_out_a_group_that_cannot_be_a_task(tmp_path):
  bad = ["16,64,1024,16,16,2048,3,1,16,1,2.0,ok,30\n"] * 3  # tp 3 is no choice of the space
  logged = []
  specs = bench_main.table_tasks(_csv(tmp_path, ROWS + bad), "megatron", "dgx_h100", groups=["hidden_size"],
                                 min_rows=3, log=logged.append)
  assert [s.name for s in specs] == ["sweep-hidden_size2048"]
  assert len(logged) == 1 and "sweep-hidden_size1024 left out" in logged[0] and "not one of" in logged[0]


def test_cli_vtrain_single_node_groups(tmp_path):
  # the validation-only single-node sweeps of vTrain, one task per group of >= 26 rows (8 GPUs, batch 16)
  out = subprocess.run([sys.executable, "-m", "autoscout_jax.bench",
                        "--table=autoscout_jax/data/vtrain/ground_truth_single.csv", "--table_dialect=vtrain",
                        "--table_groups=num_devices,hidden_size,num_layers,global_batch", "--min_group_rows=26",
                        "--outside_space=drop", "--designers=cheap_topk", "--seeds=0",
                        f"--workdir={tmp_path / 'wd'}"],
                       capture_output=True, text=True, cwd=repo_root(), timeout=600,
                       env={**os.environ, "PYTHONPATH": repo_root()})
  assert out.returncode == 0, out.stderr[-2000:]
  import json
  res = json.loads((tmp_path / "wd" / "results.json").read_text())
  names = sorted({r["task"] for r in res["results"]})
  assert len(names) == 8 and all(n.startswith("ground_truth_single-num_devices8-") and n.endswith("global_batch16")
                                 for n in names)
  # the grouping flags belong to --table
  out = subprocess.run([sys.executable, "-m", "autoscout_jax.bench", "--table_groups=hidden_size",
                        "--designers=random", f"--workdir={tmp_path / 'wd2'}"],
                       capture_output=True, text=True, cwd=repo_root(), timeout=300,
                       env={**os.environ, "PYTHONPATH": repo_root()})
  assert out.returncode == 2 and "apply to --table only" in out.stderr


@pytest.mark.parametrize("row, words", [
    ("16,64,2048,16,16,2048,1,1,16,1,2.0,done,30\n", "status 'done'"),
    ("16,64,2048,16,16,2048,1,1,16,1,,ok,30\n", "needs a positive step_time_s"),
    ("16,64,2048,16,16,2048,3,1,16,1,2.0,ok,30\n", "not one of"),
    ("16,64,2048,16,16,2048,2,2,2,1,2.0,ok,30\n", "not valid"),
    ("32,64,2048,16,16,2048,1,1,16,1,2.0,ok,30\n", "one table holds one workload"),
])
def test_bad_row_names_its_line(tmp_path, row, words):
  path = _csv(tmp_path, ROWS[:2] + [row])
  with pytest.raises(tasks.BenchError) as e:
    bench_main.table_task(path, "megatron", "dgx_h100")
  assert f"{path}:5" in str(e.value) and words in str(e.value)


PUBLISHED_HEADER = ("row_id,source_id,model,hardware,num_devices,precision,global_batch_size,micro_batch_size,"
                    "seq_len,tp,pp,cp,tokens_per_sec_per_device,oom\n")
PUBLISHED_ROWS = [
    "1,ME,LLAMA3_8B,H100 80GB (DGX-H100),16,bf16,128,1,4096,1,1,1,9000,\n",
    "2,ME,LLAMA3_8B,H100 80GB (DGX-H100),16,bf16,128,2,4096,1,1,1,9400,\n",
    "3,ME,LLAMA3_8B,H100 80GB (DGX-H100),16,bf16,128,1,4096,2,1,1,8200,\n",
    "4,ME,LLAMA3_8B,H100 80GB (DGX-H100),16,bf16,128,4,4096,1,1,1,,yes\n",
    "5,ME,LLAMA3_70B,H100 80GB (DGX-H100),64,bf16,128,1,4096,4,4,1,1500,\n",
    "6,ME,LLAMA3_70B,H100 80GB (DGX-H100),64,bf16,128,1,4096,8,2,1,1400,\n",
]


def test_published_runs_csv_is_a_table_one_task_per_model(tmp_path):
  # the published-runs schema (predict_published's): text group columns, the
  # hardware cell as the system, global_batch_size, a throughput instead of a
  # step time, an oom column, no data-parallel column, and a sequence length
  # that is not the catalog model's own
  path = tmp_path / "published.csv"
  path.write_text(PUBLISHED_HEADER + "".join(PUBLISHED_ROWS))
  specs = bench_main.table_tasks(str(path), "megatron", "dgx_a100_80gb", groups=["model", "hardware"], min_rows=2)
  assert [s.name for s in specs] == ["published-modelLLAMA3_70B-hardwareH100_80GB_DGX-H100",
                                     "published-modelLLAMA3_8B-hardwareH100_80GB_DGX-H100"]
  big, small = (tasks.build_task(s, str(tmp_path / s.name)) for s in specs)
  assert small.cluster.device.name == "h100_sxm" and small.cluster.num_devices == 16
  assert small.workload.model.seq_len == 4096 and small.workload.global_batch == 128
  t = small.table
  assert len(small.candidates) == 4
  for c in small.candidates:
    tp, mbs = c.values["tensor_model_parallel_size"], c.values["micro_batch_size"]
    assert c.values["data_parallel_size"] == 16 // tp  # what tp x pp x cp leave
    want = {(1, 1): 9000, (1, 2): 9400, (2, 1): 8200}.get((tp, mbs))
    if want is None:
      assert mbs == 4 and t.true_value(c) is None and t.failure_kind[t.index[c]][0] == "oom"
    else:  # tokens/s per device x devices: the job's tokens/s
      assert t.true_value(c) == pytest.approx(want * 16, rel=1e-9)
  assert max(big.table.true_value(c) or 0 for c in big.candidates) == pytest.approx(1500 * 64, rel=1e-9)


@pytest.mark.parametrize("row, words", [
    ("7,ME,LLAMA3_8B,H100 80GB (DGX-H100),16,bf16,128,1,4096,3,1,1,9000,\n", "does not divide"),
    ("7,ME,LLAMA3_8B,H100 80GB (DGX-H100),16,bf16,128,1,4096,1,1,1,9000,maybe\n", "column 'oom'"),
    ("7,ME,LLAMA3_8B,H100 80GB (DGX-H100),16,bf16,128,1,4096,1,1,1,-5,\n", "not a positive throughput"),
])
def test_published_runs_bad_row_names_its_line(tmp_path, row, words):
  path = tmp_path / "published.csv"
  path.write_text(PUBLISHED_HEADER + "".join(PUBLISHED_ROWS[:3]) + row)
  with pytest.raises(tasks.BenchError) as e:
    bench_main.table_task(str(path), "megatron", "dgx_h100")
  assert f"{path}:5" in str(e.value) and words in str(e.value)


def test_model_column_with_dimensions_that_disagree_is_refused(tmp_path):
  path = tmp_path / "t.csv"
  path.write_text("model,hidden_size,num_devices,global_batch,tp,step_time_s\n"
                  "llama3_8b,2048,8,64,1,2.0\n")
  with pytest.raises(tasks.BenchError) as e:
    bench_main.table_task(str(path), "megatron", "dgx_h100")
  assert "hidden_size" in str(e.value) and "llama3_8b" in str(e.value)


def test_cli_bad_row_is_one_line_and_exit_2(tmp_path):
  path = _csv(tmp_path, ROWS[:1] + ["16,64,2048,16,16,2048,1,1,16,1,abc,ok,30\n"])
  out = subprocess.run([sys.executable, "-m", "autoscout_jax.bench", f"--table={path}", "--family=megatron",
                        "--designers=random", "--seeds=0", f"--workdir={tmp_path / 'wd'}"],
                       capture_output=True, text=True, cwd=repo_root(), timeout=300,
                       env={**os.environ, "PYTHONPATH": repo_root()})
  assert out.returncode == 2
  err = [ln for ln in out.stderr.splitlines() if ln.startswith("scoutbench: error")]
  assert len(err) == 1 and ":4:" in err[0] and "'abc', not a number" in err[0]


def test_vtrain_sweep_task(tmp_path):
  spec = load_task_file(os.path.join(repo_root(), "gin/bench/vtrain_gpt_175b_a100_512.gin"))
  assert spec.truth_kind == "measured"
  rows = spec.table.rows
  assert len(rows) == 21 and all(r.failure is None for r in rows)
  assert spec.workload.model.num_layers == 96 and spec.cluster.num_devices == 512
  assert spec.workload.precision == "fp16"
  # the sweep repeats one configuration: 20 distinct candidates
  assert len({tuple(sorted(a.items())) for a in spec.table.allow}) == 20
  # the rows' space keeps its simulator plan: the cheap fidelities score every row
  task = tasks.build_task(spec, str(tmp_path))
  corr = runner.cheap_rank_correlation(task)
  assert corr["analytic"]["both_feasible"] + corr["analytic"]["cheap_says_fails_truth_runs"] == 20
  # the rank correlation pairs each candidate with its own measured row (the
  # table keeps the file's order, the candidates the space's)
  assert [task.table.index[c] for c in task.candidates] != list(range(len(task.candidates)))
  from scipy.stats import spearmanr
  ms = runner.FixedCostEvaluator(spec.cheap[0], 0.0).evaluate(runner.task_problem(task), task.candidates)
  pairs = [(m.objective, task.table.true_value(c)) for m, c in zip(ms, task.candidates) if m.objective is not None]
  assert corr["analytic"]["spearman"] == pytest.approx(spearmanr(*zip(*pairs)).statistic, abs=1e-4)


def _smoke_gap_task(tmp_path, **kw):
  spec = load_task_file(os.path.join(repo_root(), "gin/bench/smoke_llama3_8b_h100_8.gin"))
  import dataclasses
  spec = dataclasses.replace(spec, truth=reality_gap.RealityGapProfiling(**kw))
  return tasks.build_task(spec, str(tmp_path))


def test_reality_gap_truth_is_seeded_and_differs_from_f1(tmp_path):
  a = _smoke_gap_task(tmp_path / "a", seed=0)
  b = _smoke_gap_task(tmp_path / "b", seed=0)
  c = _smoke_gap_task(tmp_path / "c", seed=1)
  assert a.spec.truth_kind == "reality_gap"
  np.testing.assert_array_equal(a.table.true_tokens_per_s, b.table.true_tokens_per_s)
  assert not np.array_equal(np.nan_to_num(a.table.true_tokens_per_s), np.nan_to_num(c.table.true_tokens_per_s))
  corr = runner.cheap_rank_correlation(a)["analytic"]
  assert corr["spearman"] < 0.99  # F0 shares F1's cost model; the gap makes it wrong


def test_reality_gap_truth_of_a_candidate_does_not_depend_on_the_others(tmp_path):
  # a shape's seeded effects and a candidate's repeat noise are drawn from its own values: scoring the
  # space in small chunks, or scoring only every third candidate in reverse order, gives each
  # candidate the same truth as scoring the whole space at once
  task = _smoke_gap_task(tmp_path / "a", seed=0)
  spec, cands = task.spec, task.candidates
  whole = reality_gap.gap_truth("t", spec.workload, spec.cluster, cands, spec.truth, task.space)
  chunked = reality_gap.gap_truth("t", spec.workload, spec.cluster, cands, spec.truth, task.space, chunk=7)
  some = cands[::-3]
  part = reality_gap.gap_truth("t", spec.workload, spec.cluster, some, spec.truth, task.space)
  np.testing.assert_array_equal(whole.true_tokens_per_s, chunked.true_tokens_per_s)
  np.testing.assert_array_equal(whole.tokens_per_s, chunked.tokens_per_s)
  np.testing.assert_array_equal(whole.peak_mem_bytes, chunked.peak_mem_bytes)
  idx = [cands.index(c) for c in some]
  np.testing.assert_array_equal(whole.true_tokens_per_s[idx], part.true_tokens_per_s)
  np.testing.assert_array_equal(whole.tokens_per_s[idx], part.tokens_per_s)
  assert np.isfinite(whole.true_tokens_per_s).sum() > 10 and len(cands) > 3 * 7


def test_cheap_topk_profiles_in_cheap_order_and_sim_argmax_pays_nothing(tmp_path):
  spec = load_task_file(os.path.join(repo_root(), "gin/bench/smoke_llama3_8b_h100_8.gin"))
  task = tasks.build_task(spec, str(tmp_path))
  tr, res = runner.run_one(task, "cheap_topk", 0)
  cheap = {m.candidate.key: m.objective for m in res.measurements if m.fidelity == "analytic"}
  assert len(cheap) == len(task.candidates)
  profiled = [m.candidate for m in res.measurements if m.fidelity == "profile"][1:]  # after the default
  vals = [cheap[c.key] for c in profiled if cheap[c.key] is not None]
  assert vals and vals == sorted(vals, reverse=True)
  tr2, res2 = runner.run_one(task, "sim_argmax", 0)
  prof = [m for m in res2.measurements if m.fidelity == "profile"]
  assert tr2.total_cost_s == pytest.approx(len(task.candidates) * task.spec.cheap_cost_s)
  assert max(cheap, key=lambda k: cheap[k] or -1) in {m.candidate.key for m in prof}


def test_tpe_warm_starts_with_the_cheap_top10(tmp_path):
  pytest.importorskip("optuna")
  spec = load_task_file(os.path.join(repo_root(), "gin/bench/smoke_llama3_8b_h100_8.gin"))
  task = tasks.build_task(spec, str(tmp_path))
  tr, res = runner.run_one(task, "optuna_tpe_warm", 0, budget_s=task.budgets_s[0])
  screen = baselines.CheapScreen(task.space, ("analytic", "profile"), 0)
  screen.record([m for m in res.measurements if m.fidelity == "analytic"])
  top10 = [c.key for c in screen.order()[:10]]
  profiled = [m.candidate.key for m in res.measurements if m.fidelity == "profile"]
  later = [k for k in profiled[1:] if k != task.default.key][:9]
  assert later and set(later) <= set(top10)


def test_autoscout_comes_back_to_the_cheap_order_when_departures_do_not_pay(tmp_path):
  # Reality-gap truth seed 3 of the Llama 3 8B / 64 H100 task: the per-shape kernel draw makes
  # the profile next to the optimum (cheap rank 4 vs 6-7, one knob-step apart) 1.8x slower than F0
  # says, and the value residual carried that to the optimum, which AutoScout never profiled in 56
  # profiles (regret 18.9 %); cheap_topk profiles it 8th. After ANCHOR_AFTER departures in a row
  # that do not beat the best profile, the next profile is the cheap order's next candidate that
  # the model expects to run: the optimum is profiled within a few profiles of cheap_topk.
  from autoscout_jax.designers.autoscout import ranked
  spec = load_task_file(os.path.join(repo_root(), "gin/bench/gap_llama3_8b_h100_64.gin"),
                        ["reality_gap.RealityGapProfiling.seed = 3"])
  task = tasks.build_task(spec, str(tmp_path))
  best = max(task.candidates, key=lambda c: task.table.true_value(c) or 0.0)

  def position(designer):
    _, res = runner.run_one(task, designer, 0)
    keys = [m.candidate.key for m in res.measurements if m.fidelity == runner.TOP]
    return keys.index(best.key) + 1 if best.key in keys else None

  cheap = position("cheap_topk")
  assert cheap is not None and cheap <= 10
  got = position("autoscout")
  assert got is not None and got <= cheap + ranked.ANCHOR_AFTER


def test_vtrain_single_node_sweep_keeps_every_row(tmp_path):
  # ground_truth_single.csv's header starts with '# GPUs' (not a comment); two of this sweep's rows run
  # 4 pipeline stages on 2 micro-batches, which megatron-core's 1F1B schedule runs (one fill and drain):
  # they are candidates like the others, and the space refuses that only for the interleaved schedule
  path = os.path.join(repo_root(), "gin/bench/vtrain_gpt_h2048_l24_gbs16_a100_8.gin")
  spec = load_task_file(path)
  task = tasks.build_task(spec, str(tmp_path))
  assert len(task.candidates) == 26 and not task.table.provenance.get("dropped_rows")
  short = [c for c in task.candidates if 16 / (c.values["data_parallel_size"] * c.values["micro_batch_size"])
           < c.values["pipeline_model_parallel_size"]]
  assert len(short) == 2 and all(task.table.true_value(c) for c in short)


def test_rows_outside_the_space_are_dropped_by_name_or_end_the_table(tmp_path):
  bad = "16,64,2048,16,16,2048,1,1,16,8,2.0,ok,30\n"  # 16 x 8 sequences do not divide the batch of 64
  path = _csv(tmp_path, ROWS[:3] + [bad] + ROWS[3:] + [bad])
  spec = bench_main.table_task(path, "megatron", "dgx_h100", outside_space="drop")
  task = tasks.build_task(spec, str(tmp_path / "wd"))
  dropped = task.table.provenance["dropped_rows"]
  assert len(task.candidates) == 4 and len(dropped) == 2
  assert [d.split(": ")[0] for d in dropped] == [f"{path}:6", f"{path}:9"] and all("batch_divides" in d for d in dropped)
  with pytest.raises(tasks.BenchError) as e:
    bench_main.table_task(path, "megatron", "dgx_h100")
  assert str(e.value).count(f"{path}:") == 1 and f"{path}:6" in str(e.value)


def test_warm_start_from_the_other_single_node_sweeps_finds_what_cold_does_not(tmp_path):
  # leave-one-sweep-out over vTrain's three single-node sweeps (seed 0): on hidden 2048 / global batch
  # 16, F0 overrates tensor parallelism 1.5-2x and the cold run profiles the tp-1 optimum only after a
  # dozen others; the other sweeps' residual rows (F0 wrong on tp >= 2, right on tp 1) lead the warm
  # run to it in less than half that
  run = lambda *a: subprocess.run([sys.executable, "-m", "autoscout_jax.tools.bench_warm_start", *a,
                                   f"--workdir={tmp_path}"], capture_output=True, text=True, cwd=repo_root(),
                                  timeout=600, env={**os.environ, "PYTHONPATH": repo_root()})
  out = run("--sweeps=single", "--seeds=0")
  assert out.returncode == 0, out.stderr[-2000:]
  rows = {ln.split("|")[1].strip(): [c.strip() for c in ln.split("|")[2:-1]]
          for ln in out.stdout.splitlines() if ln.startswith("| vtrain")}
  assert len(rows) == 3
  cold, warm = rows["vtrain_gpt_h2048_l24_gbs16_a100_8"][:2]
  assert warm != "never" and (cold == "never" or float(warm) <= 0.5 * float(cold)), (cold, warm)
  bad = run("--sweeps=no_such_task,single", "--seeds=0")
  err = [ln for ln in bad.stderr.splitlines() if "error" in ln]
  assert bad.returncode == 2 and len(err) == 1 and "no_such_task" in err[0]
