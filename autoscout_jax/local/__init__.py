"""The local family's real evaluators (F2 compile, F3 profile) and the
sharded Flax train step they measure; the family's space, config and
artifact are in targets/local.py.

Where it sits: the ladder's real rungs on this machine. Flow:
`targets.local.space` -> candidates -> `CompileEvaluator` /
`ProfileEvaluator` (evaluators.py) -> child process (runner.py, child.py) ->
`probe.py` -> `train_step.py` + `model.py` (the sharded Flax step).

The evaluators and the space import no JAX; the model and step builders do,
so they are loaded on first use of their names.
"""

from __future__ import annotations

import importlib
from typing import Any

from autoscout_jax.local.evaluators import CompileEvaluator, LocalSetupError, ProfileEvaluator

_LAZY = {
    "Decoder": "autoscout_jax.local.model",
    "init_params": "autoscout_jax.local.model",
    "TrainSetup": "autoscout_jax.local.train_step",
    "build_train_setup": "autoscout_jax.local.train_step",
}

__all__ = ["CompileEvaluator", "LocalSetupError", "ProfileEvaluator", *_LAZY]


def __getattr__(name: str) -> Any:
  if name in _LAZY:
    return getattr(importlib.import_module(_LAZY[name]), name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
