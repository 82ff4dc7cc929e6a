"""Running the benchmark: every (task, designer, seed) through the search loop.

Where it sits: bench/__main__.py parses flags and loads the task gin
files, then calls `run_bench`. For each task it builds the truth (tasks.py), then for each
designer and seed runs `search.run_search` with the replay evaluator as the
top fidelity and the task's cheap evaluators beside it, all under the same
budget (the largest of the task's three), scores the run (metrics.py), and
finally hands everything to report.py.
"""

from __future__ import annotations

import dataclasses
import math
import subprocess
import time
from typing import Any, Callable, Sequence

from autoscout_jax.bench import metrics as metrics_lib
from autoscout_jax.bench import peers
from autoscout_jax.bench.replay import FixedCostEvaluator, MemoryStore, ReplayEvaluator
from autoscout_jax.bench.tasks import BenchError, Task, TaskSpec, build_task, repo_root
from autoscout_jax.measurement import fidelity_rank
from autoscout_jax.problem import Problem
from autoscout_jax.search import run_search

TOP = "profile"  # the fidelity the replayed truth is served at


@dataclasses.dataclass(frozen=True)
class Suite:
  seeds: int
  budget_scale: float = 1.0  # multiplies every task's budgets
  max_rounds: int = 20_000


SUITES = {"quick": Suite(seeds=3), "measured": Suite(seeds=5), "full": Suite(seeds=10),
          "compile": Suite(seeds=1)}


def evaluators_for(task: Task, seed: int) -> dict[str, Any]:
  evals: dict[str, Any] = {TOP: ReplayEvaluator(task.table, seed, TOP)}
  for e in task.spec.cheap:
    if fidelity_rank(e.fidelity) >= fidelity_rank(TOP):
      raise BenchError(f"task {task.name!r}: cheap evaluator fidelity {e.fidelity!r} is not below {TOP!r}")
    evals[e.fidelity] = FixedCostEvaluator(e, task.spec.cheap_costs_s.get(e.fidelity, task.spec.cheap_cost_s),
                                           memo=task.cheap_memo.setdefault(e.fidelity, {}))
  return evals


def task_problem(task: Task) -> Problem:
  """The task's Problem: its space, the fidelities of `evaluators_for`
  (its cheap evaluators and the replayed truth at TOP), its expert default."""
  fids = tuple(e.fidelity for e in task.spec.cheap) + (TOP,)
  return Problem(task.workload, task.cluster, task.space, fids, default=task.default)


def cheap_rank_correlation(task: Task) -> dict[str, Any]:
  """Spearman rank correlation of each cheap fidelity's tokens/s with the
  truth over the candidates both call feasible, and the share of candidates
  whose feasibility they disagree on (scored live by the current simulators)."""
  from scipy.stats import spearmanr
  import numpy as np
  out: dict[str, Any] = {}
  # the table's rows are in its own order (a measured table's file order), not the space's
  true = np.array([np.nan if (t := task.table.true_value(c)) is None else t for c in task.candidates], np.float64)
  for e in task.spec.cheap:
    ms = FixedCostEvaluator(e, 0.0, memo=task.cheap_memo.setdefault(e.fidelity, {})).evaluate(
        task_problem(task), task.candidates)
    v = np.array([m.objective if m.objective is not None else np.nan for m in ms])
    both = np.isfinite(v) & np.isfinite(true)
    rho = spearmanr(v[both], true[both]).statistic if both.sum() > 2 else float("nan")
    out[e.fidelity] = dict(spearman=None if not np.isfinite(rho) else round(float(rho), 4),
                           both_feasible=int(both.sum()),
                           feasibility_disagrees=round(float(np.mean(np.isfinite(v) != np.isfinite(true))), 4),
                           cheap_says_fails_truth_runs=int(np.sum(~np.isfinite(v) & np.isfinite(true))))
  return out


def run_one(task: Task, designer: str, seed: int, budget_s: float | None = None,
            max_rounds: int = 20_000, make: Callable[[Problem, int], Any] | None = None
            ) -> tuple[metrics_lib.RunTrace, Any]:
  """One run; returns its trace and the loop's SearchResult (the designer
  is `result.designer`). `make(problem, seed)` overrides the registry's
  factory of `designer` (e.g. a warm-started variant)."""
  budget = task.budgets_s[-1] if budget_s is None else budget_s
  evals = evaluators_for(task, seed)
  problem = task_problem(task)
  inner = make(problem, seed) if make is not None else peers.make_designer(designer, problem, seed)
  timed = peers.TimedDesigner(inner)
  entry = peers.DESIGNERS[designer]
  try:
    # The loop does not measure the default: a designer that wants it asks.
    # A task that offers F2 compile screens every designer's profiles with it.
    result = run_search(problem, timed, evals, MemoryStore(), budget_s=budget,
                        batch_size=entry.batch_size, max_rounds=max_rounds,
                        screen_fidelities=tuple(f for f in ("compile",) if f in evals),
                        compare_default=False)
  finally:
    close = getattr(timed.inner, "close", None)
    if close is not None:
      close()
  tr = metrics_lib.trace_run(task.name, designer, seed, result.measurements, task.table, TOP,
                             profiles_free=entry.profiles_free)
  tr.cpu_s, tr.suggested, tr.stop_reason = timed.cpu_s, timed.suggested, result.stop_reason
  result.designer = timed.inner
  return tr, result


def git_commit() -> str | None:
  try:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo_root(), capture_output=True,
                         text=True, timeout=10, check=False)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo_root(),
                           capture_output=True, text=True, timeout=10, check=False)
  except (OSError, subprocess.SubprocessError):
    return None
  if out.returncode != 0:
    return None
  return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def run_bench(specs: Sequence[TaskSpec], designers: Sequence[str], seeds: Sequence[int], workdir: str,
              suite: str = "custom", budget_scale: float = 1.0, remeasure: bool = False,
              max_rounds: int = 20_000, printer: Callable[[str], None] = print) -> dict[str, Any]:
  """Everything of one benchmark run, as the `results.json` dict (also
  carrying the traces under the private key `_traces` for the report)."""
  if not specs:
    raise BenchError("no tasks selected")
  if not designers:
    raise BenchError("no designers selected")
  if not seeds:
    raise BenchError("no seeds selected")
  if not budget_scale > 0 or not math.isfinite(budget_scale):
    raise BenchError(f"the budget must be positive, got a budget scale of {budget_scale}")
  peers.check_designers(designers)
  t_start = time.time()
  results, tasks_info, traces, errors = [], [], {}, []
  for spec in specs:
    task = build_task(spec, workdir, remeasure=remeasure, progress=printer)
    budgets = tuple(b * budget_scale for b in task.budgets_s)
    evals = tuple(e * budget_scale for e in spec.budget_evals)
    info = task.summary()
    info.update(budgets_s=list(budgets), budget_evals=list(evals), cheap_vs_truth=cheap_rank_correlation(task))
    tasks_info.append(info)
    printer(f"{task.name}: {len(task.candidates)} candidates, optimum {task.optimum:,.1f} tok/s, "
            f"expert {task.expert_value or float('nan'):,.1f} tok/s, budgets "
            f"{', '.join(f'{e:g}' for e in evals)} x {task.table.median_cost_s():,.1f} device-s")
    for name in designers:
      per_seed = []
      for seed in seeds:
        t0 = time.time()
        try:
          tr, _ = run_one(task, name, seed, budget_s=budgets[-1], max_rounds=max_rounds)
        except Exception as e:  # one crashing run never stops the others; it is reported
          errors.append(dict(task=task.name, designer=name, seed=seed, error=f"{type(e).__name__}: {e}"))
          printer(f"  {name:>12s} seed {seed}: CRASHED ({type(e).__name__}: {e}); the other runs go on")
          continue
        per_seed.append(metrics_lib.run_measures(tr, task.optimum, task.expert_value, budgets))
        traces[(task.name, name, seed)] = tr
        r = per_seed[-1]
        printer(f"  {name:>12s} seed {seed}: regret {100 * r['regret_at_budgets'][-1]:5.1f} %, "
                f"{r['paid_top']} profiled, {r['infeasible_paid']} failed, {r['invalid_suggestions']} invalid, "
                f"{time.time() - t0:.1f} s")
      if per_seed:
        results.append(metrics_lib.aggregate(task.name, name, per_seed, budgets, evals))
  return {
      "suite": suite, "commit": git_commit(), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
      "seconds": round(time.time() - t_start, 1), "designers": list(designers), "seeds": list(seeds),
      "budget_scale": budget_scale, "tasks": [t["name"] for t in tasks_info], "task_info": tasks_info,
      "peer_versions": peers.peer_versions(),
      "results": results, "errors": errors, "_traces": traces,
  }
