"""Evaluator interface: candidates in, measurements out, one fidelity each.

Where it sits: the search loop routes each suggestion to the evaluator of its
fidelity, handing it the run's `Problem` (workload, cluster, the space the
candidates belong to), and charges `Measurement.cost_s` against the budget. Simulators
score a whole batch in one vectorized call; profilers may run candidates one
by one in child processes (those derive from `CheckedEvaluator`, which
checks the job once per batch before `measure`). Evaluators never decide
what to measure.
"""

from __future__ import annotations

import abc
import hashlib
import json
from typing import Any, Sequence

from autoscout_jax.measurement import Measurement
from autoscout_jax.problem import Problem
from autoscout_jax.space import Candidate


class Evaluator(abc.ABC):
  """`fidelity` is one of measurement.FIDELITIES."""

  fidelity: str = ""

  @abc.abstractmethod
  def evaluate(self, problem: Problem, candidates: Sequence[Candidate]) -> list[Measurement]:
    """One measurement per candidate of `problem.space`, in order. Never
    raises for a failing candidate: failures are measurements with a
    failure_kind."""

  def settings(self) -> dict[str, Any]:
    """The evaluator's settings that change what it measures (timed steps,
    simulator version and constants, injected faults; not timeouts). They
    are part of every measurement's cache key and of the workdir's identity,
    so a changed setting is measured again, never silently reused."""
    return {}

  def check_fits(self, workload: Any, cluster: Any) -> str | None:
    """Why this evaluator cannot measure the job at all (one line), or None.
    The experiment asks before the search starts."""
    return None


class CheckedEvaluator(Evaluator):
  """An evaluator whose every batch first passes the job check: `evaluate`
  raises one ValueError when `check_problem` says why the job cannot be
  measured (the same answer the experiment got before starting), answers
  [] for an empty batch, and hands the rest to `measure`. The evaluators
  that measure in child processes share this opening."""

  def check_problem(self, problem: Problem) -> str | None:
    """Why this evaluator cannot measure `problem`'s job, or None."""
    return self.check_fits(problem.workload, problem.cluster)

  def evaluate(self, problem: Problem, candidates: Sequence[Candidate]) -> list[Measurement]:
    why = self.check_problem(problem)
    if why:
      raise ValueError(why)
    return self.measure(problem, candidates) if candidates else []

  @abc.abstractmethod
  def measure(self, problem: Problem, candidates: Sequence[Candidate]) -> list[Measurement]:
    """`evaluate` of a job that fits, on a non-empty batch."""


def settings_key(evaluator: Evaluator) -> str:
  """A short digest of `evaluator.settings()` ('' when it has none)."""
  get = getattr(evaluator, "settings", None)
  s = get() if get is not None else {}
  if not s:
    return ""
  blob = json.dumps(s, sort_keys=True, separators=(",", ":"), default=str)
  return hashlib.sha1(blob.encode()).hexdigest()[:12]
