"""Communication costs of the cost model: tensor-, context- and expert-
parallel collectives per layer, data-parallel / ZeRO collectives and the
optimizer per step.

Where it sits: sim/costs.py (`layer_costs`, the contract F0 and F1 read)
computes a layer's compute and the memory, and calls `layer_comm` and
`data_parallel` here for the traffic; the collectives' alpha-beta prices
and tiers are sim/collectives.py. Written over an array module `xp` (numpy
or jax.numpy), broadcasting over candidates like the rest of the model.
"""

from __future__ import annotations

from typing import Any, Mapping

from autoscout_jax.sim import collectives, memory


def once(xp, n, c):
  """The fixed cost of one collective call of a group of n devices
  (`coll_fixed_s`: the rendezvous of the devices' threads on a CPU host; 0
  where the link latency covers it)."""
  return xp.where(n > 1, c["coll_fixed_s"], 0.0)


def layer_comm(xp, plan: Mapping[str, Any], m: Mapping[str, Any], hw: Mapping[str, Any], c: Mapping[str, Any],
               t: Mapping[str, Any]) -> dict[str, Any]:
  """Exposed TP, CP and EP communication of one layer for one micro-batch
  (seconds per device): tp/cp/ep _fwd_s and _bwd_s. `t` holds the layer's
  compute that hides some of it (costs.layer_costs): T (tokens per device
  per micro-batch), full (share fully recomputed), f_moe, mats, sp_div,
  t_qkv, t_dense, t_fc2, t_moe, t_core, fwd, bwd."""
  tp, cp, ep = plan["tp"], plan["cp"], plan["ep"]
  h, KV = m["h"], 2 * m["g"] * m["d"]
  T, full, f_moe, mats, sp_div = t["T"], t["full"], t["f_moe"], t["mats"], t["sp_div"]
  t_qkv, t_dense, t_fc2, t_moe, t_core = t["t_qkv"], t["t_dense"], t["t_fc2"], t["t_moe"], t["t_core"]
  fwd, bwd = t["fwd"], t["bwd"]
  # hybrid layers (sim/costs.py): one collective pair per mixer (attention
  # or Mamba-2, both column-/row-parallel over heads) and per MLP
  f_att, f_ssm, f_ffn, f_dn = t["f_att"], t["f_ssm"], t["f_ffn"], t["f_dn"]
  pairs = f_att + f_ssm + f_ffn  # 2 for a transformer's layer
  # every collective call of a group of more than one device also pays `once`
  tp_one = (collectives.all_reduce_tiered_s(xp, tp, plan["tp_local"], T * h * 2, hw, c)  # one AR == one AG + one RS
            + once(xp, tp, c))
  tp_hide = 1 - plan["tp_overlap"] * c["tp_overlap_eff"]
  tp_fwd = pairs * tp_one * tp_hide
  # backward, per column-/row-parallel pair: the column-parallel linear's
  # input-gradient collective is issued asynchronously and runs under its
  # weight-gradient GEMM (Megatron's and Transformer Engine's linear
  # backward); with SP its re-gather of the sharded input runs under the
  # input-gradient GEMM too, while the row-parallel output gradient's
  # all-gather blocks. Full recompute repeats the forward's collectives.
  sp_on = xp.where(plan["sp"] > 0, 1.0, 0.0)

  # (`tp_async` 0: a stack whose column-parallel backward all-reduces the
  # input gradient before the weight-gradient GEMM starts -- Megatron-LM
  # before its asynchronous all-reduce, BigScience's Megatron-DeepSpeed --
  # so nothing of it hides)
  tp_async = plan["tp_async"]

  def tp_pair_bwd(g):  # g: that linear's GEMM time (forward = dgrad = wgrad; frozen weights: no wgrad)
    return (sp_on * (0.5 * tp_one + xp.maximum(tp_one - 2 * g, 0.0))
            + (1 - sp_on) * (tp_async * xp.maximum(tp_one - g, 0.0) + (1 - tp_async) * tp_one))

  # an MLP layer's column-parallel GEMMs, averaged over the MLP layers
  g_mlp = (f_dn * (t_dense - t_fc2) + f_moe * t_moe * (mats - 1) / mats) / xp.maximum(f_ffn, 1e-9)
  live = 1 - m["frozen"]
  tp_bwd = (f_att * tp_pair_bwd(live * t_qkv) + f_ssm * tp_pair_bwd(live * t["t_ssm_in"])
            + f_ffn * tp_pair_bwd(live * g_mlp) + pairs * full * tp_one) * tp_hide

  bw_cp, lat_cp = collectives.tier(xp, plan["cp_local"], cp, hw, c, rails=0.0)
  cp_bytes = (cp - 1) * T * KV * 2 / tp
  cp_t = xp.where(cp > 1, cp_bytes / bw_cp + (cp - 1) * (lat_cp + c["coll_fixed_s"]), 0.0)
  # attention layers: the ring of K/V chunks under the attention kernel.
  # Mamba-2 layers (Megatron-core's hybrid context parallelism): an
  # all-to-all turns the in-projection's sequence shards into head shards
  # for the scan and another turns the output back, each moving (cp - 1) /
  # cp of its tensor, exposed (the scan needs it); the backward moves both
  # gradients, a full recompute repeats the forward's
  di, _, ssm_in = memory.mamba_widths(m)
  ssm_a2a_bytes = (cp - 1) / cp * T * (ssm_in + di) * 2 / tp
  ssm_cp = xp.where(cp > 1, ssm_a2a_bytes / bw_cp + 2 * (cp - 1) * (lat_cp + c["coll_fixed_s"]), 0.0)
  att_fwd = xp.maximum(cp_t - t_core, 0.0)
  cp_fwd = f_att * att_fwd + f_ssm * ssm_cp
  cp_bwd = f_att * xp.maximum(2 * cp_t - 2.5 * t_core, 0.0) + f_ssm * 2 * ssm_cp + full * cp_fwd

  # all-to-all dispatch/combine. Inside a node each token goes to each of
  # its k experts' ranks; across nodes a node-deduplicating dispatcher
  # (DeepEP / HybridEP style, ep_dedup 1) sends it once per remote node it
  # needs, a plain NCCL all-to-all (ep_dedup 0) sends every copy whose
  # expert lives on another node.
  ep_local = xp.minimum(plan["ep_local"], ep)
  ep_nodes = xp.maximum(ep / xp.maximum(ep_local, 1.0), 1.0)
  tok_bytes = T * memory.expert_width(xp, m) * 2 / sp_div  # LatentMoE: the latent width
  local_bytes = tok_bytes * m["k"] * (ep_local - 1) / xp.maximum(ep, 1.0)
  dedup = plan["ep_dedup"]
  remote_bytes = tok_bytes * (dedup * (ep_nodes - 1) * (1 - (1 - 1 / ep_nodes) ** m["k"])
                              + (1 - dedup) * m["k"] * (ep - ep_local) / xp.maximum(ep, 1.0))
  a2a = xp.where(ep > 1, xp.maximum(remote_bytes / (hw["inter_bw"] * c["comm_eff"]),
                                    local_bytes / (hw["intra_bw"] * c["comm_eff"]))
                 + collectives.log2(xp, ep) * xp.where(ep_nodes > 1, hw["inter_lat"], hw["intra_lat"])
                 + c["coll_fixed_s"], 0.0)
  # with expert-parallel overlap (Megatron-core's overlapped 1F1B: one
  # micro-batch's dispatch/combine runs under another's compute) only the
  # excess over the compute window shows
  ep_hide = plan["ep_overlap"] * c["overlap_eff"]
  ep_fwd = xp.maximum(2 * a2a * f_moe - ep_hide * fwd, 0.0)
  # (a recomputed MoE layer -- full recompute, or the "moe" module -- dispatches and combines again)
  rc_moe = full + (1 - full) * plan["rc_moe"]
  ep_bwd = xp.maximum((2 + 2 * rc_moe) * a2a * f_moe - ep_hide * bwd, 0.0)


  return dict(tp_fwd_s=tp_fwd, tp_bwd_s=tp_bwd, cp_fwd_s=cp_fwd, cp_bwd_s=cp_bwd, ep_fwd_s=ep_fwd, ep_bwd_s=ep_bwd)


def data_parallel(xp, plan: Mapping[str, Any], m: Mapping[str, Any], hw: Mapping[str, Any], c: Mapping[str, Any],
                  mm: Mapping[str, Any], layers_stage: Any) -> dict[str, Any]:
  """Data-parallel gradient and parameter collectives per step (ZeRO-3:
  per micro-batch) and the optimizer update, from the memory model's
  sharding (`mm`, sim/memory.py) of the busiest stage's parameters."""
  P_all, wb, gb, ob = mm["P_dense_first"] + mm["P_exp"], mm["wb"], mm["gb"], mm["ob"]
  # gradients, their sync and the optimizer cover the trained parameters
  # only (all of them, or the LoRA adapters); gathers move every weight
  P_dense_first, P_exp = mm["P_train_first"], mm["P_train_exp"]
  zero, shard, e_shard, dpg, edp = mm["zero"], mm["shard"], mm["e_shard"], mm["dpg"], mm["edp"]
  rep = xp.maximum(dpg / shard, 1.0)
  bw_sh, lat_sh = collectives.tier(xp, plan["shard_local"], shard, hw, c, plan["rails"])
  bw_dp, lat_dp = collectives.tier(xp, plan["dp_local"], dpg, hw, c, plan["rails"])
  # the experts' data-parallel group: the ranks of a node regroup as etp
  # (inner), ep, edp (outer), so a node holds (its ranks) / (etp x ep) of
  # that group's members -- one when expert parallelism fills the node. Its
  # gradient / parameter traffic then leaves through each member's own NIC,
  # not through `shard_local` NICs as the dense group's does.
  e_local = xp.maximum(plan["tp_local"] * plan["dp_local"] / (plan["etp"] * xp.maximum(plan["ep_local"], 1.0)), 1.0)
  bw_esh, lat_esh = collectives.tier(xp, xp.minimum(e_local, plan["shard_local"]), e_shard, hw, c, plan["rails"])
  bw_edp, lat_edp = collectives.tier(xp, xp.minimum(e_local, plan["dp_local"]), edp, hw, c, plan["rails"])
  grad_bytes = (P_dense_first + P_exp) * gb
  param_bytes = P_all * xp.minimum(mm["wb_frozen"], 2.0)  # gathers move bf16 (or fp8/int8) weights
  dg_bytes, ep_grad_bytes = P_dense_first * gb, P_exp * gb
  ar_plain = (collectives.all_reduce_tiered_s(xp, dpg, plan["dp_local"], dg_bytes, hw, c, plan["rails"])
              + collectives.all_reduce_s(xp, edp, ep_grad_bytes, bw_edp, lat_edp) + once(xp, dpg, c) + once(xp, edp, c))
  zero1_rs = (collectives.gather_s(xp, shard, dg_bytes, bw_sh, lat_sh)
              + collectives.gather_s(xp, e_shard, ep_grad_bytes, bw_esh, lat_esh)
              + once(xp, shard, c) + once(xp, e_shard, c))
  gather_b = xp.minimum(wb, 2.0)  # gathers move model-precision weights (fp8 params: 1 byte)
  zero1_ag = (collectives.gather_s(xp, shard, P_dense_first * gather_b, bw_sh, lat_sh)
              + collectives.gather_s(xp, e_shard, P_exp * gather_b, bw_esh, lat_esh)
              + once(xp, shard, c) + once(xp, e_shard, c))
  rep_ar = (collectives.all_reduce_tiered_s(xp, rep, plan["rep_local"], grad_bytes / shard, hw, c, plan["rails"])
            + once(xp, rep, c))
  grad_t = xp.where(zero == 0, ar_plain, zero1_rs + rep_ar)
  param_t = xp.where((zero == 1) | (zero == 2), zero1_ag, 0.0)
  # ZeRO-3 per micro-batch: gather every unit forward and again backward,
  # reduce-scatter its gradient: three collectives per layer
  z3_ops = layers_stage + 1
  steps_sh = collectives.ring_steps(xp, shard, hw)
  z3_gather = collectives.gather_s(xp, shard, param_bytes, bw_sh, lat_sh, steps_sh, z3_ops)
  zero3_mb = xp.where(zero == 3, 2 * z3_gather
                      + collectives.gather_s(xp, shard, grad_bytes, bw_sh, lat_sh, steps_sh, z3_ops)
                      + 3 * z3_ops * once(xp, shard, c), 0.0)
  z3_ag = xp.where(zero == 3, z3_gather + z3_ops * once(xp, shard, c), 0.0)  # one of the two gathers
  grad_t = xp.where(zero == 3, rep_ar, grad_t)
  local_opt = xp.where(zero > 0, (P_dense_first / shard + P_exp / e_shard), P_dense_first + P_exp)
  optimizer = local_opt * (2 * ob + gb + 2 * wb) / hw["hbm_bw"]
  return dict(dp_grad_bytes=grad_bytes, dp_param_bytes=param_bytes, dp_bw=xp.where(zero == 0, bw_dp, bw_sh),
              dp_lat=xp.where(zero == 0, lat_dp, lat_sh), dp_size=dpg, dp_grad_s=grad_t, dp_param_s=param_t,
              dp_step_s=grad_t + param_t, zero3_mb_s=zero3_mb, zero3_ag_s=z3_ag, optimizer_s=optimizer)
