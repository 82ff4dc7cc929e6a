"""The designers scoutbench compares: a registry of names -> factories.

Where it sits: runner.py builds one designer per (task, seed) from this
registry and runs it through the search loop. Every factory gets the same
view of a task: its `Problem` (space, fidelities on offer, expert default)
and the seed -- never the truth.

Entries name a factory directly or lazily as "module:attribute", so
optional designers (Optuna, SMAC3: the `bench` extra) are imported only
when asked for, and a missing extra is reported before anything runs. A
factory is called as `factory(problem, seed)`, like a gin DESIGNER. The project's own designer registers here too (add
an entry to `DESIGNERS`, or call `register` from its module).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import time
from typing import Any, Callable, Sequence

from autoscout_jax.designers.base import Designer
from autoscout_jax.designers.exhaustive import ExhaustiveSearch
from autoscout_jax.designers.random_search import RandomSearch
from autoscout_jax.measurement import Measurement
from autoscout_jax.problem import Problem
from autoscout_jax.space import Candidate

BENCH_EXTRA = "pip install -e '.[bench]'"


@dataclasses.dataclass(frozen=True)
class DesignerEntry:
  factory: Callable[..., Designer] | str  # or "package.module:attribute"
  batch_size: int = 1  # suggestions per round of the loop
  requires: tuple[str, ...] = ()  # importable modules it needs
  install: str = ""  # how to get them
  doc: str = ""
  suites: tuple[str, ...] = ("quick", "measured", "full")  # the suites that run it by default
  profiles_free: bool = False  # its top-fidelity profiles are not charged (sim_argmax: scored, not paid)


class ExpertDefault(Designer):
  """The workload's declared default configuration, evaluated once."""

  def __init__(self, problem: Problem, seed: int = 0):
    super().__init__(problem, seed)
    if problem.default is None:
      raise ValueError("the expert designer needs the problem's default configuration")
    self._todo = [problem.default]

  def suggest(self, n: int) -> list[Candidate]:
    out, self._todo = self._todo[:n], self._todo[n:]
    return out


DESIGNERS: dict[str, DesignerEntry] = {
    "random": DesignerEntry(RandomSearch, doc="uniform over valid candidates, no repeats"),
    "exhaustive": DesignerEntry(ExhaustiveSearch, doc="every valid candidate in a seeded random order"),
    "expert": DesignerEntry(ExpertDefault, doc="the workload's default configuration, once"),
    "optuna_tpe": DesignerEntry("autoscout_jax.designers.optuna_tpe:OptunaTPE", requires=("optuna",),
                                install=BENCH_EXTRA, doc="Optuna TPE, define-by-run"),
    "smac": DesignerEntry("autoscout_jax.designers.smac:SMACDesigner", requires=("smac", "ConfigSpace"),
                          install=BENCH_EXTRA, doc="SMAC3 HPO facade (random forest + EI)"),
    # The baselines a skeptic runs first (autoscout_jax/bench/baselines.py).
    "cheap_topk": DesignerEntry("autoscout_jax.bench.baselines:CheapTopK",
                                doc="score the space with the cheapest fidelity, profile in its order"),
    "sim_argmax": DesignerEntry("autoscout_jax.bench.baselines:SimArgmax", profiles_free=True,
                                doc="the cheapest fidelity's pick, scored by its truth, no profile charged"),
    "optuna_tpe_warm": DesignerEntry("autoscout_jax.bench.baselines:optuna_tpe_warm", requires=("optuna",),
                                     install=BENCH_EXTRA, doc="Optuna TPE, the cheap fidelity's top 10 enqueued first"),
    "optuna_gp": DesignerEntry("autoscout_jax.bench.baselines:optuna_gp", requires=("optuna", "torch"),
                               install=BENCH_EXTRA, suites=("measured", "full"),
                               doc="Optuna GPSampler (PyTorch, CPU build; seconds per proposal: not in quick)"),
    # The project's designer and its ablations (autoscout_jax/designers/autoscout/factories.py).
    # Ablations run in the full suite only: the quick one must stay under 10 minutes.
    **{n: DesignerEntry(f"autoscout_jax.designers.autoscout.factories:{n}", doc=d, suites=s) for n, d, s in (
        ("autoscout", "AutoScout: surrogate-guided sparse + dense search, bandit, priorities, cheap screens",
         ("quick", "measured", "full")),
        ("autoscout_no_dense", "AutoScout without gradient relaxation of dense knobs", ("full",)),
        ("autoscout_no_priority", "AutoScout without knob prioritization", ("full",)),
        ("autoscout_top_only", "AutoScout without cheap fidelities (profiles only)", ("full",)),
        ("autoscout_fixed_split", "AutoScout without the bandit (fixed 50/50 sparse/dense split)", ("full",)),
        ("autoscout_no_cheap_order", "AutoScout without the cheap-order stage (sparse/dense search only)",
         ("full",)))},
}
PEERS = ("optuna_tpe", "smac")  # the external optimizers (the older ratio columns)
# The bar of issue 13: AutoScout's cost to 2 % against the best of these, per task.
BASELINES = ("cheap_topk", "optuna_tpe_warm", "optuna_gp", "optuna_tpe", "smac")
PEER_PACKAGES = ("optuna", "smac", "ConfigSpace", "torch")  # versions reported in results.json


def peer_versions() -> dict[str, str | None]:
  """Installed versions of the peer libraries (None: not installed)."""
  from importlib import metadata
  out = {}
  for p in PEER_PACKAGES:
    try:
      out[p] = metadata.version(p)
    except metadata.PackageNotFoundError:
      out[p] = None
  return out


def register(name: str, entry: DesignerEntry) -> None:
  DESIGNERS[name] = entry


def suite_designers(suite: str) -> list[str]:
  return [n for n, e in DESIGNERS.items() if suite in e.suites]


def missing_requirements(name: str) -> list[str]:
  return [m for m in DESIGNERS[name].requires if importlib.util.find_spec(m) is None]


def check_designers(names: Sequence[str]) -> None:
  """One clear error for an unknown designer or a missing optional extra."""
  from autoscout_jax.bench.tasks import BenchError
  unknown = [n for n in names if n not in DESIGNERS]
  if unknown:
    raise BenchError(f"unknown designer(s) {unknown}; known: {sorted(DESIGNERS)}")
  for n in names:
    miss = missing_requirements(n)
    if miss:
      e = DESIGNERS[n]
      raise BenchError(f"designer {n!r} needs {', '.join(miss)}, which is not installed; "
                       f"install the bench extra: {e.install or 'pip install ' + ' '.join(miss)}")


def _resolve(factory: Callable[..., Designer] | str) -> Callable[..., Designer]:
  if callable(factory):
    return factory
  module, _, attr = factory.partition(":")
  return getattr(importlib.import_module(module), attr)


def make_designer(name: str, problem: Problem, seed: int) -> Designer:
  return _resolve(DESIGNERS[name].factory)(problem, seed)


class TimedDesigner(Designer):
  """Wraps a designer and counts the CPU seconds its suggest and update
  calls take (process time: what the optimizer itself costs)."""

  def __init__(self, inner: Designer):
    super().__init__(inner.problem, inner.seed)
    self.inner = inner
    self.cpu_s = 0.0
    self.suggested = 0

  def suggest(self, n: int) -> list[Candidate]:
    t0 = time.process_time()
    out = self.inner.suggest(n)
    self.cpu_s += time.process_time() - t0
    self.suggested += len(out)
    return out

  def update(self, measurements: Sequence[Measurement]) -> None:
    t0 = time.process_time()
    self.inner.update(measurements)
    self.cpu_s += time.process_time() - t0
