"""The hierarchical conditional search space: knobs, candidates, constraints.

Where it sits: under everything that names a configuration -- the target
families (targets/) build spaces, designers sample them, the loop
validates against them, encoding.py turns them into arrays."""

from autoscout_jax.space.candidate import Candidate
from autoscout_jax.space.knobs import Boolean, Categorical, Float, IntRange, Knob, Ordinal, Value, When
from autoscout_jax.space.space import Constraint, ProductGroup, SearchSpace, SpaceError, Violation

__all__ = [
    "Boolean", "Candidate", "Categorical", "Constraint", "Float", "IntRange", "Knob", "Ordinal",
    "ProductGroup", "SearchSpace", "SpaceError", "Value", "Violation", "When",
]
