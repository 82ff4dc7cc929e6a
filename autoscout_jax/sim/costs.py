"""Per-layer cost model shared by the F0 (analytic) and F1 (event) simulators.

Where it sits: `sim/analytic.py` turns candidates into PLAN arrays and calls
`layer_costs` (then composes a step time); the F1 event simulator calls the
same `layer_costs` and schedules its outputs micro-batch by micro-batch; the
calibration (sim/calibration.py) fits the few `SimConstants`.

Every function here is written over an array module `xp` (numpy or
jax.numpy) and broadcasts: plan, model and hardware values may each be
scalars or [N] arrays, so one call scores N candidates, or N published runs
of different models on different clusters, with no Python loop.

Inputs (all numbers, see `PLAN_FIELDS`, `model_scalars`, `cluster_scalars`):
  plan  -- tp, pp, dp (total data-parallel degree, ZeRO/FSDP included),
           cp, ep, etp (expert tensor parallel), vp (virtual stages per
           rank, 1 = plain 1F1B), mbs (sequences per micro-batch),
           num_micro (micro-batches per step per pipeline), sp (0/1),
           zero (0 replicated, 1 ZeRO-1 = distributed optimizer, 2 ZeRO-2
           (gradients sharded too), 3 ZeRO-3 = FSDP), shard (size of the ZeRO group; dp/shard replicas
           all-reduce), recompute (0 none, 1 selective = attention core,
           2 full), rc_frac (fraction of a stage's layers fully recomputed),
           rc_chunk (layers per recompute chunk), overlap_grad,
           overlap_param, tp_overlap (0/1), bucket_bytes, tier placement
           (tp_local, cp_local, ep_local, dp_local, shard_local, rep_local: members of
           the group on the same node/slice as a given member; pp_inter:
           1 when adjacent stages talk over the slow tier) and framework
           bytes per parameter for weights/grads/optimizer (w_bytes,
           g_bytes, o_bytes), flash (1: fused flash attention native to the
           device; in (0, 1): a fused kernel of an older generation running
           at that share of the native one's rate, as FlashAttention-2 on
           Hopper, hardware.DeviceSpec.fa2_rate; 0: scores
           materialized in HBM, as Megatron-LM before 2023), xla (1: a JAX/XLA
           program: static buffers, no allocator fragmentation, and remat
           recomputes only what the backward needs; 0: PyTorch/Megatron).
           recompute 3 = save every matmul output, recompute the rest
           (JAX 'minimal' / dots-saveable remat). offload (0-1): the
           share of layers whose stored activations live in host memory
           (CPU activation offload; 1 all of them).
           rails (0/1): data-parallel collectives drive one NIC per group
           member on a node (NCCL channels; 1) or one per rank (0).
           ep_overlap (0/1): expert all-to-all overlapped with another
           micro-batch's compute (Megatron-core
           overlap_moe_expert_parallel_comm). loss_bytes: bytes per logit
           live at the loss (6 Megatron's fused cross entropy, 8 others).
           packed (0/1): sequence packing, several examples per row
           (segment ids); 0 = one padded example per row. ep_dedup
           (0/1): the MoE token dispatcher sends a token once per remote
           node and fans it out over NVLink there (DeepEP / HybridEP,
           Megatron-core's "flex" dispatcher; 1) or sends each of its k
           copies to its expert's rank (NCCL all-to-all; 0).
           lp_grad_bytes: bytes per parameter of low-precision
           gradients kept beside a higher-precision accumulation buffer
           of g_bytes (DeepSpeed's BF16_Optimizer: each bf16 .grad stays
           allocated next to its fp32 buffer, which is what is reduced;
           after each micro-batch's backward the bf16 gradients are added
           into it, and zeroed before the next); 0 elsewhere.
           rc_moe / rc_elem (0/1): Megatron's recompute modules beside
           `recompute` -- "moe" (each MoE layer's forward, its all-to-all
           included, again in the backward; only its input kept) and
           "layernorm" / "moe_act" (norm outputs and activation outputs
           recomputed, not kept).
           z3_post (0/1): ZeRO-3 / FSDP issues the all-gather of the unit
           the backward reaches next only once the current unit's
           gradient is computed (PyTorch FSDP1's BACKWARD_POST prefetch,
           Composer's default), so that gather overlaps the
           reduce-scatter, not compute, and sits on the critical path;
           0: gathers prefetched ahead of the compute (FSDP1's
           BACKWARD_PRE, FSDP2, Megatron, DeepSpeed).
           eager (0/1): the layer's element-wise work runs as PyTorch's
           eager kernels, one per operator (a PyTorch-native trainer
           without torch.compile); 0: fused kernels (Transformer Engine,
           Megatron's fusions, torch.compile, XLA).
           tp_async (0/1): without SP, a column-parallel linear's
           backward all-reduce of the input gradient runs under its
           weight-gradient GEMM (1: Megatron-LM since late 2021,
           megatron-core, Transformer Engine) or before it, exposed (0:
           Megatron-LM of early 2021, BigScience's Megatron-DeepSpeed).
           Plans that predate packed / ep_dedup / lp_grad_bytes / rc_moe /
           rc_elem / z3_post / eager / tp_async leave them out
           (`PLAN_DEFAULTS`).
  model -- L, h, a (query heads), g (kv heads), d (head dim), f (dense FFN),
           V, s, gated, E (experts, 0 dense), k (top-k), fe (expert FFN),
           fs (shared-expert FFN total), Ld (leading dense layers), tie,
           gbs, fp8 (0/1: low-precision GEMMs), fp4 (0/1: those GEMMs are
           NVFP4/MXFP4, at the device's fp4 peak); LoRA fine-tuning:
           frozen (0/1: base weights frozen, so no weight-gradient GEMMs,
           gradients, optimizer state or gradient sync for them), lora_r
           (adapter rank), lora_p (adapter parameters per dense layer),
           lora_pm / lora_pe (per MoE layer: adapters outside the routed
           experts / of all E routed experts, each expert its own when the
           targets include the MLP; a token uses k/E of lora_pe),
           frozen_bytes (bytes per frozen weight: 2 bf16, 1 int8);
           fine-tuning examples shorter than s (autoscout_jax/packing.py):
           fill / fill_packed (trained share of the token slots, one
           padded example per row / packed rows), attn_packed (attention
           work of packed rows relative to full causal rows, what a
           segment-aware flash kernel pays); 1, 1, 1 for full rows.
           Hybrid Mamba-2 / transformer models (`MODEL_DEFAULTS` for the
           rest): each of the L layers is one pattern entry, f_att / f_ssm
           / f_ffn the shares of layers with an attention mixer, a Mamba-2
           mixer, an MLP (L - Ld of them MoE); ssm_nh, ssm_hd, ssm_n,
           ssm_g: Mamba-2 heads, head dim, state size, B/C groups. A
           transformer: 1, 0, 1 (every layer attention + MLP).
           lat: LatentMoE's latent width (0: none), the width routed
           experts and the all-to-all work at; mtp, mtp_len, mtp_blocks:
           multi-token prediction's passes on the last stage, layers per
           MTP block (priced as the model's average layer) and blocks with
           their own weights (0, 0, 0: none); moe_int: 1 where MoE
           and dense layers alternate (no leading dense block), 0 else.
  hw    -- peak_bf16, peak_fp8, peak_fp4, hbm_bytes, hbm_bw, host_bw
           (device <-> host memory, one direction; 0: the constants'
           PCIe figure), intra_bw/lat, inter_bw/lat, node_size, num_devices.

Output of `layer_costs` (the contract F1 consumes), per candidate, seconds
per device unless noted:
  layers_per_stage  layers on the busiest stage (all virtual chunks)
  layers_first, layers_last, layers_mid  transformer layers on the first
                    rank (beside the embedding), the last (beside the
                    output layer) and the busiest rank between them,
                    placed as `stage_split` places them; layers_total
  num_micro, vp, pp micro-batches per step, virtual stages, stages
  fwd_s, bwd_s      compute of ONE layer for ONE micro-batch (bwd_s
                    includes recompute), averaged over dense/MoE layers
  recompute_s       the recompute part of bwd_s
  tp_fwd_s, tp_bwd_s  exposed TP (all-reduce or SP all-gather/reduce-
                    scatter) per layer per micro-batch
  cp_fwd_s, cp_bwd_s, ep_fwd_s, ep_bwd_s  exposed CP ring / EP all-to-all
  head_fwd_s, head_bwd_s  output layer + loss per micro-batch (last stage)
  emb_fwd_s, emb_bwd_s    embedding per micro-batch (first stage)
  p2p_s             one pipeline send per micro-batch boundary
  dp_grad_bytes, dp_param_bytes  per device on the busiest stage
  dp_bw, dp_lat, dp_size         the ZeRO/DP group's tier and size
  dp_step_s         total DP gradient/parameter collective time per step
  zero3_mb_s        ZeRO-3 gathers + reduce-scatter per micro-batch
  zero3_ag_s        one of its two gathers (all the stage's units, once)
  optimizer_s       optimizer update per step
  host_step_s       dispatch of the step's program (once per step; 0 unless
                    the constants have it: measured CPU devices)
  mem_state, mem_act_layer, mem_first, mem_last, mem_peak, mem_capacity
                    bytes per device (mem_peak includes the fixed overhead)
  model_flops       model FLOPs per step, whole cluster (no recompute)
  useful_frac       trained (non-padding) share of the step's token slots:
                    the simulators' tokens_per_s counts those tokens only
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from autoscout_jax import packing
from autoscout_jax.sim import comm_costs, memory
from autoscout_jax.sim.memory import layer_params, total_params  # noqa: F401 (part of this module's API)

PLAN_FIELDS = (
    "tp", "pp", "dp", "cp", "ep", "etp", "vp", "mbs", "num_micro", "sp", "zero", "shard",
    "recompute", "rc_frac", "rc_chunk", "overlap_grad", "overlap_param", "tp_overlap",
    "bucket_bytes", "tp_local", "cp_local", "ep_local", "dp_local", "shard_local", "rep_local", "pp_inter",
    "w_bytes", "g_bytes", "o_bytes", "flash", "xla", "offload", "rails", "ep_overlap", "loss_bytes",
    "packed", "ep_dedup", "lp_grad_bytes", "rc_moe", "rc_elem", "z3_post", "eager", "tp_async")
# Plan fields a family's translation may leave out (they default to these).
PLAN_DEFAULTS = {"packed": 0.0, "ep_dedup": 1.0, "lp_grad_bytes": 0.0, "rc_moe": 0.0, "rc_elem": 0.0,
                 "z3_post": 0.0, "eager": 0.0, "tp_async": 1.0}

MODEL_FIELDS = ("L", "h", "a", "g", "d", "f", "V", "s", "gated", "E", "k", "fe", "fs", "Ld",
                "tie", "gbs", "fp8", "fp4", "frozen", "lora_r", "lora_p", "lora_pm", "lora_pe", "frozen_bytes",
                "fill", "fill_packed", "attn_packed",
                "f_att", "f_ssm", "f_ffn", "ssm_nh", "ssm_hd", "ssm_n", "ssm_g", "lat", "mtp", "mtp_len",
                "mtp_blocks", "moe_int")
# Model fields a producer may leave out: those of hybrid Mamba-2 models (a
# transformer: every layer attention + MLP, no Mamba-2 mixer), LatentMoE
# (none) and multi-token prediction (none).
MODEL_DEFAULTS = {"f_att": 1.0, "f_ssm": 0.0, "f_ffn": 1.0, "ssm_nh": 0.0, "ssm_hd": 0.0, "ssm_n": 0.0,
                  "ssm_g": 0.0, "lat": 0.0, "mtp": 0.0, "mtp_len": 0.0, "mtp_blocks": 0.0, "moe_int": 0.0}
# Mamba-2's chunked scan (SSD) works in chunks of this many tokens
# (Megatron's and mamba_ssm's default chunk size).
SSD_CHUNK = 128.0


def model_fields(model: Mapping[str, Any]) -> dict[str, Any]:
  """`model`'s MODEL_FIELDS, those of MODEL_DEFAULTS filled in when absent."""
  return {k: model[k] if k in model else MODEL_DEFAULTS[k] for k in MODEL_FIELDS}


def arch_scalars(model: Any) -> dict[str, float]:
  """The architecture fields of a `ModelConfig` beyond a plain
  transformer's (MODEL_DEFAULTS where it has none): the share of layers
  with an attention mixer (f_att), a Mamba-2 mixer (f_ssm) and an MLP
  (f_ffn; dense or MoE) and the Mamba-2 widths (heads, head dim, state,
  groups) -- a transformer's layer has attention and an MLP (1, 0, 1), a
  hybrid's layer is one entry of its pattern (shares summing to 1); the
  LatentMoE width (lat); multi-token prediction's passes (mtp), layers per
  MTP block (mtp_len) and blocks with their own weights (mtp_blocks);
  whether MoE and dense layers alternate (moe_int)."""
  out = dict(MODEL_DEFAULTS)
  if model.is_hybrid:
    n, L = model.layer_counts(), float(model.num_layers)
    out.update(f_att=n["attention"] / L, f_ssm=n["mamba"] / L, f_ffn=(n["dense"] + n["moe"]) / L,
               ssm_nh=float(model.mamba_num_heads), ssm_hd=float(model.mamba_head_dim),
               ssm_n=float(model.mamba_state_dim), ssm_g=float(model.mamba_num_groups))
  if model.mtp_layers:
    out.update(mtp=float(model.mtp_layers), mtp_len=float(model.mtp_block_layers),
               mtp_blocks=1.0 if model.mtp_shared else float(model.mtp_layers))
  out["lat"] = float(model.moe_latent_size)
  out["moe_int"] = float(model.moe_layer_freq > 1)
  return out


@dataclasses.dataclass(frozen=True)
class SimConstants:
  """The few global efficiency constants of the cost model. The defaults
  are datasheet-minded starting points; sim/calibration.py fits the first
  seven (constants.CALIBRATED is what the simulators use). All physical:
  efficiencies in (0, 1], sizes in elements or bytes, times in seconds."""

  gemm_eff: float = 0.80       # fraction of dense peak a large GEMM reaches
  gemm_knee: float = 128.0     # per-device GEMM min-dimension at which efficiency halves
  attn_eff: float = 0.55       # fraction of bf16 peak a fused (flash) attention kernel reaches (d=128, long s)
  comm_eff: float = 0.75       # fraction of link bandwidth a collective reaches
  fp8_eff: float = 0.65        # fp8 GEMMs: fraction of the fp8 peak reached relative to bf16
  moe_eff: float = 0.7         # grouped expert GEMMs relative to dense GEMMs of the same shape
  launch_s: float = 2e-5       # host time of one layer's forward in an eager framework (MoE layers: 8x);
                               # a pass takes max(GPU time, host time); XLA programs: a tenth
  # fixed from first principles / vendor docs, not fitted:
  attn_d_knee: float = 32.0    # head dim at which a flash kernel's efficiency halves (FA2/3: d=64 ~0.83x d=128)
  attn_s_knee: float = 256.0   # kv length per kernel call at which it halves (short sequences: tile overheads)
  tp_overlap_eff: float = 0.7  # share of TP communication hidden by comm-GEMM overlap
  overlap_eff: float = 0.9     # share of a compute window that can hide bucketed DP traffic
  p2p_overlap: float = 0.8     # share of pipeline p2p hidden by the interleaved schedule
  elem_h_vectors: float = 16.0  # h-sized bf16 vectors read+written per token per layer (norms, residuals)
  mem_overhead_bytes: float = 2.0 * 2**30  # eager (PyTorch): CUDA context, NCCL buffers, cuBLAS/TE workspaces
  mem_overhead_xla_bytes: float = 0.75 * 2**30  # XLA runtime: context, collective scratch
  mem_reserve_frac: float = 0.02  # of HBM held by the runtime/allocator reserve
  mem_frag: float = 0.05       # allocator fragmentation, fraction of the live bytes (eager only)
  fp4_gain: float = 1.5       # fp4 GEMM rate over fp8 at most (see layer_costs)
  z3_live_params: float = 1e9  # ZeRO-3 gathered parameters live at once (DeepSpeed's documented default)
  pcie_bw: float = 25e9        # host<->device bytes/s per GPU for activation offload (PCIe gen4 x16 ~ 25 GB/s)
  # the host side of a compiled step where the devices are the host's own
  # threads (virtual CPU devices, sim/measured.py sets these from
  # micro-benchmarks; 0 for accelerators, whose launches run ahead of them):
  host_serial: float = 0.0     # 1: a kernel's launch cost adds to its work (CPU: the device thread runs both)
  step_host_s: float = 0.0     # dispatch of one step's program onto all devices (call, arguments, completion)
  buffer_host_s: float = 0.0   # dispatch per argument buffer of the step (an input and its donated output)
  coll_fixed_s: float = 0.0    # fixed cost of one collective call besides its per-step latency (the rendezvous)
  transc_s: float = 0.0        # seconds per transcendental (exp, tanh) per device beyond its memory traffic
  # uncertainty (sim/calibration.py sets the first two from the calibration residuals):
  tput_spread: float = 0.12    # half-width of the 80 % throughput interval, log units, inside the calibrated range
  mem_spread: float = 0.10     # half-width of the memory interval, relative, inside the calibrated range
  extrap_gain: float = 0.5     # widening per unit of distance outside the calibrated range (log units)

  def __post_init__(self):
    for f in dataclasses.fields(self):
      v = getattr(self, f.name)
      if not isinstance(v, (int, float)) or v < 0:
        raise ValueError(f"SimConstants.{f.name} must be a non-negative number, got {v!r}")
    if self.host_serial not in (0.0, 1.0):
      raise ValueError(f"SimConstants.host_serial must be 0 or 1, got {self.host_serial!r}")
    for f in ("gemm_eff", "attn_eff", "comm_eff", "fp8_eff", "moe_eff", "tp_overlap_eff", "overlap_eff",
              "p2p_overlap", "mem_frag"):
      if not 0 < getattr(self, f) <= 1:
        raise ValueError(f"SimConstants.{f} must be in (0, 1], got {getattr(self, f)!r}")

  def as_dict(self) -> dict[str, float]:
    return {f.name: float(getattr(self, f.name)) for f in dataclasses.fields(self)}


EMB_GRAD_BYTES = 12.0  # per embedding element per backward: dense bf16 grad, fp32 main-grad update


def model_scalars(workload: Any) -> dict[str, float]:
  """The model/job numbers of a `Workload` as floats (see module docstring)."""
  m = workload.model
  fe = m.moe_ffn_hidden_size or m.ffn_hidden_size
  prec = str(workload.precision).lower()
  out = dict(
      L=m.num_layers, h=m.hidden_size, a=m.num_heads, g=m.kv_heads, d=m.head_dim, f=m.ffn_hidden_size,
      V=m.vocab_size, s=m.seq_len, gated=float(m.gated_mlp), E=m.num_experts, k=m.moe_top_k,
      fe=fe, fs=m.num_shared_experts * fe, Ld=m.num_layers - m.layer_counts()["moe"],
      tie=float(m.tie_embeddings), gbs=workload.global_batch,
      fp8=float("fp8" in prec or "fp4" in prec), fp4=float("fp4" in prec))
  out.update(arch_scalars(m))
  out.update(lora_scalars(out, getattr(workload, "lora_rank", 0), getattr(workload, "lora_targets", ()),
                          getattr(workload, "frozen_dtype", "bf16")))
  out.update(packing_scalars(getattr(workload, "example_lens", ()), workload.global_batch, m.seq_len))
  return out


def packing_scalars(example_lens: Any = (), rows: int = 1, seq_len: int = 1) -> dict[str, float]:
  """The sequence-packing model fields of a job whose examples have these
  lengths (none: full rows, 1, 1, 1); `rows` = sequences per step."""
  if not example_lens:
    return dict(fill=1.0, fill_packed=1.0, attn_packed=1.0)
  pad, pack = (packing.stats(example_lens, rows, seq_len, p) for p in (False, True))
  return dict(fill=pad.fill, fill_packed=pack.fill, attn_packed=pack.attn)


def lora_scalars(m: Mapping[str, float], rank: float, targets: Any, frozen_dtype: str = "bf16") -> dict[str, float]:
  """The LoRA model fields: rank 0 is pre-training or full fine-tuning."""
  if not rank:
    return dict(frozen=0.0, lora_r=0.0, lora_p=0.0, lora_pm=0.0, lora_pe=0.0, frozen_bytes=2.0)
  pm, pe = memory.moe_adapter_params(m, rank, targets)
  return dict(frozen=1.0, lora_r=float(rank), lora_p=float(memory.adapter_params(m, rank, targets)),
              lora_pm=pm, lora_pe=pe,
              frozen_bytes=1.0 if frozen_dtype == "int8" else 2.0)


# --- parameter counts -------------------------------------------------------------


def model_flops_per_token(xp, m: Mapping[str, Any]) -> Any:
  """Forward+backward model FLOPs per token (3x forward), no recompute,
  causal attention counted once (half the s^2 matrix)."""
  p = layer_params(xp, m)
  attn_core = 2 * m["s"] * m["a"] * m["d"]
  active_moe = ((memory.expert_width(xp, m) * m["k"] * m["fe"] + m["h"] * m["fs"]) * p["mats"] + m["h"] * m["E"]
                + 2 * m["h"] * m["lat"])
  n_moe = m["L"] - m["Ld"]
  n_att, n_ssm = m["L"] * m["f_att"], m["L"] * m["f_ssm"]
  n_dense = m["Ld"] - m["L"] * (1 - m["f_ffn"])
  # Mamba-2: its projections, and the chunked scan (layer_costs)
  di, gn, ssm_in = memory.mamba_widths(m)
  ssm = 2 * m["h"] * ssm_in + 2 * di * m["h"] + ssd_flops_per_token(m)
  body = (2 * (n_att * (p["attn"] - 2 * m["h"]) + n_dense * p["dense"] + n_moe * active_moe)
          + n_att * attn_core + n_ssm * ssm)
  # multi-token prediction: per pass its block (the average layer's
  # FLOPs), the 2h -> h projection and another output layer
  fwd = (body + 2 * m["h"] * m["V"]
         + m["mtp"] * (m["mtp_len"] * body / m["L"] + 4 * m["h"] * m["h"] + 2 * m["h"] * m["V"]))
  # frozen base weights (LoRA): forward + activation gradients only, plus
  # the adapters' forward and both backward GEMMs (a token's k experts' own)
  return (3 - m["frozen"]) * fwd + 6 * active_adapter_params(xp, m)


def ssd_flops_per_token(m: Mapping[str, Any]) -> Any:
  """Forward FLOPs of Mamba-2's chunked scan per token (all heads): C.B^T
  within a chunk (per group), its product with x (per head), and the chunk
  states in and out."""
  di, gn, _ = memory.mamba_widths(m)
  return 2 * SSD_CHUNK * gn + 2 * SSD_CHUNK * di + 4 * m["ssm_n"] * di


def active_adapter_params(xp, m: Mapping[str, Any]) -> Any:
  """LoRA adapter parameters one token passes through, whole model."""
  per_expert = m["lora_pe"] / xp.maximum(m["E"], 1.0)
  return m["Ld"] * m["lora_p"] + (m["L"] - m["Ld"]) * (m["lora_pm"] + m["k"] * per_expert)


# --- the contract ---------------------------------------------------------------


def split_slots(xp, L: Any, Q: Any) -> tuple[Any, Any, Any]:
  """The pipeline split of L layers over Q virtual stages: `extra`, the
  fewest slots (0-3: the embedding's, the loss's, an MTP block's) that make
  L + extra a multiple of Q (-1: none does); `base`, layers per virtual
  stage; `rem`, layers left over when no slot evens it (they go to the
  first virtual stages)."""
  extra = -1.0 + 0 * (L + Q)
  for e in (3.0, 2.0, 1.0, 0.0):  # the smallest extra that makes the split even wins
    extra = xp.where((xp.mod(L + e, Q) == 0) & (L + e >= Q), e, extra)
  even = extra >= 0
  base = xp.where(even, (L + xp.maximum(extra, 0.0)) / Q, xp.floor(L / Q))
  rem = xp.where(even, 0.0, L - xp.floor(L / Q) * Q)
  return extra, base, rem


def stage_split(xp, L: Any, pp: Any, vp: Any) -> dict[str, Any]:
  """Transformer layers per pipeline rank, all its virtual chunks counted:
  an even split when pp*vp divides L; otherwise, as Megatron's
  pipeline-split accounting does, the embedding (first virtual stage), the
  loss (last) and an MTP block (last) each take a layer's slot when that
  makes the split even (sim/event.py `stage_layers` places the same
  layers), and any remaining imbalance goes to the first virtual stages.
  Returns layers_first (rank 0), layers_last (rank pp-1), layers_mid
  (rank 1, the busiest between them; 0 without one) and layers_total."""
  Q = pp * vp
  extra, base, rem = split_slots(xp, L, Q)

  def chunks_before(r):  # a rank's virtual chunks c with c*pp + r < rem
    return xp.clip(xp.ceil((rem - r) / pp), 0.0, vp)

  first = base * vp + chunks_before(0.0) - xp.where(extra >= 2, 1.0, 0.0)
  last = base * vp + chunks_before(pp - 1) - xp.where(extra >= 1, 1.0, 0.0) - xp.where(extra >= 3, 1.0, 0.0)
  mid = xp.where(pp > 2, base * vp + chunks_before(1.0), 0.0)
  single = pp <= 1
  return dict(layers_first=xp.where(single, L, xp.maximum(first, 0.0)),
              layers_last=xp.where(single, L, xp.maximum(last, 0.0)), layers_mid=mid, layers_total=L + 0 * Q)


# Bytes per element that PyTorch's eager kernels move beyond one fused
# kernel's read and write of a bf16 tensor (counted from the operators the
# trainers call; backward and recompute follow from the forward's share):
# - RMSNorm written as x.float() -> pow -> mean -> x * rsqrt -> type_as ->
#   * weight (torchtitan's, and nn.RMSNorm's composite before PyTorch had a
#   fused kernel): 6 + 8 + 4 + 8 + 6 + 4 = 36 bytes against 4;
# - rotary embedding through complex fp32 (q and k: .float() 6, complex
#   multiply 8, type_as 6) = 20 against 4;
# - SwiGLU as silu(a) * b: 4 + 6 = 10 against a fused 6 (per FFN unit).
# The fused stacks the constants were fitted on (Megatron with Transformer
# Engine) add the residual in a kernel of its own too, and LayerNorm and
# GELU are one native kernel each in eager PyTorch: nothing extra there.
# The Llama family (gated MLP) is the one with RMSNorm and rotary.
EAGER_NORM_BYTES = 32.0
EAGER_ROPE_BYTES = 16.0
EAGER_GLU_BYTES = 4.0


def eager_bytes_per_token(m: Mapping[str, Any], tp: Any, sp_div: Any, sub: Any, f_att: Any, f_dn: Any,
                          f_moe: Any) -> Any:
  """Extra HBM bytes per token of one layer's forward when its element-wise
  work runs as eager PyTorch kernels (plan field `eager`), per device."""
  gated = m["gated"]
  norms = 2 * sub * gated * EAGER_NORM_BYTES * m["h"] / sp_div
  rope = gated * f_att * EAGER_ROPE_BYTES * (m["a"] + m["g"]) * m["d"] / tp
  glu = gated * EAGER_GLU_BYTES * (f_dn * m["f"] + f_moe * (m["k"] * m["fe"] + m["fs"])) / tp
  return norms + rope + glu


def layer_costs(xp, plan: Mapping[str, Any], m: Mapping[str, Any], hw: Mapping[str, Any],
                c: Mapping[str, Any]) -> dict[str, Any]:
  """See the module docstring for inputs and outputs."""
  tp, pp, cp, ep, etp = plan["tp"], plan["pp"], plan["cp"], plan["ep"], plan["etp"]
  dp, vp, mbs, mic = plan["dp"], plan["vp"], plan["mbs"], plan["num_micro"]
  sp_div = xp.where(plan["sp"] > 0, tp, 1.0)
  rc = plan["recompute"]
  full = xp.where(rc == 2, 1.0, 0.0) * plan["rc_frac"]
  sel = xp.where(rc == 1, 1.0, 0.0)
  dots = xp.where(rc == 3, 1.0, 0.0)
  flash = plan["flash"] > 0
  h, s, A, KV = m["h"], m["s"], m["a"] * m["d"], 2 * m["g"] * m["d"]
  mats = 2.0 + m["gated"]
  is_moe = m["E"] > 0
  # shares of the layers with attention, Mamba-2, a dense MLP, an MoE MLP
  # (a transformer's layer: attention and one MLP), and sublayers (norm +
  # residual each) per layer over a transformer's 2
  sh = memory.layer_shares(xp, m)
  f_att, f_ssm, f_ffn, f_dn, f_moe, sub = sh["att"], sh["ssm"], m["f_ffn"], sh["dense"], sh["moe"], sh["sub"]
  T = mbs * s / cp  # tokens per device per micro-batch (before the TP split)

  # --- compute of one layer, forward ---------------------------------------------
  # NVFP4 recipes keep some GEMMs (first/last layers, parts of the
  # backward) in higher precision and add block-scale quantization passes:
  # the fp4 gain over fp8 is capped at `fp4_gain` (not calibrated: no
  # published fp4 run in the calibration set; intervals widen for fp4)
  low_peak = xp.where(m["fp4"] > 0, xp.minimum(hw["peak_fp4"], c["fp4_gain"] * hw["peak_fp8"]), hw["peak_fp8"])
  lin_peak = xp.maximum(hw["peak_bf16"], xp.where(m["fp8"] > 0, low_peak * c["fp8_eff"], 0.0))

  def gemm(flops, md, peak=lin_peak):
    md = xp.maximum(md, 1.0)
    eff = c["gemm_eff"] * md / (md + c["gemm_knee"])
    return flops / (peak * eff)

  def mn(*xs):
    out = xs[0]
    for x in xs[1:]:
      out = xp.minimum(out, x)
    return out

  t_qkv = gemm(2 * T * h * (A + KV) / tp, mn(T, h, (A + KV) / tp))
  t_out = gemm(2 * T * A * h / tp, mn(T, A / tp, h))
  t_attn_lin = t_qkv + t_out
  # flash: causal half of the score matrix at the fused kernel's efficiency;
  # otherwise two batched GEMMs over the full matrix (contraction = head dim)
  # plus the softmax/mask traffic of the s x s scores through HBM.
  # a flash kernel's efficiency grows with the head dim (tile shape) and
  # the keys one call sees (ring context parallelism: one chunk per step)
  s_kv = s / cp
  f_d = xp.minimum(m["d"] / (m["d"] + c["attn_d_knee"]) * (128 + c["attn_d_knee"]) / 128, 1.0)
  f_s = xp.minimum(s_kv / (s_kv + c["attn_s_knee"]) * (4096 + c["attn_s_knee"]) / 4096, 1.0)
  # packed rows with a segment-aware kernel pay attention per example (sum
  # of L^2); padded rows pay the whole row, as do materialized scores
  # (a fused kernel of an older generation than the device's own -- plan
  # flash < 1, e.g. FlashAttention-2 on Hopper -- runs at that share of it)
  f_gen = xp.where(flash, xp.minimum(plan["flash"], 1.0), 1.0)
  t_flash = (2 * T * s * A / tp / (hw["peak_bf16"] * c["attn_eff"] * f_d * f_s * f_gen)
             * xp.where(plan["packed"] > 0, m["attn_packed"], 1.0))
  t_scores = (4 * T * s * A / tp / (hw["peak_bf16"] * c["gemm_eff"] * m["d"] / (m["d"] + c["gemm_knee"]))
              + T * s * m["a"] / tp * 11 / hw["hbm_bw"])
  t_core = xp.where(flash, t_flash, t_scores)
  # Mamba-2 mixer: input projection to z, x, B, C, dt and the output
  # projection (column-/row-parallel over heads like attention), and the
  # chunked scan (SSD) in its own fused kernels at the fused-attention
  # efficiency for its head dim
  di, gn, ssm_in = memory.mamba_widths(m)
  t_ssm_in = gemm(2 * T * h * ssm_in / tp, mn(T, h, ssm_in / tp))
  t_ssm_out = gemm(2 * T * di * h / tp, mn(T, di / tp, h))
  f_dh = xp.minimum(m["ssm_hd"] / (m["ssm_hd"] + c["attn_d_knee"]) * (128 + c["attn_d_knee"]) / 128, 1.0)
  ssd_flops = T * ssd_flops_per_token(m) / tp
  t_ssd = ssd_flops / (hw["peak_bf16"] * c["attn_eff"] * xp.maximum(f_dh, 1e-3))
  t_fc2 = gemm(2 * T * m["f"] * h / tp, mn(T, m["f"] / tp, h))
  t_dense = gemm(2 * T * h * m["f"] * (mats - 1) / tp, mn(T, h, m["f"] * (mats - 1) / tp)) + t_fc2
  m_exp = xp.maximum(T * m["k"] * ep * etp / xp.maximum(m["E"] * tp, 1.0), 1.0)  # tokens per local expert
  # LatentMoE: the routed experts work at the latent width `hl`, after a
  # down-projection (and before an up-projection) at the hidden width
  hl = memory.expert_width(xp, m)
  t_routed = gemm(2 * T * m["k"] * hl * m["fe"] * mats / tp, mn(m_exp, hl, m["fe"] / etp)) / c["moe_eff"]
  t_shared = gemm(2 * T * h * m["fs"] * mats / tp + 2 * T * h * m["E"] / tp, mn(T, h, m["fs"] / tp + m["E"]))
  t_latent = xp.where(m["lat"] > 0, gemm(4 * T * h * m["lat"] / tp, mn(T, h, xp.maximum(m["lat"], 1.0) / tp)), 0.0)
  t_moe = t_routed + xp.where(m["fs"] + m["E"] > 0, t_shared, 0.0) + t_latent
  # memory-bound element-wise work: norms/residuals on h-vectors (replicated
  # across TP ranks unless SP shards them), activation functions, token
  # permutation for MoE.
  # Mamba-2: the convolution over x, B and C, dt's softplus and the gated
  # norm over the inner width, each read and written once
  norm_bytes = T * 2 * c["elem_h_vectors"] * h / sp_div * sub
  moe_bytes = T * 2 * f_moe * (4 * m["k"] * hl / sp_div + mats * (m["k"] * m["fe"] + m["fs"]) / tp)
  elem_bytes = (norm_bytes + moe_bytes
                + T * 2 * (f_att * KV / tp + f_dn * mats * m["f"] / tp + f_ssm * 2 * (2 * di + 2 * gn) / tp)
                + plan["eager"] * T * eager_bytes_per_token(m, tp, sp_div, sub, f_att, f_dn, f_moe))
  # Mamba-2's chunked scan passes its fp32 chunk states through HBM: each
  # chunk's state (heads x head dim x state) is written, read and
  # rewritten by the state passing, and read by the output scan; and the
  # per-group C.B^T blocks (chunk x chunk) are written and read once
  ssd_bytes = f_ssm * T * (4 * 4 * di * m["ssm_n"] / SSD_CHUNK + 2 * 4 * m["ssm_g"] * SSD_CHUNK) / tp
  t_elem = (elem_bytes + ssd_bytes) / hw["hbm_bw"]
  # transcendentals (`transc_s` a value; 0 where special-function units keep
  # pace with memory): the softmax's exp over the materialized score matrix
  # (not with a fused kernel), the MLP activation (gelu / silu) over its
  # hidden units, the router's softmax. The backward needs the activation's
  # again (its derivative), not the softmax's (it reuses the probabilities).
  tr_scores = f_att * xp.where(flash, 0.0, T * s * m["a"] / tp)
  tr_act = T * (f_dn * m["f"] / tp + f_moe * (m["k"] * m["fe"] / tp + m["E"]))
  t_tr_scores, t_tr_act = tr_scores * c["transc_s"], tr_act * c["transc_s"]
  # host side of a pass (Python, dispatch, kernel launches; MoE adds router,
  # sort, permute, grouped GEMM, unpermute): the GPU waits when its work
  # is shorter (small micro-batches, wide TP). A compiled XLA step has
  # almost none. Where the device is a host thread (virtual CPU devices,
  # `host_serial`) the launch work is not hidden: it adds to the kernels'.
  host = c["launch_s"] * (sub + 7 * f_moe) * (1 - 0.9 * plan["xla"])
  serial = c["host_serial"]

  def hosted(work, launch):
    return serial * (work + launch) + (1 - serial) * xp.maximum(work, launch)

  # LoRA adapters: rank-r GEMM pairs beside the frozen projections
  # (MoE layers: the k routed experts' own adapters, grouped like the experts)
  lora_dense = gemm(2 * T * m["lora_p"] / tp, mn(T, xp.maximum(m["lora_r"], 1.0)))
  lora_moe = (gemm(2 * T * m["lora_pm"] / tp, mn(T, xp.maximum(m["lora_r"], 1.0)))
              + gemm(2 * T * m["k"] * m["lora_pe"] / xp.maximum(m["E"], 1.0) / tp,
                     mn(m_exp, xp.maximum(m["lora_r"], 1.0))) / c["moe_eff"])
  t_lora = (1 - f_moe) * lora_dense + f_moe * lora_moe
  # GEMMs of the base weights
  t_base = f_att * t_attn_lin + f_ssm * (t_ssm_in + t_ssm_out) + f_dn * t_dense + f_moe * t_moe
  # the fused mixer kernels: attention's core, Mamba-2's scan
  t_core_att = t_core
  t_core = f_att * t_core_att + f_ssm * t_ssd
  fwd_gpu = t_base + t_core + t_elem + t_lora + t_tr_scores + t_tr_act
  fwd = hosted(fwd_gpu, host)
  # flash backward recomputes the scores; a backward launches about twice
  # a forward's kernels; frozen base weights skip their weight-gradient
  # GEMMs (the backward still runs through the activations)
  bwd_base = hosted(2 * (fwd_gpu - t_core - t_tr_scores - t_tr_act) - m["frozen"] * t_base
                    + xp.where(flash, 2.5, 2.0) * t_core + t_tr_act, 2 * host)
  # XLA prunes the rematerialized forward to what the backward reads: the
  # attention out-projection and the dense MLP down-projection only feed
  # the residual stream, so they are not recomputed
  pruned = plan["xla"] * (f_att * t_out + f_ssm * t_ssm_out + f_dn * t_fc2)
  # selective recompute: the attention core (Mamba's scan keeps its inputs)
  # Megatron's recompute modules "moe" (the MoE layers' forward; their
  # all-to-all in comm_costs) and "layernorm" / "moe_act" (norms and
  # activations, memory-bound), where the whole layer is not recomputed
  modules = (1 - full) * (plan["rc_moe"] * f_moe * (t_moe + moe_bytes / hw["hbm_bw"])
                          + plan["rc_elem"] * (norm_bytes / hw["hbm_bw"] + t_tr_act))
  recompute = ((sel + dots) * (f_att * t_core_att + t_tr_scores) + dots * (t_elem + t_tr_act)
               + full * hosted(fwd_gpu - pruned, host) + modules)
  bwd = bwd_base + recompute

  # --- output layer + loss (last stage), per micro-batch ----------------------------
  # the output layer is Megatron's own column-parallel linear, outside
  # Transformer Engine's fp8 autocast: it runs in bf16 in fp8 recipes
  head_fwd = (gemm(2 * T * h * m["V"] / tp, mn(T, h, m["V"] / tp), hw["peak_bf16"])
              + T * m["V"] / tp * 6 / hw["hbm_bw"])
  head_bwd = (2 - m["frozen"]) * head_fwd
  # embedding (first stage): a row gather forward; backward scatters into a
  # dense bf16 gradient and adds it to the fp32 main gradient (none when frozen)
  emb_fwd = T * h * 4 / hw["hbm_bw"]
  emb_bwd = (1 - m["frozen"]) * m["V"] * h / tp * EMB_GRAD_BYTES / hw["hbm_bw"]

  # --- TP, CP, EP communication per layer per micro-batch (sim/comm_costs.py) ----------
  comm = comm_costs.layer_comm(xp, plan, m, hw, c, dict(
      T=T, full=full, f_moe=f_moe, mats=mats, sp_div=sp_div, t_qkv=t_qkv, t_dense=t_dense, t_fc2=t_fc2,
      t_moe=t_moe, t_core=t_core_att, fwd=fwd, bwd=bwd, f_att=f_att, f_ssm=f_ssm, f_ffn=f_ffn, f_dn=f_dn,
      t_ssm_in=t_ssm_in))

  # --- multi-token prediction (last stage), per micro-batch ---------------------------------
  # each pass: the 2h -> h projection of the normalized embedding and hidden
  # state, an MTP block of `mtp_len` layers (priced as the model's average
  # layer, with its communication) and its own output layer and loss
  t_eh = gemm(4 * T * h * h / tp, mn(T, h, h / tp))
  layer_comm_fwd = comm["tp_fwd_s"] + comm["cp_fwd_s"] + comm["ep_fwd_s"]
  layer_comm_bwd = comm["tp_bwd_s"] + comm["cp_bwd_s"] + comm["ep_bwd_s"]
  head_fwd, head_bwd = (head_fwd + m["mtp"] * (m["mtp_len"] * (fwd + layer_comm_fwd) + t_eh + head_fwd),
                        head_bwd + m["mtp"] * (m["mtp_len"] * (bwd + layer_comm_bwd) + 2 * t_eh + head_bwd))

  # --- pipeline --------------------------------------------------------------------
  layers_stage = xp.ceil(m["L"] / (pp * vp)) * vp
  split = stage_split(xp, m["L"], pp, vp)
  # each tensor-parallel rank sends its 1/tp slice (sequence parallelism, or
  # Megatron's scatter/gather of the replicated activation over NVLink)
  p2p_bytes = T * h * 2 / tp
  p2p_bw = xp.where(plan["pp_inter"] > 0, hw["inter_bw"], hw["intra_bw"]) * c["comm_eff"]
  p2p_lat = xp.where(plan["pp_inter"] > 0, hw["inter_lat"], hw["intra_lat"])
  p2p = xp.where(pp > 1, p2p_lat + p2p_bytes / p2p_bw + c["coll_fixed_s"], 0.0)

  # --- memory (sim/memory.py) ---------------------------------------------------------
  mm = memory.memory(xp, plan, m, hw, c, layers_stage)
  off, frac, chunk, tok_sel, tok_ckpt = mm["off"], mm["frac"], mm["chunk"], mm["tok_sel"], mm["tok_ckpt"]
  # offloaded activations: the copies overlap the layer's compute; the excess shows
  # over the device's host link (NVLink-C2C on Grace superchips), else the PCIe constant
  host_bw = xp.where(hw["host_bw"] > 0, hw["host_bw"], c["pcie_bw"])
  off_xfer = T * ((1 - frac) * tok_sel + frac * tok_ckpt / chunk) / host_bw
  fwd = fwd + off * xp.maximum(off_xfer - fwd, 0.0)
  bwd = bwd + off * xp.maximum(off_xfer - bwd, 0.0)
  # an optimizer that keeps low-precision gradients beside a wider buffer
  # (DeepSpeed's BF16_Optimizer) zeroes them before each micro-batch's
  # backward and adds them into the buffer after it: a pass over the
  # stage's trained parameters per micro-batch, priced per layer
  acc_bytes = xp.where(plan["lp_grad_bytes"] > 0, 2 * plan["lp_grad_bytes"] + 2 * plan["g_bytes"], 0.0)
  bwd = bwd + (mm["P_train_first"] + mm["P_train_exp"]) / xp.maximum(layers_stage, 1.0) * acc_bytes / hw["hbm_bw"]

  # --- data parallel: gradients and parameters, the optimizer (sim/comm_costs.py) ----
  dpc = comm_costs.data_parallel(xp, plan, m, hw, c, mm, layers_stage)

  # --- dispatch of the step's program (once per step) --------------------------------
  # its argument buffers: every weight tensor with its two optimizer
  # moments (per layer q, k, v, out, two norms, the MLP matrices and a
  # router; the embedding, the final norm and an untied output layer)
  tensors = m["L"] * (6 + mats + f_moe) + 2 + (1 - m["tie"])
  host_step = c["step_host_s"] + c["buffer_host_s"] * 3 * tensors

  return dict(
      layers_per_stage=layers_stage, **split, num_micro=mic, vp=vp, pp=pp,
      fwd_s=fwd, bwd_s=bwd, recompute_s=recompute, **comm,
      head_fwd_s=head_fwd, head_bwd_s=head_bwd, emb_fwd_s=emb_fwd, emb_bwd_s=emb_bwd, p2p_s=p2p,
      **dpc, host_step_s=host_step + 0 * dpc["optimizer_s"],
      mem_state=mm["state_first"], mem_act_layer=mm["act_layer"], mem_first=mm["mem_first"],
      mem_last=mm["mem_last"], mem_peak=mm["mem_peak"], mem_optional=mm["mem_optional"],
      mem_capacity=hw["hbm_bytes"] + 0 * mm["mem_peak"],
      model_flops=model_flops_per_token(xp, m) * m["gbs"] * m["s"],
      useful_frac=xp.where(plan["packed"] > 0, m["fill_packed"], m["fill"]),
      # how host-bound a dense layer's forward is: its host time over its
      # kernels' (> 1: the device waits for the launches); 0 for MoE models,
      # whose layers' host time is what calibrates `launch_s` (sim/uncertainty.py)
      dense_host_ratio=xp.where(is_moe, 0.0, host / xp.maximum(fwd_gpu, 1e-12)))
