"""Cluster-scale simulators: hardware and model catalogs, the Megatron and
JAX-mesh spaces, the per-layer cost model (shared by F0 and F1), the F0
analytic evaluator, and its calibration on published runs.

Flow: catalog.make_workload + hardware.make_cluster -> spaces.*_training_space
-> analytic.AnalyticEvaluator (candidates -> PLAN arrays -> one jitted call ->
Measurements). costs.layer_costs is the contract the F1 event simulator
consumes; calibration.CALIBRATED holds the fitted constants.
"""

from autoscout_jax.sim.analytic import (AnalyticEvaluator, candidates_to_arrays, score_space, simulate_f0,
                                        simulate_f0_reference, step_time)
from autoscout_jax.sim.calibration import CALIBRATED
from autoscout_jax.sim.catalog import MODELS, Recipe, active_param_count, find_model, make_workload, param_count
from autoscout_jax.sim.costs import MODEL_FIELDS, PLAN_FIELDS, SimConstants, layer_costs, model_scalars
from autoscout_jax.sim.hardware import (DEVICES, LINKS, SYSTEMS, Cluster, DeviceSpec, Link, System, cluster_scalars,
                                        make_cluster, system_for_hardware_name)
from autoscout_jax.sim.spaces import jax_mesh_training_space, megatron_plan, megatron_training_space, mesh_plan, plan_arrays
from autoscout_jax.sim.vspace import SimSpace, VecConstraint

__all__ = [
    "AnalyticEvaluator", "CALIBRATED", "Cluster", "DEVICES", "DeviceSpec", "LINKS", "Link", "MODELS", "MODEL_FIELDS",
    "PLAN_FIELDS", "Recipe", "SYSTEMS", "SimConstants", "SimSpace", "System", "VecConstraint", "active_param_count",
    "candidates_to_arrays", "cluster_scalars", "find_model", "jax_mesh_training_space", "layer_costs",
    "make_cluster", "make_workload", "megatron_plan", "megatron_training_space", "mesh_plan", "model_scalars",
    "param_count", "plan_arrays", "score_space", "simulate_f0", "simulate_f0_reference", "step_time",
    "system_for_hardware_name",
]
