"""F1: the event simulator (fidelity "event"), vectorized over candidates.

Where it sits: the search loop routes "event" suggestions to
`EventEvaluator.evaluate`; the calibration tools call `simulate_f1` (same
inputs and outputs as F0's `simulate_f0`: PLAN arrays, model and hardware
scalars, constants -> dict of [N] arrays). Both use the per-layer cost
model F0 uses (sim/costs.py `layer_costs`) and differ from F0 in how the
step is composed: instead of closed forms for the bubble and the exposed
communication, the step is played out pass by pass.

    candidates -> PLAN arrays -> layer_costs -> per-virtual-stage PipelineInputs
               -> event_engine.simulate_pipeline (timeline) -> outputs, breakdown

What F1 sees that F0's closed forms approximate:
- leading dense layers of an MoE model (DeepSeek) on the first stages, each
  layer at its own type's cost (F0 averages the layer types).
- uneven stages: the layers of each virtual stage (Megatron counts the
  embedding and the loss as pipeline layers when the layer count needs it),
  the embedding on the first stage, the output layer and loss on the last;
  the bubble is whatever the schedule leaves idle, not (pp-1)/m.
- data-parallel buckets reduced while the last micro-batch's backward is
  still producing gradients (overlap_grad_reduce), parameter all-gathers
  racing the first forward of each chunk (overlap_param_gather), each
  rank's own gradient volume and optimizer step.
- links shared by two traffic classes (DP and pipeline sends on one NIC,
  DP and TP on NVLink) slow each other down.
- pipeline sends block the sender in 1F1B and overlap compute in the
  interleaved schedule.
Memory (peak bytes, intervals, the verdict and feasibility) is F0's model
(sim/uncertainty.py).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from autoscout_jax.measurement import INVALID, Metrics
from autoscout_jax.sim import costs, hardware, memory, uncertainty
from autoscout_jax.sim.analytic import BREAKDOWN, AnalyticEvaluator
from autoscout_jax.sim.constants import CALIBRATED
from autoscout_jax.sim.event_engine import PipelineInputs, simulate_pipeline


def _consts(consts) -> dict[str, float]:
  if consts is None:
    consts = CALIBRATED
  return consts.as_dict() if isinstance(consts, costs.SimConstants) else dict(consts)


def stage_layers(L: np.ndarray, pp: np.ndarray, vp: np.ndarray, V: int, P: int) -> np.ndarray:
  """Transformer layers of each virtual stage [N, V, P] (chunk c, rank r =
  virtual stage c*pp+r). Even split when pp*vp divides L; otherwise, as
  Megatron's pipeline-split accounting does, the embedding (first stage)
  and the loss (last stage; an MTP block too) take a layer's slot, and
  any remaining imbalance goes to the first stages (`costs.split_slots`,
  which F0's `costs.stage_split` counts per rank)."""
  Q = (pp * vp).astype(np.int64)
  q = np.arange(V)[None, :, None] * pp[:, None, None] + np.arange(P)[None, None, :]
  valid = (np.arange(V)[None, :, None] < vp[:, None, None]) & (np.arange(P)[None, None, :] < pp[:, None, None])
  extra, base, rem = (np.rint(a).astype(np.int64)
                      for a in costs.split_slots(np, np.asarray(L, np.float64), Q.astype(np.float64)))
  layers = np.broadcast_to(base[:, None, None], q.shape).copy()
  e = extra[:, None, None]
  first, last = q == 0, q == (Q - 1)[:, None, None]
  layers -= (first & (e >= 2)).astype(np.int64)        # embedding slot
  layers -= (last & (e >= 1)).astype(np.int64)         # loss slot
  layers -= (last & (e >= 3)).astype(np.int64)         # MTP slot
  layers += ((e < 0) & (q < rem[:, None, None])).astype(np.int64)
  return np.where(valid, np.maximum(layers, 0), 0).astype(np.float64)


def pipeline_inputs(plan: Mapping[str, Any], model: Mapping[str, Any], hw: Mapping[str, Any],
                    consts: Mapping[str, float]) -> tuple[PipelineInputs, dict[str, np.ndarray]]:
  """PipelineInputs of N candidates and the per-rank figures the breakdown
  needs. All inputs are broadcast to [N] float64."""
  n = int(np.size(plan["tp"]))
  b = lambda d: {k: np.broadcast_to(np.asarray(v, np.float64), (n,)).copy() for k, v in d.items()}
  plan, model, hw = b({k: plan[k] for k in costs.PLAN_FIELDS}), b(costs.model_fields(model)), b(hw)
  lc = costs.layer_costs(np, plan, model, hw, consts)
  lc = {k: np.broadcast_to(np.asarray(v, np.float64), (n,)) for k, v in lc.items()}
  pp = np.maximum(np.rint(plan["pp"]), 1).astype(np.int64)
  vp = np.where(pp > 1, np.maximum(np.rint(plan["vp"]), 1), 1).astype(np.int64)
  m = np.maximum(np.rint(plan["num_micro"]), 1).astype(np.int64)
  V, P = int(vp.max()), int(pp.max())
  layers = stage_layers(model["L"], pp, vp, V, P)
  x = lambda a: a[:, None, None]
  q = np.arange(V)[None, :, None] * x(pp) + np.arange(P)[None, None, :]
  valid = (np.arange(V)[None, :, None] < x(vp)) & (np.arange(P)[None, None, :] < x(pp))
  first = valid & (q == 0)
  last = valid & (q == x(pp * vp - 1))

  # which traffic shares the data-parallel group's tier (1 = the slow one)
  zero = plan["zero"]
  dp_size = np.where(zero > 0, plan["shard"], lc["dp_size"])
  dp_inter = np.where(zero > 0, plan["shard_local"] < plan["shard"], plan["dp_local"] < lc["dp_size"])
  share = lambda inter: (inter == dp_inter) & (dp_size > 1)
  s_tp = share(plan["tp_local"] < plan["tp"])
  s_cp = share(plan["cp_local"] < plan["cp"])
  s_ep = share(plan["ep_local"] < plan["ep"])

  # ZeRO-3: parameter gathers (forward) and gather + reduce-scatter (backward)
  # of each layer, hidden behind the layer's compute when prefetching
  layers_dev0 = np.maximum(layers[:, :, 0].sum(axis=1), 1.0)
  z3_layer = lc["zero3_mb_s"] / layers_dev0
  hide = np.where(plan["overlap_param"] > 0, consts["overlap_eff"], 0.0)
  z3_f = np.maximum(z3_layer / 3 - hide * lc["fwd_s"], 0.0)
  # a backward gather issued only once the current unit's gradient is done
  # (FSDP1's BACKWARD_POST) waits on the critical path
  z3_serial = plan["z3_post"] * lc["zero3_ag_s"] / layers_dev0
  z3_b = z3_serial + np.maximum(2 * z3_layer / 3 - z3_serial - hide * lc["bwd_s"], 0.0)

  # MoE models with leading dense layers (DeepSeek): the first Ld layers in
  # virtual-stage order are dense, the rest MoE, each at its own cost. A
  # hybrid's layers interleave (its pattern), as do alternating MoE and
  # dense layers (Llama 4 Maverick): every layer at their average.
  hybrid = (model["f_att"] < 1) | (model["f_ffn"] < 1) | (model["moe_int"] > 0)
  moe = (model["E"] > 0) & ~hybrid
  if moe.any():
    lcd = costs.layer_costs(np, plan, dict(model, Ld=np.where(moe, model["L"], model["Ld"])), hw, consts)
    lcm = costs.layer_costs(np, plan, dict(model, Ld=np.where(moe, 0.0, model["Ld"])), hw, consts)
    lcd, lcm = ({k: np.broadcast_to(np.asarray(v, np.float64), (n,)) for k, v in d.items()} for d in (lcd, lcm))
  else:
    lcd = lcm = lc
  before = ((np.cumsum(layers.sum(axis=2), axis=1) - layers.sum(axis=2))[:, :, None]
            + np.cumsum(layers, axis=2) - layers)
  n_dense = np.clip(x(np.where(moe, model["Ld"], model["L"])) - before, 0.0, layers)
  n_moe = layers - n_dense

  def mix(fn):  # per virtual stage: its dense layers at dense cost, its MoE layers at MoE cost
    return n_dense * x(fn(lcd)) + n_moe * x(fn(lcm))

  emb_fwd, emb_bwd = lc["emb_fwd_s"], lc["emb_bwd_s"]
  fwd = (mix(lambda c: c["fwd_s"] + c["tp_fwd_s"] + c["cp_fwd_s"] + c["ep_fwd_s"] + z3_f)
         + first * x(emb_fwd) + last * x(lc["head_fwd_s"]))
  bwd = (mix(lambda c: c["bwd_s"] + c["tp_bwd_s"] + c["cp_bwd_s"] + c["ep_bwd_s"] + z3_b)
         + first * x(emb_bwd) + last * x(lc["head_bwd_s"]))
  fwd_comm = mix(lambda c: s_tp * c["tp_fwd_s"] + s_cp * c["cp_fwd_s"] + s_ep * c["ep_fwd_s"] + (zero == 3) * z3_f)
  bwd_comm = mix(lambda c: s_tp * c["tp_bwd_s"] + s_cp * c["cp_bwd_s"] + s_ep * c["ep_bwd_s"] + (zero == 3) * z3_b)

  # parameters of each virtual stage, per device, and their share of F0's
  # busiest-stage DP and optimizer times
  lp = costs.layer_params(np, model)
  dense_layer = (lp["attn"] + lp["dense"]) / plan["tp"]
  moe_layer = (lp["attn"] + lp["moe_shared"]) / plan["tp"] + lp["experts"] / (plan["ep"] * plan["etp"])
  emb_dev = lp["emb"] / plan["tp"]
  out_dev = np.where((model["tie"] > 0) & (pp <= 1), 0.0, emb_dev)  # a pipeline's last stage holds a copy
  # a hybrid's average layer (memory.py's per-layer figures)
  sh = memory.layer_shares(np, model)
  avg_layer = ((sh["att"] * lp["attn"] + sh["ssm"] * lp["ssm"] + sh["dense"] * lp["dense"]
                + sh["moe"] * lp["moe_shared"]) / plan["tp"] + sh["moe"] * lp["experts"] / (plan["ep"] * plan["etp"]))
  dense_layer = np.where(hybrid, avg_layer, dense_layer)
  params = n_dense * x(dense_layer) + n_moe * x(np.where(moe, moe_layer, dense_layer)) \
      + first * x(emb_dev) + last * x(out_dev)
  # LoRA: only the adapters have gradients to sync and state to update
  # (MoE layers: the routed experts' adapters sharded like the experts)
  ad_dense = model["lora_p"] / plan["tp"]
  ad_moe = model["lora_pm"] / plan["tp"] + model["lora_pe"] / (plan["ep"] * plan["etp"])
  adapters = n_dense * x(ad_dense) + n_moe * x(np.where(moe, ad_moe, ad_dense))
  params = np.where(x(model["frozen"]) > 0, adapters, params)
  f0_dev0 = np.maximum(lc["dp_grad_bytes"] / np.maximum(plan["g_bytes"], 1e-9), 1.0)
  share_of = params / x(f0_dev0)
  buckets = np.maximum(np.ceil(params * x(plan["g_bytes"]) / x(np.maximum(plan["bucket_bytes"], 1.0))), 1.0)
  opt = (params.sum(axis=1) / f0_dev0[:, None]) * lc["optimizer_s"][:, None]

  inp = PipelineInputs(
      pp=pp, vp=vp, m=m, fwd=fwd, bwd=bwd, fwd_comm=fwd_comm, bwd_comm=bwd_comm,
      dp=share_of * x(lc["dp_grad_s"]), buckets=buckets, ag=share_of * x(lc["dp_param_s"]),
      p2p=lc["p2p_s"], p2p_shared=share(plan["pp_inter"] > 0), p2p_async=vp > 1,
      interference=np.full(n, 1.0 - consts["overlap_eff"]),
      overlap_grad=plan["overlap_grad"] > 0, overlap_param=(plan["overlap_param"] > 0) & (zero == 1), opt=opt)
  mx = lambda a: m[:, None] * (a * valid).sum(axis=1)  # per rank, whole step
  rank = dict(
      compute=mx(mix(lambda c: c["fwd_s"] + c["bwd_s"] - c["recompute_s"]) + first * x(emb_fwd + emb_bwd)
                 + last * x(lc["head_fwd_s"] + lc["head_bwd_s"])),
      recompute=mx(mix(lambda c: c["recompute_s"])), tp=mx(mix(lambda c: c["tp_fwd_s"] + c["tp_bwd_s"])),
      cp=mx(mix(lambda c: c["cp_fwd_s"] + c["cp_bwd_s"])), ep=mx(mix(lambda c: c["ep_fwd_s"] + c["ep_bwd_s"])),
      zero3=mx(layers * x(z3_f + z3_b)), opt=opt,
      ag_tail=np.where(inp.overlap_param[:, None], 0.0, (inp.ag * valid).sum(axis=1)))
  return inp, dict(lc=lc, plan=plan, model=model, hw=hw, rank=rank)


def simulate_f1(plan: Mapping[str, Any], model: Mapping[str, Any], hw: Mapping[str, Any],
                consts: costs.SimConstants | Mapping[str, float] | None = None) -> dict[str, np.ndarray]:
  """Scores N candidates with the event simulator. Same inputs and outputs
  as analytic.simulate_f0 (plan: [N] PLAN arrays; model/hw: scalars or [N]
  arrays), plus contention_s (delay from shared links) and stalled (the
  schedule cannot run: step time NaN, infeasible).

  The breakdown is read off the timeline of the critical rank (the one that
  finishes last) and sums to the step time: its passes (compute,
  recompute, exposed TP/CP/EP inside them), pp_comm_s = the time it was
  held by its own sends, dp_comm_s = its DP tail after its last pass +
  contention delays + waits for parameter gathers + exposed ZeRO-3
  traffic, bubble_s = the rest of its idle time (waiting for inputs from
  other stages, including their sends and slower stages), optimizer_s."""
  consts = _consts(consts)
  inp, aux = pipeline_inputs(plan, model, hw, consts)
  lc, plan, model, hw, rank = aux["lc"], aux["plan"], aux["model"], aux["hw"], aux["rank"]
  ev = simulate_pipeline(inp)
  n = len(inp.pp)
  rows = np.arange(n)
  crit = ev["critical_rank"].astype(np.int64)
  at = lambda a: a[rows, crit]
  live = np.arange(rank["opt"].shape[1])[None, :] < inp.pp[:, None]
  tail_rank = np.argmax(np.where(live, rank["opt"] + rank["ag_tail"], -np.inf), axis=1)
  opt_s = rank["opt"][rows, tail_rank]
  host_s = np.broadcast_to(np.asarray(lc["host_step_s"], np.float64), (n,))  # dispatch of the step's program
  step = np.where(ev["stalled"], np.nan, ev["step_time_s"] + host_s)
  n_dev = plan["tp"] * plan["pp"] * plan["cp"] * plan["dp"]
  tokens = model["gbs"] * model["s"] * lc["useful_frac"]  # trained tokens (padding excluded)
  tflops = lc["model_flops"] / (step * n_dev) / 1e12
  breakdown = dict(
      compute_s=at(rank["compute"]), recompute_s=at(rank["recompute"]), tp_comm_s=at(rank["tp"]),
      cp_comm_s=at(rank["cp"]), ep_comm_s=at(rank["ep"]), pp_comm_s=ev["send_s"],
      dp_comm_s=(ev["dp_end_s"] - ev["pipe_end_s"] + ev["contention_s"] + ev["ag_wait_s"]
                 + (ev["tail_s"] - opt_s) + at(rank["zero3"])),
      bubble_s=ev["idle_s"] - ev["ag_wait_s"], optimizer_s=opt_s, host_s=host_s)
  out = dict(step_time_s=step, tokens_per_s=tokens / step, tokens_per_s_per_device=tokens / step / n_dev,
             model_tflops_per_device=tflops, mfu=tflops * 1e12 / hw["peak_bf16"],
             peak_mem_bytes=np.asarray(lc["mem_peak"], np.float64),
             fits_point=(lc["mem_peak"] <= hw["hbm_bytes"]) & ~ev["stalled"],
             model_flops=np.asarray(lc["model_flops"], np.float64),
             layer_s=(lc["fwd_s"] + lc["bwd_s"] + lc["tp_fwd_s"] + lc["tp_bwd_s"] + lc["cp_fwd_s"]
                      + lc["cp_bwd_s"] + lc["ep_fwd_s"] + lc["ep_bwd_s"]),
             contention_s=ev["contention_s"], stalled=ev["stalled"])
  out.update({k: np.asarray(v, np.float64) for k, v in breakdown.items()})
  out.update(uncertainty.intervals(np, plan, model, hw, consts, out["tokens_per_s_per_device"],
                                   np.asarray(lc["mem_peak"], np.float64),
                                   np.asarray(lc["dense_host_ratio"], np.float64),
                                   np.asarray(lc["mem_optional"], np.float64)))
  out["feasible"] = (out["mem_verdict"] >= uncertainty.UNCERTAIN) & ~ev["stalled"]
  assert set(BREAKDOWN) <= set(out)
  return out


class EventEvaluator(AnalyticEvaluator):
  """F1 over a batch: one vectorized timeline for all candidates; failures
  (invalid, OOM, a schedule that cannot run) are measurements. Space
  resolution and the fits check are F0's."""

  fidelity = "event"
  DEFAULT_CHARGE_S = 1e-3  # F1 took 0.6-0.9 ms a candidate in the same batches

  simulator = "F1"

  def _simulate(self, plan, workload, cluster, constants=None) -> Mapping[str, np.ndarray]:
    return simulate_f1(plan, costs.model_scalars(workload), hardware.cluster_scalars(cluster),
                       self.constants if constants is None else constants)

  def _metrics(self, out: Mapping[str, np.ndarray], j: int, cluster) -> Metrics:
    if bool(out["stalled"][j]):
      return Metrics.failed(INVALID, "the pipeline schedule cannot run this micro-batch layout")
    return super()._metrics(out, j, cluster)

  def _extra(self, out: Mapping[str, np.ndarray], j: int) -> dict:
    return dict(super()._extra(out, j), contention_s=float(out["contention_s"][j]))
