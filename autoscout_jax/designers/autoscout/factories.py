"""Named configurations of the AutoScout designer: the full method and its
ablations, as factories scoutbench's registry (autoscout_jax/bench/peers.py)
and gin blocks can call.

Where it sits: `bench.peers.make_designer` calls a factory with the task's
`Problem` (space, fidelities on offer, expert default) and the seed; each
variant is one `AutoScoutConfig`, the full method's with one part switched
off by `dataclasses.replace`. Every variant sees exactly what the peers
see. The expert default is the first candidate it looks at (screened first
when a cheap fidelity exists).

Variants (scoutbench names):
- autoscout: everything on;
- autoscout_no_dense: no gradient relaxation (dense knobs move by discrete
  steps inside the sparse search);
- autoscout_no_priority: every knob weighs the same;
- autoscout_top_only: no cheap fidelity (profiles only);
- autoscout_fixed_split: no bandit (sparse and dense alternate 50/50);
- autoscout_no_cheap_order: no cheap-order stage (ranked.py): the sparse/dense
  search also where a cheap fidelity could score the whole space.
"""

from __future__ import annotations

import dataclasses

from autoscout_jax.designers.autoscout.config import AutoScoutConfig
from autoscout_jax.designers.autoscout.designer import AutoScoutDesigner
from autoscout_jax.problem import Problem

# Cheap screens a round may add beyond n: scoutbench asks for one candidate
# per round, and a screen costs ~1e-5 of a profile there, so a round carries
# one profile (when one is worth it) plus a batch of screens. The bench loop
# does not measure the default itself, so the designer starts from it.
BENCH = AutoScoutConfig(extra_screens=8, start_from_default=True)

VARIANTS: dict[str, AutoScoutConfig] = {
    "autoscout": BENCH,
    "autoscout_no_dense": dataclasses.replace(BENCH, dense_relaxation=False),
    "autoscout_no_priority": dataclasses.replace(BENCH, prioritize=False),
    "autoscout_top_only": dataclasses.replace(BENCH, cheap_fidelities=False),
    "autoscout_fixed_split": dataclasses.replace(BENCH, bandit=False),
    "autoscout_no_cheap_order": dataclasses.replace(BENCH, cheap_order=False),
}


def autoscout(problem: Problem, seed: int = 0) -> AutoScoutDesigner:
  return AutoScoutDesigner(problem, seed, VARIANTS["autoscout"])


def autoscout_no_dense(problem: Problem, seed: int = 0) -> AutoScoutDesigner:
  return AutoScoutDesigner(problem, seed, VARIANTS["autoscout_no_dense"])


def autoscout_no_priority(problem: Problem, seed: int = 0) -> AutoScoutDesigner:
  return AutoScoutDesigner(problem, seed, VARIANTS["autoscout_no_priority"])


def autoscout_top_only(problem: Problem, seed: int = 0) -> AutoScoutDesigner:
  return AutoScoutDesigner(problem, seed, VARIANTS["autoscout_top_only"])


def autoscout_fixed_split(problem: Problem, seed: int = 0) -> AutoScoutDesigner:
  return AutoScoutDesigner(problem, seed, VARIANTS["autoscout_fixed_split"])


def autoscout_no_cheap_order(problem: Problem, seed: int = 0) -> AutoScoutDesigner:
  return AutoScoutDesigner(problem, seed, VARIANTS["autoscout_no_cheap_order"])
