"""Entry point: `python -m autoscout_jax.bench --suite=quick|measured|full --workdir=DIR
[--tasks=a,b] [--designers=x,y] [--seeds=0,1,2] [--budget_scale=1] [--remeasure]`,
or on a user's own measured sweep: `--table=my_sweep.csv --family=megatron
[--system=dgx_h100]` (columns: autoscout_jax/bench/tables.py); a sweep over
several workloads is split into one task per group: `--table_groups=hidden_size,
num_layers [--min_group_rows=8]` (text columns group by their text:
`--table_groups=model,hardware` for a published-runs CSV; `--table_dialect=vtrain` reads vTrain's own
tables, `--outside_space=drop` leaves out rows the family's space rejects).

Where it sits: the bench's entry layer, like autoscout_jax/run.py for a
search (the two are the package's only gin importers). It holds the one
task-file loader: `gin/bench/<task>.gin` -> `tasks.TaskSpec` (`load_task_file`,
`load_task` by name, `load_tasks` for a directory); each file binds
`tasks.task_spec` and is parsed alone (task files include workload and
cluster blocks that bind the same names), so adding a task is adding a
file; includes resolve against the repository root; a broken file is one
`tasks.BenchError` naming it. Then `runner.run_bench` runs every task x
designer x seed and `report.write_all` writes results.md, results.json and
TensorBoard curves into the workdir (where simulated truths are cached
too). The flags are defined only when this module runs as the program, so
the tools that build scoutbench tasks (bench_warm_start,
maxtext_table_sims) and tests import its loader without flag collisions.
Bad input ends with one clear message and exit status 2.
"""

from __future__ import annotations

import glob
import math
import os
import re
import sys
import time
from typing import Mapping, Sequence

import gin
from absl import app, flags

from autoscout_jax.bench import tasks

TASK_DIR = os.path.join("gin", "bench")  # relative to the repository root

_SEARCH_PATHS: set[str] = set()


def _search_root() -> None:
  # gin appends to a list of search paths on every call (clear_config keeps it): add the root once.
  root = tasks.repo_root()
  if root not in _SEARCH_PATHS:
    gin.add_config_file_search_path(root)
    _SEARCH_PATHS.add(root)


def load_task_file(path: str, bindings: Sequence[str] = ()) -> tasks.TaskSpec:
  """Parses one task gin file alone and returns its TaskSpec."""
  _search_root()
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


def task_path(name: str) -> str:
  """The task file of a task name (gin/bench/<name>.gin); BenchError if none."""
  path = os.path.join(tasks.repo_root(), TASK_DIR, f"{name}.gin")
  if not name or not os.path.exists(path):
    raise tasks.BenchError(f"no scoutbench task file for task {name!r} (looked for {TASK_DIR}/{name}.gin)")
  return path


def load_task(name: str, bindings: Sequence[str] = ()) -> tasks.TaskSpec:
  """The TaskSpec of a task by name."""
  return load_task_file(task_path(name), bindings)


def load_tasks(task_dir: str, bindings: Sequence[str] = ()) -> list[tasks.TaskSpec]:
  """Every task file of a directory (relative to the repository root unless
  absolute), in file-name order; task names must be unique."""
  root = tasks.repo_root()
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


def define_flags() -> None:
  """The command's flags; defined only when this module runs as the program, so
  importing it (tools and tests: the loader, table_task, select, parse_seeds)
  defines no absl flag."""
  flags.DEFINE_enum("suite", "quick", ["quick", "measured", "full", "compile"],
                    "quick: the tasks marked quick, 3 seeds; measured: every measured and "
                    "reality-gap task, 5 seeds; full: every task, 10 seeds; compile: tasks whose "
                    "screen compiles for the real target, 1 seed.")
  flags.DEFINE_string("workdir", None, "Output and cache directory (default runs/scoutbench-<time>).")
  flags.DEFINE_list("tasks", [], "Task names (default: the suite's tasks).")
  flags.DEFINE_list("designers", [], "Designer names (default: the suite's designers).")
  flags.DEFINE_list("seeds", [], "Seeds, e.g. 0,1,2 (default: the suite's count from 0).")
  flags.DEFINE_float("budget_scale", 1.0, "Multiplies every task's three budgets.")
  flags.DEFINE_bool("remeasure", False, "Measure recorded (real-device) truths again on this "
                    "machine and rewrite their committed tables.")
  flags.DEFINE_string("task_dir", TASK_DIR, "Directory of task gin files (relative to the "
                      "repository root unless absolute).")
  flags.DEFINE_multi_string("gin_bindings", [], "Extra gin bindings applied to every task file.")
  flags.DEFINE_bool("list", False, "List the tasks and designers, then exit.")
  flags.DEFINE_string("table", None, "A measured CSV (one row per run; columns in "
                      "autoscout_jax/bench/tables.py): benchmark on it alone, its rows the candidates.")
  flags.DEFINE_string("family", "megatron", "The target family of --table (its knob names and simulators).")
  flags.DEFINE_string("system", "dgx_a100_80gb", "The catalog system --table ran on, unless it has a "
                      "'system' column.")
  flags.DEFINE_enum("table_dialect", "scoutbench", ["scoutbench", "vtrain"], "Column names of --table: "
                    "scoutbench's (autoscout_jax/bench/tables.py) or vTrain's ground_truth_*.csv.")
  flags.DEFINE_list("table_groups", [], "Columns that split --table into one task per distinct combination "
                    "of their values (e.g. a sweep over several models: hidden_size,num_layers; model,hardware).")
  flags.DEFINE_integer("min_group_rows", 8, "With --table_groups: groups with fewer rows are left out.")
  flags.DEFINE_enum("outside_space", "error", ["error", "drop"], "A --table row the family's space rejects: "
                    "error (stop, naming it) or drop (leave it out, named in the truth's provenance).")


def table_task(path: str, family: str, system: str, dialect: str = "scoutbench",
               select: Mapping[str, float | str] | None = None, name: str | None = None, outside_space: str = "error"):
  """A task from a user's CSV: its rows (those matching `select`) are the
  candidates, the family's simulators (F0, F1) the cheap fidelities."""
  from autoscout_jax.bench import tables
  from autoscout_jax.sim import analytic, event
  name = name or os.path.splitext(os.path.basename(path))[0]
  truth = tables.TableProfiling(os.path.abspath(path), family=family, dialect=dialect, select=dict(select or {}),
                                system=system, source=path, outside_space=outside_space)
  return tasks.task_spec(name, truth=truth, cheap=[analytic.AnalyticEvaluator(), event.EventEvaluator()],
                         budget_evals=(3, 6, 12), doc=f"measured table {path}" + (f", rows {dict(select)}" if select else ""))


def table_tasks(path: str, family: str, system: str, dialect: str = "scoutbench", groups: Sequence[str] = (),
                min_rows: int = 8, outside_space: str = "error", log=print) -> list:
  """One task per distinct combination of the `groups` columns' values
  with at least `min_rows` rows (no groups: the whole table, one task). A
  group that cannot become a task is left out with its reason (`log`); no
  group left is an error."""
  from autoscout_jax.bench import tables
  if not groups:
    return [table_task(path, family, system, dialect, outside_space=outside_space)]
  if min_rows < 1:
    raise tasks.BenchError(f"--min_group_rows must be at least 1, got {min_rows}")
  try:
    rows, lines, _ = tables.read_rows(tables.TableProfiling(os.path.abspath(path), family=family, dialect=dialect))
  except tables.TableError as e:
    raise tasks.BenchError(str(e)) from None
  groups = [tables.COLUMN_ALIASES.get(g, g) if g not in rows[0] else g for g in groups]
  missing = [g for g in groups if g not in rows[0]]
  if missing:
    raise tasks.BenchError(f"--table_groups names column(s) {missing} that {path!r} lacks; columns: {list(rows[0])}")

  def value(raw: str):  # a number where the cell is one ("8" and "8.0" are one group), else its text
    try:
      v = float(raw)
    except ValueError:
      return raw
    return v if math.isfinite(v) else raw

  counts: dict[tuple, int] = {}
  for r in rows:
    key = tuple(value(r[g]) for g in groups)
    counts[key] = counts.get(key, 0) + 1
  base = os.path.splitext(os.path.basename(path))[0]
  out = []
  for key in sorted((k for k, n in counts.items() if n >= min_rows), key=lambda k: tuple((isinstance(v, str), v) for v in k)):
    name = base + "-" + "-".join(f"{g}{_label(v)}" for g, v in zip(groups, key))
    try:
      out.append(table_task(path, family, system, dialect, dict(zip(groups, key)), name, outside_space))
    except tasks.BenchError as e:
      log(f"scoutbench: group {name} left out: {e}")
  if not out:
    raise tasks.BenchError(f"no group of {path!r} by {list(groups)} with >= {min_rows} rows became a task "
                           f"(largest group: {max(counts.values())} rows)")
  return out


def _label(v) -> str:
  """A group value in a task name: numbers as %g, text reduced to letters,
  digits and dots ("H100 80GB (DGX-H100)" -> "H100_80GB_DGX-H100")."""
  if not isinstance(v, str):
    return f"{v:g}"
  return re.sub(r"[^A-Za-z0-9.+-]+", "_", v).strip("_") or "_"


def _fail(msg: str) -> None:
  print(f"scoutbench: error: {msg}", file=sys.stderr)
  sys.exit(2)


def select(specs, suite: str, names) -> list:
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
  from autoscout_jax.bench import peers, report, runner, truth
  F = flags.FLAGS
  errors = (tasks.BenchError, truth.TruthError, ImportError)
  try:
    if not F.budget_scale > 0:
      raise tasks.BenchError(f"--budget_scale must be positive (a budget of zero measures nothing), "
                             f"got {F.budget_scale}")
    designers = F.designers or peers.suite_designers(F.suite)
    peers.check_designers(designers)
    if (F.table_groups or F.table_dialect != "scoutbench" or F.outside_space != "error") and not F.table:
      raise tasks.BenchError("--table_groups, --table_dialect and --outside_space apply to --table only")
    specs = (table_tasks(F.table, F.family, F.system, F.table_dialect, F.table_groups, F.min_group_rows,
                         F.outside_space, log=lambda m: print(m, file=sys.stderr)) if F.table
             else load_tasks(F.task_dir, F.gin_bindings))
    if F.list:
      for s in specs:
        print(f"task {s.name}: suites {list(s.suites)}; {s.doc}")
      for n, e in peers.DESIGNERS.items():
        print(f"designer {n}: suites {list(e.suites)}; {e.doc}")
      return
    chosen = specs if F.table else select(specs, F.suite, F.tasks)
    suite = runner.SUITES[F.suite]
    seeds = parse_seeds(F.seeds, suite.seeds)
    workdir = F.workdir or os.path.join("runs", time.strftime("scoutbench-%Y%m%d-%H%M%S"))
    custom = bool(F.tasks or F.designers or F.seeds or F.budget_scale != 1.0 or F.table)
    results = runner.run_bench(chosen, designers, seeds, workdir,
                               suite=f"{F.suite} (custom selection)" if custom else F.suite,
                               budget_scale=F.budget_scale * suite.budget_scale,
                               remeasure=F.remeasure, max_rounds=suite.max_rounds)
  except errors as e:
    _fail(str(e))
  paths = report.write_all(results, workdir)
  print(report.markdown_table(results))
  print(f"wrote {paths['md']}, {paths['json']} and TensorBoard curves under {paths['tb']}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
