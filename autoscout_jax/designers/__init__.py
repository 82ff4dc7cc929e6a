"""Designers: ask/tell search algorithms over a SearchSpace.

Where it sits: between the Problem (problem.py) and the search loop
(search.py): `suggest` gives candidates, `update` takes measurements;
designers never evaluate. gin/designers/*.gin bind them as DESIGNER."""

from autoscout_jax.designers.base import Designer
from autoscout_jax.designers.exhaustive import ExhaustiveSearch
from autoscout_jax.designers.random_search import RandomSearch

__all__ = ["Designer", "ExhaustiveSearch", "RandomSearch"]
