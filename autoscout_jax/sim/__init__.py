"""Cluster-scale simulators: hardware and model catalogs, the per-layer cost
model (shared by F0 and F1), the F0 analytic and F1 event evaluators, and
their calibration on published runs (a tool on top).

Where it sits: the cheap rungs (F0, F1) of the fidelity ladder, evaluators
the search loop (search.py) routes candidates to by fidelity; a space's
target module (targets/<family>.py) turns a candidate into the Plan they
simulate. Nothing here imports a designer, the search loop or gin;
calibration.py and the tools sit on top.

Flow: catalog.make_workload + hardware.make_cluster -> targets.megatron.space /
targets.jax_mesh.space -> analytic.AnalyticEvaluator (candidates -> the
space's Plan (plan.py) -> one jitted call -> Measurements).
costs.layer_costs is the contract the F1 event simulator consumes;
constants.CALIBRATED holds the fitted constants. Serving: serving_plan.ServingPlan
-> serving.predict (TTFT, TPOT) with serving_catalog's architectures; silicon.py
reads aiconfigurator's measured sample into it.
"""

from autoscout_jax.sim.analytic import (AnalyticEvaluator, candidates_to_arrays, score_space, simulate_f0,
                                        simulate_f0_reference, step_time)
from autoscout_jax.sim.constants import CALIBRATED
from autoscout_jax.sim.catalog import MODELS, Recipe, find_model, make_workload, param_count
from autoscout_jax.sim.costs import MODEL_FIELDS, PLAN_FIELDS, SimConstants, layer_costs, model_scalars
from autoscout_jax.sim.hardware import (DEVICES, LINKS, SYSTEMS, Cluster, DeviceSpec, Link, System, cluster_scalars,
                                        make_cluster, system_for_hardware_name)
from autoscout_jax.sim.plan import Plan, Recompute, Zero
from autoscout_jax.sim.serving import ServingConstants
from autoscout_jax.sim.serving import predict as predict_serving
from autoscout_jax.sim.serving_catalog import ServingArch
from autoscout_jax.sim.serving_plan import EngineLayout, ServingPlan, ServingPrediction, ServingRequest
from autoscout_jax.sim.vspace import SimSpace, VecConstraint

__all__ = [
    "AnalyticEvaluator", "CALIBRATED", "EngineLayout", "ServingArch", "ServingConstants", "ServingPlan",
    "ServingPrediction", "ServingRequest", "predict_serving", "Cluster", "DEVICES", "DeviceSpec", "LINKS", "Link", "MODELS", "MODEL_FIELDS",
    "PLAN_FIELDS", "Plan", "Recipe", "Recompute", "SYSTEMS", "SimConstants", "SimSpace", "System", "VecConstraint",
    "candidates_to_arrays", "cluster_scalars", "find_model", "layer_costs",
    "make_cluster", "make_workload", "model_scalars",
    "param_count", "score_space", "simulate_f0", "simulate_f0_reference", "step_time",
    "system_for_hardware_name", "Zero",
]
