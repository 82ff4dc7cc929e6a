"""Named configurations of the AutoScout designer: the full method and its
ablations, as factories scoutbench's registry (autoscout_jax/bench/peers.py)
and gin blocks can call.

Where it sits: `bench.peers.make_designer` calls a factory with the task's
space, the seed and its `TaskView` (fidelities on offer, expert default,
budget); the factory turns that view into AutoScoutDesigner arguments.
Every variant sees exactly what the peers see. The expert default is the
first candidate it looks at (screened first when a cheap fidelity exists).

Variants (scoutbench names):
- autoscout: everything on;
- autoscout_no_dense: no gradient relaxation (dense knobs move by discrete
  steps inside the sparse search);
- autoscout_no_priority: every knob weighs the same;
- autoscout_top_only: no cheap fidelity (profiles only);
- autoscout_fixed_split: no bandit (sparse and dense alternate 50/50).
"""

from __future__ import annotations

from typing import Any

from autoscout_jax.designers.autoscout.designer import AutoScoutDesigner
from autoscout_jax.space import SearchSpace

# Cheap screens a round may add beyond n: scoutbench asks for one candidate
# per round, and a screen costs ~1e-5 of a profile there, so a round carries
# one profile (when one is worth it) plus a batch of screens.
BENCH_EXTRA_SCREENS = 8


def _make(space: SearchSpace, seed: int, view: Any = None, **kw: Any) -> AutoScoutDesigner:
  fidelities = tuple(view.fidelities) if view is not None else None
  default = getattr(view, "default", None)
  initial = (default,) if default is not None else ()
  kw.setdefault("extra_screens", BENCH_EXTRA_SCREENS)
  return AutoScoutDesigner(space, seed, fidelities=fidelities, initial=initial, **kw)


def autoscout(space: SearchSpace, seed: int = 0, view: Any = None) -> AutoScoutDesigner:
  return _make(space, seed, view)


def autoscout_no_dense(space: SearchSpace, seed: int = 0, view: Any = None) -> AutoScoutDesigner:
  return _make(space, seed, view, dense_relaxation=False)


def autoscout_no_priority(space: SearchSpace, seed: int = 0, view: Any = None) -> AutoScoutDesigner:
  return _make(space, seed, view, prioritize=False)


def autoscout_top_only(space: SearchSpace, seed: int = 0, view: Any = None) -> AutoScoutDesigner:
  return _make(space, seed, view, cheap_fidelities=False)


def autoscout_fixed_split(space: SearchSpace, seed: int = 0, view: Any = None) -> AutoScoutDesigner:
  return _make(space, seed, view, bandit=False)
