"""results.json names each task's truth kind and its cheap fidelity's rank
correlation with the truth, and results.md holds, per task of every kind
(measured table, measured serving sample, reality gap), the ratio of a
searching designer's cost to 2 % against the best baseline of that run."""

import dataclasses
import json
import os

import pytest

from autoscout_jax.bench import peers, reality_gap, report, runner
from autoscout_jax.bench.__main__ import load_task_file
from autoscout_jax.bench.tasks import repo_root
from autoscout_jax.designers.random_search import RandomSearch

TASKS = {"vtrain_gpt_3.6b_a100_64": "measured", "serving_llama3_70b_h200_trtllm_fp8_8k1k": "measured",
         "smoke_llama3_8b_h100_8": "reality_gap"}  # the smoke task given a reality-gap truth here


def test_results_carry_truth_kind_correlation_and_baseline_ratio(tmp_path, monkeypatch):
  # a searching designer that is neither a peer nor a baseline ("mine")
  monkeypatch.setitem(peers.DESIGNERS, "mine", peers.DesignerEntry(RandomSearch, doc="test"))
  specs = [load_task_file(os.path.join(repo_root(), "gin/bench", f"{t}.gin")) for t in TASKS]
  specs[-1] = dataclasses.replace(specs[-1], truth=reality_gap.RealityGapProfiling(seed=0))
  res = runner.run_bench(specs, ["cheap_topk", "mine"], [0], str(tmp_path), printer=lambda s: None)
  report.write_all(res, str(tmp_path))
  out = json.load(open(tmp_path / "results.json"))
  info = {t["name"]: t for t in out["task_info"]}
  assert set(info) == set(TASKS)
  for name in TASKS:
    assert info[name]["truth_kind"] == TASKS[name]
    cv = info[name]["cheap_vs_truth"]
    assert cv, name  # every one offers a cheap fidelity
    for c in cv.values():
      assert -1.0 <= c["spearman"] <= 1.0 and c["both_feasible"] > 2
      assert 0.0 <= c["feasibility_disagrees"] <= 1.0
  md = (tmp_path / "results.md").read_text()
  section = md[md.index("## Against the baselines"):]
  for name in TASKS:
    line = next(l for l in section.splitlines() if l.startswith(f"| {name} | {TASKS[name]} | mine |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[4] == "cheap_topk"  # the only baseline in this run
    mine = next(r for r in out["results"] if r["task"] == name and r["designer"] == "mine")
    topk = next(r for r in out["results"] if r["task"] == name and r["designer"] == "cheap_topk")
    if mine["cost_to_2pct"] is not None and topk["cost_to_2pct"]:
      assert float(cells[6]) == pytest.approx(mine["cost_to_2pct"] / topk["cost_to_2pct"], abs=0.006)
    else:
      assert cells[6].startswith(("<", ">", "—"))
  # the tally under the table counts the same comparisons
  verdicts = []
  for name in TASKS:
    mine = next(r for r in out["results"] if r["task"] == name and r["designer"] == "mine")["cost_to_2pct"]
    topk = next(r for r in out["results"] if r["task"] == name and r["designer"] == "cheap_topk")["cost_to_2pct"]
    verdicts.append(report._versus(mine, topk))
  tally = next(l for l in section.splitlines() if l.startswith("- mine, over 3 tasks against cheap_topk:"))
  for v in ("ahead", "level", "behind"):
    assert f"{v} on {verdicts.count(v)}" in tally


def test_versus_cheap_topk():
  assert report._versus(2.0, 3.0) == "ahead" and report._versus(3.0, 2.0) == "behind"
  assert report._versus(2.0, 2.0) == "level" and report._versus(None, None) == "level"
  assert report._versus(None, 5.0) == "behind" and report._versus(5.0, None) == "ahead"


class _Crashes(RandomSearch):
  def suggest(self, n):
    if self.seed == 1:
      raise RuntimeError("a designer bug")
    return super().suggest(n)


def test_a_crashing_run_is_reported_and_the_others_go_on(tmp_path, monkeypatch):
  monkeypatch.setitem(peers.DESIGNERS, "flaky", peers.DesignerEntry(_Crashes, doc="test"))
  spec = load_task_file(os.path.join(repo_root(), "gin/bench", "vtrain_gpt_3.6b_a100_64.gin"))
  res = runner.run_bench([spec], ["flaky", "cheap_topk"], [0, 1], str(tmp_path), printer=lambda s: None)
  report.write_all(res, str(tmp_path))
  out = json.load(open(tmp_path / "results.json"))
  assert [(e["designer"], e["seed"]) for e in out["errors"]] == [("flaky", 1)]
  assert "a designer bug" in out["errors"][0]["error"]
  rows = {r["designer"]: r for r in out["results"]}
  assert rows["flaky"]["seeds"] == [0] and rows["cheap_topk"]["seeds"] == [0, 1]
  assert "Runs that crashed" in (tmp_path / "results.md").read_text()
