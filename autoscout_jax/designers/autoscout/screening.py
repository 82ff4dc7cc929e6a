"""The screen step of a round: which candidates the cheap fidelities look
at next.

Where it sits: `AutoScoutDesigner.suggest` runs propose (proposals.py) ->
score (acquisition.py) -> allocate (the top-fidelity picks, bandit.py and
fidelity.py) -> screen (here): the slots a round has left, plus its extra
screens, go to cheap measurements of the round's scored pool.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np

from autoscout_jax.designers.autoscout.acquisition import Scorer
from autoscout_jax.designers.autoscout.features import Observations
from autoscout_jax.space import Candidate


def focus(incumbents: Sequence[Candidate], scorer: Scorer, obs: Observations) -> Candidate | None:
  """The best candidate known: profiled, or screened at a gate."""
  if not incumbents:
    return None
  mu = scorer.scores(incumbents)["mu"]
  for i, c in enumerate(incumbents):
    r = obs.top_outcome(c)
    if r is not None:
      mu[i] = r.y if r.feasible else -np.inf
  return incumbents[int(np.argmax(mu))]


def screens(k: int, trusted: Sequence[str], union: Sequence[Candidate], sc: Mapping[str, np.ndarray],
            pos: Mapping[Candidate, int], glob: Sequence[Candidate], neighbourhood: Sequence[Candidate],
            obs: Observations, top: str, rng: np.random.Generator,
            done: Callable[[str], set], ask: Callable[[Candidate, str], Candidate]) -> list[Candidate]:
  """k cheap screens at the lowest trusted level (each higher level instead
  promotes the best candidates screened at the level below). Slots rotate
  over three sources: the one-move `neighbourhood` of the best candidate
  known so far, in the surrogate's optimistic order (a screen is nearly
  free, so the neighbourhood is worth covering: a local search on the
  cheap fidelity); the whole pool in that order; and a uniform sample
  (`glob`), so the surrogate keeps seeing the whole space. `done(f)`: the
  candidates asked or measured at fidelity f; `ask(c, f)` records a
  suggestion and returns it."""
  if k <= 0 or not trusted:
    return []
  out: list[Candidate] = []
  done_top = done(top)
  order = np.argsort(-sc["screen"], kind="stable")
  ranked = [union[i] for i in order if union[i] not in done_top]
  local = [c for c in neighbourhood if c in pos and c not in done_top]
  local.sort(key=lambda c: -sc["screen"][pos[c]])
  for slot in range(k):
    level = trusted[slot % len(trusted)]
    below = trusted[trusted.index(level) - 1] if trusted.index(level) > 0 else None
    seen = done(level)
    if below is None and slot % 4 == 3:
      pool = [c for c in glob if c not in seen]
      if pool:
        out.append(ask(pool[int(rng.integers(len(pool)))], level))
        continue
    source = local + ranked if below is None and slot % 2 == 0 else ranked
    for c in source:
      if c in seen:
        continue
      if below is not None:
        r = obs.get(c, below)
        if r is None or not r.feasible:
          continue
      out.append(ask(c, level))
      break
  return out
