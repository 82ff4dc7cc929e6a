"""The hierarchical conditional search space: knobs, candidates, constraints."""

from autoscout_jax.space.candidate import Candidate
from autoscout_jax.space.knobs import Boolean, Categorical, Float, IntRange, Knob, Ordinal, Value, When
from autoscout_jax.space.space import Constraint, ProductGroup, SearchSpace, SpaceError, Violation

__all__ = [
    "Boolean", "Candidate", "Categorical", "Constraint", "Float", "IntRange", "Knob", "Ordinal",
    "ProductGroup", "SearchSpace", "SpaceError", "Value", "Violation", "When",
]
