"""autoscout_jax: finds the fastest system configuration for an ML job.

Data flow (WORKSPACE.md has the map): Workload + Cluster -> a target
family's SearchSpace -> Problem (built once, handed to designers and
evaluators) -> Designer.suggest -> run_search routes candidates to Evaluators by fidelity
-> MeasurementStore -> Designer.update; writers report; run.py binds it all
with gin.
"""

from autoscout_jax.designers import Designer, ExhaustiveSearch, RandomSearch
from autoscout_jax.evaluator import Evaluator
from autoscout_jax.measurement import FIDELITIES, Measurement, Metrics
from autoscout_jax.problem import Cluster, Problem
from autoscout_jax.search import SearchResult, run_search
from autoscout_jax.space import Candidate, SearchSpace
from autoscout_jax.store import MeasurementStore
from autoscout_jax.workload import LocalCluster, ModelConfig, Workload

__all__ = [
    "Candidate", "Cluster", "Designer", "Evaluator", "ExhaustiveSearch", "FIDELITIES", "LocalCluster",
    "Measurement", "MeasurementStore", "Metrics", "ModelConfig", "Problem", "RandomSearch", "SearchResult",
    "SearchSpace", "Workload", "run_search",
]
