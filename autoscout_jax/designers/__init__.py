"""Designers: ask/tell search algorithms over a SearchSpace."""

from autoscout_jax.designers.base import Designer
from autoscout_jax.designers.exhaustive import ExhaustiveSearch
from autoscout_jax.designers.random_search import RandomSearch

__all__ = ["Designer", "ExhaustiveSearch", "RandomSearch"]
