"""The final report of a search: what to launch and the evidence behind it.

Where it sits: `experiment.run_experiment` builds it from the SearchResult
and writes it to stdout (summary), TensorBoard text and the workdir
(`report.json`, `report.md`).
"""

from __future__ import annotations

import collections
import json
import os
from typing import Any

from autoscout_jax import finetune, report_serving
from autoscout_jax.search import SearchResult
from autoscout_jax.space import SearchSpace
from autoscout_jax.targets import launch_artifact
from autoscout_jax.units import fmt_bytes, fmt_duration
from autoscout_jax.writers import HPARAMS_DIR


def _m(m) -> dict[str, Any] | None:
  if m is None:
    return None
  extra = m.metrics.extra or {}
  return {
      "candidate": m.candidate.values, "key": m.candidate.key, "fidelity": m.fidelity,
      "tokens_per_s": m.metrics.tokens_per_s, "step_time_s": m.metrics.step_time_s,
      "peak_mem_bytes": m.metrics.peak_mem_bytes, "mfu": m.metrics.mfu,
      "feasible": m.feasible, "failure_kind": m.metrics.failure_kind,
      "breakdown": dict(m.metrics.breakdown),
      # a simulator's memory verdict ("yes" / "uncertain") and the optimistic bound
      **{k: extra[k] for k in ("memory_verdict", "peak_mem_bytes_lo") if extra.get(k) is not None},
  }


def _memory(result: SearchResult) -> dict[str, Any] | None:
  """Per-device peak memory of the recommendation at every fidelity that
  measured it in this run (XLA's compiled figure next to the simulators')."""
  if result.best is None:
    return None
  out: dict[str, Any] = {}
  for m in result.measurements:
    if m.candidate.key == result.best.candidate.key and m.metrics.peak_mem_bytes is not None:
      rec = {"peak_mem_bytes": m.metrics.peak_mem_bytes}
      for k in ("argument_bytes", "temp_bytes", "usable_bytes", "compile_s"):
        if (m.metrics.extra or {}).get(k) is not None:
          rec[k] = m.metrics.extra[k]
      out[m.fidelity] = rec
  return out or None


def _cost_units(result: SearchResult) -> dict[str, str]:
  """What each fidelity's cost_s counts: device-seconds unless the
  evaluator says otherwise (F2 at cluster scale: host seconds)."""
  return {m.fidelity: str(m.provenance.get("cost_unit", "device_s")) for m in result.measurements}


def build_report(workload, cluster, space: SearchSpace, result: SearchResult, workdir: str) -> dict[str, Any]:
  spent = collections.Counter()
  counts = collections.Counter()
  for m in result.measurements:
    counts[(m.fidelity, m.metrics.failure_kind or "ok")] += 1
  seen = set()
  for m in result.measurements:
    if (m.candidate.key, m.fidelity) not in seen:
      seen.add((m.candidate.key, m.fidelity))
      spent[m.fidelity] += m.cost_s
  return {
      "workload": workload.name, "cluster": cluster.name, "num_devices": cluster.num_devices,
      "device_memory_bytes": getattr(cluster, "memory_bytes_per_device", None),
      "space": space.name, "top_fidelity": result.top_fidelity,
      "best": _m(result.best), "default": _m(result.default),
      "speedup_vs_default": result.speedup_vs_default,
      "launch": (launch_artifact(space, result.best.candidate, workload, cluster)
                 if result.best else None),
      "top": [_m(m) for m in result.top(5)],
      "cost_s": result.cost_s, "cost_by_fidelity_s": dict(spent), "cost_units": _cost_units(result),
      "best_memory": _memory(result),
      "serving": report_serving.section(workload, result),  # None unless task='serve'
      "example_lens": list(getattr(workload, "example_lens", ())) or None,  # tokens/s = trained tokens
      "outcomes": {f"{f}/{k}": n for (f, k), n in sorted(counts.items())},
      "rounds": len(result.rounds), "stop_reason": result.stop_reason,
      "designer": result.designer_summary,
      "workdir": workdir, "tensorboard": os.path.join(workdir, "tb"),
      "hparams": os.path.join(workdir, HPARAMS_DIR),
      "measurements": os.path.join(workdir, "measurements.jsonl"),
      "search_wall_s": result.wall_s,
      "finetune": finetune.explain(workload, finetune.base_params(workload.model),
                                   getattr(cluster, "memory_bytes_per_device", None)),
  }


def _importances(rep: dict[str, Any]) -> list[tuple[str, float]]:
  """The designer's knob importances, largest first (empty if it learned none)."""
  des = rep.get("designer") or {}
  if des.get("importance_source") == "uniform":
    return []
  imp = des.get("importances") or {}
  return sorted(((k, float(v)) for k, v in imp.items()), key=lambda kv: -kv[1])


def _fmt_cand(values: dict[str, Any]) -> str:
  return " ".join(f"{k}={v}" for k, v in values.items())


def _fmt_breakdown(b: dict[str, float]) -> str:
  return " ".join(f"{k}={v:.3g}" for k, v in b.items()) if b else "-"


def render_summary(rep: dict[str, Any]) -> str:
  lines = ["", "=== autoscout_jax result ==="]
  best = rep["best"]
  if best is None:
    lines.append(f"No feasible configuration was validated at fidelity {rep['top_fidelity']!r} "
                 f"({rep['stop_reason']}); outcomes: {rep['outcomes']}")
  else:
    lines.append(f"best ({best['fidelity']}): {_fmt_cand(best['candidate'])}")
    tput, step = _units(rep)
    lines.append(f"  throughput {best['tokens_per_s']:,.1f} {tput}, {step} {best['step_time_s']:.4g} s"
                 + _mem_mfu(best, rep))
    d = rep["default"]
    if d is not None and d["feasible"] and d["tokens_per_s"]:
      lines.append(f"  default: {_fmt_cand(d['candidate'])} -> {d['tokens_per_s']:,.1f} tokens/s")
      lines.append(f"  speedup over the default: {rep['speedup_vs_default']:.3f}x")
    elif d is not None:
      lines.append(f"  default: {_fmt_cand(d['candidate'])} failed ({d['failure_kind']})")
  if rep.get("serving"):
    lines += report_serving.summary(rep["serving"])
  if len(rep["top"]) > 1:
    lines.append("top candidates:")
    for m in rep["top"][:5]:
      lines.append(f"  {m['tokens_per_s']:>12,.1f} tok/s  {_fmt_cand(m['candidate'])}")
      if m["breakdown"]:
        lines.append(f"  {'':>12}        {_fmt_breakdown(m['breakdown'])}")
  imp = _importances(rep)
  if imp:
    lines.append("knobs that mattered most: " + ", ".join(f"{k} {v:.2f}" for k, v in imp[:5]))
  lines.append(f"spent {rep['cost_s']:,.1f} device-seconds "
               + ", ".join(f"{k}: {v:,.1f}" for k, v in rep["cost_by_fidelity_s"].items())
               + f" over {rep['rounds']} rounds (stopped: {rep['stop_reason']})")
  for w in rep.get("warnings", ()):
    lines.append(f"warning: {w}")
  wall = rep.get("wall_s", rep.get("search_wall_s"))
  if wall is not None:
    lines.append(f"wall time {fmt_duration(wall)}")
  wd = rep["workdir"]
  lines.append(f"look at: {os.path.join(wd, 'report.html')} (a browser), {os.path.join(wd, 'report.md')}, "
               f"{rep['measurements']}")
  if rep.get("launch_files"):
    lines.append("  launch: " + ", ".join(os.path.join(wd, f) for f in rep["launch_files"]))
  lines.append(f"  tensorboard --logdir {rep['tensorboard']}    "
               f"(HParams, one session per trial: tensorboard --logdir {rep['hparams']})")
  return "\n".join(lines)


def render_markdown(rep: dict[str, Any]) -> str:
  out = [f"# autoscout_jax report: {rep['workload']} on {rep['cluster']} ({rep['num_devices']} devices)", ""]
  if rep.get("warnings"):
    out += ["## Warnings", ""] + [f"- {w}" for w in rep["warnings"]] + [""]
  best = rep["best"]
  if best is None:
    out.append(f"No feasible configuration validated at `{rep['top_fidelity']}`.")
  else:
    out += ["## Recommendation", "", "| knob | value |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in best["candidate"].items()]
    tput, step = _units(rep)
    out += ["", f"Measured at `{best['fidelity']}`: {best['tokens_per_s']:,.1f} {tput}, "
            f"{step} {best['step_time_s']:.4g} s{_mem_mfu(best, rep)}."]
    if rep["speedup_vs_default"]:
      out.append(f"Speedup over the workload's default configuration: **{rep['speedup_vs_default']:.3f}x**.")
    if rep.get("finetune"):
      out += ["", rep["finetune"]]
    if best["breakdown"]:
      out += ["", "### Time breakdown", "", "| part | seconds |", "|---|---|"]
      out += [f"| {k} | {v:.4g} |" for k, v in best["breakdown"].items()]
    mem = rep.get("best_memory")
    if mem:
      size = lambda v: fmt_bytes(v) if v is not None else "-"
      out += ["", "### Memory per device", "", "| fidelity | peak | parameters + optimizer | temporaries |",
              "|---|---|---|---|"]
      out += [f"| {f} | {size(r['peak_mem_bytes'])} | {size(r.get('argument_bytes'))} | {size(r.get('temp_bytes'))} |"
              for f, r in mem.items()]
      if "compile" in mem and mem["compile"].get("usable_bytes"):
        out.append(f"\n`compile` is XLA's own figure for the program compiled for the target "
                   f"(usable {size(mem['compile']['usable_bytes'])} per device); the others are the "
                   f"simulators' memory models.")
    out += ["", "### Launch", ""] + _launch_md(rep)
  if rep.get("serving"):
    out += [""] + report_serving.markdown(rep["serving"])
  out += ["", "## Top candidates", "", "| tokens/s | step s | candidate | breakdown (s) |",
          "|---|---|---|---|"]
  out += [f"| {m['tokens_per_s']:,.1f} | {m['step_time_s']:.4g} | {_fmt_cand(m['candidate'])} | "
          f"{_fmt_breakdown(m['breakdown'])} |" for m in rep["top"]]
  imp = _importances(rep)
  if imp:
    out += ["", "## Knob importances", "",
            "What the designer learned matters for this workload: how much its surrogate's "
            "prediction moves when the knob is shuffled (permutation importance), as shares "
            "summing to 1. It moved the top knobs first.", "",
            "| knob | importance |", "|---|---|"]
    out += [f"| {k} | {v:.3f} |" for k, v in imp]
  units = rep.get("cost_units") or {}
  out += ["", "## Spend", "", f"{rep['cost_s']:,.1f} seconds charged in {rep['rounds']} rounds "
          f"(stopped: {rep['stop_reason']}): "
          + ", ".join(f"{k} {v:,.1f} {units.get(k, 'device_s').replace('_s', '-s')}"
                      for k, v in rep["cost_by_fidelity_s"].items()) + "."]
  if "host_s" in units.values():
    out.append("Host seconds (compiling for the target on this machine: no device runs) and device-seconds "
               "are added 1:1 into the budget: both are seconds of a resource the search holds.")
  out.append("")
  out += [f"- {k}: {v}" for k, v in rep["outcomes"].items()]
  learned = {k: v for k, v in (rep.get("designer") or {}).items()
             if k not in ("importances", "importance_source")}
  if learned:
    out += ["", "## Designer state", ""]
    out += _designer_state(learned)
  return "\n".join(out) + "\n"


def _launch_md(rep: dict[str, Any]) -> list[str]:
  """The launch files written beside the report (the first in full), else
  the launch description as JSON."""
  files = rep.get("launch_files") or {}
  if files:
    first = next(iter(files))
    out = ["Written beside this report: " + ", ".join(f"`{f}`" for f in files) + ".", "",
           f"`{first}`:", "", "```", files[first].rstrip(), "```"]
    return out
  return ["```", json.dumps(rep["launch"], indent=2, sort_keys=True, default=str), "```"]


def _units(rep: dict[str, Any]) -> tuple[str, str]:
  """What tokens_per_s and step_time_s mean in this run (serving: output
  tokens per device, and the p50 time per output token)."""
  if rep.get("serving"):
    return "output tokens/s per device", "TPOT p50"
  if rep.get("example_lens"):  # padding is not throughput (autoscout_jax/packing.py)
    return "trained tokens/s", "step"
  return "tokens/s", "step"


def _mem_mfu(m: dict[str, Any], rep: dict[str, Any]) -> str:
  """', peak memory 53.4 GiB of 95 GiB per device, MFU 58.1 %' (what is known;
  each size in the unit that fits it: '12.3 MiB of 256 MiB' on a small device)."""
  out = ""
  if m.get("peak_mem_bytes") is not None:
    out += f", peak memory {fmt_bytes(m['peak_mem_bytes'])}"
    if rep.get("device_memory_bytes"):
      out += f" of {fmt_bytes(rep['device_memory_bytes'])}"
    out += " per device"
    if m.get("memory_verdict") == "uncertain":
      lo = f" at {fmt_bytes(m['peak_mem_bytes_lo'])}" if m.get("peak_mem_bytes_lo") is not None else ""
      out += (f" (memory uncertain: it fits only near the optimistic bound{lo}; compile or profile it "
              f"before a long run)")
  if m.get("mfu") is not None:
    out += f", MFU {100 * m['mfu']:.1f} %"
  return out


def _num(v: Any) -> str:
  if isinstance(v, bool) or v is None:
    return str(v)
  if isinstance(v, float):
    return f"{v:.3g}"
  return str(v)


def _designer_state(learned: dict[str, Any]) -> list[str]:
  """A designer's summary as tables and short lines, not Python dicts."""
  out: list[str] = []
  for k, v in learned.items():
    name = k.replace("_", " ")
    if isinstance(v, dict) and v and all(isinstance(x, dict) for x in v.values()):
      cols = list(dict.fromkeys(c for x in v.values() for c in x))
      out += ["", f"{name}:", "", "| | " + " | ".join(c.replace("_", " ") for c in cols) + " |",
              "|---" * (len(cols) + 1) + "|"]
      out += [f"| {r} | " + " | ".join(_num(x.get(c)) for c in cols) + " |" for r, x in v.items()]
      out.append("")
    elif isinstance(v, dict):
      out.append(f"- {name}: " + (", ".join(f"{a} {_num(b)}" for a, b in v.items()) or "none"))
    elif isinstance(v, (list, tuple)):
      out.append(f"- {name}: " + (", ".join(map(str, v)) or "none"))
    else:
      out.append(f"- {name}: {_num(v)}")
  return out
