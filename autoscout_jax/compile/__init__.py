"""F2 at cluster scale: compile a JAX-mesh candidate's real train step for a
simulated TPU/GPU cluster on this host and read XLA's memory, flops and
collectives.

Where it sits: an evaluator of the ladder (fidelity 'compile') for
simulated clusters, beside the local F2 (local/). Flow: `CompileAtScaleEvaluator` (evaluator.py, no JAX) -> child process
(child.py) -> `probe.measure` -> `step.build_program` + `model.py` (the
sharded decoder, dense or MoE, flash-style attention in flash.py) lowered
from shapes, compiled for `targets.target_devices(...)`, figures read by
analysis.py and cached by program hash.
"""

from autoscout_jax.compile.evaluator import CompileAtScaleEvaluator, default_cache_dir
from autoscout_jax.compile.targets import (CompileTarget, TargetError, compile_target, missing_extra)

__all__ = ["CompileAtScaleEvaluator", "CompileTarget", "TargetError", "compile_target", "default_cache_dir",
           "missing_extra"]
