"""run_experiment: the one library function the entry point calls.

Where it sits: `run.py` parses flags and gin, then calls this with
everything bound (workload, cluster, space factory, designer factory,
evaluators, budget, injected faults). It checks every input and builds the
run's `Problem` once (the space, the evaluators' fidelities, the expert
default) and the designer (`designer_fn(problem, seed)`) without writing
anything; then it checks the workdir's identity, locks it (workdir.py) and
only then writes: `on_start` (run.py writes config.gin), the store,
TensorBoard; it replays or runs the search against the workdir's store and
writes the report (stdout, TensorBoard text, `report.json`, `report.md`,
`report.html`).
A refused run leaves the workdir as it was.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from absl import logging

from autoscout_jax import faults as faults_lib
from autoscout_jax import report as report_lib
from autoscout_jax import report_html
from autoscout_jax import targets
from autoscout_jax import workdir as workdir_lib
from autoscout_jax.designers.base import Designer
from autoscout_jax.evaluator import Evaluator
from autoscout_jax.executors import Executor, SerialExecutor
from autoscout_jax.local import injector
from autoscout_jax.measurement import fidelity_rank
from autoscout_jax.problem import Cluster, DefaultError, Problem, expert_default
from autoscout_jax.search import SearchResult, run_search
from autoscout_jax.space import SearchSpace, SpaceError
from autoscout_jax.store import MeasurementStore
from autoscout_jax.writers import Writer, default_writer


class ExperimentError(ValueError):
  """Bad input to an experiment: the message names the problem."""


# Our own packages: an import error inside them is a bug, not missing input.
_OURS = ("autoscout_jax", "surrogates")


def is_input_error(e: BaseException) -> bool:
  """Whether `e` is bad input (run.py: one line, exit 2) rather than a bug
  (its traceback). Input checks raise ValueError (ExperimentError,
  SpaceError, ...) or OSError (files); an ImportError is input only when a
  third-party package is missing (an optional extra). TypeError, KeyError or
  an import error from our own code inside a designer or evaluator is a bug."""
  if isinstance(e, ImportError):
    missing = e.name or getattr(e.__cause__, "name", None)
    return bool(missing) and missing.split(".")[0] not in _OURS
  return isinstance(e, (ValueError, OSError))


def run_experiment(workdir: str, workload: Any, cluster: Cluster,
                   space_fn: Callable[[Any, Any], SearchSpace],
                   designer_fn: Callable[[Problem, int], Designer],
                   evaluators: Sequence[Evaluator] | Mapping[str, Evaluator],
                   budget_s: float = math.inf, batch_size: int = 4, max_rounds: int = 50,
                   seed: int = 0, screen_fidelities: Sequence[str] = ("compile",),
                   compare_default: bool = True,
                   faults: Sequence[Any] = (), fault_timeout_s: float = 5.0,
                   on_start: Callable[[Writer], None] | None = None,
                   on_round_end: Callable[..., None] | None = None,
                   writer: Writer | None = None,
                   printer: Callable[[str], None] = print,
                   executor: Executor | None = None) -> SearchResult:
  """`faults`: the FAULTS test hook (faults.py); `fault_timeout_s` is the
  timeout of a faulted candidate of an evaluator without its own child.
  `on_start(writer)` runs once the inputs are checked and the workdir is
  locked, before anything else is written. `executor` (default serial) runs
  the evaluations."""
  t0 = time.monotonic()
  if isinstance(evaluators, Mapping):
    evals = dict(evaluators)
  else:
    evals = {}
    for e in evaluators:
      if e.fidelity in evals:
        raise ExperimentError(f"two evaluators for fidelity {e.fidelity!r}")
      evals[e.fidelity] = e
  if not evals:
    raise ExperimentError("no evaluators configured")
  if not budget_s > 0:
    raise ExperimentError(f"budget_s (BUDGET_S) must be positive, got {budget_s}")
  if not fault_timeout_s > 0:
    raise ExperimentError(f"fault_timeout_s (FAULT_TIMEOUT_S) must be positive, got {fault_timeout_s}")
  if batch_size <= 0 or max_rounds <= 0:
    raise ExperimentError("batch_size and max_rounds must be positive")
  for e in evals.values():
    check = getattr(e, "check_fits", None)
    if check is not None:
      why = check(workload, cluster)
      if why:
        raise ExperimentError(why)

  try:
    space = space_fn(workload, cluster)
    space.sample(np.random.default_rng(seed), 1)  # raises SpaceError naming what empties the space
  except SpaceError:
    raise
  except ValueError as e:  # a knob's own check (no choices, a default outside them, ...)
    raise SpaceError(f"cannot build the search space: {e}") from e
  default = None
  if compare_default:
    try:
      default = expert_default(space, workload)
    except DefaultError as e:
      raise ExperimentError(str(e)) from e
  rules = faults_lib.parse_faults(faults, list(evals), space)
  evals = injector.apply_faults(evals, rules, fault_timeout_s)
  problem = Problem(workload, cluster, space, tuple(sorted(evals, key=fidelity_rank)), default=default)
  designer = designer_fn(problem, seed)

  identity = workdir_lib.fingerprint(workload, cluster, space, evals, [f.to_json() for f in rules])
  workdir_lib.check_reusable(workdir, identity)  # reads only: a refused run changes nothing
  with workdir_lib.open_workdir(workdir, identity):
    for e in evals.values():  # evaluators that keep per-run state there (the local simulators'
      use = getattr(e, "use_workdir", None)  # measured devices: measured here, before any worker starts)
      if use is not None:
        use(workdir, problem)
    return _run(workdir, problem, designer, evals, budget_s=budget_s,
                batch_size=batch_size, max_rounds=max_rounds, screen_fidelities=screen_fidelities,
                on_start=on_start, on_round_end=on_round_end, writer=writer, printer=printer,
                executor=executor or SerialExecutor(), t0=t0)


def _run(workdir, problem, designer, evals, *, budget_s, batch_size, max_rounds,
         screen_fidelities, on_start, on_round_end, writer, printer, executor, t0) -> SearchResult:
  workload, cluster, space = problem.workload, problem.cluster, problem.space
  store = MeasurementStore(workdir)
  resumed = len(store)
  own_writer = writer is None
  writer = writer or default_writer(workdir)
  try:
    if on_start is not None:
      on_start(writer)
  except BaseException:
    if own_writer:
      writer.close()
    raise
  printer(f"autoscout_jax: {workload.name} on {cluster.name} ({cluster.num_devices} devices), "
          f"space {space.name} ({len(space.knobs)} knobs), designer {type(designer).__name__}, "
          f"fidelities {list(problem.fidelities)}, executor {executor.describe()}; workdir {workdir}"
          + (f"; resuming with {resumed} stored measurements" if resumed else ""))
  try:
    result = run_search(problem, designer, evals, store, budget_s=budget_s,
                        batch_size=batch_size, max_rounds=max_rounds,
                        screen_fidelities=screen_fidelities, writer=writer,
                        on_round_end=on_round_end, progress=printer, executor=executor)
    rep = report_lib.build_report(workload, cluster, space, result, workdir)
    if result.best is not None:
      files = targets.launch_files(space, result.best.candidate, workload, cluster,
                                   summary=f"{result.best.objective:,.0f} tokens/s at {result.best.fidelity}")
      for name, body in files.items():
        path = os.path.join(workdir, name)
        with open(path, "w") as f:
          f.write(body)
        if name.endswith((".sh", ".py")):
          os.chmod(path, 0o755)
        writer.write_texts(len(result.rounds), {f"launch/{name}": "```\n" + body.rstrip() + "\n```"})
      rep["launch_files"] = files
    if store.skipped_lines:
      rep["warnings"] = [f"{store.path}:{n}: skipped an unreadable line ({why})"
                         for n, why in store.skipped_lines]
    text = report_lib.render_markdown(rep)
    writer.write_texts(len(result.rounds), {"report": text})
    with open(os.path.join(workdir, "report.json"), "w") as f:
      json.dump(rep, f, indent=2, sort_keys=True, default=str)
    with open(os.path.join(workdir, "report.md"), "w") as f:
      f.write(text)
    rep["wall_s"] = time.monotonic() - t0
    with open(os.path.join(workdir, "report.html"), "w", encoding="utf-8") as f:
      f.write(report_html.render_html(rep, result, space))
    warm = getattr(designer, "export_warm", None)
    rows = warm() if warm is not None else None
    if rows:  # the fitted residual rows, for another workload's WARM_START
      from autoscout_jax.designers.autoscout.warm import save_rows
      save_rows(rows, workdir)
    printer(report_lib.render_summary(rep))
  finally:
    executor.close()
    if own_writer:
      writer.close()
  logging.info("stored measurements: %d", len(store))
  return result
