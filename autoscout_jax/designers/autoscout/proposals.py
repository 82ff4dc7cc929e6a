"""One round's proposals: incumbents, the sparse arm's and the dense arm's
candidates, and the rolling pool of uniform samples.

Where it sits: `AutoScoutDesigner.suggest` calls `Proposer.round` once per
round; it returns, per arm, the candidates the arm proposes, built from

- the incumbents: the best profiled candidates and, while a cheap
  fidelity gates profiling, the best screened ones not yet profiled;
- sparse.py's structural neighbourhoods of the incumbents, plus uniform
  samples (a rolling pool: a quarter is renewed each round, so sampling a
  large space costs little per round);
- a hill climb of the acquisition from the best-scoring of those, so a
  promising region far from anything measured is searched too;
- dense.py's relaxation of the best structures' dense knobs.
The designer then scores the union once and spends its slots.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Sequence

import numpy as np

from autoscout_jax.designers.autoscout import dense as dense_lib
from autoscout_jax.designers.autoscout import sparse as sparse_lib
from autoscout_jax.designers.autoscout.acquisition import Scorer
from autoscout_jax.designers.autoscout.features import KnobRoles, Observations
from autoscout_jax.designers.autoscout.priority import Priorities
from autoscout_jax.space import Candidate, SearchSpace, SpaceError


@dataclasses.dataclass(frozen=True)
class Pool:
  """One round's proposals: the incumbents they grew from, the candidates
  already screened at the gate, the proposals per arm ("sparse", "dense",
  "global") and their union."""

  incumbents: list[Candidate]
  screened: list[Candidate]
  lists: Mapping[str, list[Candidate]]
  union: list[Candidate]


class Proposer:

  def __init__(self, space: SearchSpace, roles: KnobRoles, prio: Priorities,
               rng: np.random.Generator, dense_relaxation: bool, kappa: float,
               pool_samples: int):
    self.space, self.roles, self.prio, self.rng = space, roles, prio, rng
    self.dense_relaxation, self.kappa, self.pool_samples = dense_relaxation, kappa, pool_samples
    self.neigh = sparse_lib.NeighbourCache(space)
    self._glob: list[Candidate] = []

  def sample(self, k: int) -> list[Candidate]:
    try:
      return list(dict.fromkeys(self.space.sample(self.rng, k)))
    except SpaceError:
      return []

  def global_pool(self, done: set[Candidate]) -> list[Candidate]:
    fresh = self.sample(self.pool_samples if not self._glob else max(1, self.pool_samples // 4))
    keep = [c for c in dict.fromkeys(fresh + self._glob) if c not in done]
    self._glob = keep[:self.pool_samples]
    return list(self._glob)

  @staticmethod
  def incumbents(obs: Observations, scorer: Scorer, gate: str | None, k: int = 3
                 ) -> tuple[list[Candidate], list[Candidate]]:
    """(incumbents, screened-not-profiled candidates at the gate)."""
    tops = sorted((r for r in obs.top_rows() if r.feasible), key=lambda r: -r.y)
    out = [r.candidate for r in tops[:k]]
    screened: list[Candidate] = []
    if gate is not None:
      done = obs.done.get(obs.top, set())
      screened = [r.candidate for r in obs.rows if r.fidelity == gate and r.feasible
                  and r.candidate not in done]
      if screened:
        mu = scorer.scores(screened)["mu"]
        order = np.argsort(-mu, kind="stable")[:2]
        out += [screened[i] for i in order if screened[i] not in out]
    return out, screened

  def round(self, incs: Sequence[Candidate], surr_state, score: Callable,
            done_top: set[Candidate]) -> dict[str, list[Candidate]]:
    """Per-arm proposals ("sparse", "dense") and the uniform samples
    ("global", also part of the sparse arm). `score(cands)` is the
    acquisition the climb follows."""
    local, dense_moves = sparse_lib.structure_pool(incs, self.roles, self.prio, self.rng,
                                                   self.neigh)
    glob = self.global_pool(done_top)
    if self.dense_relaxation:
      moves = lambda c: sparse_lib.split_moves(c, self.neigh(c), self.roles)[0]
      base = local + glob
    else:  # without relaxation dense knobs move by discrete steps here
      moves, base = self.neigh, local + dense_moves + glob
    base = [c for c in dict.fromkeys(base) if c not in done_top]
    starts = []
    if base:
      order = np.argsort(-score(base), kind="stable")[:4]
      starts = [base[i] for i in order]
    climbed = sparse_lib.hill_climb(starts, score, moves, exclude=lambda c: c in done_top)
    lists = {"sparse": list(dict.fromkeys(base + climbed)), "global": glob}
    if self.dense_relaxation:
      lists["dense"] = self._relaxed(incs, climbed, surr_state, score, dense_moves, done_top)
    return lists

  def _relaxed(self, incs, climbed, surr_state, score, dense_moves, done_top) -> list[Candidate]:
    imp = self.prio.scores
    # Only the dense knobs that matter are freed (all of them when
    # prioritization is off): relaxing the rest only adds noise.
    knobs = [k for k in self.roles.dense
             if not self.prio.enabled or imp[k] >= 0.5 / len(self.space.names)]
    best_climbed = []
    if climbed:
      order = np.argsort(-score(climbed), kind="stable")[:2]
      best_climbed = [climbed[i] for i in order]
    bases = list(dict.fromkeys(list(incs[:2]) + best_climbed))
    out: dict[Candidate, None] = {}
    seen: set = set()
    for base, feats in dense_lib.relax(self.space, surr_state, bases, knobs or self.roles.dense,
                                       self.rng, kappa=self.kappa):
      for c in dense_lib.round_relaxed(self.space, feats, base, self.roles.dense, imp, seen):
        out.setdefault(c)
    return [c for c in list(out) + dense_moves if c not in done_top and c not in incs]
