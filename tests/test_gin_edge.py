"""Gin stays at the edge: only the entry layer (run.py, bench/gin_tasks.py)
imports gin; the bench entry point defines its absl flags only when run, so
the tools that build scoutbench tasks import it and the one task-file loader
without flag collisions, and load real task files through it."""

import ast
import os

import pytest
from absl import flags

from autoscout_jax.bench import gin_tasks, tasks

ROOT = tasks.repo_root()
GIN_MODULES = {"autoscout_jax/run.py", "autoscout_jax/bench/gin_tasks.py"}


def _imports_gin(path: str) -> bool:
  tree = ast.parse(open(path).read(), path)
  for node in ast.walk(tree):
    if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "gin" for a in node.names):
      return True
    if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "gin" and not node.level:
      return True
  return False


def test_only_the_entry_layer_imports_gin():
  found = set()
  for d in ("autoscout_jax", "surrogates"):
    for base, _, files in os.walk(os.path.join(ROOT, d)):
      for f in files:
        if f.endswith(".py") and _imports_gin(os.path.join(base, f)):
          found.add(os.path.relpath(os.path.join(base, f), ROOT))
  assert found == GIN_MODULES


def test_tools_and_bench_entry_share_one_loader_without_flag_collisions():
  from autoscout_jax.bench import __main__ as bench_main  # pylint: disable=unused-import
  assert "suite" not in flags.FLAGS  # bench's flags exist only when it runs as the program
  from autoscout_jax.tools import bench_warm_start, maxtext_table_sims  # defines --seeds/--workdir
  for name in bench_warm_start.SWEEPS:
    spec = gin_tasks.load_task(name)
    assert spec.name == name and spec.truth.family == "megatron"
  problem, cands, truth = maxtext_table_sims.task_truth(
      os.path.join(ROOT, "experiments", "scoutbench", "real_tiny_cpu8.json"))
  assert problem.space.family == "local" and len(cands) == len(truth) > 0


def test_task_files_from_another_directory_and_bad_input(tmp_path):
  # a copy of a task file elsewhere still finds its includes (resolved against the repository root)
  text = open(gin_tasks.task_path("smoke_llama3_8b_h100_8")).read()
  (tmp_path / "a.gin").write_text(text)
  (tmp_path / "b.gin").write_text(text)
  with pytest.raises(tasks.BenchError, match=r"\['smoke_llama3_8b_h100_8'\] declared by more than one file"):
    gin_tasks.load_tasks(str(tmp_path))
  (tmp_path / "b.gin").unlink()
  assert [s.name for s in gin_tasks.load_tasks(str(tmp_path))] == ["smoke_llama3_8b_h100_8"]
  with pytest.raises(tasks.BenchError, match="no scoutbench task file for task 'nope'"):
    gin_tasks.load_task("nope")
  (tmp_path / "a.gin").write_text(text + "\nno_such_macro_reader.x = %UNDEFINED\n")
  with pytest.raises(tasks.BenchError, match=r"task file .*a\.gin: "):
    gin_tasks.load_task_file(str(tmp_path / "a.gin"))
