"""What a search shows in TensorBoard while it runs, trial by trial.

Where it sits: `search.run_search` hands every outcome (a trial: one
candidate at one fidelity, failures and invalid candidates included) and
every round to a `TrialLog`, which writes them through the run's `Writer`:

- run `<fidelity>` (one per fidelity): each trial's `answer/tokens_per_s`
  and `trial/step_time_s`, `trial/cost_s`, `trial/peak_mem_GiB`,
  `trial/failure_kind` (a code, `FAILURE_CODES`), step = trial index;
- run `best`: the incumbent at the top fidelity as `answer/tokens_per_s`
  (one chart: every trial's points and the best-so-far line) and
  `answer/speedup_vs_default`, step = trial index, starting at the default
  (trial 0). TensorBoard lists tag groups alphabetically: `answer` opens
  the page;
- run `search`: `trial/cumulative_cost_s` (step = trial index), `round/`
  counts and the designer's scalars under `designer/` (step = round);
- at the end (`finish`), one HParams session per trial, named
  `t<trial>-<fidelity>-<candidate key>[-default]`, with the knobs, `fidelity` and
  `default` as hparams and the outcome, `failure_kind`, `trial` and
  `round` as metrics, so failed trials stay on the parallel-coordinates
  axes. TensorBoard orders hparam columns by name and shows the first few,
  so a knob's hparam name starts with its rank by learned importance
  (`01_tensor_model_parallel_size`); that is why sessions are written once
  the designer's importances are known.

Steps are integers; every x axis here is a trial index or a round, and
every cost is in seconds (the unit is in the tag).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from autoscout_jax.measurement import FAILURE_KINDS, Measurement, Repeats
from autoscout_jax.writers import Writer

# failure_kind as a metric: 0 is a successful trial.
FAILURE_CODES: dict[str | None, int] = {None: 0, **{k: i + 1 for i, k in enumerate(FAILURE_KINDS)}}
FAILURE_LEGEND = ", ".join(f"{c} {k or 'ok'}" for k, c in FAILURE_CODES.items())

SESSION_METRICS = {
    "tokens_per_s": "throughput (tokens/s); absent when the trial failed",
    "step_time_s": "time of one training step (s)",
    "peak_mem_GiB": "peak device memory (GiB)",
    "mfu": "model FLOPs utilization (0-1)",
    "cost_s": "what the trial cost (device-seconds)",
    "failure_kind": f"failure kind: {FAILURE_LEGEND}",
    "trial": "trial index (order in which the search produced it)",
    "round": "search round (0: the workload's default)",
}

GIB = float(1 << 30)


def hparam_value(v: Any) -> Any:
  """A knob value as the HParams view shows it: large integers (bucket
  sizes) in M/G units, since the dashboard prints floats as 4.0000e+7."""
  if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 100_000:
    for div, unit in ((1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")):
      if abs(v) >= div:
        q = v / div
        return f"{q:g}{unit}"
  if isinstance(v, (bool, int, float, str)):
    return v
  return str(v)


def failure_code(m: Measurement) -> int:
  return FAILURE_CODES.get(m.metrics.failure_kind, len(FAILURE_CODES))


def order_knobs(names: Sequence[str], importances: Mapping[str, float] | None) -> list[str]:
  """Knobs by learned importance (largest first); unranked ones keep their order after."""
  imp = dict(importances or {})
  ranked = sorted((n for n in names if n in imp), key=lambda n: -float(imp[n]))
  return ranked + [n for n in names if n not in imp]


class TrialLog:
  """Numbers the trials of one run and writes their TensorBoard views."""

  def __init__(self, writer: Writer, space, fidelities: Sequence[str], top: str):
    self.writer = writer
    self.space = space
    self.fidelities = list(fidelities)
    self.top = top
    self.trials = 0
    self.cost_s = 0.0
    self.best: float | None = None
    self.default: float | None = None
    self._charged: set[tuple[str, str, int]] = set()
    self._answer = Repeats(top)  # the best so far, as the loop decides it
    self._done: list[tuple[Measurement, int, bool]] = []
    self.quiet = False  # replaying a resumed run: count, do not write scalars again

  def trial(self, m: Measurement, round_: int, is_default: bool = False) -> int:
    """Writes one trial's scalars and returns its index. Its cost counts
    towards the cumulative cost once per (candidate, fidelity, repeat), as
    the budget does."""
    t = self.trials
    self.trials += 1
    self._done.append((m, round_, is_default))
    if (m.candidate.key, m.fidelity, m.repeat) not in self._charged:
      self._charged.add((m.candidate.key, m.fidelity, m.repeat))
      self.cost_s += m.cost_s
    if m.fidelity == self.top:
      if is_default:
        self.default = m.objective
      self._answer.add(m)
      self.best = self._answer.best.objective if self._answer.best is not None else None
    if self.quiet:
      return t
    code = failure_code(m)
    point = {"trial/cost_s": m.cost_s, "trial/failure_kind": code,
             "answer/tokens_per_s": m.objective, "trial/step_time_s": m.metrics.step_time_s,
             "trial/peak_mem_GiB": (m.metrics.peak_mem_bytes / GIB
                                    if m.metrics.peak_mem_bytes is not None else None)}
    self.writer.write_scalars(t, {k: v for k, v in point.items() if v is not None}, run=m.fidelity)
    best = {}
    if self.best is not None:
      best["answer/tokens_per_s"] = self.best
      if self.default:
        best["answer/speedup_vs_default"] = self.best / self.default
    if best:
      self.writer.write_scalars(t, best, run="best")
    self.writer.write_scalars(t, {"trial/cumulative_cost_s": self.cost_s}, run="search")
    return t

  def finish(self, importances: Mapping[str, float] | None = None) -> None:
    """The HParams view: columns (knobs by importance, then fidelity and
    default) and one session per trial."""
    knobs = {k.name: k for k in self.space.knobs}
    order = order_knobs(list(knobs), importances)
    names = {k: f"{i + 1:02d}_{k}" for i, k in enumerate(order)}
    domains: dict[str, list[Any]] = {}
    for k in order:
      values = knobs[k].finite_values()
      domains[names[k]] = [hparam_value(v) for v in values] if values else []
    domains["fidelity"] = list(self.fidelities)
    domains["is_default"] = [False, True]
    self.writer.write_hparams_config(domains, SESSION_METRICS)
    for t, (m, round_, is_default) in enumerate(self._done):
      hp: dict[str, Any] = {names.get(k, k): hparam_value(v) for k, v in m.candidate.values.items()}
      hp["fidelity"] = m.fidelity
      hp["is_default"] = bool(is_default)
      metrics = {"cost_s": m.cost_s, "failure_kind": float(failure_code(m)), "trial": float(t),
                 "round": float(round_)}
      if m.objective is not None:
        metrics["tokens_per_s"] = m.objective
      if m.metrics.step_time_s is not None:
        metrics["step_time_s"] = m.metrics.step_time_s
      if m.metrics.peak_mem_bytes is not None:
        metrics["peak_mem_GiB"] = m.metrics.peak_mem_bytes / GIB
      if m.metrics.mfu is not None:
        metrics["mfu"] = m.metrics.mfu
      name = f"t{t:04d}-{m.fidelity}-{m.candidate.key[:8]}" + ("-default" if is_default else "")
      self.writer.write_hparams(name, hp, metrics)

  def round(self, stats, designer_scalars: Mapping[str, float]) -> None:
    if self.quiet:
      return
    scalars = {
        "round/valid": stats.valid, "round/invalid": stats.invalid, "round/oom": stats.infeasible,
        "round/failed": stats.failed, "round/new_measurements": stats.new_measurements,
        "round/cost_s": stats.cost_s, "round/cumulative_cost_s": self.cost_s,
    }
    if self.best is not None:
      scalars["round/best_tokens_per_s"] = self.best
    self.writer.write_scalars(stats.round, scalars, run="search")
    if designer_scalars:
      self.writer.write_scalars(stats.round, {f"designer/{k}": v for k, v in designer_scalars.items()},
                                run="search")
