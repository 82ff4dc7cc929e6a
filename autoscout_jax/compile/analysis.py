"""Figures read off a compiled program: per-device memory, flops, and the
collectives in the optimized HLO (jax-free text and number handling).

Where it sits: `compile/probe.py` (in the compile child) passes XLA's
`memory_analysis()`, `cost_analysis()` and `as_text()` through these
functions; their results become a `Measurement`'s metrics.

- Memory (per device): peak = argument + output + temp - alias bytes, as
  the local evaluator counts it (donated parameters and optimizer state
  alias their outputs and count once). The breakdown stays in `extra`.
- Flops (per device): XLA counts a while-loop body once, so the compiled
  program's own figure undercounts scans over layers, micro-batches and
  attention blocks. `extrapolate_flops` takes the figures of loop-free
  reference lowerings with one and two layers per stack and extends them
  linearly to the real layer counts.
- Collectives: every all-reduce, all-gather, reduce-scatter, all-to-all and
  collective-permute (sync or async start) with the bytes of its largest
  buffer, each counted as often as it runs: a while body is weighted by its
  known trip count, nested loops multiply.
"""

from __future__ import annotations

import collections
import re
from typing import Any, Mapping, Sequence

COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
_DTYPE_BYTES = {"pred": 1, "s4": 0.5, "u4": 0.5, "s8": 1, "u8": 1, "bf16": 2, "f16": 2, "s16": 2, "u16": 2,
                "f32": 4, "s32": 4, "u32": 4, "f64": 8, "s64": 8, "u64": 8, "c64": 8, "c128": 16}
_ARRAY = re.compile(r"\b([a-z]+\d*(?:e\d+m\d+\w*)?)\[([\d,]*)\]")
_OP = re.compile(r"=\s*(.*?)\s+(" + "|".join(COLLECTIVES) + r")(-start)?\(")
_HEADER = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
_CALLS = re.compile(r"\b(body|calls|branch_computations|called_computations)=\{?([%\w.\-, ]+)\}?")
_TRIP = re.compile(r'"known_trip_count"\s*:\s*\{\s*"n"\s*:\s*"(\d+)"')
_COND = re.compile(r"\bcondition=%?([\w.\-]+)")
_CONST = re.compile(r"\bconstant\((\d+)\)")


def memory_figures(mem: Any) -> dict[str, int]:
  """Per-device bytes from `compiled.memory_analysis()`."""
  parts = {k: int(getattr(mem, f"{k}_size_in_bytes")) for k in
           ("argument", "output", "temp", "alias", "generated_code")}
  out = {f"{k}_bytes": v for k, v in parts.items()}
  out["peak_mem_bytes"] = parts["argument"] + parts["output"] + parts["temp"] - parts["alias"]
  return out


def cost_flops(cost: Any) -> float | None:
  """'flops' of a cost analysis (a dict, or a one-element list in older JAX)."""
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  if not cost or "flops" not in cost:
    return None
  return float(cost["flops"])


def extrapolate_flops(base: float, per_stack: Mapping[str, tuple[float, int]], base_layers: Mapping[str, int]) -> float:
  """Flops of the full model from a reference with `base_layers[s]` layers
  per stack (`base`) and, per stack, (flops with one more layer, real layer
  count): base + sum_s (real_s - base_s) * (plus_s - base)."""
  total = base
  for name, (plus, layers) in per_stack.items():
    total += (layers - base_layers[name]) * (plus - base)
  return total


def _array_bytes(shape_text: str) -> list[float]:
  out = []
  for dtype, dims in _ARRAY.findall(shape_text):
    size = _DTYPE_BYTES.get(dtype, 1 if dtype.startswith("f8") else None)
    if size is None:
      continue
    n = 1
    for d in dims.split(","):
      if d:
        n *= int(d)
    out.append(n * size)
  return out


def _computations(hlo: str) -> tuple[dict[str, list[str]], str | None]:
  comps: dict[str, list[str]] = {}
  entry, current = None, None
  for line in hlo.splitlines():
    if not line.startswith((" ", "\t", "}")) and line.rstrip().endswith("{"):
      m = _HEADER.match(line)
      if m:
        current = m.group(1)
        comps[current] = []
        if line.startswith("ENTRY"):
          entry = current
        continue
    if current is not None:
      comps[current].append(line)
  return comps, entry


def _trip_count(line: str, comps: Mapping[str, Sequence[str]]) -> float:
  """Iterations of a while op: XLA's known_trip_count where it is printed
  (GPU), else the loop bound of its condition (`i < N` with a constant N,
  the form lax.scan lowers to; TPU prints no trip count)."""
  known = _TRIP.search(line)
  if known:
    return float(known.group(1))
  cond = _COND.search(line)
  body = comps.get(cond.group(1), ()) if cond else ()
  if any("direction=LT" in l for l in body):
    bounds = [int(c) for l in body for c in _CONST.findall(l)]
    if bounds:
      return float(max(bounds))
  return 1.0


def _multiplicity(comps: Mapping[str, Sequence[str]], entry: str | None) -> dict[str, float]:
  """How many times each computation runs per execution of the entry."""
  edges: dict[str, list[tuple[str, float]]] = collections.defaultdict(list)
  for name, lines in comps.items():
    for line in lines:
      trip = _trip_count(line, comps) if " while(" in line else 1.0
      for kind, targets in _CALLS.findall(line):
        times = trip if kind == "body" else 1.0
        for t in targets.split(","):
          t = t.strip().lstrip("%")
          if t in comps:
            edges[name].append((t, times))
  mult: dict[str, float] = collections.defaultdict(float)
  roots = [entry] if entry else list(comps)
  order: list[str] = []
  seen: set[str] = set()

  def visit(n):  # post-order: callees after their callers once reversed
    if n in seen:
      return
    seen.add(n)
    for t, _ in edges.get(n, ()):
      visit(t)
    order.append(n)

  for r in roots:
    visit(r)
    mult[r] = max(mult[r], 1.0)
  for n in reversed(order):
    for t, times in edges.get(n, ()):
      mult[t] += mult[n] * times
  return mult


def collectives(hlo: str) -> dict[str, dict[str, float]]:
  """{kind: {'count', 'bytes', 'static_count'}} over the optimized HLO text
  (counts and bytes per device per step, loop trip counts applied)."""
  comps, entry = _computations(hlo)
  mult = _multiplicity(comps, entry)
  out: dict[str, dict[str, float]] = {}
  for name, lines in comps.items():
    times = mult.get(name, 0.0) if entry else 1.0
    for line in lines:
      m = _OP.search(line)
      if not m:
        continue
      sizes = _array_bytes(m.group(1))
      rec = out.setdefault(m.group(2), {"count": 0.0, "bytes": 0.0, "static_count": 0})
      rec["static_count"] += 1
      rec["count"] += times
      rec["bytes"] += times * (max(sizes) if m.group(3) else sum(sizes)) if sizes else 0.0
  return out
