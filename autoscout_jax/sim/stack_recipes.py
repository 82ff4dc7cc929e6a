"""What published runs' stacks did that their rows do not say, read off the
sources' own configuration files.

Where it sits: sim/published.py (a row -> plan, model, hardware) asks
`moe_dispatch` for the MoE dispatch fields of a row; nothing else imports
this module. Each entry names the config it comes from, so a reader can
check it; no value here is fitted to anything.
"""

from __future__ import annotations

import re

# How Megatron-Bridge's performance recipes dispatch MoE tokens, read off the
# source's own configs (scripts/performance/configs/{qwen,deepseek}/
# *_workload_base_configs.py): (model, hardware) patterns -> ep_dedup (0:
# moe_token_dispatcher_type "alltoall", NCCL all-to-all; 1: the "flex"
# DeepEP / HybridEP dispatcher, the other recipes' default) and whether
# `moe_a2a_overlap` is on for a layout whose EP crosses nodes under an
# interleaved pipeline (Megatron-core's overlapped schedule needs virtual
# stages once pp > 1; the same recipes keep node-local EP unoverlapped).
MBRIDGE_MOE_DISPATCH = (
    (r"qwen3[_ ]?235b", r"h100", 0.0, 1.0),  # QWEN3_235B_A22B_..._H100_*: alltoall, overlap
    (r"qwen3[_ ]?235b", r"b[23]00", 0.0, 0.0),  # ..._B200_* / _B300_*: alltoall
    (r"deepseek", r"b200", 1.0, 1.0),  # DEEPSEEK_V3_..._B200_FP8_MX_V2 (pp 8, vp 2, ep 32): deepep, overlap
)
# Recipes that overlap the all-to-all of an expert-parallel group inside one
# NVLink domain as well, for one precision: (model, hardware, precision)
# patterns. DEEPSEEK_V3_..._GB300_FP8_MX / _GB200_FP8_MX / _B300_FP8_MX:
# moe_a2a_overlap True (hybridep; their BF16, FP8-CS and NVFP4 presets turn
# it off), in scripts/performance/configs/deepseek/deepseek_workload_base_configs.py;
# KIMI_K2_PRETRAIN_CONFIG_GB300_FP8_MX likewise (kimi/kimi_workload_base_configs.py;
# its GB200 preset does not).
MBRIDGE_LOCAL_OVERLAP = (
    (r"deepseek", r"gb300|gb200|b300", r"mxfp8|fp8[-_ ]?mx"),
    (r"kimi", r"gb300", r"mxfp8|fp8[-_ ]?mx"),
)


def _mbridge(row) -> tuple[str, str, str] | None:
  """(model, hardware, precision) of a Megatron-Bridge row, lower case;
  None for another source's row."""
  framework = (row.get("framework") or "").lower()
  if row.get("source_id") != "MBRIDGE" and "megatron-bridge" not in framework:
    return None
  return tuple((row.get(k) or "").lower() for k in ("model", "hardware", "precision"))


def _first(table, keys: tuple[str, ...]) -> tuple | None:
  """The values after the patterns of the first entry of `table` whose
  patterns (one per key, in order) all match `keys`; None without one."""
  for entry in table:
    pats = entry[:len(keys)]
    if all(re.search(p, k) for p, k in zip(pats, keys)):
      return entry[len(keys):]
  return None


def moe_dispatch(row, cross_node: bool, overlappable: bool) -> dict[str, float]:
  """ep_dedup / ep_overlap of a MoE row: Megatron-Bridge's recipe facts
  (`MBRIDGE_MOE_DISPATCH`, `MBRIDGE_LOCAL_OVERLAP`) for its own rows; the
  defaults elsewhere. Megatron-core overlaps the all-to-all without a
  pipeline or in its interleaved 1F1B schedule (virtual stages once pp > 1):
  `overlappable` says the layout has one of those."""
  keys = _mbridge(row)
  if keys is None:
    return {}
  if _first(MBRIDGE_LOCAL_OVERLAP, keys) is not None:
    return dict(ep_dedup=1.0, ep_overlap=float(overlappable))
  found = _first(MBRIDGE_MOE_DISPATCH, keys[:2])
  if found is None:
    return {}
  dedup, overlap = found
  return dict(ep_dedup=dedup, ep_overlap=float(overlap and cross_node and overlappable))


# Megatron's recompute modules of Megatron-Bridge's performance presets,
# read off scripts/performance/configs/nemotronh/nemotron_3_workload_base_configs.py
# (NEMOTRON_3_{NANO,SUPER}_PRETRAIN_CONFIG_<GPU>_<PRECISION>_V1): (model,
# hardware, precision) patterns -> modules, () where the preset recomputes
# nothing. The first match wins.
MBRIDGE_RECOMPUTE = (
    (r"nemotron[_ ]?3[_ ]?nano", r"h100", r"bf16", ("moe", "layernorm")),
    (r"nemotron[_ ]?3[_ ]?nano", r"h100", r"fp8", ("moe", "layernorm", "core_attn", "moe_act")),
    (r"nemotron[_ ]?3[_ ]?nano", r"gb300|gb200|b300|b200", r".", ()),
    (r"nemotron[_ ]?3[_ ]?super", r"gb200", r"bf16|mxfp8|fp8[-_ ]?mx", ("moe_act", "layernorm", "core_attn", "moe")),
    (r"nemotron[_ ]?3[_ ]?super", r"(?<!g)b200", r"bf16|mxfp8|fp8[-_ ]?mx", ("moe_act", "layernorm", "core_attn")),
    (r"nemotron[_ ]?3[_ ]?super", r"gb300|gb200|b300|b200", r".", ()),
)


def recompute_modules(row) -> tuple[str, ...] | None:
  """Megatron's recompute modules of a Megatron-Bridge row's preset
  (`MBRIDGE_RECOMPUTE`); None where no preset is known (the row's own
  recompute column, or the least that fits, decides)."""
  keys = _mbridge(row)
  if keys is None or (row.get("recompute") or "").strip():  # the row says what it recomputed
    return None
  found = _first(MBRIDGE_RECOMPUTE, keys)
  return None if found is None else found[0]


# Layers whose activations Megatron-Bridge's Llama 3 70B presets offload to
# host memory (cpu_offloading_num_layers; their Megatron-FSDP presets
# recompute nothing), read off scripts/performance/configs/llama/
# llama3_workload_base_configs.py (LLAMA3_70B_PRETRAIN_CONFIG_<GPU>_<PRECISION>_V1/_V2):
# (model, hardware, precision) patterns -> layers offloaded. Only rows that
# say FSDP (the tables' FSDP column) take them.
MBRIDGE_OFFLOAD = (
    (r"llama3[_ .]?70b", r"gb300", r"bf16", 30),
    (r"llama3[_ .]?70b", r"gb300", r"fp8", 20),
    (r"llama3[_ .]?70b", r"gb200", r"bf16", 20),
    (r"llama3[_ .]?70b", r"gb200", r"fp8", 40),
    (r"llama3[_ .]?70b", r"(?<!g)b300", r".", 0),
    (r"llama3[_ .]?70b", r"(?<!g)b200", r"fp8", 5),
)


def offload_layers(row) -> int | None:
  """Layers whose activations a Megatron-Bridge FSDP row's preset offloads
  (`MBRIDGE_OFFLOAD`); None where no preset is known."""
  keys = _mbridge(row)
  if keys is None or "fsdp" not in (row.get("sharding") or "").lower() or (row.get("recompute") or "").strip():
    return None
  # "FP8" alone is current scaling (FP8-CS); MXFP8 presets of these models are not FSDP
  found = _first(MBRIDGE_OFFLOAD, keys)
  return None if found is None else found[0]
