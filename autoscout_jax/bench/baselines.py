"""The baselines a skeptic runs first: the simulator's order and its pick,
and Optuna's GP and warm-started TPE.

Where it sits: registered in bench/peers.py; built per (task, seed) as
`factory(problem, seed)` (the problem's fidelities, cheapest first, and its
expert default).
Every one of them pays for what it sees through the ordinary search loop:
scoring the space with the cheap fidelity costs what the task charges per
cheap measurement.

- `cheap_topk`: score every candidate once with the cheapest fidelity, then
  profile in descending order of that score; candidates it calls failed
  come last, in a seeded order. The bar: a designer that trusts the
  simulator and measures down its list.
- `sim_argmax`: the cheapest fidelity's pick, profiled once so it can be
  scored (the runner does not charge that profile: a simulator-only
  planner pays nothing on the cluster).
- `optuna_tpe_warm`: Optuna TPE with the cheap fidelity's top 10 enqueued as
  its first trials (`Study.enqueue_trial`); only top-fidelity outcomes are
  told to Optuna.
- `optuna_gp`: Optuna's GPSampler (needs PyTorch; the CPU build is enough)
  on the same define-by-run encoding as `optuna_tpe`; its parameters that
  change with the product-group chain are sampled independently, as
  Optuna does for a dynamic space. A GP fit per proposal costs seconds, so
  after 8 unusable proposals in a row (invalid, already measured) it takes
  an unseen uniform sample (64 for the TPE designers).
Without a cheap fidelity (the real local task), the cheap order is a seeded
random order and `sim_argmax` profiles the expert default.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from autoscout_jax.designers.base import Designer
from autoscout_jax.measurement import Measurement
from autoscout_jax.problem import Problem
from autoscout_jax.space import Candidate, SearchSpace


class CheapScreen:
  """Every candidate of a (finite) space, scored once at `fidelity`."""

  def __init__(self, space: SearchSpace, fidelities: Sequence[str], seed: int):
    self.fidelity = fidelities[0] if len(fidelities) > 1 else None
    self.candidates = space.enumerate()
    self.values: dict[str, float | None] = {}
    self.asked = False
    self._rng = np.random.default_rng(seed + 104729)

  def request(self) -> list[Candidate]:
    """The screening batch (once), or [] when done or without a cheap fidelity."""
    if self.asked or self.fidelity is None:
      return []
    self.asked = True
    return [c.at(self.fidelity) for c in self.candidates]

  @property
  def done(self) -> bool:
    return self.fidelity is None or len(self.values) >= len(self.candidates)

  def record(self, measurements: Sequence[Measurement]) -> None:
    for m in measurements:
      if self.fidelity is not None and m.fidelity == self.fidelity:
        self.values[Candidate.of(m.candidate.values).key] = m.objective

  def order(self) -> list[Candidate]:
    """Cheap-feasible candidates by descending score (ties: enumeration
    order), then the rest in a seeded random order."""
    good = [(-(self.values.get(c.key) or 0.0), i) for i, c in enumerate(self.candidates)
            if self.values.get(c.key) is not None]
    rest = [i for i, c in enumerate(self.candidates) if self.values.get(c.key) is None]
    self._rng.shuffle(rest)
    return [self.candidates[i] for _, i in sorted(good)] + [self.candidates[i] for i in rest]


class CheapTopK(Designer):
  """`cheap_topk` (module docstring)."""

  def __init__(self, problem: Problem, seed: int = 0):
    super().__init__(problem, seed)
    self.screen = CheapScreen(problem.space, problem.fidelities, seed)
    self._queue: list[Candidate] | None = None
    self._seen: set[str] = set()

  def suggest(self, n: int) -> list[Candidate]:
    first = self.screen.request()
    if first:
      return first
    if self._queue is None:
      self._queue = self.screen.order()
    out = []
    while self._queue and len(out) < n:
      c = self._queue.pop(0)
      if c.key not in self._seen:
        out.append(c)
    return out

  def update(self, measurements: Sequence[Measurement]) -> None:
    self.screen.record(measurements)
    for m in measurements:
      if m.fidelity != self.screen.fidelity:
        self._seen.add(Candidate.of(m.candidate.values).key)


class SimArgmax(CheapTopK):
  """`sim_argmax` (module docstring): one profile, of the cheap pick."""

  def __init__(self, problem: Problem, seed: int = 0):
    super().__init__(problem, seed)
    self._default = problem.default
    self._done = False

  def suggest(self, n: int) -> list[Candidate]:
    first = self.screen.request()
    if first:
      return first
    if self._done:
      return []
    self._done = True
    if self.screen.fidelity is None:
      return [self._default] if self._default is not None else []
    return self.screen.order()[:1]


def _optuna_designer(kind: str):
  from autoscout_jax.designers.optuna_tpe import OptunaTPE

  class _Warm(OptunaTPE):
    """Optuna with the cheap fidelity's top `warm` candidates enqueued."""

    def __init__(self, problem: Problem, seed: int = 0, warm: int = 10):
      # A GP fit per proposal is seconds, not milliseconds: after 8 unusable
      # proposals in a row (invalid or already measured) take an unseen sample.
      super().__init__(problem, seed, max_asks=8 if kind == "gp" else 64)
      if kind == "gp":
        import torch
        torch.set_num_threads(1)  # scoutbench shares the machine; one thread per run
        optuna = self._optuna
        sampler = optuna.samplers.GPSampler(seed=seed, n_startup_trials=10, deterministic_objective=False,
                                            warn_independent_sampling=False)
        self.study = optuna.create_study(direction="maximize", sampler=sampler)
      self.screen = CheapScreen(problem.space, problem.fidelities, seed)
      self.warm = warm if kind == "tpe_warm" else 0

    def suggest(self, n: int) -> list[Candidate]:
      if self.warm:
        first = self.screen.request()
        if first:
          return first
        if self.screen.done and not getattr(self, "_enqueued", False):
          self._enqueued = True
          for c in self.screen.order()[:self.warm]:
            if self.screen.values.get(c.key) is None:
              break
            params, _ = self._params_of(c)
            self.study.enqueue_trial(params, skip_if_exists=True)
      return super().suggest(n)

    def update(self, measurements: Sequence[Measurement]) -> None:
      self.screen.record(measurements)
      cheap = self.screen.fidelity
      super().update([m for m in measurements if cheap is None or m.fidelity != cheap])

  return _Warm


def optuna_tpe_warm(problem: Problem, seed: int = 0) -> Designer:
  return _optuna_designer("tpe_warm")(problem, seed)


def optuna_gp(problem: Problem, seed: int = 0) -> Designer:
  try:
    import torch  # noqa: F401  (GPSampler's dependency; checked here for one clear message)
  except ImportError as e:
    raise ImportError("the optuna_gp designer needs PyTorch (Optuna's GPSampler uses it); the CPU build is "
                      "enough: pip install -e '.[bench]'") from e
  return _optuna_designer("gp")(problem, seed)
