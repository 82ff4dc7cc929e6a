"""Serving catalog: the architectures and number formats the serving model reads.

Where it sits: sim/serving.py (the F0 serving model) takes a `ServingArch`
and the byte widths / peak-FLOP precision of its weight and KV formats from
here; sim/silicon.py looks models up by the Hugging Face names measured
serving tables use (`find_arch`). Training models live in sim/catalog.py;
serving needs what training does not (multi-head latent attention's cache,
linear-attention and sliding-window layers, sparse attention's key budget),
so it has its own small table.

Every architecture below is copied from the model's published Hugging Face
`config.json` (layers, widths, heads, experts); nothing here is fitted.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class ServingArch:
  """A decoder as inference sees it. Widths are per layer; `experts == 0` is
  dense. Attention is one of: grouped-query (`kv_heads`, `head_dim`),
  multi-head latent (`mla_kv_rank > 0`: the cache holds `mla_kv_rank +
  mla_rope` values per token per layer, shared by all heads), with some
  layers linear (`linear_layers`: a fixed-size recurrent state per sequence,
  no per-token cache) or sliding-window (`window_layers` attend to the last
  `window` tokens). `sparse_topk > 0`: each query attends to that many keys
  (DeepSeek sparse attention), after an indexer reads every key."""

  name: str
  layers: int
  hidden: int
  heads: int
  kv_heads: int
  head_dim: int
  ffn: int                   # dense (gated, three-matrix) MLP width
  vocab: int
  experts: int = 0
  top_k: int = 0
  expert_ffn: int = 0
  shared_ffn: int = 0        # total width of the always-on shared expert(s)
  dense_layers: int = 0      # leading dense layers of an MoE model
  mla_kv_rank: int = 0
  mla_rope: int = 0
  mla_q_rank: int = 0
  mla_qk_nope: int = 0
  mla_v_dim: int = 0
  linear_layers: int = 0
  linear_k_heads: int = 0
  linear_v_heads: int = 0
  linear_head_dim: int = 0
  window_layers: int = 0
  window: int = 0
  sparse_topk: int = 0
  indexer_dim: int = 0       # per-token key width the sparse-attention indexer reads (fp8)

  def __post_init__(self):
    for f in ("layers", "hidden", "heads", "kv_heads", "head_dim", "vocab"):
      if getattr(self, f) <= 0:
        raise ValueError(f"serving arch {self.name!r}: {f} must be positive")
    if self.experts and not 0 < self.top_k <= self.experts:
      raise ValueError(f"serving arch {self.name!r}: top_k must be in 1..experts")
    if self.linear_layers + self.window_layers > self.layers:
      raise ValueError(f"serving arch {self.name!r}: more linear/window layers than layers")

  @property
  def is_moe(self) -> bool:
    return self.experts > 0

  @property
  def is_mla(self) -> bool:
    return self.mla_kv_rank > 0

  @property
  def moe_layers(self) -> int:
    return self.layers - self.dense_layers if self.is_moe else 0

  @property
  def attn_params(self) -> float:
    """Attention projection weights of one softmax-attention layer."""
    h = self.hidden
    if self.is_mla:
      qk = self.mla_qk_nope + self.mla_rope
      q = h * self.mla_q_rank + self.mla_q_rank * self.heads * qk if self.mla_q_rank else h * self.heads * qk
      kv = h * (self.mla_kv_rank + self.mla_rope) + self.mla_kv_rank * self.heads * (self.mla_qk_nope + self.mla_v_dim)
      return q + kv + self.heads * self.mla_v_dim * h
    return h * (self.heads + 2 * self.kv_heads) * self.head_dim + self.heads * self.head_dim * h

  @property
  def linear_attn_params(self) -> float:
    """Projections of one linear-attention (gated delta-net) layer: q, k, v,
    output gate and output."""
    k = self.linear_k_heads * self.linear_head_dim
    v = self.linear_v_heads * self.linear_head_dim
    return self.hidden * (2 * k + 2 * v) + v * self.hidden

  @property
  def expert_params(self) -> float:
    return 3.0 * self.hidden * self.expert_ffn

  def active_params_per_token(self) -> float:
    """Weights one token multiplies (GEMMs): attention, the dense MLP or the
    top-k experts + shared expert + router, and the output layer."""
    soft = self.layers - self.linear_layers
    attn = soft * self.attn_params + self.linear_layers * self.linear_attn_params
    mlp = (self.layers - self.moe_layers) * 3.0 * self.hidden * self.ffn
    moe = self.moe_layers * (self.top_k * self.expert_params + 3.0 * self.hidden * self.shared_ffn
                             + self.hidden * self.experts)
    return attn + mlp + moe + self.vocab * self.hidden


def _mla(name, layers, hidden, heads, ffn, vocab, experts, top_k, expert_ffn, dense, q_rank, nope=128, v=128,
         **kw):
  return ServingArch(name, layers, hidden, heads, heads, nope + 64, ffn, vocab, experts=experts, top_k=top_k,
                     expert_ffn=expert_ffn, shared_ffn=expert_ffn, dense_layers=dense, mla_kv_rank=512,
                     mla_rope=64, mla_q_rank=q_rank, mla_qk_nope=nope, mla_v_dim=v, **kw)


_DSV3 = dict(layers=61, hidden=7168, heads=128, ffn=18432, vocab=129280, experts=256, top_k=8, expert_ffn=2048,
             dense=3, q_rank=1536)

# Hugging Face config.json of each model (the sample's `model_path`).
ARCHS: dict[str, ServingArch] = {a.name: a for a in (
    ServingArch("meta-llama/Llama-3.1-8B-Instruct", 32, 4096, 32, 8, 128, 14336, 128256),
    ServingArch("meta-llama/Llama-3.1-70B", 80, 8192, 64, 8, 128, 28672, 128256),
    ServingArch("Qwen/Qwen3-32B", 64, 5120, 64, 8, 128, 25600, 151936),
    ServingArch("Qwen/Qwen3-235B-A22B", 94, 4096, 64, 4, 128, 12288, 151936, experts=128, top_k=8,
                expert_ffn=1536),
    # Qwen3.5: 3 of every 4 layers are gated delta-net (linear) attention.
    ServingArch("Qwen/Qwen3.5-397B-A17B", 60, 4096, 32, 2, 256, 1024, 248320, experts=512, top_k=10,
                expert_ffn=1024, shared_ffn=1024, linear_layers=45, linear_k_heads=16, linear_v_heads=64,
                linear_head_dim=128),
    _mla("deepseek-ai/DeepSeek-V3", **_DSV3),
    _mla("deepseek-ai/DeepSeek-R1", **_DSV3),
    _mla("nvidia/DeepSeek-V3.1-NVFP4", **_DSV3),
    _mla("moonshotai/Kimi-K2.5", 61, 7168, 64, 18432, 163840, 384, 8, 2048, 1, 1536),
    # GLM-5: MLA with DeepSeek sparse attention (2048 keys per query, a 128-wide fp8 indexer).
    _mla("zhipuai/GLM-5", 78, 6144, 64, 12288, 154880, 256, 8, 2048, 3, 2048, nope=192, v=256,
         sparse_topk=2048, indexer_dim=128),
    ServingArch("MiniMaxAI/MiniMax-M2.5", 62, 3072, 48, 8, 128, 1536, 200064, experts=256, top_k=8,
                expert_ffn=1536),
    # gpt-oss: alternating 128-token sliding-window and full layers.
    ServingArch("openai/gpt-oss-120b", 36, 2880, 64, 8, 64, 2880, 201088, experts=128, top_k=4, expert_ffn=2880,
                window_layers=18, window=128),
)}

# Quantized checkpoints of the same architecture.
ALIASES = {
    "nvidia/Llama-3.1-8B-Instruct-FP8": "meta-llama/Llama-3.1-8B-Instruct",
    "Qwen/Qwen3-235B-A22B-FP8": "Qwen/Qwen3-235B-A22B",
    "nvidia/Qwen3-32B-NVFP4": "Qwen/Qwen3-32B",
    "nvidia/DeepSeek-R1-NVFP4": "deepseek-ai/DeepSeek-R1",
}


def find_arch(name: str) -> ServingArch | None:
  return ARCHS.get(ALIASES.get(name, name))


# Bytes per stored weight, scales included: fp8 per-tensor (1 B), fp8 with
# 128x128 block scales, NVFP4 (4 bits + one fp8 scale per 16 values), int4
# weight-only (4 bits + a bf16 scale per group of 128).
WEIGHT_BYTES = {"bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "fp8_block": 1.0 + 4 / 128**2, "nvfp4": 0.5 + 1 / 16,
                "fp4": 0.5 + 1 / 16, "int4_wo": 0.5 + 2 / 128, "int4": 0.5 + 2 / 128}

# The tensor-core precision a weight format's GEMMs run at (weight-only int4
# dequantizes to bf16; activations of fp8/fp4 GEMMs are quantized too).
COMPUTE_PRECISION = {"bf16": "bf16", "fp16": "bf16", "fp8": "fp8", "fp8_block": "fp8", "nvfp4": "fp4",
                     "fp4": "fp4", "int4_wo": "bf16", "int4": "bf16"}

KV_BYTES = {"bf16": 2.0, "fp16": 2.0, "fp8": 1.0}


def arch_from_model(model) -> ServingArch:
  """A training-catalog `ModelConfig` (autoscout_jax/workload.py: dense or
  MoE, grouped-query attention) as the serving model sees it; a model whose
  name the serving catalog knows keeps its serving entry (MLA, linear or
  sliding-window layers that ModelConfig cannot say)."""
  known = find_arch(model.name)
  if known is not None:
    return known
  moe = model.num_experts > 0
  return ServingArch(model.name, model.num_layers, model.hidden_size, model.num_heads, model.kv_heads,
                     model.head_dim, model.ffn_hidden_size if model.gated_mlp else model.ffn_hidden_size * 2 // 3,
                     model.vocab_size, experts=model.num_experts, top_k=model.moe_top_k if moe else 0,
                     expert_ffn=(model.moe_ffn_hidden_size or model.ffn_hidden_size) if moe else 0,
                     shared_ffn=model.num_shared_experts * (model.moe_ffn_hidden_size or model.ffn_hidden_size),
                     dense_layers=model.num_layers - model.layer_counts()["moe"] if moe else 0)
