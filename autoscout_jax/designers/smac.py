"""SMAC3 (random-forest Bayesian optimization) behind the Designer interface,
a peer in scoutbench.

Where it sits: a `Designer` like any other; `search.run_search` asks it for
candidates and tells it the measurements through SMAC's ask/tell interface
(HyperparameterOptimizationFacade: random forest, log-scaled EI, Sobol
initial design). Optional: needs the `bench` extra (`pip install -e
.[bench]`); importing `autoscout_jax.designers` does not.

How the space is presented to SMAC (a ConfigSpace):
- every knob is a hyperparameter (ordinal for ordered numbers, categorical
  for choices and booleans, uniform float for floats), conditional knobs
  carry `InCondition`s on their parents;
- a product group (mesh axes whose product is fixed) is a chain, as in the
  Optuna wrapper: the first axis chooses among the values that leave a
  valid factorization, each later axis has one hyperparameter per product
  still to distribute (`fsdp|rest=4`), active (an OR of `InCondition`s)
  exactly when the earlier axes leave that product; the last axis is
  implied. (Forbidding the wrong products instead makes ConfigSpace's
  rejection sampler crawl: a random six-axis mesh almost never has the
  right product.) A knob conditioned on an axis value is active under the
  OR of the chain hyperparameters that give that value;
- when the space is small enough to enumerate, each value and each pair of
  values of two unconditional hyperparameters that no valid candidate has
  is forbidden, which removes many constraint violations (tensor divides
  heads, batch splits) before SMAC proposes them.
A proposal that still violates a constraint is told to SMAC as crashed (it
never reaches an evaluator), as are measured failures (OOM, crash, timeout).
Cost: microseconds per token (1e6 / tokens/s); a crash costs CRASH_FACTOR x
the slowest success so far (crashes before the first success are told once
there is one).
"""

from __future__ import annotations

import itertools
import logging
import tempfile
import warnings
import weakref
from typing import Any

from autoscout_jax.designers.external import ExternalDesigner, LibraryExhausted, group_prefix_choices, objective_of
from autoscout_jax.measurement import Measurement
from autoscout_jax.problem import Problem
from autoscout_jax.space import Boolean, Candidate, Categorical, Float, Ordinal, SearchSpace

INSTALL_HINT = "pip install -e '.[bench]' (or: pip install 'smac>=2.2,<3')"
# A failure costs this many times the slowest successful run seen so far:
# bad enough to steer away from, near enough that the forest's log-scale
# fit of the successes is not flattened by one huge outlier.
CRASH_FACTOR = 3.0

_POOLS: "weakref.WeakKeyDictionary[SearchSpace, list[Candidate]]" = weakref.WeakKeyDictionary()


def _import_smac():
  try:
    import ConfigSpace
    import smac
  except ImportError as e:
    raise ImportError(f"the smac designer needs SMAC3, which is not installed; "
                      f"install the bench extra: {INSTALL_HINT}") from e
  return ConfigSpace, smac


def _valid_pool(space: SearchSpace, limit: int) -> list[Candidate] | None:
  """All valid candidates when there are at most `limit` of them (cached per
  space: several seeds share it). A space with a fast count (the simulators'
  vectorized spaces have `size()`) is judged by it, others by the raw size."""
  if not space.is_finite():
    return None
  size = getattr(space, "size", None)
  if (size() if callable(size) else space.raw_size()) > limit:
    return None
  if space not in _POOLS:
    _POOLS[space] = space.enumerate()
  return _POOLS[space]


def _ordered_start_points(maximizer):
  """Makes SMAC's local search start from its points in a reproducible order.

  SMAC 2.4's `LocalSearch._get_init_points_from_previous_configs` dedupes
  its start points through a `set` of Configurations, whose hash is the hash
  of their repr string: the order (and so which random draws each local
  search gets) changed with Python's per-process string-hash seed, and the
  same task + seed gave a different run in every process. Here the same
  points come back in a fixed order: the order SMAC was handed them
  (previous configurations, then additional start points)."""
  ls = maximizer._local_search
  original = ls._get_init_points_from_previous_configs

  def ordered(previous_configs, n_points, additional_start_points):
    points = original(previous_configs, n_points, additional_start_points)
    order = {}
    for c in itertools.chain(previous_configs, (a[1] for a in additional_start_points or ())):
      order.setdefault(c, len(order))
    return sorted(points, key=order.__getitem__)

  ls._get_init_points_from_previous_configs = ordered
  return maximizer


class SMACDesigner(ExternalDesigner):
  """`n_initial`: Sobol initial configurations; `challengers` and
  `local_search_iterations` size the acquisition search (SMAC's defaults,
  10000 and 10, cost about a second per suggestion on 2 cores)."""

  def __init__(self, problem: Problem, seed: int = 0, n_initial: int = 8, challengers: int = 1000,
               local_search_iterations: int = 5, retrain_after: int = 1,
               random_probability: float = 0.2, max_enumerate: int = 200_000, max_asks: int = 64):
    super().__init__(problem, seed, max_asks=max_asks)
    space = self.space
    cs_mod, _ = _import_smac()
    self._CS = cs_mod
    from smac import HyperparameterOptimizationFacade as HPO, Scenario
    from smac.model.random_forest.random_forest import RandomForest
    from smac.runhistory.dataclasses import TrialInfo, TrialValue
    from smac.runhistory.enumerations import StatusType
    from smac.main.exceptions import ConfigurationSpaceExhaustedException
    self._TrialInfo, self._TrialValue, self._Status = TrialInfo, TrialValue, StatusType
    self._Exhausted = ConfigurationSpaceExhaustedException
    logging.getLogger("smac").setLevel(logging.WARNING)  # it reports every design choice at INFO
    self._worst_ok: float | None = None  # slowest successful cost told so far
    self._deferred: list[Any] = []  # crashed trials waiting for a first success
    pool = _valid_pool(space, max_enumerate)
    self.configspace = self._build_configspace(pool)
    # SMAC insists on an output directory; keep it private and temporary.
    self._tmp = tempfile.TemporaryDirectory(prefix="smac-")
    scenario = Scenario(self.configspace, output_directory=self._tmp.name, deterministic=True,
                        n_trials=1_000_000, seed=seed)
    self.smac = HPO(
        scenario, target_function=lambda config, seed=0: 0.0,  # ask/tell: never called
        # The facade's forest, but single-threaded: joblib's thread pool costs
        # more than the forest itself at these sizes on a shared machine; and a
        # max_leaf_nodes bound makes sklearn preallocate that many nodes per tree.
        model=RandomForest(scenario.configspace, log_y=True, n_trees=10, ratio_features=1.0,
                           min_samples_split=2, min_samples_leaf=1, seed=seed, n_jobs=1,
                           max_leaf_nodes=None),
        initial_design=HPO.get_initial_design(scenario, n_configs=n_initial),
        intensifier=HPO.get_intensifier(scenario, max_config_calls=1),
        acquisition_maximizer=_ordered_start_points(HPO.get_acquisition_maximizer(
            scenario, challengers=challengers, local_search_iterations=local_search_iterations)),
        random_design=HPO.get_random_design(scenario, probability=random_probability),
        config_selector=HPO.get_config_selector(scenario, retrain_after=retrain_after),
        logging_level=40, overwrite=True)

  # --- the ConfigSpace ------------------------------------------------------------
  def _hp(self, name, knob, values, default):
    CS = self._CS
    if isinstance(knob, Float):
      return CS.UniformFloatHyperparameter(name, knob.low, knob.high, log=knob.log, default_value=default)
    if isinstance(knob, (Categorical, Boolean)):
      return CS.CategoricalHyperparameter(name, list(values), default_value=default)
    if isinstance(knob, Ordinal):
      return CS.OrdinalHyperparameter(name, list(values), default_value=default)
    raise TypeError(f"smac: unsupported knob type {type(knob).__name__} ({knob.name})")

  def _build_configspace(self, pool: list[Candidate] | None):
    CS = self._CS
    start = self.space.default() if self.space.is_valid(self.space.default()) else (
        pool[0] if pool else self.space.sample(self._rng, 1)[0])
    cs = CS.ConfigurationSpace(seed=self.seed)
    hps: dict[str, Any] = {}
    self._chains = []  # per group: (names, total, {(axis, rest): hp name or None}, choices)
    in_group = set()
    for g in self.space.groups:
      choices = group_prefix_choices(self.space, g.names, g.total)
      names: dict[tuple[int, int], str | None] = {}
      path, rest = {}, g.total
      for i, n in enumerate(g.names):  # the start candidate's path, for defaults
        path[(i, rest)] = int(start[n])
        rest //= int(start[n])
      for (i, rest), opts in sorted(choices.items()):
        if len(opts) == 1:
          names[(i, rest)] = None  # forced (always the last axis)
          continue
        hp_name = g.names[i] if i == 0 else f"{g.names[i]}|rest={rest}"
        names[(i, rest)] = hp_name
        hps[hp_name] = self._hp(hp_name, self.space[g.names[i]], opts, path.get((i, rest), opts[0]))
      self._chains.append((g.names, g.total, names, choices))
      in_group.update(g.names)
    for k in self.space.knobs:
      if k.name not in in_group:
        hps[k.name] = self._hp(k.name, k, k.finite_values() or (), start.get(k.name, k.default))
    cs.add(list(hps.values()))
    for chain in self._chains:
      for (i, rest), hp_name in chain[2].items():
        if hp_name is not None and i > 0:
          cond = self._condition(hps, hp_name, self._rest_is(chain, i, rest))
          if cond is not None:
            cs.add(cond)
    for k in self.space.knobs:
      if k.name in hps and k.when:
        parts = [self._knob_is(c.parent, c.values) for c in k.when]
        parts = [p for p in parts if p is not None]  # None: always true
        conds = [self._condition(hps, k.name, p) for p in parts]
        conds = [c for c in conds if c is not None]
        if conds:
          cs.add(conds[0] if len(conds) == 1 else CS.AndConjunction(*conds))
    forbidden = self._pool_forbidden(hps, pool) if pool else []
    if forbidden:
      cs.add(forbidden)
    return cs

  def _chain_of(self, axis: str):
    return next((c for c in self._chains if axis in c[0]), None)

  def _rest_is(self, chain, i: int, rest: int) -> list[tuple[str, list]] | None:
    """When "the product left for axis i of `chain` is `rest`" holds: None
    (always) or alternatives (hyperparameter, values), any of which suffices."""
    names, total, hp_of, choices = chain
    if i == 0:
      return None if rest == total else []
    alts: list[tuple[str, list]] = []
    for (j, prev), opts in choices.items():
      vals = [v for v in opts if prev % v == 0 and prev // v == rest] if j == i - 1 else []
      if not vals:
        continue
      if hp_of[(j, prev)] is not None:
        alts.append((hp_of[(j, prev)], vals))
      else:  # a forced axis passes its own activity on
        inherited = self._rest_is(chain, j, prev)
        if inherited is None:
          return None
        alts.extend(inherited)
    return alts

  def _knob_is(self, knob: str, values) -> list[tuple[str, list]] | None:
    """When `knob` takes one of `values`: None (always) or alternatives."""
    chain = self._chain_of(knob)
    if chain is None:
      return [(knob, list(values))]
    names, total, hp_of, choices = chain
    i = names.index(knob)
    alts: list[tuple[str, list]] = []
    for (j, rest), opts in choices.items():
      vals = [v for v in opts if v in values] if j == i else []
      if not vals:
        continue
      if hp_of[(j, rest)] is not None:
        alts.append((hp_of[(j, rest)], vals))
      else:
        inherited = self._rest_is(chain, j, rest)
        if inherited is None:
          return None
        alts.extend(inherited)
    return alts

  def _condition(self, hps, child: str, alts):
    CS = self._CS
    if alts is None:
      return None
    conds = [CS.InCondition(hps[child], hps[parent], vals) for parent, vals in alts]
    if not conds:
      raise ValueError(f"smac: {child!r} can never be active")
    return conds[0] if len(conds) == 1 else CS.OrConjunction(*conds)

  def _pool_forbidden(self, hps, pool: list[Candidate]):
    CS = self._CS
    names = [k.name for k in self.space.knobs
             if k.name in hps and not k.when and k.finite_values() is not None]
    for chain in self._chains:  # the first axis of a chain is unconditional too
      if chain[0][0] in hps:
        names.append(chain[0][0])
    out = []
    seen1 = {n: {c[n] for c in pool} for n in names}
    for n in names:
      for v in hps[n].sequence if hasattr(hps[n], "sequence") else hps[n].choices:
        if v not in seen1[n]:
          out.append(CS.ForbiddenEqualsClause(hps[n], v))
    for a, b in itertools.combinations(names, 2):
      pairs = {(c[a], c[b]) for c in pool}
      for va in seen1[a]:
        for vb in seen1[b]:
          if (va, vb) not in pairs:
            out.append(CS.ForbiddenAndConjunction(CS.ForbiddenEqualsClause(hps[a], va),
                                                  CS.ForbiddenEqualsClause(hps[b], vb)))
    return out

  # --- Configuration <-> Candidate --------------------------------------------------
  def _candidate(self, config) -> Candidate:
    raw = dict(config)
    vals: dict[str, Any] = {}
    for names, total, chain, choices in self._chains:
      rest = total
      for i, n in enumerate(names):
        hp_name = chain[(i, rest)]
        v = choices[(i, rest)][0] if hp_name is None else int(raw[hp_name])
        vals[n] = v
        rest //= v
    for k in self.space.knobs:
      if k.name in raw and k.name not in vals:
        dom = k.finite_values()
        v = raw[k.name]
        vals[k.name] = next((x for x in dom if x == v), v) if dom is not None else float(v)
        if isinstance(k, Boolean):
          vals[k.name] = bool(vals[k.name])
    return Candidate.of(vals)

  def _config(self, cand: Candidate):
    values = cand.values
    out = {n: v for n, v in values.items() if n in self.configspace}
    for names, total, chain, choices in self._chains:
      rest = total
      for i, n in enumerate(names):
        if chain.get((i, rest)) is not None:
          out[chain[(i, rest)]] = int(values[n])
        rest //= int(values[n])
    return self._CS.Configuration(self.configspace, values=out)

  # --- ExternalDesigner ----------------------------------------------------------------
  def _ask(self):
    with warnings.catch_warnings():
      # The forest averages empty leaves of inactive (conditional) features.
      warnings.simplefilter("ignore", RuntimeWarning)
      try:
        info = self.smac.ask()
      except (self._Exhausted, StopIteration):  # SMAC has tried every configuration of a small
        # space (its trial generator is finished from then on)
        raise LibraryExhausted("SMAC's configuration space is exhausted") from None
    return info, self._candidate(info.config)

  def _report(self, info, m: Measurement | None) -> None:
    v = objective_of(m)
    if v is not None and v > 0:
      cost = 1e6 / v
      self._worst_ok = cost if self._worst_ok is None else max(self._worst_ok, cost)
      self.smac.tell(info, self._TrialValue(cost=cost, status=self._Status.SUCCESS), save=False)
      deferred, self._deferred = self._deferred, []
      for d in deferred:
        self._report(d, None)
    elif self._worst_ok is None:
      self._deferred.append(info)
    else:
      self.smac.tell(info, self._TrialValue(cost=CRASH_FACTOR * self._worst_ok, status=self._Status.CRASHED),
                     save=False)

  def _tell(self, handle, m: Measurement | None, violations=()):
    self._report(handle, m)

  def _tell_new(self, cand: Candidate, m: Measurement):
    try:
      config = self._config(cand)
    except Exception:  # a candidate the ConfigSpace forbids (pairwise rule): nothing to learn
      return
    self._report(self._TrialInfo(config=config, seed=self.seed), m)

  def close(self) -> None:
    """Removes SMAC's output directory now (otherwise: when collected)."""
    self._tmp.cleanup()
