"""scoutbench: search quality of autoscout's designers against Optuna TPE,
SMAC3, random and exhaustive search and the expert default, on tasks whose
whole valid space has been measured (the truth), replayed through the
ordinary search loop so every designer pays for what it sees.

Where it sits: on top of the search loop (search.py), the designers and
the simulators, beside run.py as a second entry point. Flow:
gin/bench/<task>.gin -> tasks.TaskSpec -> tasks.build_task (space,
truth.TruthTable) -> runner.run_bench (search.run_search with
replay.ReplayEvaluator per designer x seed, designers from peers.DESIGNERS)
-> metrics (traces, medians over seeds) -> report (results.md,
results.json, TensorBoard). Entry point: `python -m autoscout_jax.bench`.
"""

from autoscout_jax.bench.metrics import RunTrace, aggregate, run_measures, trace_run
from autoscout_jax.bench.peers import DESIGNERS, PEERS, DesignerEntry, ExpertDefault, register
from autoscout_jax.bench.replay import FixedCostEvaluator, MemoryStore, ReplayEvaluator, repeat_index
from autoscout_jax.bench.runner import SUITES, run_bench, run_one
from autoscout_jax.bench.tasks import (BenchError, RecordedProfiling, SimulatedProfiling, Task, TaskSpec,
                                       build_task, restrict_space, task_spec)
from autoscout_jax.bench.truth import TruthError, TruthTable, load_table, measure_truth, save_table, simulate_truth

__all__ = [
    "BenchError", "DESIGNERS", "DesignerEntry", "ExpertDefault", "FixedCostEvaluator", "MemoryStore", "PEERS",
    "RecordedProfiling", "ReplayEvaluator", "RunTrace", "SUITES", "SimulatedProfiling", "Task", "TaskSpec",
    "TruthError", "TruthTable", "aggregate", "build_task", "load_table", "measure_truth",
    "register", "repeat_index", "restrict_space", "run_bench", "run_measures", "run_one", "save_table",
    "simulate_truth", "task_spec", "trace_run",
]
