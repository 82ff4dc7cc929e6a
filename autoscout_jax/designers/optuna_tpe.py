"""Optuna's TPE sampler behind the Designer interface (a peer in scoutbench).

Where it sits: a `Designer` like any other; `search.run_search` asks it for
candidates and tells it the measurements. Optional: needs the `bench` extra
(`pip install -e .[bench]`); importing `autoscout_jax.designers` does not.

How the space is presented to Optuna (define-by-run):
- a product group (mesh axes whose product is fixed) is suggested axis by
  axis, each axis choosing among the values that still leave a valid
  factorization of what remains of the product; the last axis is implied.
  Optuna needs one fixed domain per parameter name, so an axis's parameter
  is named by the remaining product (`fsdp|rest=4`);
- conditional knobs are suggested only when active (their parents are
  suggested first), so TPE sees a tree, as Optuna intends;
- ordinal and integer knobs are suggested as integers (as indices for
  ordinals), so TPE keeps their order; categoricals and booleans as
  categoricals; floats as floats, log-scaled where the knob is.
A proposal that violates a constraint, and a measured failure (OOM, crash,
timeout), are told to Optuna as infeasible through `Trial.set_constraint`,
which TPE ranks below every feasible trial. Objective: tokens/s, maximized.
"""

from __future__ import annotations

import warnings
from typing import Any

from autoscout_jax.designers.external import ExternalDesigner, group_prefix_choices, objective_of
from autoscout_jax.measurement import Measurement
from autoscout_jax.problem import Problem
from autoscout_jax.space import Boolean, Candidate, Categorical, Float, IntRange, Ordinal

INSTALL_HINT = "pip install -e '.[bench]' (or: pip install 'optuna>=4,<6')"


def _import_optuna():
  try:
    import optuna
  except ImportError as e:
    raise ImportError(f"the optuna_tpe designer needs Optuna, which is not installed; "
                      f"install the bench extra: {INSTALL_HINT}") from e
  return optuna


class OptunaTPE(ExternalDesigner):
  """TPE (multivariate, grouped for the conditional tree), seeded."""

  def __init__(self, problem: Problem, seed: int = 0, n_startup_trials: int = 10,
               multivariate: bool = True, max_asks: int = 64):
    super().__init__(problem, seed, max_asks=max_asks)
    space = self.space
    optuna = _import_optuna()
    self._optuna = optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")  # multivariate/group are flagged experimental
      sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials,
                                           multivariate=multivariate, group=multivariate,
                                           constant_liar=True)
    self.study = optuna.create_study(direction="maximize", sampler=sampler)
    self._groups = [(g.names, g.total, group_prefix_choices(space, g.names, g.total))
                    for g in space.groups]
    self._in_group = {n for g in space.groups for n in g.names}

  # --- space <-> Optuna parameters ---------------------------------------------
  def _distribution(self, knob):
    d = self._optuna.distributions
    if isinstance(knob, IntRange):
      return d.IntDistribution(knob.low, knob.high, step=knob.step)
    if isinstance(knob, Ordinal):
      return d.IntDistribution(0, len(knob.values) - 1)
    if isinstance(knob, Float):
      return d.FloatDistribution(knob.low, knob.high, log=knob.log)
    if isinstance(knob, (Categorical, Boolean)):
      return d.CategoricalDistribution(list(knob.finite_values()))
    raise TypeError(f"optuna_tpe: unsupported knob type {type(knob).__name__} ({knob.name})")

  @staticmethod
  def _to_param(knob, value):
    if isinstance(knob, Ordinal) and not isinstance(knob, IntRange):
      return knob.values.index(value)
    return value

  @staticmethod
  def _from_param(knob, param):
    if isinstance(knob, Ordinal) and not isinstance(knob, IntRange):
      return knob.values[int(param)]
    if isinstance(knob, Categorical):
      return next(c for c in knob.choices if c == param)
    return knob.coerce(param)

  def _walk(self, pick) -> dict[str, Any]:
    """Assign values along the conditional tree. `pick(name, distribution,
    knob_or_None, choices_or_None)` returns the raw parameter value."""
    d = self._optuna.distributions
    vals: dict[str, Any] = {}
    for names, total, choices in self._groups:
      rest = total
      for i, n in enumerate(names):
        opts = choices[(i, rest)]
        if i == len(names) - 1 or len(opts) == 1:
          v = opts[0] if len(opts) == 1 else rest
        else:
          pname = n if i == 0 else f"{n}|rest={rest}"
          v = int(pick(pname, d.CategoricalDistribution(opts), None, opts))
        vals[n] = v
        rest //= v
    for k in self.space.knobs:
      if k.name in self._in_group or not k.is_active(vals):
        continue
      vals[k.name] = self._from_param(k, pick(k.name, self._distribution(k), k, None))
    return vals

  def _params_of(self, cand: Candidate) -> tuple[dict[str, Any], dict[str, Any]]:
    """Optuna parameters + distributions that encode a (valid) candidate."""
    params, dists = {}, {}
    values = cand.values

    def pick(pname, dist, knob, opts):
      base = pname.split("|")[0]
      raw = values[base] if knob is None else self._to_param(knob, values[base])
      params[pname], dists[pname] = raw, dist
      return raw

    self._walk(pick)
    return params, dists

  # --- ExternalDesigner -----------------------------------------------------------
  def _ask(self):
    trial = self.study.ask()

    def pick(pname, dist, knob, opts):
      if opts is not None:
        return trial.suggest_categorical(pname, opts)
      if isinstance(dist, self._optuna.distributions.IntDistribution):
        return trial.suggest_int(pname, dist.low, dist.high, step=dist.step)
      if isinstance(dist, self._optuna.distributions.FloatDistribution):
        return trial.suggest_float(pname, dist.low, dist.high, log=dist.log)
      return trial.suggest_categorical(pname, dist.choices)

    return trial, Candidate.of(self._walk(pick))

  def _tell(self, handle, m: Measurement | None, violations=()):
    value = objective_of(m)
    handle.set_constraint("feasible", 0.0 if value is not None else 1.0)
    if m is not None:
      handle.set_user_attr("failure_kind", m.metrics.failure_kind or "none")
    elif violations:
      handle.set_user_attr("violations", "; ".join(str(v) for v in violations)[:500])
    self.study.tell(handle, value if value is not None else 0.0)

  def _tell_new(self, cand: Candidate, m: Measurement):
    params, dists = self._params_of(cand)
    value = objective_of(m)
    trial = self._optuna.trial.create_trial(
        params=params, distributions=dists, value=value if value is not None else 0.0,
        constraints={"feasible": 0.0 if value is not None else 1.0})
    self.study.add_trial(trial)
