"""The AutoScout designer's settings (`AutoScoutConfig`, frozen) and its
mutable bookkeeping (`SearchState`, one explicit object).

Where it sits: gin blocks and scoutbench's factories build one
`AutoScoutConfig` (ablations are `dataclasses.replace(config, ...)`) and
hand it to `AutoScoutDesigner(problem, seed, config)`; the designer keeps
everything that changes between rounds in its `SearchState`, so what a
resumed run must replay is visible in one place.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

from autoscout_jax.designers.autoscout.surrogate import SurrogateSpec
from autoscout_jax.space import Candidate

ACQUISITIONS = ("thompson", "ei")


@dataclasses.dataclass(frozen=True)
class AutoScoutConfig:
  """
  dense_relaxation, prioritize, cheap_fidelities, bandit: switch off one
    part each (the ablations autoscout_no_dense, _no_priority, _top_only,
    _fixed_split).
  screens_per_top: cheap screens per profile while a cheap fidelity is
    fully trusted (scaled down with trust).
  extra_screens: cheap screens a round may add beyond n (0 keeps suggest(n)
    at n candidates; harnesses where rounds are scarce raise it).
  init_samples: space-filling top-fidelity picks before the surrogate
    leads, when no cheap fidelity can screen.
  mape_threshold: a cheap fidelity's recent calibrated error above this is
    down-weighted, above twice this bypassed.
  kappa: optimism of screening and relaxation (std multiples).
  dense_knobs: override which knobs are relaxed (default: knob_roles).
  prior_importance: knob -> score, seeds the ordering by hand.
  surrogate: size of the ensemble and of its training.
  pool_samples: uniform samples of the space added to each round's pool.
  acquisition: how top-fidelity slots pick within an arm: "thompson" (each
    slot maximizes one ensemble member, rotating) or "ei" (expected
    improvement per device-second for every slot).
  start_from_default: look at the problem's expert default first (screened
    first when a cheap fidelity can, else profiled); for harnesses whose
    loop does not measure the default itself.
  stop_after: while a cheap fidelity gates profiling, the search ends
    (suggest returns []) after this many rounds in which no screened
    candidate promised a gain worth a profile, without the best improving
    in between. None: never stop.
  cheap_order: where the cheapest fidelity can score the whole space
    (at most `cheap_order_max` valid candidates), the cheap-order stage
    (ranked.py) leads instead: the cheap fidelity's order, re-ranked by the
    learned residual; `cheap_order_stop_gain` is its early-stop threshold.
  remeasure, max_repeats, repeat_share, repeat_noise: re-measure the top
    contenders when their difference is within the measured noise
    (contenders.py): at most `max_repeats` measurements of a candidate,
    re-measurements at most `repeat_share` of the top-fidelity
    measurements, `repeat_noise` the noise (log sd) assumed before any
    repeat measured it.
  """

  dense_relaxation: bool = True
  prioritize: bool = True
  cheap_fidelities: bool = True
  bandit: bool = True
  screens_per_top: float = 3.0
  extra_screens: int = 0
  init_samples: int = 3
  mape_threshold: float = 0.15
  kappa: float = 1.0
  dense_knobs: tuple[str, ...] | None = None
  prior_importance: Mapping[str, float] | None = None
  surrogate: SurrogateSpec = SurrogateSpec()
  pool_samples: int = 1024
  acquisition: str = "thompson"
  start_from_default: bool = False
  stop_after: int | None = 24
  cheap_order: bool = True
  cheap_order_max: int = 25_000
  cheap_order_stop_gain: float = 0.001
  remeasure: bool = True
  max_repeats: int = 3
  repeat_share: float = 0.25
  repeat_noise: float = 0.05

  def __post_init__(self):
    if min(self.screens_per_top, self.extra_screens, self.init_samples, self.pool_samples,
           self.stop_after or 0) < 0:
      raise ValueError("screens_per_top, extra_screens, init_samples, pool_samples and stop_after "
                       "must be >= 0")
    if self.acquisition not in ACQUISITIONS:
      raise ValueError(f"acquisition must be 'thompson' or 'ei', got {self.acquisition!r}")
    if self.dense_knobs is not None:
      object.__setattr__(self, "dense_knobs", tuple(self.dense_knobs))


@dataclasses.dataclass
class SearchState:
  """Everything of the designer that changes between rounds, besides the
  observations table and the learned parts (surrogate, priorities, bandit,
  fidelity trust), which live in their own modules."""

  asked: dict[str, set[Candidate]] = dataclasses.field(default_factory=dict)  # fidelity -> asked there
  failed: dict[str, set[Candidate]] = dataclasses.field(default_factory=dict)  # fidelity -> failed there
  origin: dict[Candidate, str] = dataclasses.field(default_factory=dict)  # the arm that proposed it
  pulled: dict[Candidate, str] = dataclasses.field(default_factory=dict)  # profiled for this arm
  initial_todo: list[Candidate] = dataclasses.field(default_factory=list)
  fit_mark: tuple | None = None  # data counts at the last surrogate fit
  credit: float = 0.0  # top-fidelity slots earned by screens
  dry_rounds: int = 0  # rounds in a row without a screened candidate worth profiling
  dry_since_best: int = 0  # dry rounds since the best improved
  rounds: int = 0
  remeasured: int = 0  # re-measurements of top contenders asked
