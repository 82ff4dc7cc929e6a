"""report.html: the report people read, one self-contained page.

Where it sits: `experiment.run_experiment` writes it beside report.md from
the report dict (`report.build_report`) and the SearchResult. Everything
is inline (SVG charts from `html_charts`, CSS, a few lines of script), so
the file opens offline and can be mailed. It shows the recommendation
(knobs, time breakdown, peak memory, MFU, how to launch it), the
optimization history (every trial, failures marked, best so far), parallel
coordinates over the knobs that mattered, the learned knob importances,
each cheap fidelity against the top one, the top candidates and the spend.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

from autoscout_jax import html_charts as C, report_serving
from autoscout_jax.html_charts import esc
from autoscout_jax.tracking import order_knobs
from autoscout_jax.units import fmt_bytes

MAX_PARALLEL_AXES = 6

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:960px;color:#222}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
pre{background:#f6f8fa;padding:10px;overflow-x:auto;font-size:.85em;white-space:pre-wrap;word-break:break-all}
.note{color:#555;font-size:.9em}.kpi{display:inline-block;margin:6px 18px 6px 0}
.kpi b{display:block;font-size:1.3em}
svg.chart{max-width:100%;height:auto;display:block;margin:8px 0}
.axis{stroke:#444;stroke-width:1}.grid{stroke:#eee;stroke-width:1}
.tick{font-size:10px;fill:#444}.label{font-size:11px;fill:#222}
.best{fill:none;stroke:#000;stroke-width:1.8}.default{stroke:#888;stroke-dasharray:5 4;stroke-width:1.2}
.fail{stroke-width:1.6;fill:none}.pline{fill:none;stroke-width:1;stroke-opacity:.55}
.best-line{stroke:#000 !important;stroke-width:3;stroke-opacity:1}
"""

SCRIPT = """
document.addEventListener('DOMContentLoaded', function () {
  var counts = {};
  document.querySelectorAll('svg.chart').forEach(function (el) {
    counts[el.id] = parseInt(el.getAttribute('data-points'), 10);
  });
  document.body.setAttribute('data-charts', JSON.stringify(counts));
  document.querySelectorAll('table.sortable th').forEach(function (th, i) {
    th.style.cursor = 'pointer';
    th.addEventListener('click', function () {
      var body = th.closest('table').tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      var key = function (r) { var v = r.cells[i].getAttribute('data-v'); return v === null ? r.cells[i].textContent : parseFloat(v); };
      var asc = th.getAttribute('data-asc') !== '1';
      rows.sort(function (a, b) { var x = key(a), y = key(b); return (x > y ? 1 : x < y ? -1 : 0) * (asc ? 1 : -1); });
      th.setAttribute('data-asc', asc ? '1' : '0');
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""


def _kendall(xs: Sequence[float], ys: Sequence[float]) -> float | None:
  n, conc, disc = len(xs), 0, 0
  for i in range(n):
    for j in range(i + 1, n):
      s = (xs[i] - xs[j]) * (ys[i] - ys[j])
      conc += s > 0
      disc += s < 0
  return (conc - disc) / (conc + disc) if conc + disc else None


def _cand(values: dict[str, Any]) -> str:
  return " ".join(f"{k}={v}" for k, v in values.items())


def _trials(result) -> list[dict[str, Any]]:
  rounds = result.rounds_of or [0] * len(result.measurements)
  out = []
  for t, m in enumerate(result.measurements):
    what = (f"{m.objective:,.0f} tok/s" if m.objective is not None
            else f"failed: {m.metrics.failure_kind}")
    out.append({"t": t, "fidelity": m.fidelity, "y": m.objective, "failure": m.metrics.failure_kind,
                "label": f"trial {t}, round {rounds[t]}, {m.fidelity}: {what}\n{_cand(m.candidate.values)}"})
  return out


def _best_curve(result) -> list[tuple[int, float]]:
  curve, best = [], None
  for t, m in enumerate(result.measurements):
    if m.fidelity == result.top_fidelity and m.objective is not None and (best is None or m.objective > best):
      best = m.objective
      curve.append((t, best))
  return curve


def _importances(rep) -> list[tuple[str, float]]:
  des = rep.get("designer") or {}
  if des.get("importance_source") == "uniform":
    return []
  return sorted(((k, float(v)) for k, v in (des.get("importances") or {}).items()), key=lambda kv: -kv[1])


def _parallel(rep, result, space) -> str:
  imp = dict(_importances(rep))
  knobs = {k.name: k for k in space.knobs}
  names = [n for n in order_knobs(list(knobs), imp or None)][:MAX_PARALLEL_AXES]
  top = result.top_fidelity
  rows: dict[str, dict[str, Any]] = {}
  for m in result.measurements:
    key = m.candidate.key
    if m.fidelity == top or not m.feasible:
      r = rows.setdefault(key, {"values": dict(m.candidate.values), "tokens/s": None,
                                "label": _cand(m.candidate.values)})
      if m.fidelity == top and m.objective is not None:
        r["tokens/s"] = m.objective
        r["label"] = f"{m.objective:,.0f} tok/s: {_cand(m.candidate.values)}"
      elif not m.feasible and r["tokens/s"] is None:
        r["label"] = f"failed at {m.fidelity} ({m.metrics.failure_kind}): {_cand(m.candidate.values)}"
  if result.best is not None and result.best.candidate.key in rows:
    rows[result.best.candidate.key]["best"] = True
  axes = []
  for n in names:
    vals = knobs[n].finite_values()
    if vals is None:
      vals = sorted({r["values"][n] for r in rows.values() if n in r["values"]})
    axes.append((n, list(vals)))
  return C.parallel(axes, list(rows.values()), "tokens/s")


def _fidelity_scatters(result) -> list[str]:
  top = result.top_fidelity
  at: dict[str, dict[str, float]] = {}
  for m in result.measurements:
    if m.objective is not None:
      at.setdefault(m.fidelity, {})[m.candidate.key] = m.objective
  out = []
  for fid in sorted(set(at) - {top}):
    keys = sorted(set(at[fid]) & set(at.get(top, {})))
    pairs = [(at[fid][k], at[top][k], f"{k}: {fid} {at[fid][k]:,.0f}, {top} {at[top][k]:,.0f}") for k in keys]
    tau = _kendall([p[0] for p in pairs], [p[1] for p in pairs])
    err = (sum(abs(a - b) / b for a, b, _ in pairs) / len(pairs)) if pairs else None
    cap = (f"{len(pairs)} candidates measured at both; Kendall tau {tau:.2f}, mean |error| "
           f"{100 * err:.1f} %" if pairs and tau is not None else f"{len(pairs)} candidates measured at both")
    out.append(f"<h3>{esc(fid)} vs {esc(top)}</h3><p class='note'>{esc(cap)}</p>"
               + C.scatter_vs(pairs, f"{fid} tokens/s", f"{top} tokens/s", f"fidelity-{fid}"))
  return out


def _recommendation(rep) -> list[str]:
  best = rep["best"]
  if best is None:
    return [f"<p>No feasible configuration was validated at <code>{esc(rep['top_fidelity'])}</code> "
            f"({esc(rep['stop_reason'])}).</p>"]
  out = ["<div>"]
  kpis = [("tokens/s", f"{best['tokens_per_s']:,.0f}"), ("step", f"{best['step_time_s']:.4g} s")]
  if rep.get("speedup_vs_default"):
    kpis.append(("vs default", f"{rep['speedup_vs_default']:.3f}x"))
  if best.get("mfu") is not None:
    kpis.append(("MFU", f"{100 * best['mfu']:.1f} %"))
  if best.get("peak_mem_bytes") is not None:
    mem = fmt_bytes(best["peak_mem_bytes"])
    if rep.get("device_memory_bytes"):
      mem += f" of {fmt_bytes(rep['device_memory_bytes'])}"
    kpis.append(("peak memory / device", mem))
  out += [f"<span class='kpi'>{esc(k)}<b>{esc(v)}</b></span>" for k, v in kpis]
  out.append(f"</div><p class='note'>measured at <code>{esc(best['fidelity'])}</code></p>")
  out.append("<table><tr><th>knob</th><th>value</th><th>default</th></tr>")
  dflt = (rep.get("default") or {}).get("candidate") or {}
  for k, v in best["candidate"].items():
    d = dflt.get(k, "")
    mark = " style='font-weight:bold'" if d != v else ""
    out.append(f"<tr{mark}><td>{esc(k)}</td><td>{esc(v)}</td><td>{esc(d)}</td></tr>")
  out.append("</table>")
  if best["breakdown"]:
    out.append("<h3>Where a step's time goes (seconds)</h3>")
    out.append(C.bars([(k, float(v)) for k, v in best["breakdown"].items()], "breakdown", " s"))
  return out


def _launch(rep) -> list[str]:
  launch = rep.get("launch")
  if not launch:
    return []
  files = rep.get("launch_files") or {}
  out = ["<h2>Launch</h2>"]
  if files:
    out.append("<p class='note'>Written beside this report:</p>")
    for name, text in files.items():
      out.append(f"<h3><code>{esc(name)}</code></h3><pre>{esc(text)}</pre>")
  else:
    out.append(f"<pre>{esc(json.dumps(launch, indent=2, default=str))}</pre>")
  return out


def render_html(rep: dict[str, Any], result, space) -> str:
  title = f"autoscout_jax: {rep['workload']} on {rep['cluster']} ({rep['num_devices']} devices)"
  trials = _trials(result)
  fids = list(dict.fromkeys(t["fidelity"] for t in trials))
  dflt = (rep.get("default") or {}).get("tokens_per_s")
  imp = _importances(rep)
  parts = [f"<h1>{esc(title)}</h1>",
           f"<p class='note'>space <code>{esc(rep['space'])}</code>; {len(trials)} trials in "
           f"{rep['rounds']} rounds (stopped: {esc(rep['stop_reason'])}); {rep['cost_s']:,.1f} device-seconds"
           + (f"; wall time {rep['wall_s']:.0f} s" if rep.get("wall_s") else "") + "</p>",
           "<h2>Recommendation</h2>", *_recommendation(rep),
           *(report_serving.html(rep["serving"]) if rep.get("serving") else []), *_launch(rep),
           "<h2>Optimization history</h2>",
           "<p class='note'>Every trial in the order the search produced it, coloured by fidelity; failed "
           "trials are red crosses along the bottom; the black line is the best so far at "
           f"<code>{esc(rep['top_fidelity'])}</code>, the dashed line the workload's default. Hover for details.</p>",
           C.history(trials, fids, _best_curve(result), dflt),
           "<h2>The knobs that mattered</h2>"]
  if imp:
    parts += ["<p class='note'>Learned by the designer: how much its surrogate's prediction moves when the "
              "knob is shuffled, as shares summing to 1.</p>", C.bars(imp, "importance")]
  else:
    parts.append("<p class='note'>This designer learned no knob importances.</p>")
  parts += ["<h3>Parallel coordinates</h3>",
            "<p class='note'>Each line is a candidate measured at the top fidelity (darker: faster; the best "
            "in bold black) or one that failed at any fidelity (red).</p>", _parallel(rep, result, space)]
  scat = _fidelity_scatters(result)
  if scat:
    parts += ["<h2>Cheap fidelities against the top one</h2>", *scat]
  parts += ["<h2>Top candidates</h2>", "<table class='sortable'><thead><tr><th>tokens/s</th><th>step s</th>"
            "<th>peak memory</th><th>candidate</th></tr></thead><tbody>"]
  for m in rep["top"]:
    mem = m.get("peak_mem_bytes")  # sorted by bytes, shown in the unit that fits
    parts.append(f"<tr><td class='num' data-v='{m['tokens_per_s']}'>{m['tokens_per_s']:,.0f}</td>"
                 f"<td class='num' data-v='{m['step_time_s']}'>{m['step_time_s']:.4g}</td>"
                 f"<td class='num' data-v='{mem if mem is not None else -1}'>"
                 f"{'' if mem is None else fmt_bytes(mem)}</td><td>{esc(_cand(m['candidate']))}</td></tr>")
  parts.append("</tbody></table><h2>Spend</h2><table><tr><th>fidelity</th><th>device-seconds</th></tr>")
  parts += [f"<tr><td>{esc(k)}</td><td class='num'>{v:,.2f}</td></tr>" for k, v in rep["cost_by_fidelity_s"].items()]
  parts.append("</table><table style='margin-top:8px'><tr><th>outcome</th><th>count</th></tr>")
  parts += [f"<tr><td>{esc(k)}</td><td class='num'>{v}</td></tr>" for k, v in rep["outcomes"].items()]
  parts.append("</table>")
  parts.append(f"<p class='note'>Every measurement: <code>{esc(rep['measurements'])}</code>. TensorBoard: "
               f"<code>tensorboard --logdir {esc(rep['tensorboard'])}</code>; HParams sessions: "
               f"<code>tensorboard --logdir {esc(rep.get('hparams', ''))}</code>.</p>")
  return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
          f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
          + "\n".join(parts) + f"<script>{SCRIPT}</script></body></html>\n")
