"""The simulators' rank correlation with the measured MaxText table
(tools/maxtext_table_sims.py)."""

import numpy as np
import pytest

from autoscout_jax.tools import maxtext_table_sims as sims


def test_spearman_ranks_with_ties():
  assert sims.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
  assert sims.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
  assert sims.spearman([1, 1, 2, 2], [1, 1, 2, 2]) == pytest.approx(1.0)
  assert np.isnan(sims.spearman([1, 1, 1], [1, 2, 3]))


def test_local_simulators_score_every_row_of_the_committed_table():
  out = sims.score(sims.mtab.__file__.replace("autoscout_jax/tools/maxtext_table.py",
                                              "experiments/scoutbench/real_maxtext_cpu8.csv"),
                   "experiments/scoutbench/real_tiny_cpu8_devices.json", log=lambda *_: None)
  assert set(out) == {"analytic", "event"}
  for fid, r in out.items():
    assert r["pairs"] == 160  # every row that ran, scored
    assert -1.0 <= r["spearman"] <= 1.0 and 1 <= r["pick_measured_rank"] <= 162


def test_a_scoutbench_truth_file_is_scored_through_its_task(tmp_path):
  out = sims.score("experiments/scoutbench/real_tiny_cpu8.json", "experiments/scoutbench/real_tiny_cpu8_devices.json",
                   log=lambda *_: None)
  for r in out.values():
    assert r["pairs"] == 28 and 1 <= r["pick_measured_rank"] <= 28
    assert r["median_pred_over_measured"] > 0 and r["median_rel_error"] >= 0
  stray = tmp_path / "truth.json"
  stray.write_text('{"format": "scoutbench-truth-v1", "task": "no_such_task"}')
  with pytest.raises(ValueError, match="no scoutbench task file"):
    sims.task_truth(str(stray))
