"""AutoScout: surrogate-guided hybrid search (sparse structure moves +
dense gradient relaxation, a bandit between them, knob prioritization and
multi-fidelity screening). `AutoScoutDesigner(problem, seed, AutoScoutConfig(...))` is the entry point;
`factories` holds the named variants scoutbench runs (the full method and
one ablation per part).

Where it sits: one designer among designers/ (ask/tell between the
Problem and search.run_search; it never evaluates). gin/designers/autoscout.gin
binds it for a run, bench/peers.py lists its variants for scoutbench.
Inside, designer.py runs each round as a pipeline over the package's
modules (its docstring has the order); the surrogate is arrays only
(surrogates/), the cheap fidelities' order is ranked.py + residual.py,
warm-start rows on disk are warm.py."""

from autoscout_jax.designers.autoscout.acquisition import Scorer
from autoscout_jax.designers.autoscout.bandit import Bandit
from autoscout_jax.designers.autoscout.config import AutoScoutConfig, SearchState
from autoscout_jax.designers.autoscout.designer import AutoScoutDesigner
from autoscout_jax.designers.autoscout.features import KnobRoles, Observations, knob_roles
from autoscout_jax.designers.autoscout.fidelity import FidelityError, FidelityPlan
from autoscout_jax.designers.autoscout.priority import Priorities, permutation_importance
from autoscout_jax.designers.autoscout.proposals import Proposer
from autoscout_jax.designers.autoscout.ranked import CheapOrder
from autoscout_jax.designers.autoscout.warm import load_rows, save_rows
from autoscout_jax.designers.autoscout.surrogate import FusedSurrogate, SurrogateSpec

__all__ = [
    "CheapOrder", "load_rows", "save_rows",
    "AutoScoutConfig", "AutoScoutDesigner", "Bandit", "FidelityError", "FidelityPlan", "FusedSurrogate", "KnobRoles",
    "Observations", "Priorities", "Proposer", "Scorer", "SearchState", "SurrogateSpec", "knob_roles",
    "permutation_importance",
]
