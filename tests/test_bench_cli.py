"""`python -m autoscout_jax.bench`: a smoke-sized run writes results.json,
results.md and TensorBoard curves; bad input gets one clear message and a
non-zero exit."""

import glob
import json
import os
import subprocess
import sys

from autoscout_jax.bench.tasks import repo_root


def bench(*args, prelude=""):
  """Runs the entry point in a child (absl flags are process-global)."""
  code = prelude + "import runpy, sys; sys.argv = ['bench'] + sys.argv[1:]; " \
         "runpy.run_module('autoscout_jax.bench', run_name='__main__')"
  env = dict(os.environ, PYTHONPATH=repo_root() + os.pathsep + os.environ.get("PYTHONPATH", ""))
  return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=600,
                        cwd=repo_root(), env=env)


def test_smoke_run_writes_results(tmp_path):
  out = bench("--tasks=smoke_llama3_8b_h100_8", "--designers=random,expert", "--seeds=0",
              f"--workdir={tmp_path}")
  assert out.returncode == 0, out.stderr[-3000:]
  res = json.load(open(tmp_path / "results.json"))
  for key in ("suite", "commit", "tasks", "results"):
    assert key in res
  assert res["tasks"] == ["smoke_llama3_8b_h100_8"]
  assert [r["designer"] for r in res["results"]] == ["random", "expert"]
  for r in res["results"]:
    for key in ("task", "designer", "seeds", "cost_to_5pct", "cost_to_2pct", "regret_at_budgets",
                "speedup_vs_expert", "infeasible_paid", "overhead_s_per_suggestion"):
      assert key in r, key
    assert r["seeds"] == [0] and len(r["regret_at_budgets"]) == 3
    assert all(0.0 <= b["median"] <= 1.0 for b in r["regret_at_budgets"])
  expert = res["results"][1]
  assert expert["speedup_vs_expert"] == 1.0 and expert["paid_top"] == 1
  table = (tmp_path / "results.md").read_text()
  assert "| smoke_llama3_8b_h100_8 | random | 1 |" in table
  assert glob.glob(str(tmp_path / "tb" / "smoke_llama3_8b_h100_8" / "random" / "events.out.tfevents.*"))
  # the simulated truth is cached in the workdir
  assert glob.glob(str(tmp_path / "truth" / "smoke_llama3_8b_h100_8-*.json"))


def test_unknown_designer():
  out = bench("--designers=random,nope", "--tasks=smoke_llama3_8b_h100_8")
  assert out.returncode != 0
  assert "scoutbench: error: unknown designer(s) ['nope']; known:" in out.stderr
  assert "Traceback" not in out.stderr


def test_unknown_task():
  out = bench("--designers=random", "--tasks=no_such_task")
  assert out.returncode != 0
  assert "unknown task(s) ['no_such_task']; known:" in out.stderr and "real_tiny_cpu8" in out.stderr
  assert "Traceback" not in out.stderr


def test_zero_budget():
  out = bench("--designers=random", "--budget_scale=0")
  assert out.returncode != 0
  assert "--budget_scale must be positive (a budget of zero measures nothing)" in out.stderr


def test_missing_optional_dependency():
  out = bench("--designers=random,smac", "--tasks=smoke_llama3_8b_h100_8",
              prelude="import sys; sys.modules['smac'] = None; ")
  assert out.returncode != 0
  assert ("designer 'smac' needs smac, which is not installed; install the bench extra: "
          "pip install -e '.[bench]'") in out.stderr
  assert "Traceback" not in out.stderr
