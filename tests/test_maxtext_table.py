"""The real_maxtext_cpu8 table tool (tools/maxtext_table.py): its candidate
set, its rows, resuming and sharding -- no MaxText needed."""

import csv

from autoscout_jax.tools import maxtext_table as mt
from autoscout_jax.workload import LocalCluster


def test_cpu8_candidates_cover_every_axis_microbatching_and_remat():
  cands = mt.candidates()
  assert len(cands) >= 150 and len({mt.key_of(c) for c in cands}) == len(cands)
  for axis in mt.AXES:
    assert any(c[f"ici_{axis}_parallelism"] > 1 for c in cands), axis
  for c in cands:
    prod = 1
    for axis in mt.AXES:
      prod *= c[f"ici_{axis}_parallelism"]
    assert prod == 8 and c["ici_expert_parallelism"] <= 4 and c["ici_pipeline_parallelism"] <= 4
    # the global batch is the workload's: per-device batch x devices x accumulation steps
    assert c["per_device_batch_size"] * 8 * c["gradient_accumulation_steps"] == 16
    pp = c["ici_pipeline_parallelism"]
    assert (c.get("num_pipeline_microbatches") is None) == (pp == 1)
    if pp > 1:
      assert c["num_pipeline_microbatches"] % pp == 0
  assert {c["remat_policy"] for c in cands} == {"full", "minimal"}
  assert any(c["gradient_accumulation_steps"] == 2 for c in cands)
  assert any((c.get("num_pipeline_microbatches") or 0) > c["ici_pipeline_parallelism"] for c in cands)


def test_gpu_preset_fits_its_device_counts():
  assert len(mt.candidates(mt.GPU, 1)) == 3  # one mesh: remat x 2 + accumulation
  for n in (2, 4, 8):
    for c in mt.candidates(mt.GPU, n):
      assert 16 % c["ici_tensor_parallelism"] == 0 and 8 % c["ici_tensor_parallelism"] == 0


def test_rows_resume_and_shards(tmp_path):
  path = str(tmp_path / "t.csv")
  cands = mt.candidates()
  ok = {"feasible": True, "step_time_s": 0.2, "peak_mem_bytes": 2**20,
        "extra": {"step_times_s": [0.3, 0.2, 0.25], "compile_s": 3.0}}
  bad = {"feasible": False, "failure_kind": "oom", "error": "RESOURCE_EXHAUSTED:\n  out of memory"}
  with open(path, "w", newline="") as f:
    f.write("# a comment line\n")
    w = csv.DictWriter(f, fieldnames=mt.COLUMNS)
    w.writeheader()
    w.writerows(mt.rows_of(cands[0], ok, 3) + mt.rows_of(cands[1], bad, 3))
  rows = list(csv.DictReader(ln for ln in open(path) if not ln.startswith("#")))
  assert [r["repeat"] for r in rows] == ["0", "1", "2"] * 2
  assert [r["step_time_s"] for r in rows[:3]] == ["0.300000", "0.200000", "0.250000"]
  assert {r["status"] for r in rows[3:]} == {"oom"} and all(r["step_time_s"] == "" for r in rows[3:])
  assert "\n" not in rows[3]["error"] and rows[0]["peak_mem_gib"] == f"{1 / 1024:.6f}"
  assert mt.done_keys(path) == {mt.key_of(cands[0]), mt.key_of(cands[1])}
  shards = [{mt.key_of(c) for c in mt.candidates() if int(mt.key_of(c), 16) % 2 == i} for i in (0, 1)]
  assert shards[0] and shards[1] and not shards[0] & shards[1]
  assert len(shards[0] | shards[1]) == len(cands)


def test_local_cluster_slices_keep_old_keys():
  one = LocalCluster(num_devices=8, platform="cpu")
  assert LocalCluster(num_devices=8, platform="cpu", num_slices=1).key == one.key
  assert LocalCluster(num_devices=8, platform="cpu", num_slices=2).key != one.key
  try:
    LocalCluster(num_devices=8, num_slices=3)
  except ValueError as e:
    assert "num_slices=3" in str(e)
  else:
    raise AssertionError("8 devices do not split into 3 slices")


def test_merge_keeps_each_candidate_once(tmp_path):
  cands = mt.candidates()
  ok = lambda t: {"feasible": True, "step_time_s": t, "extra": {"step_times_s": [t, t, t]}}
  paths = []
  for n, (part, t) in enumerate([(cands[:3], 0.1), (cands[2:5], 0.2)]):
    path = str(tmp_path / f"w{n}.csv")
    with open(path, "w", newline="") as f:
      f.write(f"# worker {n}\n")
      w = csv.DictWriter(f, fieldnames=mt.COLUMNS)
      w.writeheader()
      for c in part:
        w.writerows(mt.rows_of(c, ok(t), 3))
    paths.append(path)
  out = str(tmp_path / "all.csv")
  assert mt.merge(paths, out, note="two workers") == (5, 15)
  text = open(out).read()
  assert text.startswith("# worker 0\n# two workers\n") and "# worker 1" not in text
  rows = list(csv.DictReader(ln for ln in text.splitlines() if not ln.startswith("#")))
  times = {mt.key_of({k: mt._typed(r[k]) for k in mt.KNOB_COLUMNS}): r["step_time_s"] for r in rows}
  assert times[mt.key_of(cands[2])] == "0.100000" and times[mt.key_of(cands[4])] == "0.200000"
  assert mt.done_keys(out) == {mt.key_of(c) for c in cands[:5]}
