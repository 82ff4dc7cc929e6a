"""Gin stays at the edge: only entry programs import gin (autoscout_jax/run.py
and the bench's entry, bench/__main__.py, which holds the one task-file
loader), and no other module reaches gin through them: the check follows the
package's own imports, so a library module importing an entry program fails
it too. The bench entry defines its absl flags only when run, so the tools
that build scoutbench tasks import its loader without flag collisions, and
load real task files through it."""

import ast
import os

import pytest
from absl import flags

from autoscout_jax.bench import __main__ as bench_main
from autoscout_jax.bench import tasks

ROOT = tasks.repo_root()
PACKAGES = ("autoscout_jax", "surrogates")
GIN_ENTRIES = {"autoscout_jax.run", "autoscout_jax.bench.__main__"}


def _modules() -> dict[str, str]:
  """Dotted module name -> path, for every module of our packages."""
  out = {}
  for d in PACKAGES:
    for base, _, files in os.walk(os.path.join(ROOT, d)):
      for f in files:
        if f.endswith(".py"):
          rel = os.path.relpath(os.path.join(base, f), ROOT)[:-3].split(os.sep)
          out[".".join(rel[:-1] if rel[-1] == "__init__" else rel)] = os.path.join(base, f)
  return out


def _imported(name: str, path: str) -> set[str]:
  """Every module an import statement of the file names (anywhere in it, a
  function's lazy import included), relative imports resolved."""
  tree = ast.parse(open(path).read(), path)
  package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      found.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom):
      parts = package.split(".")
      base = ".".join(parts[:len(parts) - node.level + 1]) if node.level else ""
      module = ".".join(p for p in (base, node.module or "") if p)
      found.add(module)
      found.update(f"{module}.{a.name}" for a in node.names)
  return found


def _is_entry_program(name: str, path: str) -> bool:
  """A module run as a program: a package's __main__, or one with a
  top-level `if __name__ == "__main__":`."""
  if name.endswith(".__main__"):
    return True
  for node in ast.parse(open(path).read(), path).body:
    if (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
        and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__"):
      return True
  return False


def _reaching_gin(modules: dict[str, str]) -> dict[str, str]:
  """Module -> the import by which it reaches gin (gin itself, or one of our
  modules that does), following our own modules' imports to a fixed point."""
  imports = {n: _imported(n, p) for n, p in modules.items()}
  reach = {n: "gin" for n, names in imports.items() if any(i.split(".")[0] == "gin" for i in names)}
  grew = True
  while grew:
    grew = False
    for n, names in imports.items():
      hit = next((i for i in sorted(names) if i in reach and i != n), None)
      if n not in reach and hit:
        reach[n] = hit
        grew = True
  return reach


def test_only_entry_programs_import_gin():
  modules = _modules()
  reach = _reaching_gin(modules)
  direct = {n for n, via in reach.items() if via == "gin"}
  assert direct == GIN_ENTRIES, direct
  library = {n: via for n, via in reach.items() if not _is_entry_program(n, modules[n])}
  assert not library, f"library modules reach gin (module: through): {library}"


def test_the_gin_check_catches_a_library_module_that_reaches_gin(tmp_path):
  # the check itself: a library module importing the bench entry (or gin) is flagged,
  # a program doing so is not
  lib, prog, direct = tmp_path / "lib.py", tmp_path / "prog.py", tmp_path / "direct.py"
  lib.write_text("def f():\n  from autoscout_jax.bench import __main__ as m\n  return m\n")
  prog.write_text("from autoscout_jax.bench.__main__ import load_task\nif __name__ == '__main__':\n  pass\n")
  direct.write_text("from gin import config\n")
  modules = dict(_modules(), **{"autoscout_jax.lib": str(lib), "autoscout_jax.tools.prog": str(prog),
                                "autoscout_jax.direct": str(direct)})
  reach = _reaching_gin(modules)
  assert reach["autoscout_jax.lib"] == "autoscout_jax.bench.__main__"
  assert reach["autoscout_jax.direct"] == "gin"
  assert _is_entry_program("autoscout_jax.tools.prog", str(prog))
  assert not _is_entry_program("autoscout_jax.lib", str(lib))


def test_tools_and_bench_entry_share_one_loader_without_flag_collisions():
  assert "suite" not in flags.FLAGS  # bench's flags exist only when it runs as the program
  from autoscout_jax.tools import bench_warm_start, maxtext_table_sims  # defines --seeds/--workdir
  for name in bench_warm_start.SWEEPS + bench_warm_start.SINGLE:
    spec = bench_main.load_task(name)
    assert spec.name == name and spec.truth.family == "megatron"
  problem, cands, truth = maxtext_table_sims.task_truth(
      os.path.join(ROOT, "experiments", "scoutbench", "real_tiny_cpu8.json"))
  assert problem.space.family == "local" and len(cands) == len(truth) > 0


def test_task_files_from_another_directory_and_bad_input(tmp_path):
  # a copy of a task file elsewhere still finds its includes (resolved against the repository root)
  text = open(bench_main.task_path("smoke_llama3_8b_h100_8")).read()
  (tmp_path / "a.gin").write_text(text)
  (tmp_path / "b.gin").write_text(text)
  with pytest.raises(tasks.BenchError, match=r"\['smoke_llama3_8b_h100_8'\] declared by more than one file"):
    bench_main.load_tasks(str(tmp_path))
  (tmp_path / "b.gin").unlink()
  assert [s.name for s in bench_main.load_tasks(str(tmp_path))] == ["smoke_llama3_8b_h100_8"]
  with pytest.raises(tasks.BenchError, match="no scoutbench task file for task 'nope'"):
    bench_main.load_task("nope")
  (tmp_path / "a.gin").write_text(text + "\nno_such_macro_reader.x = %UNDEFINED\n")
  with pytest.raises(tasks.BenchError, match=r"task file .*a\.gin: "):
    bench_main.load_task_file(str(tmp_path / "a.gin"))
