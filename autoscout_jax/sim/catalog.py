"""Model and workload catalog for the cluster-scale simulators.

Where it sits: gin (`gin/workloads/sim_*.gin`) binds `make_workload` to build
a `Workload` (autoscout_jax/workload.py) for a named model and device count;
the target spaces (targets/megatron.py, targets/jax_mesh.py) and evaluators read it; the calibration
tools look models up by the names published tables use (`find_model`).

Each model has the published architecture and the framework recipe that
trained it (`Recipe`): the expert default the search is compared against.
`make_workload` turns a recipe into knob values of the Megatron space or the
JAX-mesh space for a given device count (data parallelism takes the rest).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from autoscout_jax.sim import memory
from autoscout_jax.workload import ModelConfig, Workload


def param_count(model: ModelConfig) -> int:
  """Trainable parameters: attention (GQA-aware), MLP (gated or not), routed
  + shared experts and router, norms, embedding (+ untied output layer).
  Biases and learned position embeddings are left out (under 0.1 %)."""
  h, d = model.hidden_size, model.head_dim
  mats = 3 if model.gated_mlp else 2
  attn = h * (model.num_heads * d + 2 * model.kv_heads * d) + model.num_heads * d * h + 2 * h
  dense = h * model.ffn_hidden_size * mats
  fe = model.moe_ffn_hidden_size or model.ffn_hidden_size
  lat = model.moe_latent_size
  # routed experts at the latent width, with the down and up projections around them
  moe = (model.num_experts * (lat or h) * fe * mats + (2 * h * lat if lat else 0)
         + model.num_shared_experts * h * fe * mats + h * model.num_experts)
  emb = model.vocab_size * h * (1 if model.tie_embeddings else 2)
  n = model.layer_counts()
  if model.is_hybrid:
    # one norm per pattern layer (attention's two above belong to a pair)
    attn -= h
    dense, moe = dense + h, moe + h
  per = dict(attention=attn, mamba=mamba_params(model), dense=dense, moe=moe)
  body = sum(n[k] * v for k, v in per.items())
  # MTP blocks (one when the passes share it): the 2h -> h projection, its
  # two input norms and its layers (a transformer's: one attention + MLP
  # pair of the model's last kind), and a final norm
  mtp = 0
  if model.mtp_layers:
    if model.mtp_pattern:
      kinds = {"*": "attention", "M": "mamba", "-": "dense", "E": "moe"}
      block = sum(per[kinds[c]] for c in model.mtp_pattern)
    else:
      block = attn + (moe if model.is_moe else dense)
    mtp = (1 if model.mtp_shared else model.mtp_layers) * (2 * h * h + 3 * h + block)
  return int(body + emb + h + mtp)


def mamba_params(model: ModelConfig) -> int:
  """One Mamba-2 layer of `model` (sim/memory.py `mamba_params`); 0 without one."""
  if not model.mamba_num_heads:
    return 0
  return int(memory.mamba_params(model.hidden_size, model.mamba_num_heads, model.mamba_head_dim,
                                 model.mamba_state_dim, model.mamba_num_groups))


@dataclasses.dataclass(frozen=True)
class Recipe:
  """A framework's published configuration for a model (Megatron vocabulary;
  `make_workload` maps it onto the JAX-mesh space too)."""

  tp: int = 1
  pp: int = 1
  cp: int = 1
  ep: int = 1
  vp: int = 1
  mbs: int = 1
  global_batch: int = 512
  recompute: str = "selective"  # none | selective | full
  sequence_parallel: bool = True
  distributed_optimizer: bool = True
  source: str = ""


def _gpt(name, L, h, a, recipe, seq=2048, vocab=51200):
  return (ModelConfig(name=name, num_layers=L, hidden_size=h, num_heads=a, ffn_hidden_size=4 * h,
                      vocab_size=vocab, seq_len=seq, tie_embeddings=True), recipe)


# Narayanan et al. 2021 Table 1 (weak scaling on Selene) with the micro-batch
# and interleaving of Megatron-LM's sc21/run_table_1.sh: full recompute, no SP.
_NARAYANAN = "Narayanan 2021 Table 1 + run_table_1.sh"
_CATALOG: dict[str, tuple[ModelConfig, Recipe]] = dict((n, m) for n, m in (
    ("gpt_1.7b", _gpt("gpt_1.7b", 24, 2304, 24, Recipe(1, 1, mbs=16, global_batch=512, recompute="full",
                                                         sequence_parallel=False, source=_NARAYANAN))),
    ("gpt_3.6b", _gpt("gpt_3.6b", 30, 3072, 32, Recipe(2, 1, mbs=16, global_batch=512, recompute="full",
                                                         sequence_parallel=False, source=_NARAYANAN))),
    ("gpt_7.5b", _gpt("gpt_7.5b", 36, 4096, 32, Recipe(4, 1, mbs=16, global_batch=512, recompute="full",
                                                         sequence_parallel=False, source=_NARAYANAN))),
    ("gpt_18.4b", _gpt("gpt_18.4b", 40, 6144, 48, Recipe(8, 1, mbs=8, global_batch=1024, recompute="full",
                                                           sequence_parallel=False, source=_NARAYANAN))),
    ("gpt_39.1b", _gpt("gpt_39.1b", 48, 8192, 64, Recipe(8, 2, mbs=4, global_batch=1536, recompute="full",
                                                           sequence_parallel=False, source=_NARAYANAN))),
    ("gpt_76.1b", _gpt("gpt_76.1b", 60, 10240, 80, Recipe(8, 4, vp=3, mbs=2, global_batch=1792,
                                                            recompute="full", sequence_parallel=False,
                                                            source=_NARAYANAN))),
    ("gpt_145.6b", _gpt("gpt_145.6b", 80, 12288, 96, Recipe(8, 8, vp=2, mbs=2, global_batch=2304,
                                                              recompute="full", sequence_parallel=False,
                                                              source=_NARAYANAN))),
    ("gpt_310.1b", _gpt("gpt_310.1b", 96, 16384, 128, Recipe(8, 16, vp=2, global_batch=2160,
                                                               recompute="full", sequence_parallel=False,
                                                               source=_NARAYANAN))),
    ("gpt_529.6b", _gpt("gpt_529.6b", 105, 20480, 128, Recipe(8, 35, vp=3, global_batch=2520,
                                                                recompute="full", sequence_parallel=False,
                                                                source=_NARAYANAN))),
    ("gpt_1t", _gpt("gpt_1t", 128, 25600, 160, Recipe(8, 64, global_batch=3072, recompute="full",
                                                        sequence_parallel=False, source=_NARAYANAN))),
    # GPT-3 175B: Korthikanti et al. 2022 Table 3 (tp 8, pp 8, 4 layers per
    # virtual stage), selective recompute + SP, GPT-3's 1536-sequence batch.
    ("gpt3_175b", _gpt("gpt3_175b", 96, 12288, 96, Recipe(8, 8, vp=3, global_batch=1536,
                                                           source="Korthikanti 2022 Table 3"))),
    ("gpt_22b", _gpt("gpt_22b", 48, 6144, 64, Recipe(8, 1, mbs=4, global_batch=512,
                                                     source="Korthikanti 2022 Table 3"))),
    # NeMo 24.07 performance summary (DGX-H100) GPT-3 rows.
    ("gpt3_5b", _gpt("gpt3_5b", 24, 4096, 32, Recipe(1, 1, mbs=4, global_batch=2048, source="NeMo 24.07"),
                     vocab=50304)),
    ("gpt3_20b", _gpt("gpt3_20b", 44, 6144, 48, Recipe(2, 1, mbs=2, global_batch=256, source="NeMo 24.07"),
                      vocab=50304)),
))


def _add(model: ModelConfig, recipe: Recipe):
  _CATALOG[model.name] = (model, recipe)


_NEMO = "NeMo 24.07 performance summary"
_MB = "Megatron-Bridge performance summary (H100)"
# Llama 2 (Touvron et al. 2023, Table/Appendix dims), NeMo recipes.
_add(ModelConfig("llama2_7b", 32, 4096, 32, 11008, 32000, 4096, gated_mlp=True), Recipe(1, 1, global_batch=128, source=_NEMO))
_add(ModelConfig("llama2_13b", 40, 5120, 40, 13824, 32000, 4096, gated_mlp=True),
     Recipe(1, 4, vp=10, global_batch=128, source=_NEMO))
_add(ModelConfig("llama2_70b", 80, 8192, 64, 28672, 32000, 4096, num_kv_heads=8, gated_mlp=True),
     Recipe(4, 4, vp=20, global_batch=128, source=_NEMO))
# Llama 3 / 3.1 (Dubey et al. 2024 Table 3): GQA with 8 KV heads, 128256 vocab.
_add(ModelConfig("llama3_8b", 32, 4096, 32, 14336, 128256, 8192, num_kv_heads=8, gated_mlp=True),
     Recipe(1, 1, cp=2, global_batch=128, source=_NEMO))
_add(ModelConfig("llama3_70b", 80, 8192, 64, 28672, 128256, 8192, num_kv_heads=8, gated_mlp=True),
     Recipe(4, 4, cp=2, vp=5, global_batch=128, source=_NEMO))
_add(ModelConfig("llama3_405b", 126, 16384, 128, 53248, 128256, 8192, num_kv_heads=8, gated_mlp=True),
     Recipe(8, 8, cp=2, vp=8, global_batch=1536, source=_MB))
# BLOOM 176B (BigScience 2022): tp 4, pp 12, micro-batch 2, batch 2048.
_add(ModelConfig("bloom_176b", 70, 14336, 112, 57344, 250880, 2048, tie_embeddings=True),
     Recipe(4, 12, mbs=2, global_batch=2048, recompute="full", sequence_parallel=False,
            distributed_optimizer=False, source="BLOOM (ZeRO-1 via DeepSpeed; here no SP)"))
# Nemotron-4 (NVIDIA 2024): squared-ReLU MLP (not gated), 256k vocab.
_add(ModelConfig("nemotron_8b", 32, 4096, 32, 16384, 256000, 4096), Recipe(2, 1, mbs=4, global_batch=256, source=_NEMO))
_add(ModelConfig("nemotron_22b", 40, 6144, 48, 24576, 256000, 4096),
     Recipe(2, 4, vp=10, mbs=2, global_batch=256, source=_NEMO + " (dims approximate)"))
_add(ModelConfig("nemotron_340b", 96, 18432, 96, 73728, 256000, 4096, num_kv_heads=8),
     Recipe(8, 8, vp=12, global_batch=32, source=_NEMO))
# Mixture of experts.
_add(ModelConfig("mixtral_8x7b", 32, 4096, 32, 14336, 32000, 4096, num_kv_heads=8, gated_mlp=True,
                 num_experts=8, moe_top_k=2), Recipe(1, 4, ep=8, vp=8, global_batch=256, source="NeMo Mixtral recipe"))
_add(ModelConfig("mixtral_8x22b", 56, 6144, 48, 16384, 32768, 4096, num_kv_heads=8, gated_mlp=True,
                 num_experts=8, moe_top_k=2), Recipe(2, 8, ep=8, global_batch=256, source="NeMo Mixtral recipe"))
_add(ModelConfig("qwen3_30b_a3b", 48, 2048, 32, 6144, 151936, 4096, num_kv_heads=4, gated_mlp=True,
                 num_experts=128, moe_top_k=8, moe_ffn_hidden_size=768, kv_channels=128),
     Recipe(1, 1, ep=8, global_batch=512, source=_MB))
_add(ModelConfig("qwen3_235b_a22b", 94, 4096, 64, 12288, 151936, 4096, num_kv_heads=4, gated_mlp=True,
                 num_experts=128, moe_top_k=8, moe_ffn_hidden_size=1536, kv_channels=128),
     Recipe(2, 8, ep=32, vp=4, global_batch=8192, source=_MB))
# DeepSeek-V3 (DeepSeek-AI 2024): 3 leading dense layers, 256 routed experts
# top-8 + 1 shared. Multi-head latent attention is approximated by GQA with
# 128 heads x 128 dims and 8 KV heads (attention parameters within ~30 %,
# total within 1 %).
_add(ModelConfig("deepseek_v3", 61, 7168, 128, 18432, 129280, 4096, num_kv_heads=8, gated_mlp=True,
                 num_experts=256, moe_top_k=8, moe_ffn_hidden_size=2048, num_shared_experts=1,
                 num_dense_layers=3, kv_channels=128),
     Recipe(2, 8, ep=64, vp=4, global_batch=8192, source=_MB))
# Kimi K2 (Moonshot AI 2025): DeepSeek-V3's architecture with 384 routed
# experts (top-8, 1 shared), one leading dense layer, 64 attention heads and
# a 163,840-token vocabulary; latent attention approximated as DeepSeek-V3's.
# Recipe: Megatron-Bridge's GB300 row (pp 4, vp 4, ep 64).
_add(ModelConfig("kimi_k2", 61, 7168, 64, 18432, 163840, 4096, num_kv_heads=8, gated_mlp=True,
                 num_experts=384, moe_top_k=8, moe_ffn_hidden_size=2048, num_shared_experts=1,
                 num_dense_layers=1, kv_channels=128),
     Recipe(1, 4, ep=64, vp=4, global_batch=4096, source="Megatron-Bridge performance summary (GB300)"))
# GPT-OSS-120B (OpenAI 2025): 128 experts top-4, 64 heads x 64 dims, 8 KV
# heads; the alternating 128-token sliding-window layers are modelled as full.
_add(ModelConfig("gpt_oss_120b", 36, 2880, 64, 2880, 201088, 4096, num_kv_heads=8, gated_mlp=True,
                 num_experts=128, moe_top_k=4, moe_ffn_hidden_size=2880, kv_channels=64),
     Recipe(1, 4, ep=8, global_batch=1280, recompute="none", source=_MB))

# Dense models of other published runs (their released configs): recipes
# are a plain data-parallel default, as these were trained with FSDP/ZeRO.
_FSDP = "FSDP / ZeRO-3 data parallel (no published Megatron recipe)"
# Released configs without a recipe here: the default is plain data
# parallelism with the tensor parallelism the model's size needs on 80 GB
_RELEASED = "released config (default: a plain layout, not a published recipe)"
# Qwen3 dense (Qwen 2025): 128-dim heads, 8 KV heads, SwiGLU, untied 151,936 vocab
_add(ModelConfig("qwen3_8b", 36, 4096, 32, 12288, 151936, 4096, num_kv_heads=8, gated_mlp=True, kv_channels=128),
     Recipe(1, 1, global_batch=256, source=_RELEASED))
_add(ModelConfig("qwen3_14b", 40, 5120, 40, 17408, 151936, 4096, num_kv_heads=8, gated_mlp=True, kv_channels=128),
     Recipe(2, 1, global_batch=256, source=_RELEASED))
_add(ModelConfig("qwen3_32b", 64, 5120, 64, 25600, 151936, 4096, num_kv_heads=8, gated_mlp=True, kv_channels=128),
     Recipe(4, 1, global_batch=256, source=_RELEASED))
# GPT-OSS-20B: GPT-OSS-120B's layer with 32 experts (top-4), 24 layers
_add(ModelConfig("gpt_oss_20b", 24, 2880, 64, 2880, 201088, 4096, num_kv_heads=8, gated_mlp=True,
                 num_experts=32, moe_top_k=4, moe_ffn_hidden_size=2880, kv_channels=64),
     Recipe(1, 1, ep=8, global_batch=512, recompute="none", source=_RELEASED))
# Nemotron-4 15B (NVIDIA 2024): squared-ReLU MLP of 4h, 8 KV heads, 256k vocab
_add(ModelConfig("nemotron4_15b", 32, 6144, 48, 24576, 256000, 4096, num_kv_heads=8),
     Recipe(2, 1, global_batch=256, source=_RELEASED))
# Llama 4 Scout 17B-16E (Meta 2025): every layer MoE, 16 experts top-1 and a
# shared expert (8,192 wide each), 40 heads x 128, 8 KV heads, 202,048
# vocab; its chunked local attention (8,192-token chunks on three of four
# layers) is full attention at the sequence lengths priced here
_add(ModelConfig("llama4_scout", 48, 5120, 40, 8192, 202048, 8192, num_kv_heads=8, gated_mlp=True,
                 num_experts=16, moe_top_k=1, moe_ffn_hidden_size=8192, num_shared_experts=1, kv_channels=128),
     Recipe(2, 1, ep=8, global_batch=1024, source=_RELEASED))
# Llama 4 Maverick 17B-128E: Scout's layer with 128 experts on every other
# layer (the others dense MLPs of 16,384): 400B parameters, 17B active
_add(ModelConfig("llama4_maverick", 48, 5120, 40, 16384, 202048, 8192, num_kv_heads=8, gated_mlp=True,
                 num_experts=128, moe_top_k=1, moe_ffn_hidden_size=8192, num_shared_experts=1, kv_channels=128,
                 moe_layer_freq=2),
     Recipe(4, 1, ep=16, global_batch=1024, source=_RELEASED))
_add(ModelConfig("mistral_7b", 32, 4096, 32, 14336, 32000, 4096, num_kv_heads=8, gated_mlp=True),
     Recipe(1, 1, global_batch=256, source=_FSDP))
# MPT (MosaicML 2023): GELU MLP of 4h, ALiBi, tied embeddings, 50,432 vocab.
_add(ModelConfig("mpt_7b", 32, 4096, 32, 16384, 50432, 2048, tie_embeddings=True),
     Recipe(1, 1, global_batch=512, recompute="full", source=_FSDP))
_add(ModelConfig("mpt_30b", 48, 7168, 64, 28672, 50432, 8192, tie_embeddings=True),
     Recipe(1, 1, global_batch=512, recompute="full", source=_FSDP))
# The rest of the MPT family as LLM Foundry's pre-training configs define it
# (scripts/train/yamls/pretrain/mpt-*.yaml: d_model, n_heads, n_layers,
# expansion_ratio 4, vocab 50,368 (760m/1b/3b use 128-dim heads), global
# batch and activation checkpointing).
for _name, _L, _h, _a, _gb, _ac in (("mpt_125m", 12, 768, 12, 256, False), ("mpt_350m", 24, 1024, 16, 256, False),
                                    ("mpt_760m", 24, 1536, 12, 256, False), ("mpt_1b", 24, 2048, 16, 512, False),
                                    ("mpt_3b", 32, 2560, 20, 512, True), ("mpt_13b", 40, 5120, 40, 1024, True),
                                    ("mpt_70b", 80, 8192, 64, 2048, True)):
  _add(ModelConfig(_name, _L, _h, _a, 4 * _h, 50368, 2048, tie_embeddings=True),
       Recipe(1, 1, global_batch=_gb, recompute="full" if _ac else "none", source=_FSDP))
# GPT-NeoX-20B (Black et al. 2022): 44 layers, untied embeddings.
_add(ModelConfig("gpt_neox_20b", 44, 6144, 64, 24576, 50432, 2048),
     Recipe(2, 4, global_batch=1536, recompute="full", sequence_parallel=False, source="GPT-NeoX 20B (ZeRO-1)"))
# Qwen2.5-72B (Qwen 2024): GQA 8 KV heads, SwiGLU, 152,064 vocab.
_add(ModelConfig("qwen2.5_72b", 80, 8192, 64, 29568, 152064, 4096, num_kv_heads=8, gated_mlp=True),
     Recipe(4, 4, vp=5, global_batch=256, source=_FSDP))

# Hybrid Mamba-2 / transformer models (Megatron-Bridge's recipes: layer
# pattern, widths, Mamba heads, state and groups; squared-ReLU MLPs, untied
# embeddings, the 131,072-token Nemotron tokenizer).
_NH = "Megatron-Bridge NemotronH recipes"
for _name, _pat, _h, _a, _g, _f, _mh, _mhd, _ms in (
    ("nemotron_h_4b", "M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M-", 3072, 32, 8, 12288, 112, 64, 128),
    ("nemotron_h_8b", "M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M-", 4096, 32, 8, 21504, 128, 64, 128),
    ("nemotron_h_47b", "M-M-M-M-M-M-M-M-M*-M-M-M-M-M-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M-M-M---MM---M-M*"
                       "-M-M-M-M-M-", 8192, 64, 8, 30720, 256, 64, 256),
    ("nemotron_h_56b", "M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*"
                       "-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M-", 8192, 64, 8, 32768, 256, 64, 256),
    ("nemotron_nano_9b_v2", "M-M-M-MM-M-M-M*-M-M-M*-M-M-M-M*-M-M-M-M*-M-MM-M-M-M-M-M-", 4480, 40, 8, 15680, 128, 80, 128),
    ("nemotron_nano_12b_v2", "M-M-M-M*-M-M-M-M*-M-M-M-M*-M-M-M-M*-M-M-M-M*-M-M-M-M*-M-M-M-M-", 5120, 40, 8, 20480,
     128, 80, 128),
    ("nemotron_3_nano_4b", "M-M-M-MM-M-M*-M-M*-M-M-M*-M-M-MM*-MMM-M-M-", 3136, 40, 8, 12544, 96, 80, 128)):
  _add(ModelConfig(_name, len(_pat), _h, _a, _f, 131072, 8192, num_kv_heads=_g, kv_channels=128,
                   layer_pattern=_pat, mamba_num_heads=_mh, mamba_head_dim=_mhd, mamba_state_dim=_ms,
                   mamba_num_groups=8),
       Recipe(1, 1, global_batch=768, recompute="none", source=_NH))
# Nemotron 3 Nano 30B-A3B: 23 Mamba-2, 6 attention (2 KV groups) and 23 MoE
# layers (128 experts of width 1,856, top-6, a shared expert of 3,712).
_add(ModelConfig("nemotron_3_nano", 52, 2688, 32, 1856, 131072, 8192, num_kv_heads=2, kv_channels=128,
                 num_experts=128, moe_top_k=6, moe_ffn_hidden_size=1856, num_shared_experts=2,
                 layer_pattern="MEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEMEM*EMEMEMEME",
                 mamba_num_heads=64, mamba_head_dim=64, mamba_state_dim=128, mamba_num_groups=8),
     Recipe(1, 1, ep=8, global_batch=512, recompute="none", source=_NH))

# Nemotron 3 Super 120B-A12B: 40 Mamba-2, 8 attention (2 KV groups) and 40
# LatentMoE layers (512 experts of width 2,688 at the latent width 1,024,
# top-22, a shared expert of 5,376, squared ReLU); one MTP block (attention
# + MoE) that Megatron-Bridge's recipe runs twice (mtp_num_layers 2,
# repeated layer). The model hub config's numbers, as public model-loading
# code checks them; 123.6B parameters with the MTP block, 12.8B active.
# The recipe's tensor parallelism of 4 exceeds the 2 KV groups the Megatron
# space lets a rank hold; its default is the performance tables' tp 2.
_add(ModelConfig("nemotron_3_super", 88, 4096, 32, 2688, 131072, 8192, num_kv_heads=2, kv_channels=128,
                 num_experts=512, moe_top_k=22, moe_ffn_hidden_size=2688, num_shared_experts=2,
                 layer_pattern="MEMEMEM*EMEMEMEM*EMEMEMEM*EMEMEMEMEM*EMEMEMEMEM*EMEMEMEMEM*EMEMEMEMEM*EMEMEMEM*EMEMEMEME",
                 mamba_num_heads=128, mamba_head_dim=64, mamba_state_dim=128, mamba_num_groups=8,
                 moe_latent_size=1024, mtp_layers=2, mtp_pattern="*E", mtp_shared=True),
     Recipe(2, 1, ep=8, global_batch=3072, recompute="none", source=_NH))

MODELS = tuple(sorted(_CATALOG))

# Names published tables use, normalized (lower case, alphanumerics only).
_ALIASES = {
    "gpt3175b": "gpt3_175b", "gpt3175b1746b": "gpt3_175b", "gpt175bkorthikantitable3": "gpt3_175b",
    "gpt22bkorthikantitable3": "gpt_22b", "gpt530bkorthikantitable3": "gpt_529.6b",
    "gpt1tkorthikantitable3": "gpt_1t", "gpt5296bmtnlglike": "gpt_529.6b", "gpt10080b": "gpt_1t",
    "gpt35b": "gpt3_5b", "gpt320b": "gpt3_20b",
    "llama27b": "llama2_7b", "llama213b": "llama2_13b", "llama270b": "llama2_70b",
    "llama38b": "llama3_8b", "llama370b": "llama3_70b", "llama31405b": "llama3_405b",
    "llama3405b": "llama3_405b", "nemotron8b": "nemotron_8b", "nemotron22b": "nemotron_22b",
    "nemotron340b": "nemotron_340b", "qwen330ba3b": "qwen3_30b_a3b", "qwen3235ba22b": "qwen3_235b_a22b",
    "deepseekv3": "deepseek_v3", "kimik2": "kimi_k2", "kimik2instruct": "kimi_k2", "gptoss120b": "gpt_oss_120b",
    "mixtral8x7b": "mixtral_8x7b", "mixtral8x22b": "mixtral_8x22b", "bloom176b": "bloom_176b",
    # Llama 3.1 / 3.3 keep Llama 3's dims (longer context only)
    "llama318b": "llama3_8b", "llama3170b": "llama3_70b", "llama3370b": "llama3_70b",
    "metallama318b": "llama3_8b", "metallama38b": "llama3_8b", "metallama3170b": "llama3_70b",
    "nemotron4340b": "nemotron_340b", "mistral7bv01": "mistral_7b",
    # OPT-175B has GPT-3 175B's shape (96 x 12,288, 96 heads; ReLU MLP of 4h)
    "opt175b": "gpt3_175b", "gptneox20b": "gpt_neox_20b", "qwen2572b": "qwen2.5_72b",
    "nemotronh4b": "nemotron_h_4b", "nemotronh8b": "nemotron_h_8b", "nemotronh47b": "nemotron_h_47b",
    "nemotronh56b": "nemotron_h_56b", "nemotronnano9bv2": "nemotron_nano_9b_v2",
    "nemotronnanov29b": "nemotron_nano_9b_v2", "nemotronnano12bv2": "nemotron_nano_12b_v2",
    "nemotronnanov212b": "nemotron_nano_12b_v2", "nemotron3nano": "nemotron_3_nano",
    "nemotron3nano30ba3b": "nemotron_3_nano", "nemotron3nano4b": "nemotron_3_nano_4b",
    "nvidianemotron3nano30ba3b": "nemotron_3_nano", "nemotron3super": "nemotron_3_super",
    "nemotron3super120ba12b": "nemotron_3_super", "nvidianemotron3super120ba12b": "nemotron_3_super",
    "qwen38b": "qwen3_8b", "qwen314b": "qwen3_14b", "qwen332b": "qwen3_32b", "gptoss20b": "gpt_oss_20b",
    "nemotron415b": "nemotron4_15b", "llama4scout": "llama4_scout", "llama4scout17b16e": "llama4_scout",
    "llama4scout17b16einstruct": "llama4_scout", "metallama4scout17b16e": "llama4_scout",
    "llama4e16": "llama4_scout", "llama4maverick": "llama4_maverick", "llama4maverick17b128e": "llama4_maverick",
    "llama4maverick17b128einstruct": "llama4_maverick", "metallama4maverick17b128e": "llama4_maverick",
    "llama4e128": "llama4_maverick",
}


def _norm(name: str) -> str:
  return re.sub(r"[^a-z0-9]", "", name.lower())


def find_model(name: str) -> tuple[ModelConfig, Recipe]:
  """Catalog entry by catalog name or a published table's name ("LLAMA3.1_405B",
  "GPT-3 175B (174.6B)", "Qwen3_30B_a3B"). Unknown: ValueError naming it."""
  if name in _CATALOG:
    return _CATALOG[name]
  key = _norm(name)
  for n in _CATALOG:
    if _norm(n) == key:
      return _CATALOG[n]
  if key in _ALIASES:
    return _CATALOG[_ALIASES[key]]
  raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}")


def recipe_defaults(model: ModelConfig, recipe: Recipe, num_devices: int, space: str = "megatron",
                    devices_per_slice: int | None = None) -> dict[str, Any]:
  """The recipe as knob values of `space` ('megatron', 'jax_mesh' or 'maxtext') on
  `num_devices` devices; data parallelism takes what the recipe leaves."""
  mp = recipe.tp * recipe.pp * recipe.cp
  if num_devices % mp:
    raise ValueError(f"model {model.name!r}: its recipe's tp*pp*cp={mp} does not divide {num_devices} devices")
  dp = num_devices // mp
  if space == "megatron":
    vals: dict[str, Any] = dict(
        tensor_model_parallel_size=recipe.tp, pipeline_model_parallel_size=recipe.pp,
        context_parallel_size=recipe.cp, data_parallel_size=dp,
        use_distributed_optimizer=recipe.distributed_optimizer, micro_batch_size=recipe.mbs,
        recompute_granularity=recipe.recompute, ddp_bucket_size=40_000_000)
    if model.is_moe:
      vals["expert_model_parallel_size"] = recipe.ep
      vals["expert_tensor_parallel_size"] = 1
    if recipe.pp > 1:
      vals["virtual_pipeline_model_parallel_size"] = recipe.vp
    if recipe.tp > 1:
      vals["sequence_parallel"] = recipe.sequence_parallel or model.is_moe
      vals["tp_comm_overlap"] = False
    if recipe.recompute == "full":
      vals["recompute_method"] = "uniform"
      vals["recompute_num_layers"] = 1
    if recipe.distributed_optimizer:
      vals["overlap_grad_reduce"] = True
      vals["overlap_param_gather"] = True
    return vals
  if space == "jax_mesh":
    # MaxText's published recipes: FSDP over every chip of a slice, data
    # parallelism over DCN between slices, full remat, all overlap flags on.
    slice_ = devices_per_slice or num_devices
    if num_devices % slice_:
      raise ValueError(f"{num_devices} devices is not a whole number of {slice_}-chip slices")
    return dict(ici_data=1, ici_fsdp=slice_, ici_tensor=1, ici_sequence=1, ici_expert=1, ici_stage=1,
                dcn_data=num_devices // slice_, dcn_fsdp=1, dcn_stage=1,
                per_device_batch_size=max(1, recipe.global_batch // num_devices),
                remat_policy="full", latency_hiding_scheduler=True, async_collectives=True)
  if space == "maxtext":
    # targets/maxtext.py's knob defaults are MaxText's recipe (fsdp over each
    # slice, data over DCN, full remat, the whole batch in one micro-step)
    return {}
  raise ValueError(f"unknown space {space!r}; known: megatron, jax_mesh, maxtext")


def make_workload(model: str, num_devices: int, global_batch: int | None = None, precision: str = "bf16",
                  space: str = "megatron", devices_per_slice: int | None = None,
                  seq_len: int | None = None, task: str = "pretrain",
                  example_lens: tuple[int, ...] = ()) -> Workload:
  """A training workload of a catalog model whose `default` is its
  framework recipe on `num_devices` devices, in the vocabulary of `space`
  (pre-training; `task='finetune'` with `example_lens`, the lengths of its
  examples, for a full fine-tune whose rows may be packed)."""
  cfg, recipe = find_model(model)
  if seq_len is not None:
    cfg = dataclasses.replace(cfg, seq_len=int(seq_len))
  gb = int(global_batch or recipe.global_batch)
  recipe = dataclasses.replace(recipe, global_batch=gb)
  if precision not in ("bf16", "fp16", "fp8"):
    raise ValueError(f"workload {model!r}: precision must be bf16, fp16 or fp8, got {precision!r}")
  default = recipe_defaults(cfg, recipe, num_devices, space, devices_per_slice)
  return Workload(name=f"{cfg.name}_gbs{gb}", model=cfg, global_batch=gb, precision=precision,
                  default=default, task=task, example_lens=tuple(example_lens))
