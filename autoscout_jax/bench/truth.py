"""Truth tables: every valid candidate of a benchmark task, measured at the
"profiling" fidelity, with repeats so the noise is known.

Where it sits: `tasks.build_task` loads or makes one per task; the replay
evaluator (replay.py) serves designers one recorded repeat per candidate and
charges its recorded cost; metrics.py scores what designers found against
`true_tokens_per_s` and its maximum, the optimum. Designers never see a
table except through paid evaluations.

Two ways to make one:
- `simulate_truth`: a simulator (F1) scores every candidate once; each
  repeat multiplies its step time by seeded log-normal noise; the cost of a
  repeat is what profiling it would take on the cluster, in device-seconds:
  (step time x profiled steps + launch/compile overhead) x devices (a
  failing run pays the overhead only). The truth is the noiseless value.
- `measure_truth`: a real profiler (F3) measures every candidate `repeats`
  times (repeat r over all candidates, then r+1, so slow drifts of the
  machine spread over candidates); progress is kept in append-only stores
  under the workdir, so a killed measurement resumes. The truth is the
  median of a candidate's feasible repeats (on a shared machine a repeat
  can be slowed several-fold by a neighbour's burst; the median ignores one).

On disk a table is one JSON object with columns (a list per field, a row
per candidate, a column per repeat), never pickle.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from autoscout_jax.measurement import FAILURE_KINDS, Measurement
from autoscout_jax.problem import Problem
from autoscout_jax.space import Candidate, SearchSpace
from autoscout_jax.store import MeasurementStore

FORMAT = "scoutbench-truth-v1"


class TruthError(ValueError):
  """A truth table that is missing, malformed or made for another task."""


@dataclasses.dataclass
class TruthTable:
  """Columns over candidates (N) x repeats (R). `failure_kind[i][r]` is None
  for a feasible repeat; `tokens_per_s` / `step_time_s` are NaN otherwise."""

  task: str
  workload_key: str
  cluster_key: str
  source_fidelity: str  # the fidelity that produced it: "event" (simulated) or "profile"
  candidates: list[Candidate]
  tokens_per_s: np.ndarray  # f64[N, R]
  step_time_s: np.ndarray  # f64[N, R]
  cost_s: np.ndarray  # f64[N, R] device-seconds each repeat cost
  failure_kind: list[list[str | None]]
  true_tokens_per_s: np.ndarray  # f64[N], NaN when no repeat is feasible
  peak_mem_bytes: np.ndarray | None = None  # f64[N, R]
  extra: list[list[dict]] | None = None  # per repeat, e.g. every timed step
  provenance: dict[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    self.index = {c: i for i, c in enumerate(self.candidates)}
    n = len(self.candidates)
    for name in ("tokens_per_s", "step_time_s", "cost_s"):
      arr = getattr(self, name)
      if arr.ndim != 2 or arr.shape[0] != n or arr.shape[1] < 1:
        raise TruthError(f"truth table {self.task!r}: column {name} has shape {arr.shape}, expected ({n}, R)")
    if len(self.index) != n:
      raise TruthError(f"truth table {self.task!r}: a candidate appears twice")

  @property
  def repeats(self) -> int:
    return int(self.cost_s.shape[1])

  @property
  def optimum(self) -> float:
    if not np.any(np.isfinite(self.true_tokens_per_s)):
      raise TruthError(f"truth table {self.task!r}: no candidate is feasible")
    return float(np.nanmax(self.true_tokens_per_s))

  def true_value(self, cand: Candidate) -> float | None:
    i = self.index.get(Candidate.of(cand.values))
    if i is None:
      return None
    v = float(self.true_tokens_per_s[i])
    return v if math.isfinite(v) else None

  def median_cost_s(self) -> float:
    """The median cost of profiling a feasible candidate: the unit budgets
    are counted in (failed launches are cheaper and would shrink it)."""
    ok = np.array([[k is None for k in row] for row in self.failure_kind], bool)
    return float(np.median(self.cost_s[ok] if ok.any() else self.cost_s))

  def noise_cv(self) -> float:
    """Median coefficient of variation over repeats of feasible candidates."""
    t = self.step_time_s
    ok = np.all(np.isfinite(t), axis=1)
    if self.repeats < 2 or not ok.any():
      return 0.0
    return float(np.median(np.std(t[ok], axis=1, ddof=1) / np.mean(t[ok], axis=1)))

  # --- JSON -------------------------------------------------------------------
  def to_json(self) -> dict[str, Any]:
    def col(a):
      return [[None if not math.isfinite(x) else float(x) for x in row] for row in a]
    out = {
        "format": FORMAT, "task": self.task, "workload_key": self.workload_key,
        "cluster_key": self.cluster_key, "source_fidelity": self.source_fidelity,
        "provenance": self.provenance, "repeats": self.repeats,
        "candidates": [c.to_json() for c in self.candidates],
        "tokens_per_s": col(self.tokens_per_s), "step_time_s": col(self.step_time_s),
        "cost_s": col(self.cost_s), "failure_kind": self.failure_kind,
        "true_tokens_per_s": [None if not math.isfinite(x) else float(x) for x in self.true_tokens_per_s],
    }
    if self.peak_mem_bytes is not None:
      out["peak_mem_bytes"] = col(self.peak_mem_bytes)
    if self.extra is not None:
      out["extra"] = self.extra
    return out

  @classmethod
  def from_json(cls, d: Mapping[str, Any], space: SearchSpace | None = None) -> "TruthTable":
    if d.get("format") != FORMAT:
      raise TruthError(f"not a scoutbench truth table (format {d.get('format')!r}, expected {FORMAT!r})")

    def arr(name):
      return np.array([[np.nan if x is None else x for x in row] for row in d[name]], np.float64)

    make = space.from_json if space is not None else Candidate.from_json
    true = np.array([np.nan if x is None else x for x in d["true_tokens_per_s"]], np.float64)
    return cls(task=d["task"], workload_key=d["workload_key"], cluster_key=d["cluster_key"],
               source_fidelity=d["source_fidelity"], candidates=[make(c) for c in d["candidates"]],
               tokens_per_s=arr("tokens_per_s"), step_time_s=arr("step_time_s"), cost_s=arr("cost_s"),
               failure_kind=[list(r) for r in d["failure_kind"]], true_tokens_per_s=true,
               peak_mem_bytes=arr("peak_mem_bytes") if "peak_mem_bytes" in d else None,
               extra=d.get("extra"), provenance=dict(d.get("provenance", {})))


def save_table(table: TruthTable, path: str) -> None:
  """Written to a temporary name, then renamed: a reader never sees half a table."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(table.to_json(), f, separators=(",", ":"), allow_nan=False)
    f.write("\n")
  os.replace(tmp, path)


def load_table(path: str, space: SearchSpace | None = None) -> TruthTable:
  if not os.path.exists(path):
    raise TruthError(f"truth table {path!r} does not exist")
  try:
    with open(path, encoding="utf-8") as f:
      data = json.load(f)
  except (OSError, ValueError) as e:
    raise TruthError(f"truth table {path!r} is unreadable: {e}") from e
  try:
    return TruthTable.from_json(data, space)
  except (KeyError, TypeError) as e:
    raise TruthError(f"truth table {path!r} is malformed: missing or bad field {e}") from e


def _failure(m: Measurement) -> str | None:
  if m.feasible:
    return None
  return m.metrics.failure_kind if m.metrics.failure_kind in FAILURE_KINDS else "crash"


def simulate_truth(task: str, problem: Problem, candidates: Sequence[Candidate], evaluator,
                   profiled_steps: int = 10, overhead_s: float = 120.0, noise: float = 0.02,
                   repeats: int = 3, seed: int = 0, chunk: int = 4096,
                   progress: Callable[[str], None] | None = None) -> TruthTable:
  """See module docstring. `evaluator` is a simulator Evaluator (F1)."""
  if repeats < 1 or profiled_steps < 1 or overhead_s < 0 or noise < 0:
    raise TruthError(f"task {task!r}: repeats and profiled_steps must be >= 1, overhead_s and noise >= 0")
  workload, cluster = problem.workload, problem.cluster
  cands = list(candidates)
  n, devices = len(cands), float(cluster.num_devices)
  base = np.full(n, np.nan)
  mem = np.full(n, np.nan)
  kinds: list[str | None] = [None] * n
  t0 = time.time()
  for lo in range(0, n, chunk):
    ms = evaluator.evaluate(problem, cands[lo:lo + chunk])
    for j, m in enumerate(ms):
      kinds[lo + j] = _failure(m)
      if m.metrics.peak_mem_bytes is not None:
        mem[lo + j] = m.metrics.peak_mem_bytes
      if m.feasible and m.metrics.step_time_s:
        base[lo + j] = m.metrics.step_time_s
    if progress is not None:
      progress(f"{task}: simulated {min(lo + chunk, n)}/{n} candidates ({time.time() - t0:.0f} s)")
  rng = np.random.default_rng(seed)
  z = rng.standard_normal((n, repeats))
  step = base[:, None] * np.exp(noise * z - 0.5 * noise ** 2)  # mean-preserving log-normal
  tokens = workload.tokens_per_step / step
  feasible = np.isfinite(base)
  cost = np.where(feasible[:, None], step * profiled_steps + overhead_s, overhead_s) * devices
  return TruthTable(
      task=task, workload_key=workload.key, cluster_key=cluster.key,
      source_fidelity=getattr(evaluator, "fidelity", "event"), candidates=cands,
      tokens_per_s=tokens, step_time_s=step, cost_s=cost,
      failure_kind=[[k] * repeats for k in kinds],
      true_tokens_per_s=workload.tokens_per_step / base,
      peak_mem_bytes=np.repeat(mem[:, None], repeats, axis=1),
      provenance=dict(kind="simulated", simulator=type(evaluator).__name__, profiled_steps=profiled_steps,
                      overhead_s=overhead_s, noise=noise, seed=seed,
                      date=time.strftime("%Y-%m-%d"), seconds=round(time.time() - t0, 1)))


def measure_truth(task: str, problem: Problem, candidates: Sequence[Candidate], evaluator,
                  workdir: str, repeats: int = 2, batch: int = 8,
                  progress: Callable[[str], None] | None = None) -> TruthTable:
  """See module docstring. `evaluator` is a real profiler (F3); its
  measurements are kept in `workdir/repeat_<r>/measurements.jsonl`."""
  if repeats < 2:
    raise TruthError(f"task {task!r}: a measured truth needs >= 2 repeats to know its noise, got {repeats}")
  cands = list(candidates)
  wk, ck = problem.workload.key, problem.cluster.key
  fid = getattr(evaluator, "fidelity", "profile")
  stores = [MeasurementStore(os.path.join(workdir, f"repeat_{r}")) for r in range(repeats)]
  t0 = time.time()
  for r, store in enumerate(stores):
    todo = [c for c in cands if store.get(wk, ck, c.key, fid) is None]
    for lo in range(0, len(todo), batch):
      part = todo[lo:lo + batch]
      for c, m in zip(part, evaluator.evaluate(problem, part)):
        store.append(dataclasses.replace(m, candidate=Candidate.of(c.values), fidelity=fid,
                                         workload_key=wk, cluster_key=ck))
      if progress is not None:
        done = len(cands) - len(todo) + lo + len(part)
        progress(f"{task}: repeat {r + 1}/{repeats}: {done}/{len(cands)} candidates "
                 f"({time.time() - t0:.0f} s)")
  rows = [[s.get(wk, ck, c.key, fid) for s in stores] for c in cands]

  def col(get):
    return np.array([[get(m) for m in row] for row in rows], np.float64)

  tokens = col(lambda m: m.objective if m.objective is not None else np.nan)
  true = np.array([np.median(row[np.isfinite(row)]) if np.isfinite(row).any() else np.nan for row in tokens])
  settings = {k: v for k, v in vars(evaluator).items()
              if isinstance(v, (bool, int, float, str)) and not k.startswith("_")}
  prov = dict(kind="measured", date=time.strftime("%Y-%m-%d"), repeats=repeats,
              evaluator=f"{type(evaluator).__name__}({', '.join(f'{k}={v}' for k, v in sorted(settings.items()))})")
  for key in ("jax_version", "jaxlib_version", "device_kind", "platform", "device_count"):
    vals = []
    for row in rows:
      for m in row:
        v = m.provenance.get(key)
        if v is not None and v not in vals:
          vals.append(v)
    if vals:
      prov[key] = vals[0] if len(vals) == 1 else vals
  return TruthTable(
      task=task, workload_key=wk, cluster_key=ck, source_fidelity=fid, candidates=cands,
      tokens_per_s=tokens,
      step_time_s=col(lambda m: m.metrics.step_time_s if m.feasible and m.metrics.step_time_s else np.nan),
      cost_s=col(lambda m: m.cost_s), failure_kind=[[_failure(m) for m in row] for row in rows],
      true_tokens_per_s=true,
      peak_mem_bytes=col(lambda m: m.metrics.peak_mem_bytes if m.metrics.peak_mem_bytes is not None else np.nan),
      extra=[[_kept_extra(m) for m in row] for row in rows],
      provenance=prov)


KEPT_EXTRA = ("ttft_ms_p50", "ttft_ms_p90", "tpot_ms_p50", "tpot_ms_p90", "slo_log_margin", "ttft_log_margin",
              "tpot_log_margin")


def _kept_extra(m) -> dict:
  """What a recorded row keeps of a measurement's extra figures: every timed
  step, and a serving profile's latencies and SLO margin (a miss included:
  by how much it missed is measured data)."""
  extra = m.metrics.extra or {}
  out = {"step_times_s": list(extra.get("step_times_s", []))}
  out.update({k: extra[k] for k in KEPT_EXTRA if extra.get(k) is not None})
  return out
