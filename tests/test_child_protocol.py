"""The children's one protocol module (autoscout_jax/child_protocol.py):
standard library only, so MaxText's children (Python 3.12) import it alone;
run by path it is the bare child that acts out injected faults."""

import io
import json
import os
import subprocess
import sys

from autoscout_jax import child_protocol
from autoscout_jax.bench.tasks import repo_root

_PROBE = """
import importlib, json, sys
before = set(sys.modules)  # what the interpreter's site hooks loaded
for m in sys.argv[1:]:
  importlib.import_module(m)
ours = sorted(m for m in sys.modules if m.split('.')[0] == 'autoscout_jax')
other = sorted({m.split('.')[0] for m in set(sys.modules) - before} - set(sys.stdlib_module_names) - {'autoscout_jax'})
print(json.dumps({'ours': ours, 'other': other}))
"""


def test_maxtext_children_import_only_the_protocol_and_the_standard_library():
  mods = ["autoscout_jax.maxtext_child.child", "autoscout_jax.maxtext_child.profile_child",
          "autoscout_jax.maxtext_child.multiproc", "autoscout_jax.maxtext_child.steps"]
  env = dict(os.environ, PYTHONPATH=repo_root())
  out = subprocess.run([sys.executable, "-c", _PROBE, *mods], capture_output=True, text=True, cwd=repo_root(),
                       env=env, timeout=60, check=True)
  got = json.loads(out.stdout)
  assert got["other"] == []
  assert {m for m in got["ours"] if not m.startswith("autoscout_jax.maxtext_child")} == {
      "autoscout_jax", "autoscout_jax.child_protocol"}


def test_bare_child_by_path_speaks_the_protocol():
  request = {"candidates": [{"index": 3, "key": "a", "values": {}}, {"index": 5, "key": "b", "values": {}}],
             "faults": {"a": "oom"}}
  out = subprocess.run([sys.executable, "-I", "-S", child_protocol.__file__], input=json.dumps(request),
                       capture_output=True, text=True, timeout=60)
  assert out.returncode == 0, out.stderr
  events = [json.loads(ln) for ln in out.stdout.splitlines()]
  assert [(e["event"], e.get("index")) for e in events] == [
      ("ready", None), ("start", 3), ("result", 3), ("start", 5), ("result", 5), ("done", None)]
  assert events[2]["metrics"] == {"feasible": False, "failure_kind": "oom", "error": child_protocol.OOM_TEXT}
  assert events[4]["metrics"]["failure_kind"] == "crash" and events[4]["wall_s"] >= 0


def test_serve_candidates_sends_strict_json_and_runs_after_each():
  buf, seen = io.StringIO(), []
  request = {"candidates": [{"index": i, "key": str(i), "values": {"x": i}} for i in range(3)]}
  rc = child_protocol.serve_candidates(
      request, buf, lambda item: {"feasible": True, "step_time_s": float("nan") if item["values"]["x"] == 1 else 2.0,
                                  "extra": {7: float("inf")}},
      after_each=lambda: seen.append(1))
  events = [json.loads(ln) for ln in buf.getvalue().splitlines()]
  results = [e for e in events if e["event"] == "result"]
  assert rc == 0 and len(seen) == 3 and events[-1] == {"event": "done"}
  assert [r["metrics"]["step_time_s"] for r in results] == [2.0, None, 2.0]
  assert results[0]["metrics"]["extra"] == {"7": None}


def test_a_failure_at_a_stage_is_classified_by_what_it_says():
  # the one classification every child and the parent use (MaxText's F3 steps, its compile child, runner)
  try:
    raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 3.0GiB")
  except RuntimeError as e:
    m = child_protocol.failed_at("build", "compile_error", e, compile_s=1.5)
  assert m["feasible"] is False and m["failure_kind"] == "oom"
  assert m["error"].startswith("build: RuntimeError: RESOURCE_EXHAUSTED") and "Traceback" in m["error"]
  assert m["extra"] == {"stage": "build", "compile_s": 1.5}
  try:
    raise ValueError("shapes (4, 3) and (2,) do not match")
  except ValueError as e:
    assert child_protocol.failed_at("run", "crash", e)["failure_kind"] == "crash"
  assert child_protocol.classify("Program hbm requirement 90G exceeds available HBM 16G", "compile_error") == "oom"
  assert child_protocol.classify("Traceback ... KeyError: 'x'", "crash") == "crash"
