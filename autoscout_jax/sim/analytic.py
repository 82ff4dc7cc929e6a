"""F0: the analytic simulator (fidelity "analytic"), vectorized over candidates.

Where it sits: the search loop routes "analytic" suggestions to
`AnalyticEvaluator.evaluate`; it turns candidates of a sim space
(targets/megatron.py, targets/jax_mesh.py) into a Plan by the space's own
translation (`candidates_to_arrays`), scores all of them
in ONE jitted call (`simulate_f0`), and returns one Measurement each.
`score_space` scores a whole enumerated space (millions of points) the same
way. The cost model itself lives in sim/costs.py (shared with F1).

    candidates -> table -> PLAN arrays --jit--> {step_time_s, ...}[N] -> Measurements

Outputs per candidate: step_time_s, tokens_per_s, model_tflops_per_device,
mfu (model FLOPs against the dense bf16 peak), peak_mem_bytes, the 80 %
intervals (tokens_per_s_per_device_lo/_hi, peak_mem_lo/_hi) and
mem_verdict (sim/uncertainty.py: 2 fits, 1 uncertain, 0 does not fit),
feasible (verdict fits or uncertain), fits_point (the point estimate fits),
and the breakdown of step time: compute, recompute, exposed tp/cp/ep/pp/dp
communication, pipeline bubble, optimizer, host (the dispatch of the step
where the cluster's constants have one: this machine's devices).

In a Measurement: a candidate whose memory verdict is "uncertain" is
FEASIBLE (the search may spend a compile or a profile on it), with
`extra["memory_verdict"] = "uncertain"` and the memory interval in
`extra["peak_mem_bytes_lo"/"_hi"]`; "no" is an OOM failure.
"""

from __future__ import annotations

import time
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from autoscout_jax.evaluator import Evaluator
from autoscout_jax.measurement import OOM, INVALID, Measurement, Metrics
from autoscout_jax.problem import Problem
from autoscout_jax.sim import costs, hardware, uncertainty
from autoscout_jax.sim.constants import CALIBRATED
from autoscout_jax.sim.vspace import SimSpace
from autoscout_jax.space import Candidate

# Bump when a change to the cost model (sim/costs.py, analytic.py, event*.py)
# alters any simulated number: it is part of every simulated measurement's
# cache key and of the workdir identity, so stored rows of an older model
# are never reused as if current. (Calibrated constants are keyed by value.)
SIMULATOR_VERSION = "2026-12-02d"

BREAKDOWN = ("compute_s", "recompute_s", "tp_comm_s", "cp_comm_s", "ep_comm_s", "pp_comm_s", "dp_comm_s",
             "bubble_s", "optimizer_s", "host_s")


def f0(xp, plan: Mapping[str, Any], model: Mapping[str, Any], hw: Mapping[str, Any],
       consts: Mapping[str, Any]) -> dict[str, Any]:
  """The F0 formulas over array module `xp` (jnp under jit, numpy for the
  per-candidate reference path)."""
  lc = costs.layer_costs(xp, plan, model, hw, consts)
  st = step_time(xp, lc, plan, consts)
  step = st["step_time_s"]
  n_dev = plan["tp"] * plan["pp"] * plan["cp"] * plan["dp"]
  tokens = model["gbs"] * model["s"] * lc["useful_frac"]  # trained tokens (padding excluded)
  tflops = lc["model_flops"] / (step * n_dev) / 1e12
  out = dict(step_time_s=step, tokens_per_s=tokens / step, tokens_per_s_per_device=tokens / step / n_dev,
             model_tflops_per_device=tflops, mfu=tflops * 1e12 / hw["peak_bf16"],
             peak_mem_bytes=lc["mem_peak"], fits_point=lc["mem_peak"] <= hw["hbm_bytes"],
             model_flops=lc["model_flops"],
             layer_s=(lc["fwd_s"] + lc["bwd_s"] + lc["tp_fwd_s"] + lc["tp_bwd_s"] + lc["cp_fwd_s"]
                      + lc["cp_bwd_s"] + lc["ep_fwd_s"] + lc["ep_bwd_s"]))
  out.update({k: st[k] for k in BREAKDOWN})
  out.update(uncertainty.intervals(xp, plan, model, hw, consts, out["tokens_per_s_per_device"], lc["mem_peak"],
                                   lc["dense_host_ratio"], lc["mem_optional"]))
  # feasible unless even the optimistic memory bound exceeds the device
  out["feasible"] = out["mem_verdict"] >= uncertainty.UNCERTAIN
  return out


def step_time(xp, lc: Mapping[str, Any], plan: Mapping[str, Any], c: Mapping[str, Any]) -> dict[str, Any]:
  """F0's composition of `layer_costs` into one training step: 1F1B /
  interleaved pipeline with its bubble, exposed communication by knob, the
  optimizer. Returns step time and its breakdown (seconds)."""
  mic, vp, pp = lc["num_micro"], lc["vp"], lc["pp"]
  # the output layer + loss runs on the last stage and the embedding on the
  # first, beside the layers `costs.stage_split` gives those ranks (one
  # fewer where the embedding or the loss takes a layer's slot): a
  # pipeline's steady state goes at its slowest rank, its fill/drain at
  # the average rank (every layer and both ends spread over pp)
  head = lc["head_fwd_s"] + lc["head_bwd_s"]
  emb = lc["emb_fwd_s"] + lc["emb_bwd_s"]
  layer = (lc["fwd_s"] + lc["bwd_s"] + lc["tp_fwd_s"] + lc["tp_bwd_s"] + lc["cp_fwd_s"] + lc["cp_bwd_s"]
           + lc["ep_fwd_s"] + lc["ep_bwd_s"])
  n_f, n_la, n_mid = lc["layers_first"], lc["layers_last"], lc["layers_mid"]
  first_ends = emb + xp.where(pp > 1, 0.0, head)  # one stage holds both
  t_first, t_last, t_mid = n_f * layer + first_ends, n_la * layer + head, n_mid * layer
  last_busiest = (pp > 1) & (t_last > t_first) & (t_last >= t_mid)
  mid_busiest = (pp > 2) & (t_mid > t_first) & (t_mid > t_last)
  n_l = xp.where(last_busiest, n_la, xp.where(mid_busiest, n_mid, n_f))
  ends = xp.where(last_busiest, head, xp.where(mid_busiest, 0.0, first_ends))
  comp = n_l * (lc["fwd_s"] + lc["bwd_s"] - lc["recompute_s"]) + ends
  rec = n_l * lc["recompute_s"]
  tp = n_l * (lc["tp_fwd_s"] + lc["tp_bwd_s"])
  cp = n_l * (lc["cp_fwd_s"] + lc["cp_bwd_s"])
  ep = n_l * (lc["ep_fwd_s"] + lc["ep_bwd_s"])
  per_mb = comp + rec + tp + cp + ep
  per_mb_avg = (lc["layers_total"] * layer + head + emb) / pp
  bubble_mb = (pp - 1) / vp
  p2p_hidden = xp.where(vp > 1, c["p2p_overlap"], 0.0)
  p2p = xp.where(pp > 1, 2 * (mic * vp + pp - 1) * lc["p2p_s"] * (1 - p2p_hidden), 0.0)
  # ZeRO-3 gathers of the next layer overlap this layer's compute (prefetch)
  z3_window = xp.where(plan["overlap_param"] > 0, c["overlap_eff"] * (comp + rec), 0.0)
  # (a backward gather issued only once the current unit's gradient is
  # done -- FSDP1's BACKWARD_POST -- waits on the critical path)
  z3_serial = plan["z3_post"] * lc["zero3_ag_s"]
  z3 = mic * (z3_serial + xp.maximum(lc["zero3_mb_s"] - z3_serial - z3_window, 0.0))
  bwd_window = c["overlap_eff"] * n_l * lc["bwd_s"]
  fwd_window = c["overlap_eff"] * n_l * lc["fwd_s"]
  bucket_t = plan["bucket_bytes"] / xp.maximum(lc["dp_grad_bytes"], 1.0) * lc["dp_grad_s"]
  dp_grad = xp.where(plan["overlap_grad"] > 0,
                     xp.maximum(lc["dp_grad_s"] - bwd_window, xp.minimum(bucket_t, lc["dp_grad_s"])),
                     lc["dp_grad_s"])
  dp_param = xp.where(plan["overlap_param"] > 0, xp.maximum(lc["dp_param_s"] - fwd_window, 0.0),
                      lc["dp_param_s"])
  total = (mic * per_mb + bubble_mb * per_mb_avg + p2p + z3 + dp_grad + dp_param + lc["optimizer_s"]
           + lc["host_step_s"])
  return dict(step_time_s=total, compute_s=mic * comp, recompute_s=mic * rec, tp_comm_s=mic * tp,
              cp_comm_s=mic * cp, ep_comm_s=mic * ep, bubble_s=bubble_mb * per_mb_avg, pp_comm_s=p2p,
              dp_comm_s=dp_grad + dp_param + z3, optimizer_s=lc["optimizer_s"], host_s=lc["host_step_s"])


@jax.jit
def _f0_jit(plan, model, hw, consts):
  return f0(jnp, plan, model, hw, consts)


def simulate_f0(plan: Mapping[str, Any], model: Mapping[str, Any], hw: Mapping[str, Any],
                consts: costs.SimConstants | Mapping[str, float] | None = None) -> dict[str, np.ndarray]:
  """Scores N candidates in one jitted call. `plan` holds [N] arrays
  (costs.PLAN_FIELDS); `model`/`hw` hold scalars or [N] arrays
  (costs.model_scalars, hardware.cluster_scalars). Returns numpy arrays."""
  consts = _consts(consts)
  n = int(np.size(plan["tp"]))
  size = _bucket(n)

  def pad(d):  # [N] arrays padded to the bucket (edge values), scalars kept
    out = {}
    for k, v in d.items():
      v = np.asarray(v, np.float32)
      out[k] = jnp.asarray(np.pad(v.reshape(-1), (0, size - n), mode="edge") if v.ndim else v)
    return out

  out = _f0_jit(pad({k: plan[k] for k in costs.PLAN_FIELDS}), pad(costs.model_fields(model)),
                pad(hw), pad(consts))
  return {k: np.broadcast_to(np.asarray(v), (size,))[:n] for k, v in out.items()}


def _bucket(n: int) -> int:
  """Padded batch size: 64, then 8 sizes per power of two (at most 12.5 %
  padding), so batches of any size reuse a handful of compiled shapes."""
  if n <= 64:
    return 64
  step = 1 << max(n.bit_length() - 4, 0)
  return -(-n // step) * step


def simulate_f0_reference(plan_row: Mapping[str, float], model: Mapping[str, float], hw: Mapping[str, float],
                          consts: costs.SimConstants | Mapping[str, float] | None = None) -> dict[str, float]:
  """One candidate in plain numpy float64 (the scalar reference path)."""
  consts = _consts(consts)
  f64 = lambda d: {k: np.float64(v) for k, v in d.items()}
  out = f0(np, f64(plan_row), f64(model), f64(hw), f64(consts))
  return {k: float(v) for k, v in out.items()}


def _consts(consts) -> dict[str, float]:
  if consts is None:
    consts = CALIBRATED
  return consts.as_dict() if isinstance(consts, costs.SimConstants) else dict(consts)


def candidates_to_arrays(space: SimSpace, candidates: Sequence[Candidate], workload, cluster) -> dict[str, np.ndarray]:
  """PLAN arrays ([N] float64) of candidates of a sim space."""
  return space.plan(space.table_from_candidates(candidates), workload, cluster)


def score_space(space: SimSpace, workload, cluster, consts=None) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
  """Every valid point of a sim space and its F0 outputs: (table, outputs),
  row-aligned. `space.candidates_from_table(table, idx)` recovers points."""
  table = space.table()
  plan = space.plan(table, workload, cluster)
  return table, simulate_f0(plan, costs.model_scalars(workload), hardware.cluster_scalars(cluster), consts)


class AnalyticEvaluator(Evaluator):
  """F0 over a batch: one jitted call, failures (invalid, OOM) as measurements.

  cost_s is a fixed charge per candidate (`charge_s`, device-seconds), so a
  gin file and a seed give the same search every time; the CPU time the
  simulator took is recorded separately (`wall_s`, provenance `cpu_s`)."""

  fidelity = "analytic"
  DEFAULT_CHARGE_S = 3e-4  # F0 took 0.3 ms a candidate in batches of 8 (Llama 3 8B, 64 H100)

  def __init__(self, constants: costs.SimConstants | None = None, charge_s: float | None = None):
    charge = self.DEFAULT_CHARGE_S if charge_s is None else float(charge_s)
    if not charge >= 0:
      raise ValueError(f"{type(self).__name__}: charge_s must be >= 0, got {charge_s!r}")
    self.constants = constants
    self.charge_s = charge

  def check_fits(self, workload, cluster) -> str | None:
    """A workload whose training state cannot fit even fully sharded."""
    if not isinstance(cluster, hardware.Cluster):
      return f"the analytic simulator needs a sim cluster (autoscout_jax.sim.hardware.Cluster), got {type(cluster).__name__}"
    from autoscout_jax.finetune import state_bytes
    from autoscout_jax.sim.catalog import param_count
    need = state_bytes(workload, param_count(workload.model))  # LoRA: frozen base + adapters' state
    have = cluster.device.hbm_bytes * cluster.num_devices
    if need > have:
      return (f"workload {workload.name!r}: {need / 1e12:.1f} TB of training state (weights, gradients, Adam) exceed the "
              f"{have / 1e12:.1f} TB of HBM of {cluster.num_devices} {cluster.device.name} devices "
              f"(cluster {cluster.name!r} as configured)")
    return None

  simulator = "F0"  # provenance label; the F1 subclass changes it

  def settings(self) -> dict[str, Any]:
    return {"simulator": self.simulator, "version": SIMULATOR_VERSION,
            "constants": _consts(self.constants), "charge_s": self.charge_s}

  def _simulate(self, plan, workload, cluster, constants=None) -> Mapping[str, np.ndarray]:
    """One vectorized call over the plan arrays (F1 overrides this)."""
    return simulate_f0(plan, costs.model_scalars(workload), hardware.cluster_scalars(cluster),
                       self.constants if constants is None else constants)

  def _plan(self, problem: Problem, candidates: Sequence[Candidate]) -> Mapping[str, np.ndarray]:
    """The plan of valid candidates of the problem's space (a simulator
    space's own translation; local/sim_evaluators.py adds the local family)."""
    space = problem.space
    if not isinstance(space, SimSpace):
      raise TypeError(f"the {self.fidelity} simulator scores candidates of a simulator space "
                      f"(megatron, jax_mesh), got space {space.name!r} of family {space.family!r}")
    return candidates_to_arrays(space, candidates, problem.workload, problem.cluster)

  def _hardware(self, problem: Problem) -> tuple[Any, costs.SimConstants | None, dict[str, Any]]:
    """(the simulated cluster, constants, provenance) the problem's
    candidates are scored on: its own cluster and this evaluator's
    constants (local/sim_evaluators.py: this machine's measured devices)."""
    return problem.cluster, self.constants, {}

  def _metrics(self, out: Mapping[str, np.ndarray], j: int, cluster) -> Metrics:
    get = lambda k: float(out[k][j])
    common = dict(peak_mem_bytes=get("peak_mem_bytes"), breakdown={k: get(k) for k in BREAKDOWN},
                  flops_per_step=get("model_flops") / cluster.num_devices,
                  extra=self._extra(out, j))
    if bool(out["feasible"][j]):
      return Metrics(feasible=True, step_time_s=get("step_time_s"), tokens_per_s=get("tokens_per_s"),
                     mfu=get("mfu"), **common)
    return Metrics.failed(OOM, f"needs {get('peak_mem_bytes') / 2**30:.1f} GiB per device (at least "
                               f"{get('peak_mem_lo') / 2**30:.1f}), {cluster.device.hbm_bytes / 2**30:.1f} GiB "
                               f"available", **common)

  def _extra(self, out: Mapping[str, np.ndarray], j: int) -> dict:
    verdict = uncertainty.VERDICT_NAMES[int(out["mem_verdict"][j])]
    return dict(model_tflops_per_device=float(out["model_tflops_per_device"][j]),
                memory_verdict=verdict, peak_mem_bytes_lo=float(out["peak_mem_lo"][j]),
                peak_mem_bytes_hi=float(out["peak_mem_hi"][j]),
                tokens_per_s_lo=float(out["tokens_per_s"][j] * np.exp(-out["tput_spread"][j])),
                tokens_per_s_hi=float(out["tokens_per_s"][j] * np.exp(out["tput_spread"][j])))

  def evaluate(self, problem: Problem, candidates: Sequence[Candidate]) -> list[Measurement]:
    t0 = time.perf_counter()
    workload, space = problem.workload, problem.space
    cands = list(candidates)
    if not cands:
      return []
    problems = space.validate_many(cands)
    ok = [i for i, p in enumerate(problems) if not p]
    plan = self._plan(problem, [cands[i] for i in ok]) if ok else None
    cluster, constants, hw_prov = self._hardware(problem)
    out_arr = self._simulate(plan, workload, cluster, constants) if ok else {}
    per = (time.perf_counter() - t0) / len(cands)
    row = {i: j for j, i in enumerate(ok)}
    wk, ck = workload.key, problem.cluster.key  # digests: once per batch, not per candidate
    res = []
    for i, c in enumerate(cands):
      if problems[i]:
        metrics = Metrics.failed(INVALID, "; ".join(str(v) for v in problems[i]))
      else:
        metrics = self._metrics(out_arr, row[i], cluster)
      res.append(Measurement(candidate=c, fidelity=self.fidelity, metrics=metrics, cost_s=self.charge_s,
                             workload_key=wk, cluster_key=ck, wall_s=per,
                             provenance=dict(simulator=self.simulator, space=space.name, cpu_s=per, **hw_prov)))
    return res
