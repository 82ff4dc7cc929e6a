"""Writing a benchmark run: the markdown table, results.json, TensorBoard.

Where it sits: the last step of bench/__main__.py, after runner.run_bench.
- `results.json`: every number (medians, IQRs, each seed's measures and the
  points where its incumbent changed), task summaries, suite and commit;
- `results.md`: one row per task x designer, costs in units of the task's
  median profiling cost ("evals"), ratio columns against the better of the
  external peers (Optuna TPE, SMAC3) in the same run; then, for every other
  searching designer, how it stands against those peers (`peer_comparison`);
- TensorBoard (`tb/<task>/<designer>`): median and quartiles over seeds of
  the regret of the incumbent and its true tokens/s against cumulative cost
  (the step is device-seconds).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping, Sequence

import numpy as np

from autoscout_jax.bench import metrics as metrics_lib
from autoscout_jax.bench.peers import BASELINES as BAR, PEERS

GRID_POINTS = 64


def best_peer(results: Sequence[Mapping[str, Any]], task: str) -> Mapping[str, Any] | None:
  """The better external peer on a task: lower median regret at the largest
  budget, then lower median cost to 5 %."""
  rows = [r for r in results if r["task"] == task and r["designer"] in PEERS]
  if not rows:
    return None
  def key(r):
    reg = r["regret_at_budgets"][-1]["median"]
    c5 = r["cost_to_5pct"]
    return (math.inf if reg is None else reg, math.inf if c5 is None else c5)
  return min(rows, key=key)


def _fmt(x: float | None, digits: int = 1) -> str:
  if x is None:
    return "never"
  return f"{x:.{digits}f}"


def _cost(r: Mapping[str, Any], key: str, unit: float) -> str:
  med = r[key]
  n = len(r["seeds"])
  reached = r[key + "_reached"]
  if med is None:
    return f"never ({reached}/{n})"
  lo, hi = r[key + "_iqr"]
  iqr = f" [{_fmt(lo / unit)}–{_fmt(hi / unit) if hi is not None else 'never'}]" if lo is not None else ""
  return f"{med / unit:.1f}{iqr}" + (f" ({reached}/{n})" if reached < n else "")


def _ratio(a: float | None, b: float | None) -> str:
  if a is None or b is None or b == 0:
    return "—"
  return f"{a / b:.2f}"


def markdown_table(results: Mapping[str, Any]) -> str:
  info = {t["name"]: t for t in results["task_info"]}
  lines = [
      "| task | designer | seeds | cost to 5 % (evals) | cost to 2 % (evals) | regret % @ budgets | "
      "speedup vs expert | failed paid | invalid | CPU s / suggestion | cost to 5 % ÷ best peer | "
      "best found ÷ best peer |",
      "|---|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for r in results["results"]:
    t = info[r["task"]]
    unit = t["median_eval_cost_s"]
    peer = best_peer(results["results"], r["task"])
    regrets = " / ".join(_fmt(None if b["median"] is None else 100 * b["median"]) for b in r["regret_at_budgets"])
    sp = r["speedup_vs_expert"]
    ov = r["overhead_s_per_suggestion"]
    peer_c5 = _ratio(r["cost_to_5pct"], peer["cost_to_5pct"]) if peer else "—"
    peer_best = _ratio(r["best_true_tokens_per_s"], peer["best_true_tokens_per_s"]) if peer else "—"
    if peer is not None and r["designer"] == peer["designer"]:
      peer_c5, peer_best = "(best peer)", "(best peer)"
    lines.append(
        f"| {r['task']} | {r['designer']} | {len(r['seeds'])} | {_cost(r, 'cost_to_5pct', unit)} | "
        f"{_cost(r, 'cost_to_2pct', unit)} | {regrets} | {'—' if sp is None else f'{sp:.2f}x'} | "
        f"{r['infeasible_paid']:g} | {r['invalid_suggestions']:g} | "
        f"{'—' if ov is None else f'{ov:.3f}'} | {peer_c5} | {peer_best} |")
  notes = ["", "Budgets and units per task (one \"eval\" = the median cost of profiling one feasible "
           "candidate):", ""]
  for t in results["task_info"]:
    b = ", ".join(f"{e:g}" for e in t["budget_evals"])
    expert = t["expert_tokens_per_s"]
    gap = "n/a" if not expert else f"{t['optimum_tokens_per_s'] / expert:.2f}x from optimum"
    notes.append(
        f"- {t['name']}: {t['candidates']} valid candidates; truth: {t.get('truth_kind', '?')} "
        f"[{t['truth'].get('kind', '?')}]; {_cheap_note(t)}; "
        f"({t['source_fidelity']}, {t['repeats']} repeats, noise CV {100 * t['noise_cv']:.1f} %); "
        f"1 eval = {t['median_eval_cost_s']:,.1f} device-s; budgets {b} evals; optimum "
        f"{t['optimum_tokens_per_s']:,.1f} tok/s, expert default "
        f"{'n/a' if expert is None else f'{expert:,.1f}'} tok/s "
        f"({gap}); "
        f"{100 * t['infeasible_fraction']:.1f} % of candidates infeasible")
  return "\n".join(lines + notes) + "\n"


def _cheap_note(t: Mapping[str, Any]) -> str:
  cv = t.get("cheap_vs_truth") or {}
  if not cv:
    return "no cheap fidelity"
  parts = []
  for f, c in cv.items():
    rho = "n/a" if c["spearman"] is None else f"{c['spearman']:.2f}"
    parts.append(f"{f} Spearman {rho} with the truth (on {c['both_feasible']} both call feasible), "
                 f"wrong about feasibility on {100 * c['feasibility_disagrees']:.1f} %")
  return ", ".join(parts)


def _c2(r: Mapping[str, Any], unit: float) -> float | None:
  return None if r["cost_to_2pct"] is None else r["cost_to_2pct"] / unit


def baseline_comparison(results: Mapping[str, Any]) -> str:
  """Per task, each searching designer of the project against the bar of
  issue 13: the best (lowest median cost to 2 %) of cheap_topk,
  optuna_tpe_warm, optuna_gp, optuna_tpe and smac present in the run, and
  against cheap_topk alone. A designer that never gets within 2 % inside
  the largest budget costs more than that budget, which bounds a ratio."""
  info = {t["name"]: t for t in results["task_info"]}
  rows = results["results"]
  tally: dict[str, list[str]] = {}  # designer -> per task: ahead / level / behind cheap_topk
  half: dict[str, int] = {}  # designer -> tasks at <= 0.5 x the best baseline
  lines = ["| task | truth | designer | cost to 2 % (evals) | best baseline | its cost to 2 % | ratio | "
           "÷ cheap_topk | regret % @ largest (best baseline) | failed paid (cheap_topk) | re-measured |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    if r["designer"] in BAR or r["designer"] in BASELINES or r["designer"] == "sim_argmax":
      continue
    bars = [p for p in rows if p["task"] == r["task"] and p["designer"] in BAR]
    if not bars:
      continue
    t = info[r["task"]]
    unit, largest = t["median_eval_cost_s"], t["budget_evals"][-1]
    mine = _c2(r, unit)

    def key(p):
      c = _c2(p, unit)
      return (math.inf if c is None else c, p["regret_at_budgets"][-1]["median"] or 0.0)

    best = min(bars, key=key)
    theirs = _c2(best, unit)

    def ratio(a, b):
      if a is None:
        return "—" if b is None else f"> {largest / b:.2f}"
      if b is None:
        return f"< {a / largest:.2f}"
      return f"{a / b:.2f}" if b > 0 else "—"

    topk = next((p for p in bars if p["designer"] == "cheap_topk"), None)
    reg = r["regret_at_budgets"][-1]["median"]
    breg = best["regret_at_budgets"][-1]["median"]
    vs_topk = ratio(mine, _c2(topk, unit)) if topk else "—"
    if topk:
      tally.setdefault(r["designer"], []).append(_versus(mine, _c2(topk, unit)))
    if mine is not None and (theirs is None or mine <= 0.5 * theirs):
      half[r["designer"]] = half.get(r["designer"], 0) + 1
    failed_topk = f"{topk['infeasible_paid']:g}" if topk else "—"
    lines.append(
        f"| {r['task']} | {t.get('truth_kind', '?')} | {r['designer']} | {_fmt(mine)} | {best['designer']} | "
        f"{_fmt(theirs) if theirs is not None else f'never in {largest:g}'} | {ratio(mine, theirs)} | "
        f"{vs_topk} | {_fmt(100 * reg)} ({_fmt(100 * breg)}) | {r['infeasible_paid']:g} ({failed_topk}) | "
        f"{r.get('repeats_paid') or 0:g} |")
  if len(lines) == 2:
    return ""
  summary = [f"- {d}, over {len(v)} tasks against cheap_topk: ahead on {v.count('ahead')}, level on "
             f"{v.count('level')}, behind on {v.count('behind')}; within 0.5 x the best baseline on {half.get(d, 0)}"
             for d, v in tally.items() if len(v) > 1]
  return ("\n## Against the baselines\n\nMedians over seeds. Best baseline: the lowest median cost to 2 % "
          f"among {', '.join(BAR)} in this run (the target of issue 13: ratio <= 0.5, and <= 1 against "
          "cheap_topk); re-measured: the median count of deliberate re-measurements (paid, in the cost)."
          "\n\n" + "\n".join(lines) + "\n" + ("\n" + "\n".join(summary) + "\n" if summary else ""))


def _versus(mine: float | None, topk: float | None) -> str:
  """ahead / level / behind: a designer's median cost to 2 % against
  cheap_topk's (never reaching it is behind any cost; both never: level)."""
  if mine is None or topk is None:
    return "level" if mine is None and topk is None else ("behind" if mine is None else "ahead")
  if math.isclose(mine, topk, rel_tol=1e-9):
    return "level"
  return "ahead" if mine < topk else "behind"


BASELINES = ("random", "exhaustive", "expert")  # not compared against the peers


def peer_comparison(results: Mapping[str, Any]) -> str:
  """Per task, each designer that is neither a peer nor a baseline against
  the external peers of the same run: its median cost to 2 % beside the
  lowest peer median (a peer that never got there within the largest
  budget costs more than that budget, which bounds the ratio); its regret
  at each budget where even the better peer's median regret is >= 5 %; and
  the failed or infeasible candidates it paid for beside the fewest any
  peer paid for."""
  info = {t["name"]: t for t in results["task_info"]}
  rows = results["results"]
  lines = ["| task | designer | cost to 2 % (evals) | best peer's | ratio | regret where the better peer's "
           "is >= 5 % | failed paid (fewest of peers) |", "|---|---|---|---|---|---|---|"]
  for r in rows:
    if r["designer"] in PEERS or r["designer"] in BASELINES or r["designer"] in BAR + ("sim_argmax",):
      continue
    peers = [p for p in rows if p["task"] == r["task"] and p["designer"] in PEERS]
    if not peers:
      continue
    t = info[r["task"]]
    unit, largest = t["median_eval_cost_s"], t["budget_evals"][-1]
    mine = None if r["cost_to_2pct"] is None else r["cost_to_2pct"] / unit
    reached = [p["cost_to_2pct"] / unit for p in peers if p["cost_to_2pct"] is not None]
    theirs = min(reached) if reached else None
    if mine is None:
      ratio = "—"
    elif theirs is None:
      ratio = f"< {mine / largest:.2f}"
    else:
      ratio = f"{mine / theirs:.2f}"
    where = []
    for i, b in enumerate(r["regret_at_budgets"]):
      peer_regret = min(p["regret_at_budgets"][i]["median"] for p in peers)
      if peer_regret >= 0.05:
        where.append(f"{b['budget_evals']:g} evals: {100 * b['median']:.1f} % (peer {100 * peer_regret:.1f} %)")
    fewest = min(p["infeasible_paid"] for p in peers)
    lines.append(f"| {r['task']} | {r['designer']} | {_fmt(mine)} | "
                 f"{_fmt(theirs) if theirs is not None else f'never in {largest:g}'} | {ratio} | "
                 f"{'; '.join(where) or '— (the better peer is within 5 % at every budget)'} | "
                 f"{r['infeasible_paid']:g} ({fewest:g}) |")
  if len(lines) == 2:
    return ""
  return ("\n## Against the peers\n\nMedians over seeds; \"never\" = the median seed did not get "
          "within 2 % inside the largest budget.\n\n" + "\n".join(lines) + "\n")


def _trace_points(tr: metrics_lib.RunTrace) -> list[list[Any]]:
  """(cost, true incumbent) where the incumbent changed, plus the last point."""
  out, last = [], object()
  for c, v in zip(tr.costs, tr.best_true):
    if v != last:
      out.append([c, v])
      last = v
  if tr.costs and (not out or out[-1][0] != tr.costs[-1]):
    out.append([tr.costs[-1], tr.best_true[-1]])
  return out


def results_json(results: Mapping[str, Any]) -> dict[str, Any]:
  out = {k: v for k, v in results.items() if not k.startswith("_")}
  traces = results.get("_traces", {})
  out["results"] = []
  for r in results["results"]:
    r = dict(r)
    r["per_seed"] = [dict(s, curve=_trace_points(traces[(r["task"], r["designer"], s["seed"])]))
                     if (r["task"], r["designer"], s["seed"]) in traces else s for s in r["per_seed"]]
    out["results"].append(r)
  return out


def write_tensorboard(results: Mapping[str, Any], logdir: str, table_md: str) -> None:
  from autoscout_jax.writers import TensorBoardWriter
  traces = results.get("_traces", {})
  for t in results["task_info"]:
    grid = np.linspace(0.0, t["budgets_s"][-1], GRID_POINTS + 1)[1:]
    for d in results["designers"]:
      trs = [tr for (task, name, _), tr in traces.items() if task == t["name"] and name == d]
      if not trs:
        continue
      curves = np.stack([metrics_lib.curve_on_grid(tr, grid) for tr in trs])
      regret = 100.0 * np.where(np.isnan(curves), 1.0, 1.0 - curves / t["optimum_tokens_per_s"])
      w = TensorBoardWriter(os.path.join(logdir, t["name"], d), flat=True)
      try:
        for j, g in enumerate(grid):
          vals = {"regret_pct/median": float(np.median(regret[:, j])),
                  "regret_pct/q25": float(np.percentile(regret[:, j], 25)),
                  "regret_pct/q75": float(np.percentile(regret[:, j], 75))}
          col = curves[:, j]
          if np.isfinite(col).any():
            vals["best_true_tokens_per_s/median"] = float(np.nanmedian(col))
          w.write_scalars(int(round(g)), vals)
      finally:
        w.close()
  w = TensorBoardWriter(os.path.join(logdir, "summary"), flat=True)
  try:
    w.write_texts(0, {"scoutbench/table": table_md})
  finally:
    w.close()


def write_all(results: Mapping[str, Any], workdir: str) -> dict[str, str]:
  os.makedirs(workdir, exist_ok=True)
  table = markdown_table(results) + baseline_comparison(results) + peer_comparison(results)
  if results.get("errors"):
    table += "\n## Runs that crashed (left out of the medians)\n\n" + "".join(
        f"- {e['task']} / {e['designer']} seed {e['seed']}: {e['error']}\n" for e in results["errors"])
  head = (f"# scoutbench: suite {results['suite']}, commit {results['commit']}, {results['date']}\n\n"
          f"Seeds {results['seeds']}; medians over seeds with [interquartile range]; regret % at the "
          f"three budgets; ratio columns against the better of {', '.join(PEERS)} in this run.\n\n")
  paths = {"json": os.path.join(workdir, "results.json"), "md": os.path.join(workdir, "results.md"),
           "tb": os.path.join(workdir, "tb")}
  with open(paths["json"], "w", encoding="utf-8") as f:
    json.dump(_finite(results_json(results)), f, indent=1, sort_keys=True, allow_nan=False,
              default=_json_default)
    f.write("\n")
  with open(paths["md"], "w", encoding="utf-8") as f:
    f.write(head + table)
  write_tensorboard(results, paths["tb"], head + table)
  return paths


def _finite(x: Any) -> Any:
  """NaN/inf -> None, so results.json is strict JSON."""
  if isinstance(x, float) and not math.isfinite(x):
    return None
  if isinstance(x, dict):
    return {k: _finite(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_finite(v) for v in x]
  return x


def _json_default(x: Any) -> Any:
  if isinstance(x, (np.floating, np.integer)):
    return x.item()
  return str(x)
