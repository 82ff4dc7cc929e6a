"""The serving family's F0 evaluator: the serving model on a cluster-scale serving search.

Where it sits: gin puts `ServingSimEvaluator()` in EVALUATORS for a
serving workload (`Workload.task == 'serve'` with its `ServingSpec`) on a
simulated cluster (sim/hardware.py); the serving target
(targets/serving.py) turns each candidate into a `ServingPlan`
(`plan(space, cand)`), this module predicts it with sim/serving.py and
reports the family's metrics: `tokens_per_s` = output tokens/s per device
used (the objective), `step_time_s` = TPOT, `extra` with TTFT/TPOT at the
SLO percentiles. A candidate whose weights do not fit is `oom`, one that
misses an SLO is `slo` (targets.serving.slo_verdict decides), never an
exception.

The model predicts mean latencies; the p50 and p90 it reports are that
mean (its error on measured runs, tools/predict_serving.py, is larger than
the spread between them).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from autoscout_jax.evaluator import Evaluator
from autoscout_jax.measurement import Measurement, Metrics
from autoscout_jax.sim import serving
from autoscout_jax.sim.serving_catalog import arch_from_model
from autoscout_jax.sim.serving_plan import ServingPlan, ServingRequest


class ServingSimEvaluator(Evaluator):
  """F0 ('analytic') for the serving family; `charge_s` device-seconds per
  candidate (a simulator's own run time is noise)."""

  fidelity = "analytic"

  def __init__(self, charge_s: float = 1.0, constants: serving.ServingConstants = serving.DEFAULT):
    self.charge_s = float(charge_s)
    self.constants = constants

  def settings(self) -> dict[str, Any]:
    return {"model": "sim.serving", "constants": dataclasses.asdict(self.constants)}

  def evaluate(self, problem, candidates: Sequence[Any]) -> list[Measurement]:
    from autoscout_jax.targets import serving as target  # the family's vocabulary lives there
    wl = problem.workload
    spec = getattr(wl, "serving", None)
    arch = arch_from_model(wl.model)
    out = []
    for cand in candidates:
      try:
        plan = target.plan(problem.space, cand)
        metrics = self._metrics(plan, arch, problem.cluster, spec, target)
      except (ValueError, TypeError) as e:  # a layout the family or the model refuses
        metrics = Metrics.failed("invalid", f"serving model: {e}")
      out.append(Measurement(cand, self.fidelity, metrics, self.charge_s, wl.key, problem.cluster.key,
                             provenance={"model": "sim.serving"}))
    return out

  def _metrics(self, plan: ServingPlan, arch, cluster, spec, target) -> Metrics:
    if not isinstance(plan, ServingPlan):
      raise TypeError(f"targets.serving.plan returned {type(plan).__name__}, not sim.serving_plan.ServingPlan")
    if spec is None:
      raise ValueError("the workload has no ServingSpec (Workload.serving): no request mix to serve")
    isl = round(sum(spec.input_lens) / len(spec.input_lens))
    osl = round(sum(spec.output_lens) / len(spec.output_lens))
    p = serving.predict(plan, arch, cluster, ServingRequest(isl, osl), self.constants)
    if not p.fits:
      return Metrics.failed("oom", p.reason)
    ttft, tpot = p.ttft_s * 1e3, p.tpot_s * 1e3
    extra: dict[str, Any] = {"throughput_tok_s": p.throughput_tok_s, "devices_used": plan.devices,
                             "kv_capacity_tokens": p.kv_capacity_tokens, "effective_batch": p.effective_batch}
    for q in (50, 90, 99):
      extra[f"ttft_ms_p{q}"], extra[f"tpot_ms_p{q}"] = ttft, tpot
    extra["tokens_per_s_per_device"] = p.tokens_per_s_per_device  # the report's frontier reads it
    if hasattr(target, "slo_log_margins"):
      extra.update(target.slo_log_margins(spec, extra))
    miss = target.slo_verdict(spec, extra)
    if miss:  # an SLO miss carries no objective (the family's convention)
      return Metrics.failed("slo", miss, step_time_s=p.tpot_s, extra=extra)
    return Metrics(feasible=True, step_time_s=p.tpot_s, tokens_per_s=p.tokens_per_s_per_device, extra=extra)



def serve_workload(model: str, input_lens: Sequence[int], output_lens: Sequence[int],
                   ttft_slo_ms: float | None = None, tpot_slo_ms: float | None = None, slo_percentile: int = 90,
                   precision: str = "fp8", requests: int = 256, default: Any = ()) -> Any:
  """A serving workload of a training-catalog model (sim/catalog.py) for
  gin: the model, its request mix and SLOs (workload.ServingSpec)."""
  from autoscout_jax.sim import catalog
  from autoscout_jax.workload import ServingSpec, Workload
  m, _ = catalog.find_model(model)
  spec = ServingSpec(input_lens=tuple(input_lens), output_lens=tuple(output_lens), ttft_slo_ms=ttft_slo_ms,
                     tpot_slo_ms=tpot_slo_ms, slo_percentile=slo_percentile)
  return Workload(f"serve_{m.name}", m, global_batch=requests, task="serve", precision=precision,
                  serving=spec, default=dict(default or {}))
