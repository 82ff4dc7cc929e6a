"""The measured scoutbench task real_maxtext_cpu8: the committed CSV, its
truth JSON (what the converter makes of the CSV) and the task gin agree, and
the table covers every axis of the issue."""

import json
import os

import numpy as np

from autoscout_jax.bench import tasks, truth as truth_lib
from autoscout_jax.bench.__main__ import load_task_file
from autoscout_jax.tools import maxtext_table as mtab
from autoscout_jax.tools import maxtext_table_task as mtt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_committed_truth_is_the_converted_csv(tmp_path):
  head, groups = mtt.read()
  assert len(groups) >= 150
  assert any("device_kind=cpu" in h and "maxtext=0.2.5" in h for h in head)
  keys = {mtab.key_of(k) for k, _ in groups}
  assert keys == {mtab.key_of(c) for c in mtab.candidates()}  # every candidate of the table tool, once
  made = mtt.truth()
  committed = truth_lib.load_table(os.path.join(ROOT, mtt.TRUTH))
  assert made.to_json() == json.loads(json.dumps(committed.to_json()))
  assert made.repeats == 3 and np.isfinite(made.true_tokens_per_s).sum() >= 150
  vals = [c.values for c in made.candidates]
  for axis in mtab.AXES:
    assert any(v[f"ici_{axis}_parallelism"] > 1 for i, v in enumerate(vals)
               if np.isfinite(made.true_tokens_per_s[i])), axis
  assert {v["remat_policy"] for v in vals} == {"full", "minimal"}


def test_task_gin_builds_the_task(tmp_path):
  spec = load_task_file(os.path.join(ROOT, "gin/bench/real_maxtext_cpu8.gin"))
  assert spec.name == "real_maxtext_cpu8" and spec.truth_kind == "measured"
  task = tasks.build_task(spec, str(tmp_path))
  assert len(task.candidates) == len(mtt.read()[1])
  assert task.optimum > task.expert_value  # MaxText's default layout (FSDP 8) is not the best here
