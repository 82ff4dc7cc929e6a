"""Measurement: what an evaluator returns for one candidate at one fidelity.

Where it sits: evaluators produce them, the store appends them (one JSON
line each), designers learn from them, writers report them. A failed trial
(OOM, compile error, crash, hang) is a Measurement with `failure_kind` set,
never an exception that ends the search.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Iterable, Mapping

from autoscout_jax.space import Candidate

# Fidelities from cheapest to most trusted (DESIGN.md section 3).
FIDELITIES = ("analytic", "event", "compile", "profile")

# failure kinds
INVALID = "invalid"  # violates the space's constraints (never evaluated)
OOM = "oom"
COMPILE_ERROR = "compile_error"
CRASH = "crash"
TIMEOUT = "timeout"
SLO = "slo"  # ran, but missed the workload's latency objective (serving TTFT/TPOT)
FAILURE_KINDS = (INVALID, OOM, COMPILE_ERROR, CRASH, TIMEOUT, SLO)


def fidelity_rank(fidelity: str) -> int:
  if fidelity not in FIDELITIES:
    raise ValueError(f"unknown fidelity {fidelity!r}; known: {FIDELITIES}")
  return FIDELITIES.index(fidelity)


def _clean(x: Any) -> Any:
  if isinstance(x, float) and not math.isfinite(x):
    return None
  return x


@dataclasses.dataclass(frozen=True)
class Metrics:
  feasible: bool
  step_time_s: float | None = None
  tokens_per_s: float | None = None
  mfu: float | None = None
  peak_mem_bytes: float | None = None
  flops_per_step: float | None = None  # per device
  failure_kind: str | None = None
  error: str | None = None
  breakdown: Mapping[str, float] = dataclasses.field(default_factory=dict)
  extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if self.failure_kind is not None and self.failure_kind not in FAILURE_KINDS:
      raise ValueError(f"unknown failure_kind {self.failure_kind!r}")
    if not self.feasible and self.failure_kind is None:
      raise ValueError("an infeasible measurement needs a failure_kind")

  @classmethod
  def failed(cls, kind: str, error: str = "", **kw: Any) -> "Metrics":
    return cls(feasible=False, failure_kind=kind, error=error[-2000:] if error else None, **kw)

  def to_json(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    return {k: (_clean(v) if not isinstance(v, dict) else {a: _clean(b) for a, b in v.items()})
            for k, v in d.items()}

  @classmethod
  def from_json(cls, d: Mapping[str, Any]) -> "Metrics":
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})


@dataclasses.dataclass(frozen=True)
class Measurement:
  candidate: Candidate
  fidelity: str
  metrics: Metrics
  cost_s: float  # device-seconds it cost to obtain
  workload_key: str = ""
  cluster_key: str = ""
  wall_s: float = 0.0  # elapsed seconds on this host
  wallclock: float = dataclasses.field(default_factory=time.time)  # unix time when made
  provenance: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  settings_key: str = ""  # evaluator.settings_key: the measurement settings it was taken with
  repeat: int = 0  # 0: the first measurement of (candidate, fidelity); r > 0: a deliberate re-measurement

  @property
  def feasible(self) -> bool:
    return self.metrics.feasible

  @property
  def objective(self) -> float | None:
    """Throughput to maximize (tokens/s); None when infeasible."""
    if not self.metrics.feasible or self.metrics.tokens_per_s is None:
      return None
    return float(self.metrics.tokens_per_s)

  @property
  def cache_key(self) -> tuple[str, str, str, str, str, int]:
    return (self.workload_key, self.cluster_key, self.candidate.key, self.fidelity, self.settings_key,
            self.repeat)

  def to_json(self) -> dict[str, Any]:
    return {
        "candidate": self.candidate.to_json(),
        "candidate_key": self.candidate.key,
        "fidelity": self.fidelity,
        "metrics": self.metrics.to_json(),
        "cost_s": self.cost_s,
        "workload_key": self.workload_key,
        "cluster_key": self.cluster_key,
        "wall_s": self.wall_s,
        "wallclock": self.wallclock,
        "provenance": dict(self.provenance),
        "settings_key": self.settings_key,
        "repeat": self.repeat,
    }

  @classmethod
  def from_json(cls, d: Mapping[str, Any]) -> "Measurement":
    return cls(
        candidate=Candidate.from_json(d["candidate"]),
        fidelity=d["fidelity"],
        metrics=Metrics.from_json(d["metrics"]),
        cost_s=float(d["cost_s"]),
        workload_key=d.get("workload_key", ""),
        cluster_key=d.get("cluster_key", ""),
        wall_s=float(d.get("wall_s", 0.0)),
        wallclock=float(d.get("wallclock", 0.0)),
        provenance=d.get("provenance", {}),
        settings_key=d.get("settings_key", ""),
        repeat=int(d.get("repeat", 0)),
    )


class Repeats:
  """The measurements of each candidate at one fidelity, repeats together,
  and the incumbent they make: a candidate's score is the lower median of
  its repeats' objectives (with one measurement, that measurement), a
  candidate with any failed repeat is never the incumbent, and the
  incumbent's measurement is the repeat whose objective is that median.
  Among equal scores the candidate measured first wins. The search loop,
  its trial log and scoutbench's scoring all pick the answer this way."""

  def __init__(self, fidelity: str):
    self.fidelity = fidelity
    self.by_key: dict[str, list[Measurement]] = {}
    self.failed: set[str] = set()
    self._best: Measurement | None = None

  def add(self, m: Measurement) -> bool:
    """Takes `m` if it is at this fidelity (not an invalid marker); True
    when the incumbent may have changed."""
    if m.fidelity != self.fidelity or m.metrics.failure_kind == INVALID:
      return False
    key = m.candidate.key
    self.by_key.setdefault(key, []).append(m)
    if not m.feasible:
      self.failed.add(key)
    if self._best is not None and self._best.candidate.key == key:
      self._best = self._pick()  # the incumbent's own score moved: look at everyone again
    else:
      s = self.score(key)
      if s is not None and (self._best is None or s.objective > self._best.objective):
        self._best = s
    return True

  def score(self, key: str) -> Measurement | None:
    """The lower-median repeat of a candidate; None if it failed or has no objective."""
    if key in self.failed:
      return None
    ms = sorted((m for m in self.by_key.get(key, ()) if m.objective is not None), key=lambda m: m.objective)
    return ms[(len(ms) - 1) // 2] if ms else None

  def _pick(self) -> Measurement | None:
    best = None
    for key in self.by_key:
      m = self.score(key)
      if m is not None and (best is None or m.objective > best.objective):
        best = m
    return best

  @property
  def best(self) -> Measurement | None:
    return self._best

  def count(self, key: str) -> int:
    return len(self.by_key.get(key, ()))


def incumbent(measurements: Iterable[Measurement], fidelity: str) -> Measurement | None:
  """The answer of a run's measurements at `fidelity` (see `Repeats`)."""
  book = Repeats(fidelity)
  for m in measurements:
    book.add(m)
  return book.best
