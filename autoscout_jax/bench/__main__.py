"""Entry point: `python -m autoscout_jax.bench --suite=quick|measured|full --workdir=DIR
[--tasks=a,b] [--designers=x,y] [--seeds=0,1,2] [--budget_scale=1] [--remeasure]`,
or on a user's own measured sweep: `--table=my_sweep.csv --family=megatron
[--system=dgx_h100]` (columns: autoscout_jax/bench/tables.py).

Like autoscout_jax/run.py, the only place of the package (with run.py) that
imports gin: each `gin/bench/*.gin` file declares one task by binding
`tasks.task_spec`; the files are parsed one at a time (they include
workload and cluster blocks that bind the same names), so adding a task is
adding a file. Then `runner.run_bench` runs every task x designer x seed and
`report.write_all` writes results.md, results.json and TensorBoard curves
into the workdir (where simulated truths are cached too). Bad input ends
with one clear message and exit status 2.
"""

from __future__ import annotations

import glob
import os
import sys
import time

from absl import app, flags

_SUITE = flags.DEFINE_enum("suite", "quick", ["quick", "measured", "full", "compile"],
                           "quick: the tasks marked quick, 3 seeds; measured: every measured and "
                           "reality-gap task, 5 seeds; full: every task, 10 seeds; compile: tasks whose "
                           "screen compiles for the real target, 1 seed.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output and cache directory (default runs/scoutbench-<time>).")
_TASKS = flags.DEFINE_list("tasks", [], "Task names (default: the suite's tasks).")
_DESIGNERS = flags.DEFINE_list("designers", [], "Designer names (default: the suite's designers).")
_SEEDS = flags.DEFINE_list("seeds", [], "Seeds, e.g. 0,1,2 (default: the suite's count from 0).")
_BUDGET_SCALE = flags.DEFINE_float("budget_scale", 1.0, "Multiplies every task's three budgets.")
_REMEASURE = flags.DEFINE_bool("remeasure", False, "Measure recorded (real-device) truths again on this "
                               "machine and rewrite their committed tables.")
_TASK_DIR = flags.DEFINE_string("task_dir", "gin/bench", "Directory of task gin files (relative to the "
                                "repository root unless absolute).")
_GIN_BINDINGS = flags.DEFINE_multi_string("gin_bindings", [], "Extra gin bindings applied to every task file.")
_LIST = flags.DEFINE_bool("list", False, "List the tasks and designers, then exit.")
_TABLE = flags.DEFINE_string("table", None, "A measured CSV (one row per run; columns in "
                             "autoscout_jax/bench/tables.py): benchmark on it alone, its rows the candidates.")
_FAMILY = flags.DEFINE_string("family", "megatron", "The target family of --table (its knob names and simulators).")
_SYSTEM = flags.DEFINE_string("system", "dgx_a100_80gb", "The catalog system --table ran on, unless it has a "
                              "'system' column.")


def table_task(path: str, family: str, system: str):
  """A task from a user's CSV: its rows are the candidates, the family's
  simulators (F0, F1) the cheap fidelities."""
  from autoscout_jax.bench import tables, tasks
  from autoscout_jax.sim import analytic, event
  name = os.path.splitext(os.path.basename(path))[0]
  return tasks.task_spec(name, truth=tables.TableProfiling(os.path.abspath(path), family=family, system=system,
                                                           source=path),
                         cheap=[analytic.AnalyticEvaluator(), event.EventEvaluator()], budget_evals=(3, 6, 12),
                         doc=f"measured table {path}")


def _fail(msg: str) -> None:
  print(f"scoutbench: error: {msg}", file=sys.stderr)
  sys.exit(2)


def load_task_file(path: str, bindings=()):
  """Parses one task gin file alone and returns its TaskSpec."""
  import gin
  from autoscout_jax.bench import tasks
  gin.clear_config()
  try:
    gin.parse_config_files_and_bindings([path], list(bindings), finalize_config=False)
    spec = gin.get_configurable(tasks.task_spec)()
  except tasks.BenchError:
    raise
  except Exception as e:  # gin wraps errors of many types; all mean "this task file is wrong"
    raise tasks.BenchError(f"task file {path}: {type(e).__name__}: {e}") from e
  finally:
    gin.clear_config()
  return spec


def load_tasks(task_dir: str, bindings=()) -> list:
  import gin
  from autoscout_jax.bench import tasks
  root = tasks.repo_root()
  gin.add_config_file_search_path(root)
  directory = task_dir if os.path.isabs(task_dir) else os.path.join(root, task_dir)
  files = sorted(glob.glob(os.path.join(directory, "*.gin")))
  if not files:
    raise tasks.BenchError(f"no task files (*.gin) in {task_dir!r}")
  specs = [load_task_file(f, bindings) for f in files]
  names = [s.name for s in specs]
  dup = sorted({n for n in names if names.count(n) > 1})
  if dup:
    raise tasks.BenchError(f"task name(s) {dup} declared by more than one file in {task_dir!r}")
  return specs


def select(specs, suite: str, names) -> list:
  from autoscout_jax.bench import tasks
  if not names:
    chosen = [s for s in specs if suite in s.suites]
    if not chosen:
      raise tasks.BenchError(f"no task is marked for suite {suite!r}")
    return chosen
  by_name = {s.name: s for s in specs}
  unknown = [n for n in names if n not in by_name]
  if unknown:
    raise tasks.BenchError(f"unknown task(s) {unknown}; known: {sorted(by_name)}")
  return [by_name[n] for n in names]


def parse_seeds(raw, default_count: int) -> list[int]:
  from autoscout_jax.bench import tasks
  if not raw:
    return list(range(default_count))
  try:
    seeds = [int(s) for s in raw]
  except ValueError:
    raise tasks.BenchError(f"--seeds must be integers, got {raw}") from None
  if len(set(seeds)) != len(seeds):
    raise tasks.BenchError(f"--seeds repeats a seed: {raw}")
  return seeds


def main(argv) -> None:
  if len(argv) > 1:
    _fail(f"unexpected arguments {argv[1:]}")
  from autoscout_jax.bench import peers, report, runner, tasks, truth
  errors = (tasks.BenchError, truth.TruthError, ImportError)
  try:
    if not _BUDGET_SCALE.value > 0:
      raise tasks.BenchError(f"--budget_scale must be positive (a budget of zero measures nothing), "
                             f"got {_BUDGET_SCALE.value}")
    designers = _DESIGNERS.value or peers.suite_designers(_SUITE.value)
    peers.check_designers(designers)
    specs = ([table_task(_TABLE.value, _FAMILY.value, _SYSTEM.value)] if _TABLE.value
             else load_tasks(_TASK_DIR.value, _GIN_BINDINGS.value))
    if _LIST.value:
      for s in specs:
        print(f"task {s.name}: suites {list(s.suites)}; {s.doc}")
      for n, e in peers.DESIGNERS.items():
        print(f"designer {n}: suites {list(e.suites)}; {e.doc}")
      return
    chosen = specs if _TABLE.value else select(specs, _SUITE.value, _TASKS.value)
    suite = runner.SUITES[_SUITE.value]
    seeds = parse_seeds(_SEEDS.value, suite.seeds)
    workdir = _WORKDIR.value or os.path.join("runs", time.strftime("scoutbench-%Y%m%d-%H%M%S"))
    custom = bool(_TASKS.value or _DESIGNERS.value or _SEEDS.value or _BUDGET_SCALE.value != 1.0 or _TABLE.value)
    results = runner.run_bench(chosen, designers, seeds, workdir,
                               suite=f"{_SUITE.value} (custom selection)" if custom else _SUITE.value,
                               budget_scale=_BUDGET_SCALE.value * suite.budget_scale,
                               remeasure=_REMEASURE.value, max_rounds=suite.max_rounds)
  except errors as e:
    _fail(str(e))
  paths = report.write_all(results, workdir)
  print(report.markdown_table(results))
  print(f"wrote {paths['md']}, {paths['json']} and TensorBoard curves under {paths['tb']}")


if __name__ == "__main__":
  app.run(main)
