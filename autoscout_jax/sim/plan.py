"""The simulators' input: a typed `Plan` of per-candidate arrays, and the
codes its categorical fields take.

Where it sits: a target module (autoscout_jax/targets/<family>.py)
translates candidates of its space into a `Plan`; sim/analytic.py (F0) and
sim/event.py (F1) read it as a mapping of PLAN_FIELDS (sim/costs.py
documents what each field means). Codes are IntEnums, so no translation
writes a bare 0-3.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from typing import Any

import numpy as np

from autoscout_jax.sim.costs import PLAN_DEFAULTS, PLAN_FIELDS


class Recompute(enum.IntEnum):
  """What the backward recomputes (plan field `recompute`)."""

  NONE = 0
  SELECTIVE = 1  # the attention core (Megatron's selective recompute)
  FULL = 2  # the whole layer from its input
  DOTS = 3  # everything but the saved matmul outputs (JAX dots-saveable)


class Zero(enum.IntEnum):
  """How training state is sharded over data parallelism (plan field `zero`)."""

  NONE = 0  # replicated
  OPTIMIZER = 1  # ZeRO-1: optimizer state sharded (Megatron's distributed optimizer)
  GRADIENTS = 2  # ZeRO-2: gradients too (DeepSpeed; published rows only)
  FULL = 3  # ZeRO-3 / FSDP: parameters, gradients and optimizer state sharded


def _getitem(self, key: str) -> Any:
  if key not in PLAN_FIELDS:
    raise KeyError(key)
  return getattr(self, key)


def _of(cls, **fields: Any):
  n = np.shape(np.asarray(fields.get("tp", 0.0)))
  fields = {**{k: np.full(n, v) for k, v in PLAN_DEFAULTS.items() if k not in fields}, **fields}
  missing = sorted(set(PLAN_FIELDS) - set(fields))
  unknown = sorted(set(fields) - set(PLAN_FIELDS))
  if missing or unknown:
    raise TypeError(f"a plan needs exactly the PLAN_FIELDS; missing {missing}, unknown {unknown}")
  return cls(**{k: np.asarray(v, np.float64) for k, v in fields.items()})


# One field per PLAN_FIELDS entry: the field list is sim/costs.py's, so the
# cost model and the plan never disagree about what a plan holds.
Plan = dataclasses.make_dataclass(
    "Plan", [(f, np.ndarray) for f in PLAN_FIELDS], bases=(Mapping,), frozen=True, eq=False,
    namespace={
        "__getitem__": _getitem,
        "__iter__": lambda self: iter(PLAN_FIELDS),
        "__len__": lambda self: len(PLAN_FIELDS),
        "of": classmethod(_of),
        "__doc__": ("Per-candidate float64 arrays, one per PLAN_FIELDS entry (sim/costs.py): a "
                    "read-only Mapping the simulators index like a dict. `Plan.of(**fields)` "
                    "builds one (fields of PLAN_DEFAULTS may be left out); a missing or unknown "
                    "field is an error."),
    })
Plan.__module__ = __name__
