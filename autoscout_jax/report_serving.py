"""The serving part of a report: the recommendation's TTFT and TPOT against
the workload's SLOs, and the throughput-latency frontier of what was
measured.

Where it sits: report.build_report adds `section(workload, result)` as
`report['serving']` for a task='serve' workload; report.render_markdown,
render_summary and report_html.render_html call `markdown`, `summary` and
`html` on it. It reads the serving metrics every serving evaluator writes
(targets/serving.SERVE_METRICS in `Metrics.extra`), SLO misses included
(failure kind 'slo': measured, infeasible).
"""

from __future__ import annotations

from typing import Any, Mapping

from autoscout_jax.html_charts import esc
from autoscout_jax.measurement import SLO


def _row(m: Any, pct: int) -> dict[str, Any]:
  e = m.metrics.extra or {}
  return {"candidate": dict(m.candidate.values), "feasible": m.feasible,
          "failure_kind": m.metrics.failure_kind,
          # an SLO miss has no objective; its measured throughput stays in extra
          "tokens_per_s_per_device": (m.metrics.tokens_per_s if m.metrics.tokens_per_s is not None
                                      else e.get("tokens_per_s_per_device")),
          "throughput_tok_s": e.get("throughput_tok_s"), "devices_used": e.get("devices_used"),
          "ttft_ms": e.get(f"ttft_ms_p{pct}"), "tpot_ms": e.get(f"tpot_ms_p{pct}"),
          "ttft_ms_p50": e.get("ttft_ms_p50"), "tpot_ms_p50": e.get("tpot_ms_p50"),
          "effective_batch": e.get("effective_batch")}


def frontier(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """The measured rows no other row beats on both throughput per device
  (higher) and TPOT (lower), by ascending TPOT."""
  pts = [r for r in rows if r["tokens_per_s_per_device"] is not None and r["tpot_ms"] is not None]
  out = []
  for r in pts:
    beaten = any(o is not r and o["tokens_per_s_per_device"] >= r["tokens_per_s_per_device"]
                 and o["tpot_ms"] <= r["tpot_ms"]
                 and (o["tokens_per_s_per_device"] > r["tokens_per_s_per_device"] or o["tpot_ms"] < r["tpot_ms"])
                 for o in pts)
    if not beaten:
      out.append(r)
  return sorted(out, key=lambda r: r["tpot_ms"])


def section(workload: Any, result: Any) -> dict[str, Any] | None:
  spec = getattr(workload, "serving", None)
  if spec is None:
    return None
  pct = spec.slo_percentile
  seen, rows = set(), []
  for m in result.measurements:
    if m.fidelity != result.top_fidelity or m.candidate.key in seen:
      continue
    if (m.metrics.extra or {}).get("throughput_tok_s") is None:
      continue  # not served (invalid, OOM, crash): no latency to show
    seen.add(m.candidate.key)
    rows.append(_row(m, pct))
  best = _row(result.best, pct) if result.best is not None else None
  return {"percentile": pct, "ttft_slo_ms": spec.ttft_slo_ms, "tpot_slo_ms": spec.tpot_slo_ms,
          "input_lens": list(spec.input_lens), "output_lens": list(spec.output_lens),
          "requests": workload.global_batch, "best": best, "measured": len(rows),
          "missed_slo": sum(1 for r in rows if r["failure_kind"] == SLO), "frontier": frontier(rows)}


def _ms(v: Any) -> str:
  return "-" if v is None else f"{v:,.1f}"


def _slo(v: Any) -> str:
  return "none" if v is None else f"{v:g}"


def _verdict(got: Any, slo: Any) -> str:
  if slo is None:
    return "no SLO"
  if got is None:
    return "not measured"
  return "meets" if got <= slo else "MISSES"


def _cand(values: Mapping[str, Any]) -> str:
  return " ".join(f"{k}={v}" for k, v in values.items())


def summary(sec: Mapping[str, Any]) -> list[str]:
  p, b = sec["percentile"], sec["best"]
  out = []
  if b is not None:
    out.append(f"  serving: TTFT p{p} {_ms(b['ttft_ms'])} ms (SLO {_slo(sec['ttft_slo_ms'])}), TPOT p{p} "
               f"{_ms(b['tpot_ms'])} ms (SLO {_slo(sec['tpot_slo_ms'])}), "
               f"{_ms(b['throughput_tok_s'])} output tok/s on {b['devices_used']} devices")
  out.append(f"  {sec['measured']} served, {sec['missed_slo']} missed an SLO; frontier of "
             f"{len(sec['frontier'])} (report.md)")
  return out


def markdown(sec: Mapping[str, Any]) -> list[str]:
  p, b = sec["percentile"], sec["best"]
  out = ["## Serving: latency against the SLOs", "",
         f"Request mix: {sec['requests']} requests, prompts {sec['input_lens']} tokens, outputs "
         f"{sec['output_lens']} tokens (cycled). SLOs hold at p{p} over the requests; a candidate that "
         f"misses one is infeasible. Throughput is output tokens per second per device.", ""]
  if b is not None:
    out += [f"| | p50 | p{p} | SLO (p{p}) | verdict |", "|---|---|---|---|---|",
            f"| TTFT ms | {_ms(b['ttft_ms_p50'])} | {_ms(b['ttft_ms'])} | {_slo(sec['ttft_slo_ms'])} | "
            f"{_verdict(b['ttft_ms'], sec['ttft_slo_ms'])} |",
            f"| TPOT ms | {_ms(b['tpot_ms_p50'])} | {_ms(b['tpot_ms'])} | {_slo(sec['tpot_slo_ms'])} | "
            f"{_verdict(b['tpot_ms'], sec['tpot_slo_ms'])} |", "",
            f"Recommendation: {_ms(b['tokens_per_s_per_device'])} output tok/s per device "
            f"({_ms(b['throughput_tok_s'])} on {b['devices_used']} devices, "
            f"{b['effective_batch']} concurrent sequences).", ""]
  out += [f"### Throughput-latency frontier ({sec['measured']} served, {sec['missed_slo']} missed an SLO)", "",
          "Measured candidates no other beats on both throughput per device and TPOT.", "",
          f"| tok/s/device | TPOT p{p} ms | TTFT p{p} ms | meets SLOs | candidate |", "|---|---|---|---|---|"]
  out += [f"| {_ms(r['tokens_per_s_per_device'])} | {_ms(r['tpot_ms'])} | {_ms(r['ttft_ms'])} | "
          f"{'yes' if r['feasible'] else 'no'} | {_cand(r['candidate'])} |" for r in sec["frontier"]]
  return out + [""]


def html(sec: Mapping[str, Any]) -> list[str]:
  p, b = sec["percentile"], sec["best"]
  out = ["<h2>Serving: latency against the SLOs</h2>",
         f"<p class='note'>{sec['requests']} requests, prompts {esc(sec['input_lens'])}, outputs "
         f"{esc(sec['output_lens'])} tokens; SLOs at p{p}; throughput is output tokens/s per device.</p>"]
  if b is not None:
    out.append(f"<table><tr><th></th><th>p50</th><th>p{p}</th><th>SLO</th><th>verdict</th></tr>")
    for name, k, slo in (("TTFT ms", "ttft_ms", sec["ttft_slo_ms"]), ("TPOT ms", "tpot_ms", sec["tpot_slo_ms"])):
      out.append(f"<tr><td>{name}</td><td class='num'>{_ms(b[k + '_p50'])}</td><td class='num'>{_ms(b[k])}</td>"
                 f"<td class='num'>{_slo(slo)}</td><td>{_verdict(b[k], slo)}</td></tr>")
    out.append("</table>")
  out.append(f"<h3>Throughput-latency frontier</h3><table><tr><th>tok/s/device</th><th>TPOT p{p} ms</th>"
             f"<th>TTFT p{p} ms</th><th>meets SLOs</th><th>candidate</th></tr>")
  out += [f"<tr><td class='num'>{_ms(r['tokens_per_s_per_device'])}</td><td class='num'>{_ms(r['tpot_ms'])}</td>"
          f"<td class='num'>{_ms(r['ttft_ms'])}</td><td>{'yes' if r['feasible'] else 'no'}</td>"
          f"<td>{esc(_cand(r['candidate']))}</td></tr>" for r in sec["frontier"]]
  return out + ["</table>"]
