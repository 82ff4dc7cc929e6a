"""Measurements -> surrogate arrays, and the roles knobs play in the search.

Where it sits: `AutoScoutDesigner.update` records every measurement it is
told in an `Observations` table of `encoding.Row`s (the designer's memory;
the store stays the record). Before a suggestion round `Observations.to_data`
picks the rows to learn from and encodes them through `encoding.to_data`
(the one path from measurements to `surrogates.SurrogateData`) for
`surrogates.fit`; `knob_roles` splits the space into
structural knobs (searched by discrete moves, sparse.py) and dense knobs
(relaxed by gradient, dense.py).

Targets: the surrogate's "log time" column holds -log(tokens/s). For one
workload tokens/s is proportional to 1/step time, so this is log step time
up to a constant, and the objective the loop ranks by is exactly its
negative. Failures (OOM, compile error, crash, timeout) are infeasible rows.
A failure of the loop's compile screen stands for the top fidelity: the
loop never profiles such a candidate, so it is infeasible there.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Mapping, Sequence

import numpy as np

import surrogates
from autoscout_jax import encoding
from autoscout_jax.encoding import Row
from autoscout_jax.measurement import INVALID, Measurement, fidelity_rank
from autoscout_jax.space import Boolean, Candidate, Categorical, Float, Ordinal, SearchSpace

SCREEN = "compile"  # the loop applies it on its own before the top fidelity


def failed_screen(r: Row) -> bool:
  """A screen that rules its candidate out (a verdict). A passing local
  compile has no throughput (its Row is not `feasible`) but failed nothing."""
  return r.fidelity == SCREEN and r.failure_kind is not None


@dataclasses.dataclass(frozen=True)
class KnobRoles:
  structural: tuple[str, ...]  # product-group axes, categoricals, booleans, parents
  dense: tuple[str, ...]  # ordinal / integer / float knobs nothing depends on


def knob_roles(space: SearchSpace, dense: Sequence[str] | None = None) -> KnobRoles:
  """Dense knobs have an ordered numeric domain, sit in no product group and
  condition no other knob (so relaxing them never changes the active set)."""
  parents = {c.parent for k in space.knobs for c in k.when}
  grouped = {n for g in space.groups for n in g.names}
  if dense is None:
    dense_set = {k.name for k in space.knobs
                 if isinstance(k, (Ordinal, Float))
                 and k.name not in grouped and k.name not in parents
                 and (k.finite_values() is None or len(k.finite_values()) > 1)}
  else:
    unknown = sorted(set(dense) - set(space.names))
    if unknown:
      raise ValueError(f"dense knobs {unknown} are not knobs of space {space.name!r}")
    bad = sorted(n for n in dense if n in grouped or n in parents
                 or isinstance(space[n], (Categorical, Boolean)))
    if bad:
      raise ValueError(f"knobs {bad} cannot be dense: a dense knob is numeric, outside "
                       "product groups, and no other knob may depend on it")
    dense_set = set(dense)
  names = space.names
  return KnobRoles(tuple(n for n in names if n not in dense_set),
                   tuple(n for n in names if n in dense_set))


class Observations:
  """Every measurement told to the designer, keyed by (candidate, fidelity).

  `model_fidelities` are the fidelities the surrogate distinguishes, cheapest
  first (the top one last); their position is the surrogate's fidelity index.
  """

  def __init__(self, space: SearchSpace, model_fidelities: Sequence[str]):
    self.space = space
    self.model_fidelities = tuple(model_fidelities)
    self.top = self.model_fidelities[-1]
    self.index = {f: i for i, f in enumerate(self.model_fidelities)}
    self.rows: list[Row] = []
    self._by_key: dict[tuple[Candidate, str], Row] = {}
    self._enc_index: dict[Candidate, int] = {}
    self._enc_x = np.zeros((64, space.width), np.float32)
    self._enc_m = np.zeros((64, space.width), np.float32)
    self.done: dict[str, set[Candidate]] = {}  # candidates measured per fidelity

  def add(self, ms: Iterable[Measurement]) -> list[Row]:
    """Records new measurements; returns the rows that were new."""
    new = []
    for m in ms:
      if m.metrics.failure_kind == INVALID:
        continue
      r = encoding.row(self.space, m)
      key = (r.candidate, r.fidelity)
      if key in self._by_key:
        continue  # the loop never charges twice; neither do we learn twice
      self._by_key[key] = r
      self.rows.append(r)
      self.done.setdefault(r.fidelity, set()).add(r.candidate)
      if failed_screen(r):
        self.done.setdefault(self.top, set()).add(r.candidate)  # never profiled
      new.append(r)
    return new

  def get(self, cand: Candidate, fidelity: str) -> Row | None:
    return self._by_key.get((cand, fidelity))

  def has(self, cand: Candidate, fidelity: str) -> bool:
    return (cand, fidelity) in self._by_key

  def top_outcome(self, cand: Candidate) -> Row | None:
    """The top-fidelity verdict: a top measurement or a failed screen."""
    r = self._by_key.get((cand, self.top))
    if r is None and fidelity_rank(self.top) > fidelity_rank(SCREEN):
      s = self._by_key.get((cand, SCREEN))
      if s is not None and failed_screen(s):
        return s
    return r

  def top_rows(self) -> list[Row]:
    return [r for r in self.rows if r.fidelity == self.top]

  def best_top(self) -> Row | None:
    best = None
    for r in self.rows:
      if r.fidelity == self.top and r.feasible and (best is None or r.y > best.y):
        best = r
    return best

  def encode(self, cands: Sequence[Candidate]) -> tuple[np.ndarray, np.ndarray]:
    """Features and active masks. Encoding is Python per knob, so every
    candidate is encoded once into a growing table and looked up after."""
    index = self._enc_index
    missing = [c for c in dict.fromkeys(cands) if c not in index]
    if missing:
      x, m = self.space.encode(missing)
      start = len(index)
      need = start + len(missing)
      if need > self._enc_x.shape[0]:
        size = max(need, 2 * self._enc_x.shape[0])
        self._enc_x = np.resize(self._enc_x, (size, self.space.width))
        self._enc_m = np.resize(self._enc_m, (size, self.space.width))
      self._enc_x[start:need], self._enc_m[start:need] = x, m
      for i, c in enumerate(missing):
        index[c] = start + i
    rows = np.fromiter((index[c] for c in cands), np.int64, len(cands))
    return self._enc_x[rows], self._enc_m[rows]

  def to_data(self, exclude: Sequence[str] = (), max_rows: int = 512
              ) -> surrogates.SurrogateData | None:
    """Rows of the model fidelities (minus `exclude`) as surrogate data;
    None when there is nothing to learn from. At most `max_rows` rows, so
    the training set stays in a few padding buckets (each new bucket
    compiles the training loop again): every top-fidelity verdict, the best
    cheap rows and then the most recent ones."""
    picked = []
    for r in self.rows:
      f = r.fidelity
      if f == SCREEN and f not in self.index:
        if r.feasible:
          continue  # no step time at the screen: only its verdict is usable
        f = self.top
      if f not in self.index or f in exclude:
        continue
      picked.append((r, f))
    top = [i for i, (_, f) in enumerate(picked) if f == self.top]
    cheap = [i for i, (_, f) in enumerate(picked) if f != self.top]
    room = max_rows - len(top)
    if len(cheap) > room:
      best = sorted((i for i in cheap if picked[i][0].feasible), key=lambda i: -picked[i][0].y)
      keep = dict.fromkeys(best[:room // 4])
      for i in reversed(cheap):
        if len(keep) >= room:
          break
        keep.setdefault(i)
      picked = [p for i, p in enumerate(picked) if i in keep or p[1] == self.top]
    if not picked:
      return None
    return encoding.to_data(
        self.space, [r.candidate for r, _ in picked], [self.index[f] for _, f in picked],
        [-r.y if r.feasible else np.nan for r, _ in picked],
        [1.0 if r.feasible else 0.0 for r, _ in picked],
        [r.log_mem if r.log_mem is not None else np.nan for r, _ in picked], encode=self.encode)

  def counts(self) -> Mapping[str, int]:
    out: dict[str, int] = {}
    for r in self.rows:
      out[r.fidelity] = out.get(r.fidelity, 0) + 1
    return out
