"""Scoutbench task files: `gin/bench/<task>.gin` -> `tasks.TaskSpec`.

Where it sits: the bench's entry layer, beside bench/__main__.py (with
run.py the only modules of the package that import gin; the tools that
build scoutbench tasks reach gin only through it). Each task file
binds `tasks.task_spec`; a file is parsed alone (task files include
workload and cluster blocks that bind the same names), so adding a task is
adding a file. bench/__main__.py loads a whole directory; the programs in
tools/ that build scoutbench tasks (bench_warm_start, maxtext_table_sims)
load one task by name through `load_task`. Includes resolve against the
repository root. A broken file is one `tasks.BenchError` naming it.
"""

from __future__ import annotations

import glob
import os
from typing import Sequence

import gin

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
