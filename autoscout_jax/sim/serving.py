"""F0 serving model: TTFT and TPOT of an LLM serving deployment from first principles.

Where it sits: targets/serving.py maps a serving candidate to a
`ServingPlan` (sim/serving_plan.py, re-exported here); sim/serving_eval.py (the 'analytic' evaluator of
the serving family) and tools/predict_serving.py (aiconfigurator's measured
sample, via sim/silicon.py) call `predict(plan, arch, system, request)`.
It reads the architecture from sim/serving_catalog.py and the device and
links from sim/hardware.py; it imports nothing from targets/.

The physics, per engine (one model copy on tp * pp * attn_dp devices):
- decode is one step per output token: every device reads its weights (for
  MoE only the experts the batch's tokens route to) and its sequences' KV
  cache from HBM; compute is 2 FLOPs per active weight per token; a step
  costs max(bytes / bandwidth, FLOPs / peak) plus the collectives of every
  layer (tensor-parallel all-reduces, expert-parallel all-to-alls) and a
  per-layer kernel floor;
- prefill is compute-bound: the same weights times the prompt's tokens plus
  causal attention, GEMM efficiency growing with the tokens each GEMM sees
  (per expert for MoE);
- an aggregated engine interleaves the prefills of new requests with decode
  (each output token pays its share of a prompt), and a new request waits
  for the prefill server (an M/D/1 queue fed by the closed loop of
  `concurrency` users); disaggregated prefill workers serve the same queue
  and ship the KV cache to decode workers;
- the KV cache gets `kv_fraction` of what the weights and a fixed reserve
  leave of HBM: it caps the sequences an engine runs at once.

Constants: GEMM, grouped-GEMM, attention, fp8 and collective efficiencies
are the training simulators' (sim/constants.py, fitted on published
TRAINING runs); memory reserve and link latencies are first principles;
seven (`bw_eff`, `layer_floor_s`, `moe_floor_s`, `burst_share` and the
three engines' `*_overhead_s`) are fitted
on a documented fifth of aiconfigurator's sample by
tools/calibrate_serving.py, the other four fifths held out.
"""

from __future__ import annotations

import dataclasses
import math

from autoscout_jax.sim import hardware
from autoscout_jax.sim.constants import CALIBRATED
from autoscout_jax.sim.serving_catalog import COMPUTE_PRECISION, KV_BYTES, WEIGHT_BYTES, ServingArch
from autoscout_jax.sim.serving_plan import (ENGINES, EngineLayout, ServingPlan, ServingPrediction,
                                            ServingRequest)

__all__ = ["ENGINES", "EngineLayout", "ServingPlan", "ServingPrediction", "ServingRequest", "ServingConstants",
           "DEFAULT", "predict"]

@dataclasses.dataclass(frozen=True)
class ServingConstants:
  """What the serving model assumes beyond the datasheets."""

  gemm_eff: float = CALIBRATED.gemm_eff  # large bf16 GEMMs (training fit)
  fp8_eff: float = CALIBRATED.fp8_eff  # fp8/fp4 GEMMs, fraction of their peak (training fit)
  attn_eff: float = CALIBRATED.attn_eff  # flash attention (training fit)
  comm_eff: float = CALIBRATED.comm_eff  # NCCL bus bandwidth / link bandwidth (training fit)
  moe_eff: float = CALIBRATED.moe_eff  # grouped expert GEMMs relative to dense ones (training fit)
  # Fitted by `python -m autoscout_jax.tools.calibrate_serving` on the
  # calibration fifth of aiconfigurator's sample (sha1(id) = 0 mod 5; the
  # other four fifths are held out): the HBM bandwidth decode kernels reach
  # (first guess 0.80 from STREAM-class copies, kept by the fit), the kernel
  # floor of a layer (~8 small kernels: norms, RoPE, residuals) and the extra
  # of an MoE layer (router, top-k, permute, grouped GEMMs, reduce), the
  # share of measured requests in the load generator's opening burst (a
  # harness property: 1 / rounds of requests per user) and a request's fixed
  # time in the server.
  bw_eff: float = 0.80
  layer_floor_s: float = 2.934e-05
  moe_floor_s: float = 3.568e-05
  burst_share: float = 0.1583
  # Time a request spends in each engine's server outside the GPU's prefill:
  # HTTP, tokenization, scheduling, detokenizing and streaming the first
  # token (the engines' front ends differ: separate tokenizer / detokenizer
  # processes talking over sockets, or one process).
  trtllm_overhead_s: float = 0.010
  vllm_overhead_s: float = 0.006667
  sglang_overhead_s: float = 0.1567

  def request_overhead(self, engine: str) -> float:
    return getattr(self, f"{engine}_overhead_s")
  # CUDA context, cuBLAS/NCCL workspaces and the activations of one prefill
  # chunk, per device.
  reserve_bytes: float = 4 * hardware.GIB


DEFAULT = ServingConstants()


def _peak(device: hardware.DeviceSpec, precision: str) -> float:
  """Tensor-core peak of a GEMM precision; FP4 weights on a device without
  FP4 units (Hopper) run weight-only, dequantized to bf16."""
  if precision == "fp4":
    return device.peak_fp4 or device.peak_bf16
  return device.peak(precision)


@dataclasses.dataclass(frozen=True)
class _Engine:
  """Per-device quantities of one engine layout (internal)."""

  arch: ServingArch
  lay: EngineLayout
  plan: ServingPlan
  hw: "Hardware"
  c: ServingConstants

  @property
  def device(self) -> hardware.DeviceSpec:
    return self.hw.device

  def link(self, group: int) -> hardware.Link:
    return self.hw.intra if group <= self.hw.node else self.hw.inter

  def weight_bytes(self) -> tuple[float, float]:
    """(always-read bytes, routed-expert bytes) per device, whole model / pp."""
    a, lay = self.arch, self.lay
    wb = WEIGHT_BYTES[self.plan.weight_dtype]
    mb = WEIGHT_BYTES[self.plan.moe_dtype or self.plan.weight_dtype]
    soft = a.layers - a.linear_layers
    attn = (soft * a.attn_params + a.linear_layers * a.linear_attn_params) * wb / lay.tp
    dense = (a.layers - a.moe_layers) * 3.0 * a.hidden * a.ffn * wb / lay.tp
    shared = a.moe_layers * (3.0 * a.hidden * a.shared_ffn * wb / lay.tp + 2.0 * a.hidden * a.experts)
    experts = a.moe_layers * a.experts * a.expert_params * mb / (lay.ep * lay.moe_tp)
    head = 2 * 2.0 * a.vocab * a.hidden / lay.tp  # bf16 embedding + output layer
    return (attn + dense + shared + head) / lay.pp, experts / lay.pp

  def kv_bytes(self, ctx: float) -> float:
    """KV cache bytes of one sequence of `ctx` tokens on one device."""
    a, lay = self.arch, self.lay
    kvb = KV_BYTES[self.plan.kv_dtype]
    soft = a.layers - a.linear_layers - a.window_layers
    if a.is_mla:  # the latent is shared by all heads: every tp rank keeps it whole
      per_tok = (a.mla_kv_rank + a.mla_rope) * kvb + a.indexer_dim * 1.0
    else:
      per_tok = 2.0 * max(1.0, a.kv_heads / lay.tp) * a.head_dim * kvb
    total = soft * per_tok * ctx + a.window_layers * per_tok * min(ctx, a.window or ctx)
    # Linear attention: a fixed fp32 state of v_heads x d x d per layer.
    total += a.linear_layers * max(1.0, a.linear_v_heads / lay.tp) * a.linear_head_dim ** 2 * 4.0
    return total / lay.pp

  def kv_read_bytes(self, ctx: float) -> float:
    """KV bytes one decode token reads: sparse attention reads its top-k
    latents plus every key of the indexer."""
    a = self.arch
    if not a.sparse_topk or ctx <= a.sparse_topk:
      return self.kv_bytes(ctx)
    kvb = KV_BYTES[self.plan.kv_dtype]
    soft = a.layers - a.linear_layers
    return soft * ((a.mla_kv_rank + a.mla_rope) * kvb * a.sparse_topk + a.indexer_dim * ctx) / self.lay.pp

  def attn_flops(self, q_tokens: float, ctx: float, decode: bool) -> float:
    """Score + value FLOPs of `q_tokens` queries over `ctx` keys each, per
    device of the attention group (heads split over tp)."""
    a = self.arch
    keys = min(ctx, a.sparse_topk) if a.sparse_topk else ctx
    if a.is_mla and decode:
      dims = 2 * a.mla_kv_rank + a.mla_rope  # absorbed: scores over the latent + rope, values from the latent
    elif a.is_mla:
      dims = a.mla_qk_nope + a.mla_rope + a.mla_v_dim  # prefill expands the latent to per-head keys/values
    else:
      dims = 2 * a.head_dim
    soft = a.layers - a.linear_layers - a.window_layers
    per_layer = 2.0 * a.heads / self.lay.tp * dims * q_tokens
    flops = soft * per_layer * keys + a.window_layers * per_layer * min(keys, a.window or keys)
    return flops / self.lay.pp

  def capacity(self) -> tuple[float, float]:
    """(weight bytes per device, KV-cache bytes per device)."""
    fixed, experts = self.weight_bytes()
    w = fixed + experts
    free = max(0.0, self.device.hbm_bytes - self.c.reserve_bytes - w)
    if self.plan.kv_of_total:
      return w, min(free, self.device.hbm_bytes * self.plan.kv_fraction)
    return w, free * self.plan.kv_fraction

  def _lat(self, n: int) -> float:
    """Latency of one small collective over n devices: a tree / two-shot
    algorithm takes log2 + 1 steps, those inside a node on the fast link and
    the log2(nodes) between nodes on the slow one (hierarchical, as NCCL)."""
    node, intra, inter = self.hw.node, self.hw.intra, self.hw.inter
    inside = min(n, node)
    t = intra.latency * (1 + math.log2(max(inside, 1)))
    return t + (inter.latency * math.log2(n / node) if n > node else 0.0)

  def _comm(self, tokens_per_rank: float, moe_tokens: float) -> float:
    """Collectives of one forward over this stage's layers: two tensor-parallel
    all-reduces per layer of the attention group's activations, and per MoE
    layer an all-to-all (fp8 dispatch + bf16 combine) or an all-reduce."""
    a, lay, c = self.arch, self.lay, self.c
    layers = a.layers / lay.pp
    moe_layers = a.moe_layers / lay.pp
    t = 0.0
    if lay.tp > 1:
      link = self.link(lay.tp)
      ar = self._lat(lay.tp) + 2 * (lay.tp - 1) / lay.tp * tokens_per_rank * a.hidden * 2 / (link.bw * c.comm_eff)
      t += ar * (2 * layers - moe_layers)  # the MoE output's reduction is counted below
    group = lay.tp * lay.attn_dp
    if moe_layers and group > 1:
      link = self.link(group)
      if lay.ep > 1:
        per_dev = moe_tokens / group * a.top_k * a.hidden * 3.0 * (lay.ep - 1) / lay.ep
        t += moe_layers * (2 * self._lat(group) + per_dev / (link.bw * c.comm_eff))
      else:
        t += moe_layers * (self._lat(group) + 2 * (group - 1) / group * moe_tokens / lay.attn_dp * a.hidden * 2
                           / (link.bw * c.comm_eff))
    return t

  def _flop_rate(self, precision: str, grouped: bool = False) -> float:
    eff = self.c.fp8_eff if precision in ("fp8", "fp4") else self.c.gemm_eff
    if grouped:  # expert GEMMs: the training fit's grouped-GEMM efficiency relative to a dense GEMM
      eff *= self.c.moe_eff
    return _peak(self.device, precision) * eff

  def forward_s(self, tokens: float, ctx: float, decode: bool) -> float:
    """One forward of this engine over `tokens` tokens (all attention ranks
    together), each attending to `ctx` keys on average (decode), or prompts of
    `ctx` tokens (prefill, causal). A roofline: the weights (only the experts
    some token routes to) and, in decode, the KV cache stream from HBM while
    the GEMMs and attention run; the slower of the two sets the time."""
    a, lay, c = self.arch, self.lay, self.c
    dev = self.device
    per_rank = tokens / lay.attn_dp
    fixed, experts = self.weight_bytes()
    frac = 1.0 - (1.0 - a.top_k / a.experts) ** tokens if a.is_moe else 0.0
    w_read = fixed + experts * frac
    prec = COMPUTE_PRECISION[self.plan.weight_dtype]
    mprec = COMPUTE_PRECISION[self.plan.moe_dtype or self.plan.weight_dtype]
    shards = lay.tp * lay.attn_dp * lay.pp
    routed = a.moe_layers * a.top_k * a.expert_params * 2.0 * tokens / shards
    dense_flops = 2.0 * tokens * a.active_params_per_token() / shards - routed
    t_gemm = dense_flops / self._flop_rate(prec) + routed / self._flop_rate(mprec, grouped=True)
    if decode:
      kv = per_rank * self.kv_read_bytes(ctx)
      t_attn = self.attn_flops(per_rank, ctx, True) / (_peak(dev, "bf16") * c.gemm_eff)
    else:
      kv = 0.0
      t_attn = self.attn_flops(per_rank, ctx / 2, False) / (_peak(dev, "bf16") * c.attn_eff)
    t = max((w_read + kv) / (dev.hbm_bw * c.bw_eff), t_gemm + t_attn)
    floor = (a.layers * c.layer_floor_s + a.moe_layers * c.moe_floor_s) / lay.pp
    return t + self._comm(per_rank, tokens) + floor

  def decode_step_s(self, batch: float, ctx: float) -> float:
    """Time per output token at `batch` sequences: with pp stages the batch
    runs as pp micro-batches, each visiting every stage once per token."""
    pp = self.lay.pp
    t = pp * self.forward_s(max(1.0, batch / pp), ctx, decode=True)
    return t + (pp - 1) * self.link(self.lay.devices).latency

  def prefill_s(self, requests: float, isl: int) -> float:
    """Time to prefill `requests` prompts of `isl` tokens (chunked when the
    plan says so); a prompt crosses the pp stages one after another."""
    chunk = self.plan.chunk_tokens
    total = requests * isl
    if chunk and chunk < total:
      n = math.ceil(total / chunk)
      return n * self.lay.pp * self.forward_s(total / n, isl, decode=False)
    return self.lay.pp * self.forward_s(total, isl, decode=False)

  def kv_max_batch(self, ctx_max: int) -> tuple[float, int]:
    _, kv_free = self.capacity()
    per_seq = self.kv_bytes(ctx_max)
    seqs_per_rank = int(kv_free // per_seq) if per_seq > 0 else 1 << 30
    return kv_free / max(per_seq / ctx_max, 1e-30), seqs_per_rank * self.lay.attn_dp


def _md1_wait(rho: float, service_s: float) -> float:
  rho = min(rho, 0.95)
  return rho * service_s / (2 * (1 - rho))


@dataclasses.dataclass(frozen=True)
class Hardware:
  """What the model reads of a system or a simulated cluster: the device,
  the size of the fast (NVLink) domain and the two link tiers."""

  device: hardware.DeviceSpec
  node: int
  intra: hardware.Link
  inter: hardware.Link

  @classmethod
  def of(cls, system: "hardware.System | hardware.Cluster") -> "Hardware":
    if isinstance(system, hardware.System):
      return cls(hardware.DEVICES[system.device], system.devices_per_node, hardware.LINKS[system.intra],
                 hardware.LINKS[system.inter])
    return cls(system.device, system.node_size, system.intra, system.inter)


def predict(plan: ServingPlan, arch: ServingArch, system: "hardware.System | hardware.Cluster",
            request: ServingRequest, c: ServingConstants = DEFAULT) -> ServingPrediction:
  """TTFT and TPOT (seconds) of `plan` serving `request` on `system` (a
  catalog System or a simulated Cluster: its device, NVLink domain, links)."""
  hw = Hardware.of(system)
  pre = _Engine(arch, plan.layout, plan, hw, c)
  dec = _Engine(arch, plan.decode_layout, plan, hw, c) if plan.disaggregated else pre
  n_dec = plan.decode_replicas if plan.disaggregated else plan.replicas
  ctx_max = request.isl + request.osl
  ctx_avg = request.isl + request.osl / 2
  reasons = []
  for e in {id(pre): pre, id(dec): dec}.values():
    w, _ = e.capacity()
    if w + c.reserve_bytes > e.device.hbm_bytes:
      reasons.append(f"weights need {w / 1e9:.1f} GB per device, {e.device.name} has "
                     f"{e.device.hbm_bytes / 1e9:.0f} GB")
  # TRT-LLM's default scheduler admits a request only when its whole
  # sequence fits (guaranteed no eviction); paged engines (vLLM, SGLang)
  # admit on what is in use and preempt at the peak: the mean context.
  kv_tokens, kv_batch = dec.kv_max_batch(ctx_max if plan.engine == "trtllm" else math.ceil(ctx_avg))
  conc = request.concurrency or n_dec * dec.lay.batch
  batch = max(1, min(dec.lay.batch, math.ceil(conc / n_dec)))
  if kv_batch < 1:
    reasons.append(f"the KV cache holds no {ctx_max}-token sequence")
  eff_batch = max(1, min(batch, kv_batch))
  t_dec = dec.decode_step_s(eff_batch, ctx_avg)
  users = min(conc, n_dec * eff_batch)  # requests beyond the slots wait for a whole request
  if plan.disaggregated:
    bp = plan.layout.batch
    service = pre.prefill_s(bp, request.isl)
    link = pre.link(pre.lay.devices + dec.lay.devices)
    kv_ship = request.isl * pre.kv_bytes(1) * pre.lay.pp / (link.bw * c.comm_eff) + link.latency
    tpot = t_dec
    ttft = service + kv_ship
    for _ in range(20):
      lam = users / (ttft + request.osl * tpot)
      rho = lam * service / (bp * plan.replicas)
      ttft = service + kv_ship + _md1_wait(rho, service)
    waves = math.ceil(users / (bp * plan.replicas))
  else:
    # A closed loop of users whose requests all produce osl tokens stays in
    # step: requests arrive in cohorts that share one prefill iteration of up
    # to chunk_tokens prompt tokens (the whole cohort when unchunked), riding
    # along with the decode batch; a new request also waits, on average, half
    # of the iteration under way.
    per_replica = max(1, math.ceil(users / plan.replicas))
    chunk = plan.chunk_tokens
    cohort = min(per_replica, max(1, chunk // request.isl)) if chunk else per_replica
    service = pre.prefill_s(cohort, request.isl)
    # Each output token pays its share of the prompts prefilled in between:
    # their compute, the weights being read anyway for the decode step.
    one = pre.prefill_s(1, request.isl) - pre.lay.pp * pre.forward_s(1.0, 0.0, decode=True)
    tpot = t_dec + eff_batch * max(0.0, one) / request.osl
    # Cohorts queue for the prefill server (M/D/1, utilization from the
    # closed loop's arrival rate).
    ttft = service + 1.5 * t_dec
    for _ in range(20):
      lam = per_replica / (ttft + request.osl * tpot) / cohort
      ttft = service + 1.5 * t_dec + _md1_wait(lam * service, service)
    waves = math.ceil(per_replica / cohort)
  # A load generator starts all its users at once: that first wave of
  # requests queues behind (waves - 1) / 2 prefill waves on average. The
  # share of measured requests that belong to it is a property of the
  # benchmark harness (how many rounds it runs), `burst_share`.
  ttft += c.burst_share * (waves - 1) / 2 * service + c.request_overhead(plan.engine)
  if conc > users and plan.engine == "trtllm":
    # No eviction: requests beyond the KV cache wait for whole requests to
    # finish (one request time per round of slots). Paged engines admit them
    # and preempt at the peak instead, which the capped batch already prices.
    ttft += (conc / users - 1) * (ttft + request.osl * tpot)
  # Little's law: requests in the system over their time in it. Under no
  # eviction TTFT includes the wait of those beyond the cache; a paged engine
  # serves only what its cache holds at once (the rest is preempted).
  in_system = conc if plan.engine == "trtllm" else users
  thr = in_system / (ttft + request.osl * tpot) * request.osl
  return ServingPrediction(ttft_s=ttft, tpot_s=tpot, fits=not reasons, reason="; ".join(reasons),
                           kv_capacity_tokens=kv_tokens * dec.lay.attn_dp, effective_batch=eff_batch,
                           throughput_tok_s=thr, tokens_per_s_per_device=thr / plan.devices)
