"""Per-device memory model of the cluster simulators: training state by
ZeRO stage / FSDP, activations by recompute policy, the loss's logits,
framework overhead. Its numbers are part of `costs.layer_costs`'s output.

Where it sits: called by sim/costs.py `layer_costs` (F0 and F1 share it);
written over an array module `xp`, broadcasting over candidates. Bytes per
device on the busiest stages (first: embedding and the most in-flight
micro-batches; last: output layer and loss).
"""

from __future__ import annotations

from typing import Any, Mapping


def layer_params(xp, m: Mapping[str, Any]) -> dict[str, Any]:
  """Parameters of one attention block, one dense MLP, one MoE MLP (routed
  experts apart), one Mamba-2 mixer (0 without one), and the
  embedding/output matrices."""
  mats = 2.0 + m["gated"]
  attn = m["h"] * (m["a"] * m["d"] + 2 * m["g"] * m["d"]) + m["a"] * m["d"] * m["h"] + 2 * m["h"]
  dense = m["h"] * m["f"] * mats
  moe_shared = m["h"] * m["fs"] * mats + m["h"] * m["E"] + 2 * m["h"] * m["lat"]  # + LatentMoE's projections
  experts = m["E"] * expert_width(xp, m) * m["fe"] * mats
  emb = m["V"] * m["h"]
  ssm = mamba_params(m["h"], m["ssm_nh"], m["ssm_hd"], m["ssm_n"], m["ssm_g"])
  return dict(attn=attn, dense=dense, moe_shared=moe_shared, experts=experts, emb=emb, mats=mats, ssm=ssm)


def expert_width(xp, m: Mapping[str, Any]) -> Any:
  """The width routed experts work at (and the all-to-all moves): the
  LatentMoE latent width, else the hidden width."""
  return xp.where(m["lat"] > 0, m["lat"], m["h"])


def mamba_widths(m: Mapping[str, Any]) -> tuple[Any, Any, Any]:
  """(inner width, groups x state, in-projection width) of a Mamba-2 mixer:
  the in-projection makes z and x (inner each), B and C (groups x state
  each) and one dt per head. Zeros without a Mamba-2 mixer."""
  di, gn = m["ssm_nh"] * m["ssm_hd"], m["ssm_g"] * m["ssm_n"]
  return di, gn, 2 * di + 2 * gn + m["ssm_nh"]


def mamba_params(h, heads, head_dim, state, groups):
  """One Mamba-2 layer (Megatron's MambaMixer): the in-projection, the
  depthwise convolution (kernel 4, with bias) over x, B and C, per-head dt
  bias, A and D, the gated norm over the inner width, the out-projection
  and the layer's own norm. Plain arithmetic: scalars or arrays."""
  di, gn = heads * head_dim, groups * state
  return h * (2 * di + 2 * gn + heads) + (di + 2 * gn) * 5 + 3 * heads + di + di * h + h


def layer_shares(xp, m: Mapping[str, Any]) -> dict[str, Any]:
  """Shares of the L layers (sim/costs.py): attention, Mamba-2, dense MLP,
  MoE MLP; a transformer's layer counts once as attention and once as an
  MLP."""
  f_moe = xp.where(m["E"] > 0, (m["L"] - m["Ld"]) / m["L"], 0.0)
  return dict(att=m["f_att"], ssm=m["f_ssm"], moe=f_moe, dense=(1 - f_moe) - (1 - m["f_ffn"]),
              sub=(m["f_att"] + m["f_ssm"] + m["f_ffn"]) / 2)


# in/out widths of each LoRA target projection (workload.LORA_TARGETS)
_LORA_DIMS = {"query": ("h", "q"), "key": ("h", "kv"), "value": ("h", "kv"), "out": ("q", "h"),
              "wi": ("h", "f"), "wg": ("h", "f"), "wo": ("f", "h")}


def adapter_params(m: Mapping[str, Any], rank: float, targets: Any, ffn: Any = None) -> float:
  """LoRA adapter parameters of one dense layer: r x (in + out) per target
  projection (MLP adapters at the FFN width `ffn`, default the dense one)."""
  w = dict(h=m["h"], q=m["a"] * m["d"], kv=m["g"] * m["d"], f=m["f"] if ffn is None else ffn)
  return float(sum(rank * (w[_LORA_DIMS[t][0]] + w[_LORA_DIMS[t][1]]) for t in targets))


def moe_adapter_params(m: Mapping[str, Any], rank: float, targets: Any) -> tuple[float, float]:
  """(adapters of one MoE layer outside its routed experts, adapters of
  its routed experts). When the targets include the MLP (wi / wg / wo),
  every routed expert's projections carry their own adapters at the
  expert FFN width, E of them a layer (a token uses k); the shared
  experts, one MLP of width fs, carry one set; attention adapters as in a
  dense layer. (0, 0) for a dense model."""
  if not m["E"]:
    return 0.0, 0.0
  mlp = [t for t in targets if t in ("wi", "wg", "wo")]
  attn = [t for t in targets if t not in mlp]
  shared = adapter_params(m, rank, mlp, m["fs"]) if m["fs"] else 0.0
  return adapter_params(m, rank, attn) + shared, float(m["E"]) * adapter_params(m, rank, mlp, m["fe"])


def total_params(xp, m: Mapping[str, Any]) -> Any:
  p = layer_params(xp, m)
  n_moe = m["L"] - m["Ld"]
  n_dense = m["Ld"] - m["L"] * (1 - m["f_ffn"])  # a hybrid's mixer-only layers have no MLP
  body = (m["L"] * m["f_att"] * p["attn"] + m["L"] * m["f_ssm"] * p["ssm"] + n_dense * p["dense"]
          + n_moe * (p["moe_shared"] + p["experts"]))
  # MTP blocks with their own weights: `mtp_len` average layers and the 2h -> h projection each
  mtp = m["mtp_blocks"] * (m["mtp_len"] * body / m["L"] + 2 * m["h"] * m["h"])
  return body + mtp + p["emb"] * (2 - m["tie"]) + m["h"]


def memory(xp, plan: Mapping[str, Any], m: Mapping[str, Any], hw: Mapping[str, Any], c: Mapping[str, Any],
           layers_stage: Any) -> dict[str, Any]:
  """Parameters, state and activations per device (see sim/costs.py for
  the plan/model/hardware fields); also the per-stage parameter counts and
  sharding figures the data-parallel costs need."""
  tp, pp, cp, ep, etp = plan["tp"], plan["pp"], plan["cp"], plan["ep"], plan["etp"]
  dp, vp, mic = plan["dp"], plan["vp"], plan["num_micro"]
  sp_div = xp.where(plan["sp"] > 0, tp, 1.0)
  rc = plan["recompute"]
  sel = xp.where(rc == 1, 1.0, 0.0)
  flash = plan["flash"] > 0
  h, s, A, KV = m["h"], m["s"], m["a"] * m["d"], 2 * m["g"] * m["d"]
  mats = 2.0 + m["gated"]
  sh = layer_shares(xp, m)
  f_moe, f_att, f_ssm, f_dn = sh["moe"], sh["att"], sh["ssm"], sh["dense"]
  T = plan["mbs"] * s / cp  # tokens per device per micro-batch (before the TP split)

  p = layer_params(xp, m)
  dense_layer = (f_att * p["attn"] + f_ssm * p["ssm"] + f_dn * p["dense"] + f_moe * p["moe_shared"]) / tp
  expert_layer = f_moe * p["experts"] / (ep * etp)
  emb_dev = p["emb"] / tp
  # a tied output matrix is the embedding itself on one stage; with a
  # pipeline the last stage keeps its own copy (Megatron syncs their grads)
  out_dev = xp.where((m["tie"] > 0) & (pp <= 1), 0.0, p["emb"] / tp)
  # MTP blocks live on the last stage: `mtp_len` average layers and the 2h -> h projection each
  mtp_dense = m["mtp_blocks"] * (m["mtp_len"] * dense_layer + 2 * h * h / tp)
  mtp_exp = m["mtp_blocks"] * m["mtp_len"] * expert_layer
  P_dense_first = layers_stage * dense_layer + emb_dev + xp.where(pp > 1, 0.0, out_dev + mtp_dense)
  P_dense_last = layers_stage * dense_layer + out_dev + mtp_dense + xp.where(pp > 1, 0.0, emb_dev)
  P_exp = layers_stage * expert_layer
  P_exp_first = P_exp + xp.where(pp > 1, 0.0, mtp_exp)
  P_exp_last = P_exp + mtp_exp
  zero, shard = plan["zero"], xp.maximum(plan["shard"], 1.0)
  dpg = dp * cp  # context-parallel ranks hold the same weights: gradients sync over dp x cp
  edp = xp.maximum(tp * cp * dp / (ep * etp), 1.0)  # expert data-parallel group
  e_shard = xp.where(zero > 0, xp.minimum(shard, edp), 1.0)
  # fp8 runs keep fp8 model weights (Transformer Engine fp8 params, 1 byte)
  # while master weights, gradients and Adam moments keep their precision.
  wb = xp.where((m["fp8"] > 0) & (plan["w_bytes"] <= 2), 1.0, plan["w_bytes"])
  gb, ob = plan["g_bytes"], plan["o_bytes"]
  # LoRA: base weights frozen in `frozen_bytes` (bf16 2, int8 1; fp8 runs
  # keep bf16 copies), no gradient or optimizer state for them (sharded
  # only by ZeRO-3/FSDP); the adapters train with the usual state
  # (MoE layers: the routed experts' adapters live with their experts,
  # sharded over ep x etp like them)
  fz = m["frozen"] > 0
  wb_frozen = xp.where(fz, m["frozen_bytes"], wb)
  adapters = layers_stage * ((1 - f_moe) * m["lora_p"] + f_moe * m["lora_pm"]) / tp
  expert_adapters = layers_stage * f_moe * m["lora_pe"] / (ep * etp)
  P_train_first = xp.where(fz, adapters, P_dense_first)
  P_train_exp = xp.where(fz, expert_adapters, P_exp)

  lp_gb = plan["lp_grad_bytes"]  # unsharded: the stacks that keep them shard no gradients

  def state_bytes(P, sh):
    per = xp.where(zero == 3, (wb + gb + ob) / sh,
                   xp.where(zero == 2, wb + (gb + ob) / sh, xp.where(zero == 1, wb + gb + ob / sh, wb + gb + ob)))
    return P * (per + lp_gb)

  def frozen_bytes(P, sh):
    return P * wb_frozen / xp.where(zero == 3, sh, 1.0)

  # FSDP / ZeRO-3 working set (the output layer is a unit too). Eager
  # (PyTorch FSDP, ZeRO-3): the unit being computed and the prefetched next
  # one gathered in the compute precision, plus one unit's unsharded
  # gradient before its reduce-scatter. XLA schedules the gathers of a
  # scanned layer into the buffers of the previous one: about one gathered
  # unit live. Eager stacks cap the gathered parameters (DeepSpeed's
  # stage3_max_live_parameters; FSDP wraps blocks far smaller than that).
  unit = xp.maximum(dense_layer + expert_layer, emb_dev)
  z3_eager = (xp.minimum(2 * unit, c["z3_live_params"]) * xp.minimum(wb, 2.0)
              + xp.minimum(unit, c["z3_live_params"]) * gb)
  zero3_work = xp.where(zero == 3, xp.where(plan["xla"] > 0, unit * 2.0, z3_eager), 0.0)
  state_first = state_bytes(P_dense_first, shard) + state_bytes(P_exp_first, e_shard) + zero3_work
  state_last = state_bytes(P_dense_last, shard) + state_bytes(P_exp_last, e_shard) + zero3_work
  lora_state = state_bytes(adapters, shard) + state_bytes(expert_adapters, e_shard) + zero3_work
  state_first = xp.where(fz, frozen_bytes(P_dense_first, shard) + frozen_bytes(P_exp_first, e_shard) + lora_state,
                         state_first)
  state_last = xp.where(fz, frozen_bytes(P_dense_last, shard) + frozen_bytes(P_exp_last, e_shard) + lora_state,
                        state_last)

  # --- activations (Korthikanti et al. 2022, with flash attention and no dropout) ---
  # GEMM inputs are saved in the GEMM precision (1 byte under fp8), the rest in bf16
  gin = 2 - m["fp8"]
  tok_attn = 2 * h / sp_div + gin * h / sp_div + 2 * (A + KV) / tp + gin * A / tp + 4 * m["a"] / tp
  tok_dense = 2 * h / sp_div + gin * h / sp_div + 2 * (mats - 1) * m["f"] / tp + gin * m["f"] / tp
  # (LatentMoE: the k dispatched copies at the latent width, and the down-
  # and up-projections' inputs)
  hl = expert_width(xp, m)
  tok_moe = (2 * h / sp_div + gin * m["k"] * hl / sp_div
             + (m["k"] * m["fe"] + m["fs"]) * (2 * (mats - 1) + gin) / tp
             + xp.where(m["lat"] > 0, gin * (h + m["lat"]) / sp_div, 0.0))
  # Mamba-2 (the fused, memory-efficient path): the layer input, the
  # in-projection's input and output (z, x, B, C, dt; the convolution and
  # scan are recomputed from it) and the out-projection's input
  di, gn, ssm_in = mamba_widths(m)
  tok_ssm = 2 * h / sp_div + gin * h / sp_div + 2 * ssm_in / tp + gin * di / tp
  tok_scores = f_att * xp.where(flash, 0.0, 5 * m["a"] * s / tp)  # scores, softmax, dropout mask
  # an XLA program without remat also stores what fused eager kernels
  # recompute: the fp32 inputs of both RMSNorms, the fp32 activation-function
  # input of the MLP and the rotary-embedded q and k (memory_analysis of
  # Llama-3 8B on v5p, remat none: 268 KB per token per layer); with remat
  # they are transient inside one layer's backward
  ffn_act = f_dn * m["f"] + f_moe * (m["k"] * m["fe"] + m["fs"])
  tok_xla = plan["xla"] * (8 * h / sp_div * sh["sub"] + 4 * ffn_act / tp + 2 * f_att * (A + KV / 2) / tp)
  # Megatron's recompute modules: "moe" keeps an MoE layer's input only;
  # "layernorm" / "moe_act" keep neither the norms' outputs (each GEMM
  # sublayer's input) nor the activation outputs (the down-projection's input)
  rc_moe, rc_elem = plan["rc_moe"], plan["rc_elem"]
  tok_moe = tok_moe - rc_moe * (tok_moe - 2 * h / sp_div)
  tok_attn = tok_attn - rc_elem * gin * h / sp_div
  tok_ssm = tok_ssm - rc_elem * gin * h / sp_div
  tok_dense = tok_dense - rc_elem * gin * (h / sp_div + m["f"] / tp)
  tok_moe = tok_moe - (1 - rc_moe) * rc_elem * gin * (h / sp_div + (m["k"] * m["fe"] + m["fs"]) / tp)
  tok_full = f_att * tok_attn + f_ssm * tok_ssm + f_dn * tok_dense + f_moe * tok_moe + tok_scores
  # selective drops the core-attention output (and any materialized scores);
  # 'dots' keeps the layer input and the matmul outputs the backward needs:
  # q/k/v, attention out-projection, MLP up/gate (the last matmul's output
  # only feeds the next layer's input, which is kept anyway)
  tok_dots = 2 * (f_att * (A + KV) / tp + 2 * h / sp_div * sh["sub"] + f_dn * (mats - 1) * m["f"] / tp
                  + f_moe * ((m["k"] * m["fe"] + m["fs"]) * (mats - 1) / tp + m["k"] * hl / sp_div)
                  + f_ssm * (ssm_in + di) / tp)
  tok_sel = (xp.where(rc == 3, tok_dots, tok_full - sel * (f_att * 2 * A / tp + tok_scores))
             + xp.where(rc == 0, tok_xla, 0.0))
  tok_ckpt = 2 * h / sp_div  # a fully recomputed layer keeps only its input
  act_layer = T * tok_sel  # bytes per layer per micro-batch when nothing is recomputed
  frac = xp.where(rc == 2, plan["rc_frac"], 0.0)
  chunk = xp.maximum(plan["rc_chunk"], 1.0)
  per_layer_stored = T * ((1 - frac) * tok_sel + frac * tok_ckpt / chunk)
  work = xp.where(rc == 2, chunk * T * tok_full, 0.0)  # one chunk live during its recompute
  interleave = xp.where(vp > 1, 1 + (pp - 1) / (pp * vp), 1.0)
  # 1F1B keeps min(m, pp) micro-batches in flight on the first stage; an XLA
  # pipeline (GSPMD / GPipe loop, as MaxText's) keeps every micro-batch's
  # stage inputs live until its backward
  inflight = xp.where(pp > 1, xp.where(plan["xla"] > 0, mic, xp.minimum(mic, pp) * interleave), 1.0)
  # activation offload (CPU): stored activations of a share `offload` of
  # the layers (1: all; Megatron's cpu_offloading_num_layers / L) stream
  # to host memory as layers finish and back before their backward; two
  # layers' worth stay resident (the one in flight and the one being copied)
  off = plan["offload"]

  def resident(x):  # stored activations x that stay on the device
    return xp.where(off > 0, (1 - off) * x + xp.minimum(off * x, 2 * T * tok_sel), x)

  stored = resident(layers_stage * per_layer_stored * inflight)
  act_first = stored + work + T * 2 * h / sp_div * inflight
  # logits of one micro-batch at the loss's peak, `loss_bytes` per logit:
  # Megatron's fused vocab-parallel cross entropy keeps the bf16 logits and
  # an fp32 copy turned into the softmax in place (6); a cross entropy
  # that upcasts inside a fused kernel (XLA without vocab tiling,
  # torch.compile, fused CE kernels of FSDP trainers) holds bf16 logits,
  # fp32 log-probabilities and a bf16 gradient (8; memory_analysis of
  # Llama-3 8B at 8k tokens on v5p agrees within 7 %); an unfused eager
  # fp32 upcast peaks near 10-12, inside the memory interval's width
  logits = T * m["V"] / tp * plan["loss_bytes"]
  # multi-token prediction: each pass's block activations and its own
  # logits (the fused cross entropy keeps its softmax for the backward)
  mtp_act = m["mtp"] * (m["mtp_len"] * per_layer_stored + logits)
  act_last = resident(layers_stage * per_layer_stored) + work + logits + mtp_act
  live_first = state_first + act_first + xp.where(pp > 1, 0.0, logits + mtp_act)
  live_last = state_last + act_last
  over = (xp.where(plan["xla"] > 0, c["mem_overhead_xla_bytes"], c["mem_overhead_bytes"])
          + c["mem_reserve_frac"] * hw["hbm_bytes"])
  frag = 1 + c["mem_frag"] * (1 - plan["xla"])
  mem_first = live_first * frag + over
  mem_last = live_last * frag + over
  mem_peak = xp.maximum(mem_first, xp.where(pp > 1, mem_last, 0.0))
  # what a stack version may not hold: the low-precision gradients and the
  # wider accumulation buffer of an optimizer that keeps both (DeepSpeed
  # before BF16_Optimizer kept 2-byte gradients); the optimistic memory
  # bound leaves them out, as a row rarely says which version ran
  mem_optional = (P_dense_first + P_exp) * xp.where(lp_gb > 0, lp_gb + gb - 2.0, 0.0) * frag
  return dict(mem_optional=mem_optional, P_dense_first=P_dense_first, P_exp=P_exp, P_train_first=P_train_first,
              P_train_exp=P_train_exp,
              wb_frozen=wb_frozen, dense_layer=dense_layer, expert_layer=expert_layer,
              emb_dev=emb_dev, wb=wb, gb=gb, ob=ob, zero=zero, shard=shard, e_shard=e_shard, dpg=dpg, edp=edp,
              state_first=state_first, act_layer=act_layer, mem_first=mem_first, mem_last=mem_last,
              mem_peak=mem_peak, off=off, frac=frac, chunk=chunk, tok_sel=tok_sel, tok_ckpt=tok_ckpt)
