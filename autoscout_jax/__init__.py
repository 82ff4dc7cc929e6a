"""autoscout_jax: finds the fastest system configuration for an ML job.

Where it sits: the package root; data flow (WORKSPACE.md has the map): Workload + Cluster -> a target
family's SearchSpace -> Problem (built once, handed to designers and
evaluators) -> Designer.suggest -> run_search routes candidates to Evaluators by fidelity
-> MeasurementStore -> Designer.update; writers report; run.py binds it all
with gin.

The exports below load lazily (PEP 562), so a subpackage that must run
without the package's dependencies (maxtext_child/, in MaxText's Python)
can be imported on its own.
"""

import importlib

_EXPORTS = {
    "Designer": "autoscout_jax.designers", "ExhaustiveSearch": "autoscout_jax.designers",
    "RandomSearch": "autoscout_jax.designers", "Evaluator": "autoscout_jax.evaluator",
    "FIDELITIES": "autoscout_jax.measurement", "Measurement": "autoscout_jax.measurement",
    "Metrics": "autoscout_jax.measurement", "Cluster": "autoscout_jax.problem",
    "Problem": "autoscout_jax.problem", "SearchResult": "autoscout_jax.search",
    "run_search": "autoscout_jax.search", "Candidate": "autoscout_jax.space",
    "SearchSpace": "autoscout_jax.space", "MeasurementStore": "autoscout_jax.store",
    "LocalCluster": "autoscout_jax.workload", "ModelConfig": "autoscout_jax.workload",
    "Workload": "autoscout_jax.workload",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
  if name not in _EXPORTS:
    raise AttributeError(f"module 'autoscout_jax' has no attribute {name!r}")
  value = getattr(importlib.import_module(_EXPORTS[name]), name)
  globals()[name] = value
  return value
