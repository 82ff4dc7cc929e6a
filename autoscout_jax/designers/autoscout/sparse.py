"""Sparse (structure) search: the discrete neighbourhood the surrogate scores.

Where it sits: each suggestion round the designer asks `structure_pool`
for candidates around its incumbents (best measured and best predicted
points); the surrogate scores the whole pool in one vectorized call and
the acquisition picks. This is surrogate-guided local search over the
space's tree: every move goes through `space.neighbours` (one-knob moves
and factor transfers between mesh axes), so conditions and constraints
hold by construction and newly activated knobs take their defaults.

Moves, by how far they reach:
- one move that changes a structural knob (parallel degrees, schedule,
  recompute granularity, booleans...);
- two moves where the first is structural and both touch the most
  important knobs (a tp change usually wants a micro-batch change too);
- importance-weighted random walks of a few moves (knobs that matter are
  moved more often: "search those first").
Uniform samples of the whole space join the pool in proposals.py, so the
search is never confined to the incumbents' basin, and `hill_climb` then
follows the acquisition from the best of all of them. Dense-only moves
(one dense knob changed) are returned separately: they are the dense
arm's discrete fallback when relaxation has nothing new.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from autoscout_jax.designers.autoscout.features import KnobRoles
from autoscout_jax.designers.autoscout.priority import Priorities
from autoscout_jax.space import Candidate, SearchSpace


def moved_knobs(a: Candidate, b: Candidate) -> list[str]:
  if len(a.items) == len(b.items):  # the common case: same active knobs
    moved = [x[0] for x, y in zip(a.items, b.items) if x != y]
    if all(x[0] == y[0] for x, y in zip(a.items, b.items)):
      return moved
  va, vb = a.values, b.values
  return [n for n in dict.fromkeys(list(va) + list(vb)) if va.get(n) != vb.get(n)]


class NeighbourCache:
  """`space.neighbours` validates every move in Python; remember results."""

  def __init__(self, space: SearchSpace, limit: int = 20000):
    self.space = space
    self._cache: dict[Candidate, list[Candidate]] = {}
    self.limit = limit

  def __call__(self, cand: Candidate) -> list[Candidate]:
    got = self._cache.get(cand)
    if got is None:
      got = self.space.neighbours(cand)
      if len(self._cache) >= self.limit:
        self._cache.pop(next(iter(self._cache)))
      self._cache[cand] = got
    return got


def split_moves(cand: Candidate, neigh: Sequence[Candidate], roles: KnobRoles
                ) -> tuple[list[Candidate], list[Candidate]]:
  """(structural moves, dense-only moves) among the neighbours of `cand`."""
  dense = set(roles.dense)
  structural, dense_only = [], []
  for nb in neigh:
    moved = moved_knobs(cand, nb)
    if moved and all(m in dense for m in moved):
      dense_only.append(nb)
    else:
      structural.append(nb)
  return structural, dense_only


def _move_weight(cand: Candidate, nb: Candidate, prio: Priorities) -> float:
  return max((prio.weight(m) for m in moved_knobs(cand, nb)), default=0.0)


def structure_pool(incumbents: Sequence[Candidate], roles: KnobRoles, prio: Priorities,
                   rng: np.random.Generator, neighbours: NeighbourCache,
                   top_knobs: int = 4, max_two_moves: int = 300, walks: int = 16,
                   walk_len: int = 3) -> tuple[list[Candidate], list[Candidate]]:
  """(local structural candidates, dense-only moves), each deduplicated and
  in a deterministic order."""
  local: dict[Candidate, None] = {}
  dense_moves: dict[Candidate, None] = {}
  important = set(prio.top(top_knobs))
  for rank, inc in enumerate(incumbents):
    struct, dense_only = split_moves(inc, neighbours(inc), roles)
    for c in struct:
      local.setdefault(c)
    for c in dense_only:
      dense_moves.setdefault(c)
    if rank > 1:
      continue  # two-move neighbourhoods only around the two best incumbents
    firsts = [c for c in struct if set(moved_knobs(inc, c)) & important]
    firsts.sort(key=lambda c: -_move_weight(inc, c, prio))
    budget = max_two_moves
    for c1 in firsts:
      if budget <= 0:
        break
      for c2 in neighbours(c1):
        if c2 == inc or not set(moved_knobs(c1, c2)) & important:
          continue
        if c2 not in local:
          local[c2] = None
          budget -= 1
  # Importance-weighted random walks from the incumbents.
  for w in range(walks if incumbents else 0):
    cur = incumbents[w % len(incumbents)]
    for _ in range(walk_len):
      nbs = neighbours(cur)
      if not nbs:
        break
      wts = np.array([_move_weight(cur, nb, prio) for nb in nbs]) + 1e-3
      cur = nbs[int(rng.choice(len(nbs), p=wts / wts.sum()))]
      local.setdefault(cur)
  for inc in incumbents:
    local.pop(inc, None)
    dense_moves.pop(inc, None)
  return list(local), list(dense_moves)


def hill_climb(starts: Sequence[Candidate], score, neighbours: NeighbourCache, steps: int = 3,
               exclude=lambda c: False) -> list[Candidate]:
  """Local search on the acquisition from several starts at once: each step
  scores every neighbour of every current point in one call and moves each
  point to its best neighbour if that scores higher. Returns every candidate
  it scored (in first-seen order), so the caller can pick among them."""
  seen: dict[Candidate, None] = dict.fromkeys(starts)
  cur = list(dict.fromkeys(starts))
  if not cur:
    return []
  cur_score = list(score(cur))
  for _ in range(steps):
    nbs = [[nb for nb in neighbours(c) if not exclude(nb)] for c in cur]
    flat = list(dict.fromkeys(nb for group in nbs for nb in group))
    if not flat:
      break
    seen.update(dict.fromkeys(flat))
    vals = dict(zip(flat, score(flat)))
    moved = False
    for i, group in enumerate(nbs):
      if group:
        best = max(group, key=lambda c: vals[c])
        if vals[best] > cur_score[i]:
          cur[i], cur_score[i], moved = best, vals[best], True
    if not moved:
      break
  return list(seen)


def maximin(cands: Sequence[Candidate], chosen_x: np.ndarray, x: np.ndarray, k: int) -> list[int]:
  """Indices of k candidates, each the farthest (in encoded features) from
  everything chosen so far: a space-filling initial design."""
  out: list[int] = []
  if not len(cands):
    return out
  ref = [row for row in chosen_x] if len(chosen_x) else []
  dmin = np.full(len(cands), np.inf)
  for r in ref:
    dmin = np.minimum(dmin, np.sum((x - r) ** 2, axis=1))
  for _ in range(min(k, len(cands))):
    i = int(np.argmax(dmin)) if np.isfinite(dmin).any() else 0
    out.append(i)
    dmin = np.minimum(dmin, np.sum((x - x[i]) ** 2, axis=1))
    dmin[i] = -1.0
  return out
