"""Benchmark tasks: a workload on a cluster, its search space, the truth of
that space, and what designers may use besides the truth.

Where it sits: each `gin/bench/<task>.gin` binds `task_spec(...)` (the
entry layer, bench/__main__.py, parses one task file at a time); `build_task`
turns a spec into a `Task`: the (optionally restricted) space, its valid
candidates, the truth table (from the workdir cache, a committed file, or
made now), the expert default and the budgets. runner.py runs designers
on it through the replay evaluator (replay.py).

Truth sources:
- `SimulatedProfiling`: a simulator (F1) scores the whole valid space;
  profiling a candidate costs its simulated steps plus a launch/compile
  overhead, in device-seconds, with seeded noise on repeats (truth.py).
  Tables are cached in the workdir under a digest of everything that
  determines them, including the simulator package's source.
- `RecordedProfiling`: a table measured once on real devices (F3) and
  committed to the repository, replayed on any machine; `remeasure=True`
  measures it again here (resumably, in the workdir) and rewrites it.
- `tables.TableProfiling`: a measured CSV (vTrain's A100 sweeps, a user's
  own); the candidates are its rows (tables.py).
- `reality_gap.RealityGapProfiling`: F1 times seeded effects F0 does not
  model (reality_gap.py), cached like a simulated truth.

Every task says what its truth is (`truth_kind`): `measured`,
`simulated_same_model` (F1 truth beside an F0 screen that shares its cost
model: flatters designers that trust F0) or `reality_gap`.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import inspect
import json
import math
import os
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from autoscout_jax.bench import tables as tables_lib
from autoscout_jax.bench import truth as truth_lib
from autoscout_jax.bench.reality_gap import RealityGapProfiling, gap_truth
from autoscout_jax.evaluator import Evaluator
from autoscout_jax.problem import DefaultError, Problem, expert_default
from autoscout_jax.space import (Boolean, Candidate, Categorical, IntRange, Ordinal, SearchSpace,
                                 SpaceError, When)

SUITES = ("quick", "measured", "full", "compile")  # compile: tasks whose screen compiles for the real target (slow)
TRUTH_KINDS = ("measured", "simulated_same_model", "reality_gap")


class BenchError(ValueError):
  """Bad benchmark input; the message names the problem."""


def repo_root() -> str:
  return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclasses.dataclass(frozen=True)
class SimulatedProfiling:
  evaluator: Evaluator  # the simulator that plays "profiling" (F1)
  profiled_steps: int = 10
  overhead_s: float = 120.0  # launch + compile per trial, seconds (x devices)
  noise: float = 0.02  # log-normal sigma of repeats
  repeats: int = 3
  seed: int = 0


@dataclasses.dataclass(frozen=True)
class RecordedProfiling:
  table: str  # path of the committed table, relative to the repository root
  evaluator: Evaluator | None = None  # the profiler that (re-)measures it (F3)
  repeats: int = 3
  batch: int = 8


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """`restrict` narrows knob domains ({knob: allowed values}) so the truth
  stays measurable; `cheap` are evaluators designers may call at a fixed cost
  per candidate (device-seconds; e.g. F0 next to a simulated F1 truth);
  `budget_evals` are the three budgets, in multiples of the median cost of
  profiling one feasible candidate."""

  name: str
  workload: Any
  cluster: Any
  space_fn: Callable[..., SearchSpace]
  truth: SimulatedProfiling | RecordedProfiling | tables_lib.TableProfiling | RealityGapProfiling
  space_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  restrict: Mapping[str, Sequence[Any]] = dataclasses.field(default_factory=dict)
  cheap: Sequence[Evaluator] = ()
  cheap_cost_s: float = 1.0
  budget_evals: tuple[float, ...] = (10.0, 25.0, 50.0)
  suites: tuple[str, ...] = SUITES
  max_candidates: int = 100_000
  doc: str = ""
  cheap_costs_s: Mapping[str, float] = dataclasses.field(default_factory=dict)  # per fidelity, over cheap_cost_s
  table: tables_lib.TableParts | None = None  # a measured table's rows (TableProfiling truth)

  @property
  def truth_kind(self) -> str:
    if isinstance(self.truth, RealityGapProfiling):
      return "reality_gap"
    if isinstance(self.truth, SimulatedProfiling):
      return "simulated_same_model"
    return "measured"


def task_spec(name: str, workload: Any = None, cluster: Any = None,
              space_fn: Callable[..., SearchSpace] | None = None, truth: Any = None,
              space_kwargs: Mapping[str, Any] | None = None,
              restrict: Mapping[str, Sequence[Any]] | None = None, cheap: Sequence[Evaluator] = (),
              cheap_cost_s: float = 1.0, budget_evals: Sequence[float] = (10.0, 25.0, 50.0),
              suites: Sequence[str] = SUITES, max_candidates: int = 100_000, doc: str = "",
              cheap_costs_s: Mapping[str, float] | None = None) -> TaskSpec:
  """The gin-bound constructor of a task (one per gin/bench/*.gin file). A
  `TableProfiling` truth brings its own workload, cluster and space (the
  family's, restricted to the table's rows)."""
  if not name or not isinstance(name, str):
    raise BenchError("a task needs a name")
  if truth is None:
    raise BenchError(f"task {name!r}: needs a truth (SimulatedProfiling, RecordedProfiling, TableProfiling or "
                     f"RealityGapProfiling)")
  parts = None
  if isinstance(truth, tables_lib.TableProfiling):
    try:
      parts = tables_lib.table_task_parts(truth)
    except tables_lib.TableError as e:
      raise BenchError(f"task {name!r}: {e}") from None
    workload, cluster, space_fn = parts.workload, parts.cluster, parts.space_fn
    space_kwargs = {**parts.space_kwargs, **dict(space_kwargs or {})}
    restrict = {**parts.restrict, **dict(restrict or {})}
  if workload is None or cluster is None or space_fn is None:
    raise BenchError(f"task {name!r}: needs a workload, a cluster and a space_fn (or a measured table)")
  budgets = tuple(float(b) for b in budget_evals)
  if len(budgets) != 3 or any(not b > 0 for b in budgets) or list(budgets) != sorted(budgets):
    raise BenchError(f"task {name!r}: budget_evals must be three increasing positive numbers, got {list(budget_evals)}")
  bad = [s for s in suites if s not in SUITES]
  if bad:
    raise BenchError(f"task {name!r}: unknown suite(s) {bad}; known: {list(SUITES)}")
  costs = {str(k): float(v) for k, v in dict(cheap_costs_s or {}).items()}
  if cheap_cost_s < 0 or any(v < 0 for v in costs.values()):
    raise BenchError(f"task {name!r}: cheap_cost_s and cheap_costs_s must be >= 0")
  return TaskSpec(name, workload, cluster, space_fn, truth, dict(space_kwargs or {}), dict(restrict or {}),
                  tuple(cheap), float(cheap_cost_s), budgets, tuple(suites), int(max_candidates), doc, costs,
                  parts)


# --- restricting a space ------------------------------------------------------------------
def restrict_space(space: SearchSpace, restrict: Mapping[str, Sequence[Any]]) -> SearchSpace:
  """The space with some knob domains narrowed. Numbers and plain-space
  categoricals shrink their domain; a boolean pinned to one value becomes a
  one-choice categorical; a knob whose condition can no longer hold is
  dropped. In a simulator space (vectorized constraints that read
  categorical codes) categoricals keep their domain and a pinning
  constraint removes the other values instead."""
  if not restrict:
    return space
  unknown = sorted(set(restrict) - set(space.names))
  if unknown:
    raise BenchError(f"restrict names unknown knob(s) {unknown} of space {space.name!r}; knobs: {list(space.names)}")
  vec = hasattr(space, "vec_constraints")
  knobs, domains, pins = [], {}, {}
  for k in space.knobs:
    dom = k.finite_values()
    if k.name in restrict:
      if dom is None:
        raise BenchError(f"restrict: knob {k.name!r} is continuous; only finite knobs can be restricted")
      want = list(restrict[k.name])
      missing = [v for v in want if v not in dom]
      if missing:
        raise BenchError(f"restrict: knob {k.name!r} has no value(s) {missing}; its domain is {list(dom)}")
      allowed = tuple(v for v in dom if v in want)
      if vec and isinstance(k, (Categorical, Boolean)):
        pins[k.name] = allowed
      else:
        k = _narrow(k, allowed)
    when = []
    for c in k.when:
      vals = tuple(v for v in c.values if v in domains.get(c.parent, ()))
      when.append(When(c.parent, vals))
    if any(not c.values for c in when):
      continue  # its condition can never hold any more
    if tuple(when) != k.when:
      k = _with_when(k, tuple(when))
    knobs.append(k)
    domains[k.name] = k.finite_values() or ()
  name = space.name + "|" + ",".join(f"{n}={list(v)}" for n, v in sorted(restrict.items()))
  try:
    if vec:
      from autoscout_jax.sim.vspace import SimSpace, VecConstraint
      cons = list(space.vec_constraints) + [_pin(n, space, vals, VecConstraint) for n, vals in pins.items()]
      return SimSpace(knobs, cons, groups=space.groups, facts=space.facts, name=name, family=space.family,
                      plan=space.planner)
    return SearchSpace(knobs, space.constraints, groups=space.groups, facts=space.facts, name=name,
                       family=space.family)
  except SpaceError as e:
    raise BenchError(f"restrict {dict(restrict)} leaves no valid space: {e}") from e


def _narrow(k, allowed: tuple) -> Any:
  default = k.default if k.default in allowed else allowed[0]
  if isinstance(k, IntRange) or isinstance(k, Ordinal):
    return Ordinal(k.name, default=default, when=k.when, doc=k.doc, values=allowed,
                   log=getattr(k, "log", False))
  if isinstance(k, Boolean):
    return Categorical(k.name, default=default, when=k.when, doc=k.doc, choices=allowed)
  return dataclasses.replace(k, choices=allowed, default=default)


def _with_when(k, when: tuple) -> Any:
  if isinstance(k, IntRange):  # its own __init__ (low/high/step), not the dataclass one
    return IntRange(k.name, k.low, k.high, k.step, default=k.default, when=when, doc=k.doc, log=k.log)
  return dataclasses.replace(k, when=when)


def _pin(name: str, space, allowed: tuple, VecConstraint) -> Any:
  codes = [float(space.code(name, v)) for v in allowed]

  def ok(t, f):
    col = t[name]
    return np.isnan(col) | np.isin(col, codes)

  return VecConstraint(f"bench_restrict_{name}", ok,
                       lambda v, f: f"{name}={v.get(name)!r}: this benchmark restricts it to {list(allowed)}",
                       f"{name} in {list(allowed)} (benchmark restriction)")


# --- the built task -----------------------------------------------------------------------
@dataclasses.dataclass
class Task:
  spec: TaskSpec
  space: SearchSpace
  candidates: list[Candidate]
  table: truth_lib.TruthTable
  default: Candidate
  budgets_s: tuple[float, float, float]
  # what each cheap fidelity said per candidate key, shared by the task's runs (replay.FixedCostEvaluator)
  cheap_memo: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

  @property
  def name(self) -> str:
    return self.spec.name

  @property
  def workload(self):
    return self.spec.workload

  @property
  def cluster(self):
    return self.spec.cluster

  @property
  def optimum(self) -> float:
    return self.table.optimum

  @property
  def expert_value(self) -> float | None:
    return self.table.true_value(self.default)

  def summary(self) -> dict[str, Any]:
    return dict(name=self.name, truth_kind=self.spec.truth_kind, space=self.space.name,
                candidates=len(self.candidates),
                optimum_tokens_per_s=self.optimum, expert_tokens_per_s=self.expert_value,
                median_eval_cost_s=self.table.median_cost_s(), budgets_s=list(self.budgets_s),
                repeats=self.table.repeats, noise_cv=self.table.noise_cv(),
                truth=self.table.provenance, source_fidelity=self.table.source_fidelity,
                infeasible_fraction=float(np.mean(~np.isfinite(self.table.true_tokens_per_s))),
                doc=self.spec.doc)


def _source_digest(obj: Any) -> str:
  """Digest of the source files of the package that defines `obj`'s class,
  so a cached simulated truth is remade when the simulator changes."""
  try:
    pkg = os.path.dirname(inspect.getfile(type(obj)))
  except TypeError:
    return "builtin"
  h = hashlib.sha1()
  for path in sorted(glob.glob(os.path.join(pkg, "*.py"))):
    with open(path, "rb") as f:
      h.update(f.read())
  return h.hexdigest()[:12]


def _truth_digest(spec: TaskSpec, space: SearchSpace) -> str:
  """Names a cached simulated truth: workload, cluster, space, truth
  settings, the simulators' declared version (`sim.analytic.SIMULATOR_VERSION`)
  and their source (a change that forgot to bump the version still remakes it)."""
  from autoscout_jax.sim.analytic import SIMULATOR_VERSION
  t = spec.truth
  if isinstance(t, RealityGapProfiling):
    from autoscout_jax.sim import event
    settings = {k: v for k, v in dataclasses.asdict(t).items() if k != "evaluator"}
    blob = json.dumps(dict(w=spec.workload.key, c=spec.cluster.key, space=space.describe(), gap=settings,
                           version=SIMULATOR_VERSION, code=_source_digest(event.EventEvaluator()),
                           me=hashlib.sha1(open(inspect.getfile(RealityGapProfiling), "rb").read()).hexdigest()),
                      sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]
  blob = json.dumps(dict(w=spec.workload.key, c=spec.cluster.key, space=space.describe(),
                         evaluator=type(t.evaluator).__name__, version=SIMULATOR_VERSION,
                         code=_source_digest(t.evaluator), steps=t.profiled_steps, overhead=t.overhead_s,
                         noise=t.noise, repeats=t.repeats, seed=t.seed), sort_keys=True)
  return hashlib.sha1(blob.encode()).hexdigest()[:12]


def build_task(spec: TaskSpec, workdir: str, remeasure: bool = False,
               progress: Callable[[str], None] | None = None) -> Task:
  say = progress or (lambda s: None)
  try:
    space = spec.space_fn(spec.workload, spec.cluster, **dict(spec.space_kwargs))
  except TypeError as e:
    raise BenchError(f"task {spec.name!r}: space_fn rejected space_kwargs {dict(spec.space_kwargs)}: {e}") from e
  space = restrict_space(space, spec.restrict)
  if spec.table is not None:
    space = tables_lib.allow_list(space, spec.table.allow, f"the measured table of task {spec.name!r}")
  try:
    default = expert_default(space, spec.workload)
  except DefaultError as e:
    raise BenchError(f"task {spec.name!r}: {e}") from e
  candidates = space.enumerate(limit=spec.max_candidates)
  if isinstance(spec.truth, tables_lib.TableProfiling):
    table = tables_lib.table_truth(spec.name, spec.truth, spec.table, space)
  elif isinstance(spec.truth, (SimulatedProfiling, RealityGapProfiling)):
    path = os.path.join(workdir, "truth", f"{spec.name}-{_truth_digest(spec, space)}.json")
    if os.path.exists(path):
      table = truth_lib.load_table(path, space)
    else:
      say(f"{spec.name}: simulating the truth of {len(candidates)} candidates")
      t = spec.truth
      if isinstance(t, RealityGapProfiling):
        table = gap_truth(spec.name, spec.workload, spec.cluster, candidates, t, space=space, progress=say)
      else:
        truth_problem = Problem(spec.workload, spec.cluster, space, (t.evaluator.fidelity,))
        table = truth_lib.simulate_truth(spec.name, truth_problem, candidates, t.evaluator,
                                         t.profiled_steps, t.overhead_s, t.noise, t.repeats, t.seed,
                                         progress=say)
      truth_lib.save_table(table, path)
  else:
    table = _recorded_truth(spec, space, candidates, workdir, remeasure, say)
  _check_table(spec, table, candidates)
  median = table.median_cost_s()
  budgets = tuple(b * median for b in spec.budget_evals)
  return Task(spec, space, candidates, table, default, budgets)  # type: ignore[arg-type]


def _recorded_truth(spec, space, candidates, workdir, remeasure, say) -> truth_lib.TruthTable:
  t: RecordedProfiling = spec.truth
  path = t.table if os.path.isabs(t.table) else os.path.join(repo_root(), t.table)
  if not remeasure:
    if not os.path.exists(path):
      raise BenchError(f"task {spec.name!r}: its recorded truth {t.table!r} does not exist; "
                       f"measure it with --remeasure")
    return truth_lib.load_table(path, space)
  if t.evaluator is None:
    raise BenchError(f"task {spec.name!r}: no evaluator to re-measure its truth with")
  say(f"{spec.name}: measuring {len(candidates)} candidates x {t.repeats} repeats (resumable)")
  truth_problem = Problem(spec.workload, spec.cluster, space, (t.evaluator.fidelity,))
  table = truth_lib.measure_truth(spec.name, truth_problem, candidates, t.evaluator,
                                  os.path.join(workdir, "measure", spec.name), t.repeats, t.batch, say)
  truth_lib.save_table(table, path)
  say(f"{spec.name}: wrote {path}")
  return table


def _check_table(spec: TaskSpec, table: truth_lib.TruthTable, candidates: Sequence[Candidate]) -> None:
  where = f"task {spec.name!r}"
  if table.workload_key != spec.workload.key or table.cluster_key != spec.cluster.key:
    raise BenchError(f"{where}: the truth table was made for workload {table.workload_key} on "
                     f"{table.cluster_key}, not {spec.workload.key} on {spec.cluster.key}; "
                     f"re-measure it (--remeasure)")
  missing = [c for c in candidates if c not in table.index]
  if missing:
    raise BenchError(f"{where}: {len(missing)} valid candidate(s) are not in its truth table "
                     f"(e.g. {missing[0].short()}); the space changed since it was measured: --remeasure")
  if not math.isfinite(table.optimum):
    raise BenchError(f"{where}: no feasible candidate in its truth table")
