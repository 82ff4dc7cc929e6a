"""A learned multi-fidelity surrogate: a vmapped deep ensemble of Flax MLPs.

Where it sits in the data flow::

    encoding.to_arrays ──► make_data ──► fit ──► SurrogateState
        ──► predict / grad_log_time / acquisition_value_and_grad ──► designers
        ──► evaluate ──► writers;  save / load ──► workdir

This package sees arrays only: it never imports `autoscout_jax` or gin.
"""

from surrogates.checkpoint import load, save
from surrogates.config import ModelConfig, TrainConfig
from surrogates.data import (SurrogateData, bucket_size, check_compatible, make_data, pad_rows,
                             pad_to_bucket, validation_split)
from surrogates.metrics import auc, coverage, evaluate, kendall_tau, spearman, top_k_regret
from surrogates.model import Normalizer, SurrogateState, untrained_state
from surrogates.predict import (UNTRAINED_STD, Prediction, acquisition_arrays,
                                acquisition_value_and_grad, grad_log_time, member_log_time, predict,
                                predict_arrays)
from surrogates.tracing import trace_counts
from surrogates.train import FitHistory, fit

__all__ = [
    "FitHistory",
    "ModelConfig",
    "Normalizer",
    "Prediction",
    "SurrogateData",
    "SurrogateState",
    "TrainConfig",
    "UNTRAINED_STD",
    "acquisition_arrays",
    "acquisition_value_and_grad",
    "auc",
    "bucket_size",
    "check_compatible",
    "coverage",
    "evaluate",
    "fit",
    "grad_log_time",
    "kendall_tau",
    "load",
    "make_data",
    "member_log_time",
    "pad_rows",
    "pad_to_bucket",
    "predict",
    "predict_arrays",
    "save",
    "spearman",
    "top_k_regret",
    "trace_counts",
    "untrained_state",
    "validation_split",
]
