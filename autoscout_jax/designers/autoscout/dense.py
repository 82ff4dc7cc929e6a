"""Dense relaxation: gradient ascent of the surrogate's acquisition over the
dense knobs of a fixed structure, then rounding to valid candidates.

Where it sits: the designer's dense arm hands `relax` a few base
candidates (incumbent structures). Their encodings (`space.encode`) are
the starting points; only the features of active dense knobs that matter
(priority.py) are free, the rest of the vector (the structure) is held.
Starting points: each base itself plus random restarts in the free
coordinates. One jitted `lax.scan` of optax Adam steps ascends

    acquisition(x) = -(mean log time - kappa * std log time) + log P(feasible)

through the surrogate (`surrogates.acquisition_arrays`, differentiable in
x), projected onto [0, 1] (the encoding's range). The relaxed points go
back to the space as every valid combination of the two grid values
bracketing each relaxed dense coordinate (the nearest grid point of a
smooth optimum is not always the best one), or, when none is valid, as
`space.round`'s nearest valid candidate. The designer scores all of them
in one call.

Shapes are fixed (`MAX_STARTS` rows x the space's width) so the ascent
compiles once per space and surrogate architecture; a refitted surrogate
is a new pytree of the same shapes and reuses it.
"""

from __future__ import annotations

import functools
import itertools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

import surrogates
from autoscout_jax.space import Candidate, Float, SearchSpace, SpaceError

MAX_STARTS = 32
STEPS = 40
LEARNING_RATE = 0.05
MAX_BRACKET_KNOBS = 5  # 2^5 combinations per relaxed point at most


@functools.partial(jax.jit, static_argnames=("steps",))
def _ascend(state: surrogates.SurrogateState, x0: jax.Array, active: jax.Array, free: jax.Array,
            kappa: jax.Array, steps: int) -> tuple[jax.Array, jax.Array]:
  opt = optax.adam(LEARNING_RATE)

  def neg_acq(x):
    return -surrogates.acquisition_arrays(state, x, active, kappa=kappa).sum()

  def step(carry, _):
    x, opt_state = carry
    g = jax.grad(neg_acq)(x) * free
    upd, opt_state = opt.update(g, opt_state, x)
    x = jnp.where(free > 0, jnp.clip(x + upd, 0.0, 1.0), x0)
    return (x, opt_state), None

  (x, _), _ = jax.lax.scan(step, (x0, opt.init(x0)), None, length=steps)
  return x, surrogates.acquisition_arrays(state, x, active, kappa=kappa)


def relax(space: SearchSpace, state: surrogates.SurrogateState, bases: Sequence[Candidate],
          dense_knobs: Sequence[str], rng: np.random.Generator, kappa: float = 1.0,
          restarts: int = 3) -> list[tuple[Candidate, np.ndarray]]:
  """(base, relaxed feature vector), one per start, for the bases' dense
  knobs. Bases without an active dense knob contribute nothing."""
  starts, actives, frees, owners = [], [], [], []
  for base in bases:
    x, m = space.encode([base])
    free = np.zeros_like(x[0])
    for name in dense_knobs:
      if name in base.values:
        free[space.knob_slice(name)] = 1.0
    if not free.any():
      continue
    for r in range(restarts):
      x0 = x[0].copy()
      if r:  # random restarts in the free coordinates only
        x0 = np.where(free > 0, rng.random(x0.shape), x0).astype(np.float32)
      starts.append(x0)
      actives.append(m[0])
      frees.append(free)
      owners.append(base)
  starts, actives, frees = starts[:MAX_STARTS], actives[:MAX_STARTS], frees[:MAX_STARTS]
  if not starts:
    return []
  n = len(starts)
  pad = MAX_STARTS - n
  x0 = np.stack(starts + [starts[0]] * pad).astype(np.float32)
  act = np.stack(actives + [actives[0]] * pad).astype(np.float32)
  fr = np.stack(frees + [np.zeros_like(frees[0])] * pad).astype(np.float32)
  x, _ = _ascend(state, jnp.asarray(x0), jnp.asarray(act), jnp.asarray(fr),
                 jnp.asarray(kappa, jnp.float32), steps=STEPS)
  x = np.asarray(x)[:n]
  return [(owners[i], x[i]) for i in range(n)]


def _bracket(knob, u: float) -> list:
  """The domain values whose encodings enclose the relaxed coordinate u."""
  if isinstance(knob, Float):
    return [knob.decode([u])]
  vals = list(knob.finite_values())
  enc = np.array([knob.encode(v)[0] for v in vals])
  lo = [v for v, e in zip(vals, enc) if e <= u + 1e-9]
  hi = [v for v, e in zip(vals, enc) if e >= u - 1e-9]
  out = []
  if lo:
    out.append(lo[-1])
  if hi and (not out or hi[0] != out[0]):
    out.append(hi[0])
  return out


def round_relaxed(space: SearchSpace, feats: np.ndarray, base: Candidate,
                  dense_knobs: Sequence[str], importance: dict[str, float] | None = None,
                  seen: set | None = None) -> list[Candidate]:
  """Valid candidates near a relaxed vector of `base`'s structure: every
  valid combination of the two grid values bracketing each relaxed dense
  coordinate (at most 2**MAX_BRACKET_KNOBS, the most important knobs
  bracketed first, the rest at their nearest value). If none is valid,
  the space's own rounding (nearest valid candidate, searching outward).
  `seen` (bracket option sets already expanded) skips duplicates: many
  restarts land in the same grid cell."""
  vals = base.values
  active = [n for n in dense_knobs if n in vals]
  if importance:
    active.sort(key=lambda n: -importance.get(n, 0.0))
  options = []
  for i, name in enumerate(active):
    sl = space.knob_slice(name)
    u = float(feats[sl][0])
    opts = _bracket(space[name], u) or [vals[name]]
    if i >= MAX_BRACKET_KNOBS:
      opts = [space[name].decode([u])]
    options.append(tuple(opts))
  sig = (base, tuple(options))
  if seen is not None:
    if sig in seen:
      return []
    seen.add(sig)
  out: dict[Candidate, None] = {}
  for combo in itertools.product(*options):
    changed = dict(vals)
    changed.update(zip(active, combo))
    try:
      cand = space.make(changed)
    except SpaceError:  # a value the space rejects outright is simply not a candidate
      continue
    if cand not in out and space.is_valid(cand):
      out[cand] = None
  if not out:
    cand = space.round(feats, max_repair=8)
    if space.is_valid(cand):
      out[cand] = None
  return list(out)
