"""SimSpace: a SearchSpace whose constraints are vectorized, so the whole
valid set of a large simulator space can be enumerated as numpy arrays.

Where it sits: targets/megatron.py and targets/jax_mesh.py build their
spaces as SimSpaces, each carrying its family's translation to the
simulators' plan (`SimSpace.plan`). Designers use them like any SearchSpace (validate, sample,
neighbours, encode: the core methods, unchanged); the F0 simulator and
exhaustive scoring use `enumerate_table()` (every valid point as a table of
knob arrays, millions in seconds) and `table_from_candidates`.

A table is a dict knob name -> float64 array; categorical and boolean knobs
hold the index of their value in the knob's domain; an inactive knob holds
NaN. Each constraint is written once, vectorized (`VecConstraint.ok` over a
table), and the scalar `Constraint` the core SearchSpace calls wraps it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from autoscout_jax.space import (Boolean, Candidate, Categorical, Constraint, Knob, ProductGroup, SearchSpace,
                                 Violation)

Table = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class VecConstraint:
  """`ok(table, facts) -> bool array`; `message(values, facts) -> str` says
  why a single point fails."""

  name: str
  ok: Callable[[Table, Mapping[str, Any]], np.ndarray]
  message: Callable[[Mapping[str, Any], Mapping[str, Any]], str]
  doc: str = ""


def _domain(k: Knob) -> tuple:
  dom = k.finite_values()
  if dom is None:
    raise ValueError(f"knob {k.name!r}: simulator spaces need finite domains")
  return tuple(dom)


def _codes(k: Knob) -> bool:
  return isinstance(k, (Categorical, Boolean))


class SimSpace(SearchSpace):
  """A SearchSpace with vectorized constraints and array enumeration."""

  sample_enumerate_limit = 100_000_000  # raw points; beyond, sample() does not enumerate

  def __init__(self, knobs: Sequence[Knob], vec_constraints: Sequence[VecConstraint],
               groups: Sequence[ProductGroup] = (), facts: Mapping[str, Any] | None = None,
               name: str = "space", family: str = "",
               plan: Callable[["SimSpace", Table, Any, Any], Mapping[str, np.ndarray]] | None = None):
    self.vec_constraints = tuple(vec_constraints)
    self._plan = plan  # the family's translation to the simulators' plan (targets/<family>.py)
    scalar = [Constraint(vc.name, self._scalar_check(vc), vc.doc) for vc in self.vec_constraints]
    self._vec_of = {id(c): vc for c, vc in zip(scalar, self.vec_constraints)}  # scalar wrapper -> vectorized
    super().__init__(knobs, scalar, groups, facts, name, family)

  def _scalar_check(self, vc: VecConstraint):
    def check(vals, facts):
      # one validate() passes the same dict to every constraint: build its
      # one-row table once
      cached = getattr(self, "_last_row", None)
      if cached is not None and cached[0] is vals:
        table = cached[1]
      else:
        table = self.table_from_values([vals])
        self._last_row = (vals, table)
      if bool(vc.ok(table, facts)[0]):
        return None
      return vc.message(vals, facts)
    return check

  def validate_many(self, cands: Sequence[Candidate]) -> list[list[Violation]]:
    """`validate` of each candidate, the same violations in the same order,
    with each vectorized constraint evaluated once over the whole batch
    (a Python loop per candidate and constraint made large batches slow)."""
    rows = [c.values for c in cands]
    out, todo = [], []
    for i, vals in enumerate(rows):
      viol, settled = self._check_structure(vals)
      out.append(viol)
      if not settled:
        todo.append(i)
    if not todo:
      return out
    table = self.table_from_values([rows[i] for i in todo])
    for c in self.constraints:
      vc = self._vec_of.get(id(c))
      if vc is None:  # a scalar constraint added by a subclass
        bad = [(i, c.check(rows[i], self.facts)) for i in todo]
        bad = [(i, msg) for i, msg in bad if msg]
      else:
        ok = np.asarray(vc.ok(table, self.facts), bool)
        bad = [(todo[j], vc.message(rows[todo[j]], self.facts)) for j in np.flatnonzero(~ok)]
      for i, msg in bad:
        out[i].append(Violation(c.name, msg))
    return out

  # --- tables <-> candidates -----------------------------------------------------
  def table_from_values(self, rows: Sequence[Mapping[str, Any]]) -> Table:
    out: Table = {}
    for k in self.knobs:
      dom = _domain(k)
      col = np.full(len(rows), np.nan)
      for i, vals in enumerate(rows):
        if k.name in vals:
          v = vals[k.name]
          col[i] = dom.index(v) if _codes(k) and v in dom else (np.nan if _codes(k) else float(v))
      out[k.name] = col
    return _RowsTable(out, len(rows))

  def table_from_candidates(self, cands: Sequence[Candidate]) -> Table:
    return self.table_from_values([c.values for c in cands])

  def value(self, table: Table, name: str, i: int) -> Any:
    k = self[name]
    x = table[name][i]
    if np.isnan(x):
      return None
    if _codes(k):
      return _domain(k)[int(x)]
    return k.coerce(x)

  def candidates_from_table(self, table: Table, index: Sequence[int] | np.ndarray | None = None) -> list[Candidate]:
    n = len(next(iter(table.values())))
    idx = np.arange(n) if index is None else np.asarray(index, dtype=np.int64).reshape(-1)
    # Decode column by column, each distinct table entry once (a column holds
    # a handful of values): the same values as `value`, without a Python call
    # per cell (whole spaces of 10^4-10^5 points are decoded per run).
    cols: list[tuple[str, list]] = []
    for k in self.knobs:
      seen: dict[float, Any] = {}
      vals = []
      for x in table[k.name][idx].tolist():
        if x != x:  # NaN: inactive
          vals.append(_INACTIVE)
          continue
        if x not in seen:
          v = _domain(k)[int(x)] if _codes(k) else k.coerce(np.float64(x))
          seen[x] = _INACTIVE if v is None else v
        vals.append(seen[x])
      cols.append((k.name, vals))
    return [Candidate.of({name: vals[i] for name, vals in cols if vals[i] is not _INACTIVE})
            for i in range(len(idx))]

  def plan(self, table: Table, workload: Any, cluster: Any) -> Mapping[str, np.ndarray]:
    """The simulators' plan (sim/plan.py) of every row of `table`, by the
    translation of the target family that made this space."""
    if self._plan is None:
      raise ValueError(f"space {self.name!r} (family {self.family!r}) has no plan for the simulators")
    return self._plan(self, table, workload, cluster)

  @property
  def planner(self) -> Callable | None:
    return self._plan

  def code(self, name: str, value: Any) -> float:
    """The table entry of a categorical/boolean value (for vectorized checks)."""
    return float(_domain(self[name]).index(value))

  # --- vectorized enumeration ---------------------------------------------------------
  def enumerate_table(self, max_rows: int = 50_000_000) -> Table:
    """Every valid point: product groups from their factorizations, then
    each knob in declaration order (inactive -> NaN), constraints applied as
    soon as all the knobs they read are present, so the table stays small."""
    table: Table = {}
    n = 1
    for g in self.groups:
      fac = np.array(self._factorizations[g.name], dtype=np.float64)
      table = {k: np.repeat(v, len(fac)) for k, v in table.items()}
      for j, name in enumerate(g.names):
        table[name] = np.tile(fac[:, j], n)
      n *= len(fac)
    pending = list(self.vec_constraints)
    table, pending = self._apply_ready(table, pending)
    for k in self.knobs:
      if k.name in table:
        continue
      n = len(next(iter(table.values()))) if table else 1
      active = np.ones(n, bool)
      for cond in k.when:
        parent = self[cond.parent]
        vals = [self.code(cond.parent, v) if _codes(parent) else float(v) for v in cond.values]
        active &= np.isin(table[cond.parent], vals)
      dom = _domain(k)
      vals = np.arange(len(dom), dtype=np.float64) if _codes(k) else np.array(dom, np.float64)
      reps = np.where(active, len(vals), 1)
      if int(reps.sum()) > max_rows:
        raise ValueError(f"space {self.name!r}: more than {max_rows} points before constraints at knob "
                         f"{k.name!r}; shrink the domains")
      table = {name: np.repeat(col, reps) for name, col in table.items()}
      act = np.repeat(active, reps)
      # position of each row inside its block of repeats
      starts = np.repeat(np.cumsum(reps) - reps, reps)
      pos = np.arange(int(reps.sum())) - starts
      table[k.name] = np.where(act, vals[np.minimum(pos, len(vals) - 1)], np.nan)
      table, pending = self._apply_ready(table, pending)
    # Every knob is a column now: what the rest read is a knob this space does
    # not have (e.g. no sequence_parallel where tp is 1), inactive on every row.
    for vc in pending:
      n = len(next(iter(table.values())))
      mask = np.asarray(vc.ok(_RowsTable(table, n), self.facts), bool)
      table = {k: v[mask] for k, v in table.items()}
    return table

  def _apply_ready(self, table: Table, pending: list[VecConstraint]) -> tuple[Table, list[VecConstraint]]:
    still = []
    for vc in pending:
      try:
        mask = np.asarray(vc.ok(_Strict(table), self.facts), bool)
      except _NotYet:
        still.append(vc)
        continue
      table = {k: v[mask] for k, v in table.items()}
    return table, still

  def table(self) -> Table:
    """The enumerated valid set, computed once."""
    if getattr(self, "_table", None) is None:
      self._table = self.enumerate_table()
    return self._table

  def size(self) -> int:
    return len(next(iter(self.table().values())))

  def sample(self, rng: np.random.Generator, n: int = 1, max_tries: int = 20000) -> list[Candidate]:
    """Uniform over the valid set, drawn from the enumerated table; spaces
    too large to enumerate quickly (raw size above `sample_enumerate_limit`)
    fall back to the core tree sampling with rejection."""
    if getattr(self, "_table", None) is None and self.raw_size() > self.sample_enumerate_limit:
      return super().sample(rng, n, max_tries)
    if self.size() == 0:
      from autoscout_jax.space import SpaceError
      raise SpaceError(f"space {self.name!r} has no valid candidate")
    return self.candidates_from_table(self.table(), rng.integers(self.size(), size=n))

  def enumerate(self, limit: int | None = None) -> list[Candidate]:
    """All valid candidates, via the vectorized table (same set as the core
    recursion, much faster)."""
    table = self.table()
    n = len(next(iter(table.values())))
    if limit is not None and n > limit:
      from autoscout_jax.space import SpaceError
      raise SpaceError(f"space {self.name!r} has more than {limit} valid candidates")
    return self.candidates_from_table(table)


_INACTIVE = object()  # a knob without a value in a row (NaN in the table)


class _NotYet(KeyError):
  pass


class _Strict(dict):
  """A table view that signals a constraint is not ready yet when it reads a
  knob the enumeration has not reached."""

  def __getitem__(self, key):
    if key not in self.keys():
      raise _NotYet(key)
    return dict.__getitem__(self, key)


class _RowsTable(dict):
  """A table with every knob of the space as a column; a name the space has
  no knob for (a constraint written for larger spaces) reads as inactive
  (NaN) on every row."""

  def __init__(self, table: Table, n: int):
    super().__init__(table)
    self._n = n

  def __missing__(self, key):
    return np.full(self._n, np.nan)


def active(x: np.ndarray) -> np.ndarray:
  return ~np.isnan(x)


def nz(x: np.ndarray, default: float) -> np.ndarray:
  """Inactive (NaN) entries replaced by `default`."""
  return np.where(np.isnan(x), default, x)
