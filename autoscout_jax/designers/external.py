"""Bookkeeping shared by designers that wrap an external ask/tell optimizer
(Optuna, SMAC3): the wrapped library proposes, this class makes sure only
valid, not-yet-suggested candidates reach the search loop.

Where it sits: `search.run_search` calls `suggest(n)` / `update(ms)` as for
any designer. Subclasses translate between the library's trial handles and
`Candidate`s (`_ask`, `_tell`, `_tell_new`). Each native suggestion is
checked against the space: an invalid one is told to the library as a
failure on the spot (it never reaches an evaluator and costs nothing); one
already measured is told its known outcome (free); one already waiting for
its measurement is told when that measurement arrives. After `max_asks`
unusable proposals in a row the designer falls back to an unseen uniform
sample of the space, which it reports to the library like its own.
"""

from __future__ import annotations

import abc
import itertools
import math
from typing import Any, Sequence

import numpy as np

from autoscout_jax.designers.base import Designer
from autoscout_jax.measurement import Measurement
from autoscout_jax.problem import Problem
from autoscout_jax.space import Candidate, SearchSpace, Violation


class LibraryExhausted(Exception):
  """The library has nothing left to propose (it has tried its whole space)."""


class ExternalDesigner(Designer):
  """See module docstring. `max_asks` bounds native proposals per suggestion."""

  def __init__(self, problem: Problem, seed: int = 0, max_asks: int = 64):
    super().__init__(problem, seed)
    self.max_asks = max_asks
    self._rng = np.random.default_rng(seed + 7919)  # fallback draws only
    self._pending: dict[Candidate, list[Any]] = {}  # candidate -> native handles waiting
    self._known: dict[Candidate, Measurement] = {}  # outcome of every measured candidate
    self.stats = {"asks": 0, "invalid_proposals": 0, "duplicate_proposals": 0, "fallbacks": 0}

  # --- to implement ---------------------------------------------------------
  @abc.abstractmethod
  def _ask(self) -> tuple[Any, Candidate]:
    """One native proposal: (handle, candidate). The candidate may be invalid.
    Raises `LibraryExhausted` when the library has nothing left to propose."""

  @abc.abstractmethod
  def _tell(self, handle: Any, m: Measurement | None, violations: Sequence[Violation] = ()) -> None:
    """Outcome of a proposal: a measurement, or (m None) the space's violations."""

  @abc.abstractmethod
  def _tell_new(self, cand: Candidate, m: Measurement) -> None:
    """An outcome for a valid candidate the library did not propose."""

  # --- Designer -------------------------------------------------------------
  def suggest(self, n: int) -> list[Candidate]:
    out: list[Candidate] = []
    for _ in range(n):
      cand = self._one()
      if cand is None:
        break
      out.append(cand)
    return out

  def _one(self) -> Candidate | None:
    for _ in range(self.max_asks):
      self.stats["asks"] += 1
      try:
        handle, cand = self._ask()
      except LibraryExhausted:
        return None  # the run ends like any designer that is done
      viol = self.space.validate(cand)
      if viol:
        self.stats["invalid_proposals"] += 1
        self._tell(handle, None, viol)
        continue
      if cand in self._known:
        self.stats["duplicate_proposals"] += 1
        self._tell(handle, self._known[cand])
        continue
      if cand in self._pending:
        self.stats["duplicate_proposals"] += 1
        self._pending[cand].append(handle)
        continue
      self._pending[cand] = [handle]
      return cand
    cand = self._unseen_sample()
    if cand is not None:
      self.stats["fallbacks"] += 1
      self._pending[cand] = []  # told through _tell_new when measured
    return cand

  def _unseen_sample(self, draws: int = 256) -> Candidate | None:
    for c in self.space.sample(self._rng, draws):
      if c not in self._known and c not in self._pending:
        return c
    return None

  def update(self, measurements: Sequence[Measurement]) -> None:
    # run_search hands back cheaper screen measurements before the outcome of
    # a candidate; the last measurement of a candidate in a batch is its outcome.
    last: dict[Candidate, Measurement] = {}
    for m in measurements:
      last[Candidate.of(m.candidate.values)] = m
    for cand, m in last.items():
      if cand in self._pending:
        handles = self._pending.pop(cand)
        self._known[cand] = m
        if handles:
          for h in handles:
            self._tell(h, m)
        else:
          self._tell_new(cand, m)
      elif cand not in self._known and not self.space.validate(cand):
        self._known[cand] = m  # e.g. the loop's default configuration
        self._tell_new(cand, m)


def objective_of(m: Measurement | None) -> float | None:
  """Tokens/s of a feasible measurement, else None (failure or invalid)."""
  if m is None:
    return None
  return m.objective


def group_prefix_choices(space: SearchSpace, names: Sequence[str], total: int) -> dict[tuple[int, int], list[int]]:
  """For a product group: (axis index, product still to distribute) -> the
  values that axis may take so that the later axes can complete the
  product. Both wrappers present a group as a chain of such choices, the
  last axis implied, so every proposal has the right product."""
  domains = [[int(v) for v in space[n].finite_values()] for n in names]
  out: dict[tuple[int, int], set[int]] = {}
  for combo in itertools.product(*domains):
    if math.prod(combo) != total:
      continue
    rest = total
    for i, v in enumerate(combo):
      out.setdefault((i, rest), set()).add(v)
      rest //= v
  return {k: sorted(v) for k, v in out.items()}
