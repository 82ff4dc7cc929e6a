"""The two data sources of the surrogate benchmark (tools/bench_surrogate.py):
real measurements of the local space, replayed from a committed table, and
simulated ones (F0 cheap, F1 top) of a Megatron space.

Where it sits: bench_surrogate.run_source takes a `Source` from
`local_source` or `simulated_source` and fits its predictors on it.
"""

from __future__ import annotations

import dataclasses
import math
import numpy as np

from autoscout_jax import encoding
from autoscout_jax.measurement import Measurement
from autoscout_jax.space import Candidate, SearchSpace
from autoscout_jax.tools import surrogate_bench_local as local_src


@dataclasses.dataclass
class Source:
  """One data source: measurements at a cheap and a top fidelity.

  cheap_log_time / cheap_feasible hold the cheap fidelity's verdict on every
  candidate the benchmark touches (training and held-out): the prior input
  of predictor 1 and the whole of predictor 3.
  """

  name: str
  space: SearchSpace
  fidelities: tuple[str, str]  # (cheap, top)
  cheap: list[Measurement]
  top: list[Measurement]
  cheap_log_time: dict[Candidate, float]
  cheap_feasible: dict[Candidate, float]
  step_time: dict[str, encoding.StepTime]
  notes: list[str]


def _fill_unknown(log_time: dict[Candidate, float | None]) -> dict[Candidate, float]:
  # A candidate the cheap fidelity could not time (compile error) gets the
  # slowest known time: pessimistic, and finite as the prior input must be.
  known = [v for v in log_time.values() if v is not None]
  worst = max(known) if known else 0.0
  return {c: (worst if v is None else v) for c, v in log_time.items()}


def local_source(table_path: str) -> Source:
  space, ms, header = local_src.load_local(table_path)
  cheap = [m for m in ms if m.fidelity == "compile"]
  top = [m for m in ms if m.fidelity == "profile"]
  lt = {}
  for m in cheap:
    secs = local_src.f2_step_time(m)
    lt[m.candidate] = math.log(secs) if secs else None
  prov = header.get("provenance", {})
  notes = [f"cheap points: every candidate of the space ({len(cheap)} F2), not 2000",
           local_src.F2_TIME_DOC,
           "F3 time: fastest timed step (shared machine; see surrogate_bench_local.f3_step_time)",
           f"measured {prov.get('date')} on {prov.get('device_kind')} x {prov.get('device_count')}, "
           f"jax {prov.get('jax_version')}"]
  return Source("local", space, ("compile", "profile"), cheap, top, _fill_unknown(lt),
                {m.candidate: float(m.feasible) for m in cheap},
                {"compile": local_src.f2_step_time, "profile": local_src.f3_step_time}, notes)


def simulated_source(n_cheap: int, n_top: int, seed: int = 0, model: str = "llama3_70b",
                     system: str = "dgx_h100", devices: int = 256,
                     devices_per_node: int = 8) -> Source:
  from autoscout_jax.problem import Problem
  from autoscout_jax.sim import analytic, catalog, costs, event, hardware
  from autoscout_jax.targets import megatron
  wl = catalog.make_workload(model, devices, devices_per_slice=devices_per_node)
  cl = hardware.make_cluster(system, devices, devices_per_node=devices_per_node)
  space = megatron.space(wl, cl)
  if n_cheap + n_top > space.size():
    raise ValueError(f"the simulated space has {space.size()} valid candidates, fewer than "
                     f"n_cheap + top candidates = {n_cheap + n_top}")
  idx = np.random.default_rng(seed).choice(space.size(), n_cheap + n_top, replace=False)
  cands = space.candidates_from_table(space.table(), idx)
  # F0 scores every candidate once through its evaluator (the cheap rows)
  # and once directly, for the time of OOM candidates too (the evaluator
  # reports time only for feasible ones); same shapes, so one compile.
  problem = Problem(wl, cl, space, ("analytic", "event"))
  cheap = analytic.AnalyticEvaluator().evaluate(problem, cands)[:n_cheap]
  plan = analytic.candidates_to_arrays(space, cands, wl, cl)
  f0 = analytic.simulate_f0(plan, costs.model_scalars(wl), hardware.cluster_scalars(cl))
  top = event.EventEvaluator().evaluate(problem, cands[n_cheap:])
  lt = {c: float(np.log(t)) for c, t in zip(cands, f0["step_time_s"])}
  feas = {c: float(f) for c, f in zip(cands, f0["feasible"])}
  notes = [f"{wl.name} on {cl.name} ({space.size():,} valid candidates), "
           f"{n_cheap} F0 + {n_top} F1 random distinct candidates"]
  return Source("simulated", space, ("analytic", "event"), list(cheap), list(top), lt, feas, {},
                notes)
