"""Plain inline-SVG charts for report.html: no chart library, works offline.

Where it sits: `report_html.py` turns a search's measurements into series
and calls these; each returns an `<svg>` string whose `data-points`
attribute counts the marks drawn (the browser test reads it). Every mark
carries a `<title>`, which browsers show on hover.
"""

from __future__ import annotations

import html
import math
from typing import Any, Sequence

W, H = 760, 300
PAD_L, PAD_R, PAD_T, PAD_B = 70, 20, 16, 42
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#17becf")
FAIL = "#d62728"


def esc(x: Any) -> str:
  return html.escape(str(x), quote=True)


def fmt(v: float) -> str:
  a = abs(v)
  if a >= 1e6:
    return f"{v / 1e6:.3g}M"
  if a >= 1e4:
    return f"{v / 1e3:.3g}k"
  if a >= 100:
    return f"{v:,.0f}"
  return f"{v:.3g}"


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
  if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
    return [lo]
  raw = (hi - lo) / n
  mag = 10 ** math.floor(math.log10(raw))
  step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=raw)
  start = math.ceil(lo / step) * step
  return [start + i * step for i in range(int((hi - start) / step + 1e-9) + 1)]


class Frame:
  """A linear x/y mapping with axes, ticks and labels."""

  def __init__(self, xlo, xhi, ylo, yhi, w=W, h=H):
    if xhi <= xlo:
      xlo, xhi = xlo - 1, xhi + 1
    if yhi <= ylo:
      ylo, yhi = ylo - 1, yhi + 1
    self.xlo, self.xhi, self.ylo, self.yhi, self.w, self.h = xlo, xhi, ylo, yhi, w, h

  def x(self, v):
    return PAD_L + (v - self.xlo) / (self.xhi - self.xlo) * (self.w - PAD_L - PAD_R)

  def y(self, v):
    return self.h - PAD_B - (v - self.ylo) / (self.yhi - self.ylo) * (self.h - PAD_T - PAD_B)

  def axes(self, xlabel: str, ylabel: str) -> list[str]:
    out = [f'<line x1="{PAD_L}" y1="{self.h - PAD_B}" x2="{self.w - PAD_R}" y2="{self.h - PAD_B}" class="axis"/>',
           f'<line x1="{PAD_L}" y1="{PAD_T}" x2="{PAD_L}" y2="{self.h - PAD_B}" class="axis"/>']
    for t in nice_ticks(self.xlo, self.xhi, 8):
      X = self.x(t)
      out.append(f'<line x1="{X:.1f}" y1="{self.h - PAD_B}" x2="{X:.1f}" y2="{self.h - PAD_B + 4}" class="axis"/>'
                 f'<text x="{X:.1f}" y="{self.h - PAD_B + 16}" class="tick" text-anchor="middle">{fmt(t)}</text>')
    for t in nice_ticks(self.ylo, self.yhi, 5):
      Y = self.y(t)
      out.append(f'<line x1="{PAD_L}" y1="{Y:.1f}" x2="{self.w - PAD_R}" y2="{Y:.1f}" class="grid"/>'
                 f'<text x="{PAD_L - 6}" y="{Y + 4:.1f}" class="tick" text-anchor="end">{fmt(t)}</text>')
    out.append(f'<text x="{(PAD_L + self.w - PAD_R) / 2:.0f}" y="{self.h - 6}" class="label" '
               f'text-anchor="middle">{esc(xlabel)}</text>')
    out.append(f'<text x="14" y="{(PAD_T + self.h - PAD_B) / 2:.0f}" class="label" text-anchor="middle" '
               f'transform="rotate(-90 14 {(PAD_T + self.h - PAD_B) / 2:.0f})">{esc(ylabel)}</text>')
    return out


def svg(chart_id: str, body: Sequence[str], points: int, w=W, h=H, legend: Sequence[tuple[str, str]] = ()) -> str:
  leg = []
  x = PAD_L
  for color, name in legend:
    leg.append(f'<rect x="{x}" y="2" width="10" height="10" fill="{color}"/>'
               f'<text x="{x + 14}" y="11" class="tick">{esc(name)}</text>')
    x += 24 + 7 * len(name)
  return (f'<svg id="{esc(chart_id)}" class="chart" data-points="{points}" viewBox="0 0 {w} {h}" '
          f'width="{w}" height="{h}" role="img">'
          + "".join(leg) + "".join(body) + "</svg>")


def history(trials: Sequence[dict[str, Any]], fidelities: Sequence[str], best_curve: Sequence[tuple[int, float]],
            default_value: float | None) -> str:
  """trials: {t, fidelity, y (None if failed), failure, label}; best_curve: (t, best so far)."""
  ok = [r for r in trials if r["y"] is not None]
  n = max((r["t"] for r in trials), default=0)
  ys = [r["y"] for r in ok] + [v for _, v in best_curve]
  ylo, yhi = (min(ys), max(ys)) if ys else (0.0, 1.0)
  span = (yhi - ylo) or abs(yhi) or 1.0
  ylo, yhi = ylo - 0.12 * span, yhi + 0.05 * span
  f = Frame(-0.5, n + 0.5, ylo, yhi)
  body = f.axes("trial (order in which the search produced it)", "tokens/s")
  color = {fid: PALETTE[i % len(PALETTE)] for i, fid in enumerate(fidelities)}
  fail_y = f.y(ylo + 0.04 * span)
  pts = 0
  for r in trials:
    tip = f'<title>{esc(r["label"])}</title>'
    X = f.x(r["t"])
    if r["y"] is None:
      body.append(f'<path d="M{X - 3:.1f},{fail_y - 3:.1f}l6,6m0,-6l-6,6" stroke="{FAIL}" class="fail">{tip}</path>')
    else:
      body.append(f'<circle cx="{X:.1f}" cy="{f.y(r["y"]):.1f}" r="2.6" fill="{color[r["fidelity"]]}" '
                  f'fill-opacity="0.65" class="pt">{tip}</circle>')
    pts += 1
  if best_curve:
    d = ""
    for i, (t, v) in enumerate(best_curve):
      d += f"M{f.x(t):.1f},{f.y(v):.1f}" if i == 0 else f"H{f.x(t):.1f}V{f.y(v):.1f}"
    d += f"H{f.x(n):.1f}"
    body.append(f'<path d="{d}" class="best"><title>best so far at the top fidelity</title></path>')
  if default_value is not None:
    Y = f.y(default_value)
    body.append(f'<line x1="{PAD_L}" y1="{Y:.1f}" x2="{W - PAD_R}" y2="{Y:.1f}" class="default">'
                f'<title>the workload default: {fmt(default_value)} tokens/s</title></line>')
  legend = [(color[fid], fid) for fid in fidelities] + [(FAIL, "failed (x)"), ("#000", "best so far"),
                                                          ("#888", "default (dashed)")]
  return svg("history", body, pts, legend=legend)


def bars(items: Sequence[tuple[str, float]], chart_id: str, unit: str = "", w=W) -> str:
  """Horizontal bars, one per (label, value), in the order given."""
  h = 26 + 22 * len(items)
  vmax = max((v for _, v in items), default=1.0) or 1.0
  left, right = 260, 70
  body = []
  for i, (name, v) in enumerate(items):
    y = 14 + 22 * i
    bw = max(0.0, v) / vmax * (w - left - right)
    body.append(f'<text x="{left - 8}" y="{y + 13}" class="tick" text-anchor="end">{esc(name)}</text>'
                f'<rect x="{left}" y="{y}" width="{bw:.1f}" height="16" fill="{PALETTE[0]}" class="bar">'
                f'<title>{esc(name)}: {v:.4g}{esc(unit)}</title></rect>'
                f'<text x="{left + bw + 4:.1f}" y="{y + 13}" class="tick">{v:.3g}{esc(unit)}</text>')
  return svg(chart_id, body, len(items), w=w, h=h)


def scatter_vs(pairs: Sequence[tuple[float, float, str]], xlabel: str, ylabel: str, chart_id: str) -> str:
  """(x, y, label) points with the y = x diagonal."""
  if not pairs:
    return svg(chart_id, [], 0, h=60)
  vals = [p[0] for p in pairs] + [p[1] for p in pairs]
  lo, hi = min(vals), max(vals)
  span = (hi - lo) or abs(hi) or 1.0
  lo, hi = lo - 0.05 * span, hi + 0.05 * span
  f = Frame(lo, hi, lo, hi, w=420, h=360)
  body = f.axes(xlabel, ylabel)
  body.append(f'<line x1="{f.x(lo):.1f}" y1="{f.y(lo):.1f}" x2="{f.x(hi):.1f}" y2="{f.y(hi):.1f}" class="default">'
              '<title>y = x</title></line>')
  for x, y, label in pairs:
    body.append(f'<circle cx="{f.x(x):.1f}" cy="{f.y(y):.1f}" r="3" fill="{PALETTE[1]}" fill-opacity="0.7" '
                f'class="pt"><title>{esc(label)}</title></circle>')
  return svg(chart_id, body, len(pairs), w=420, h=360)


def _ramp(u: float) -> str:
  """0 -> light blue, 1 -> dark blue-purple (colour by throughput)."""
  u = min(1.0, max(0.0, u))
  a, b = (198, 219, 239), (37, 37, 120)
  return "#%02x%02x%02x" % tuple(int(a[i] + (b[i] - a[i]) * u) for i in range(3))


def parallel(axes: Sequence[tuple[str, list[Any]]], rows: Sequence[dict[str, Any]], objective: str,
             chart_id: str = "parallel") -> str:
  """One polyline per row across the knob axes (categorical: values in
  domain order) and a last axis for the objective; failed rows in red."""
  w, h = 900, 340
  top, bottom = 30, h - 40
  n_ax = len(axes) + 1
  xs = [90 + i * (w - 160) / max(1, n_ax - 1) for i in range(n_ax)]
  objs = [r[objective] for r in rows if r.get(objective) is not None]
  olo, ohi = (min(objs), max(objs)) if objs else (0.0, 1.0)
  if ohi <= olo:
    olo, ohi = olo - 1, ohi + 1

  def pos(i, v):
    if i == len(axes):
      return bottom - (v - olo) / (ohi - olo) * (bottom - top) if v is not None else bottom + 14
    values = axes[i][1]
    if v not in values:
      return bottom + 14  # inactive knob: below the axis
    k = values.index(v)
    return bottom - (k + 0.5) / len(values) * (bottom - top)

  body = []
  ordered = sorted(rows, key=lambda r: (r.get(objective) is not None, r.get(objective) or 0))
  for r in ordered:
    ys = [pos(i, r["values"].get(name)) for i, (name, _) in enumerate(axes)] + [pos(len(axes), r.get(objective))]
    d = "M" + " L".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys))
    v = r.get(objective)
    stroke = FAIL if v is None else _ramp((v - olo) / (ohi - olo))
    cls = "pline best-line" if r.get("best") else "pline"
    body.append(f'<path d="{d}" stroke="{stroke}" class="{cls}"><title>{esc(r["label"])}</title></path>')
  for i, (name, values) in enumerate(axes):
    body.append(f'<line x1="{xs[i]:.1f}" y1="{top}" x2="{xs[i]:.1f}" y2="{bottom}" class="axis"/>'
                f'<text x="{xs[i]:.1f}" y="{top - 10}" class="label" text-anchor="middle">{esc(name)}</text>')
    for v in values:
      body.append(f'<text x="{xs[i] + 4:.1f}" y="{pos(i, v) + 4:.1f}" class="tick">{esc(_short(v))}</text>')
  X = xs[-1]
  body.append(f'<line x1="{X:.1f}" y1="{top}" x2="{X:.1f}" y2="{bottom}" class="axis"/>'
              f'<text x="{X:.1f}" y="{top - 10}" class="label" text-anchor="middle">{esc(objective)}</text>')
  for t in nice_ticks(olo, ohi, 5):
    body.append(f'<text x="{X + 4:.1f}" y="{pos(len(axes), t) + 4:.1f}" class="tick">{fmt(t)}</text>')
  body.append(f'<text x="{w / 2:.0f}" y="{h - 8}" class="tick" text-anchor="middle">below an axis: knob '
              'inactive or trial failed (red)</text>')
  return svg(chart_id, body, len(rows), w=w, h=h)


def _short(v: Any) -> str:
  if isinstance(v, bool):
    return "on" if v else "off"
  if isinstance(v, int) and abs(v) >= 10_000:
    return fmt(v)
  return str(v)
