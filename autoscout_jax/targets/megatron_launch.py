"""How a Megatron candidate is spoken to Megatron-LM: its argument list
(the report's launch artifact) and launch.sh, one torchrun line around
Megatron-LM's pretrain_gpt.py (pretrain_hybrid.py for a hybrid Mamba-2
model) with the model, precision and a synthetic-data schedule.

Where it sits: targets/__init__.py calls `artifact` and `launch_files` for
spaces of the megatron family (targets/megatron.py: the knobs, their typed
Config and the simulators' plan); the report writes launch.sh beside
report.md. Knob names are Megatron-LM's argument names, so most knobs are
spelled by rule (`--` + dashes); NOT_ARGS (megatron.py) lists the ones
translated here.

Sequence packing (a fine-tuning workload with example lengths): Megatron-LM
packs documents into rows and, with `--dataloader-inter-document-masking`
(Megatron-LM core_v0.19.0 and newer), hands the attention each row's
document boundaries (`cu_seqlens`, megatron-core's PackedSeqParams in THD
format), restarts positions at every document and, with `--eod-mask-loss`,
trains no position on the next document's first token. The older
`--reset-attention-mask` builds a dense mask that Transformer Engine's
causal kernels ignore (NVIDIA/Megatron-LM issue 2357), so it is not used.
Padded fine-tuning (one example per row) is Megatron-LM's `--sft` data set
with one conversation per jsonl line.
"""

from __future__ import annotations

import shlex
from typing import Any

from autoscout_jax.sim import hardware
from autoscout_jax.sim.vspace import SimSpace
from autoscout_jax.space import Candidate
from autoscout_jax.targets.megatron import FAMILY, NOT_ARGS, Config
from autoscout_jax.workload import Workload

PACKED_ARGS = ["--dataloader-inter-document-masking", "--eod-mask-loss"]
PACKED_NOTE = ("packed several to a row, attention within each example (--dataloader-inter-document-masking: "
               "cu_seqlens, THD; Megatron-LM core_v0.19.0 or newer; or --sft with several conversations "
               "per jsonl line)")
PADDED_NOTE = ("one example per row, padded to --seq-length (Megatron-LM's --sft data set, one conversation "
               "per jsonl line, instead of --mock-data, which packs documents)")


def artifact(space: SimSpace, cand: Candidate, workload: Workload) -> dict[str, Any]:
  """Megatron-LM arguments: every active knob by its own name (integers,
  then choices, then switches that are on, each in the space's order), the
  interleaving as layers per virtual stage, packing as its data-loader
  flags, and the global batch."""
  cfg = Config.from_candidate(cand)
  values = cand.values
  names = [k.name for k in space.knobs if k.name in values and k.name not in NOT_ARGS]
  flag = lambda k: f"--{k.replace('_', '-')}"
  args: list[str] = []
  for k in names:  # bool before int: a bool is an int
    if isinstance(values[k], int) and not isinstance(values[k], bool):
      args += [flag(k), str(int(values[k]))]
  for k in names:
    if isinstance(values[k], str) and values[k] != "none":
      args += [flag(k), values[k]]
  args += [flag(k) for k in names if isinstance(values[k], bool) and values[k]]
  vp, pp = cfg.virtual_pipeline_model_parallel_size, cfg.pipeline_model_parallel_size
  if vp > 1:
    args += ["--num-layers-per-virtual-pipeline-stage",
             str(max(1, workload.model.num_layers // (pp * vp)))]
  if cfg.use_torch_fsdp2:  # Megatron-LM refuses FSDP2 with its fused weight-gradient accumulation
    args.append("--no-gradient-accumulation-fusion")
  if cfg.sequence_packing:
    args += PACKED_ARGS
  if space.facts.get("transformer_impl") == "local":
    args += ["--transformer-impl", "local"]
  args += ["--global-batch-size", str(int(workload.global_batch))]
  out = {"kind": FAMILY, "args": args, "data_parallel_size (derived)": cfg.data_parallel_size}
  if workload.example_lens:
    out["sequence_packing"] = PACKED_NOTE if cfg.sequence_packing else PADDED_NOTE
  return out


# --- launch.sh: the torchrun line around Megatron-LM's pretrain_gpt.py (pretrain_hybrid.py) ---

def _model_args(workload) -> list[str]:
  """The model's dimensions, sequence length and precision in Megatron-LM's spelling."""
  m = workload.model
  a = ["--num-layers", str(m.num_layers), "--hidden-size", str(m.hidden_size),
       "--ffn-hidden-size", str(m.ffn_hidden_size), "--num-attention-heads", str(m.num_heads),
       "--seq-length", str(m.seq_len), "--max-position-embeddings", str(m.seq_len)]
  if m.kv_heads != m.num_heads:
    a += ["--group-query-attention", "--num-query-groups", str(m.kv_heads)]
  if m.kv_channels:
    a += ["--kv-channels", str(m.kv_channels)]
  if m.gated_mlp:  # Llama-style blocks
    a += ["--swiglu", "--position-embedding-type", "rope", "--normalization", "RMSNorm",
          "--disable-bias-linear"]
  if m.is_hybrid:  # Megatron-core's hybrid stack (Nemotron-H style: squared-ReLU MLPs, no position embedding)
    a += ["--hybrid-layer-pattern", m.layer_pattern,
          "--spec", "megatron.core.models.hybrid.hybrid_layer_specs", "hybrid_stack_spec",
          "--mamba-num-heads", str(m.mamba_num_heads), "--mamba-head-dim", str(m.mamba_head_dim),
          "--mamba-state-dim", str(m.mamba_state_dim), "--mamba-num-groups", str(m.mamba_num_groups)]
    if not m.gated_mlp:
      a += ["--squared-relu", "--position-embedding-type", "none", "--normalization", "RMSNorm",
            "--disable-bias-linear"]
  if not m.tie_embeddings:
    a.append("--untie-embeddings-and-output-weights")
  if m.is_moe:
    a += ["--num-experts", str(m.num_experts), "--moe-router-topk", str(m.moe_top_k),
          "--moe-ffn-hidden-size", str(m.moe_ffn_hidden_size or m.ffn_hidden_size)]
    if m.num_shared_experts:
      a += ["--moe-shared-expert-intermediate-size",
            str(m.num_shared_experts * (m.moe_ffn_hidden_size or m.ffn_hidden_size))]
    if (m.num_dense_layers or m.moe_layer_freq > 1) and not m.is_hybrid:  # a hybrid's pattern places them
      k = m.moe_layer_freq
      groups = (m.num_layers - m.num_dense_layers) // k
      a += ["--moe-layer-freq", f"([0]*{m.num_dense_layers}+[1]*{groups})" if k == 1 else
            f"([0]*{m.num_dense_layers}+([0]*{k - 1}+[1])*{groups})"]
    if m.moe_latent_size:
      a += ["--moe-latent-size", str(m.moe_latent_size)]
  if m.mtp_layers:
    a += ["--mtp-num-layers", str(m.mtp_layers)]
    if m.mtp_shared:
      a.append("--mtp-use-repeated-layer")
    if m.mtp_pattern and m.is_hybrid:
      a += ["--mtp-hybrid-override-pattern", m.mtp_pattern,
            "--mtp-spec", "megatron.core.models.hybrid.hybrid_layer_specs", "hybrid_stack_spec"]
  a += _PRECISION_ARGS[workload.precision]
  return a


_PRECISION_ARGS = {"bf16": ["--bf16"], "fp16": ["--fp16"], "fp32": [],
                   "fp8": ["--bf16", "--fp8-format", "hybrid"]}
# A runnable benchmark without a dataset: synthetic tokens, a fixed schedule.
_TRAIN_ARGS = ["--train-iters", "${TRAIN_ITERS}", "--lr", "3.0e-4", "--min-lr", "3.0e-5",
               "--lr-decay-style", "cosine", "--lr-warmup-iters", "10", "--weight-decay", "0.1",
               "--clip-grad", "1.0", "--adam-beta1", "0.9", "--adam-beta2", "0.95",
               "--init-method-std", "0.02", "--log-interval", "1", "--eval-iters", "0",
               "--mock-data", "--tokenizer-type", "NullTokenizer"]


def launch_sh(space: SimSpace, cand: Candidate, workload: Workload, cluster: Any,
              summary: str = "") -> str:
  """launch.sh: one complete torchrun line (nodes, GPUs per node, every
  parallelism, batch, recompute and overlap flag of `cand`, the model,
  sequence length and precision) around Megatron-LM's pretrain_gpt.py."""
  # A host of an NVL72-class rack holds one compute tray, not the whole rack.
  gpn = int(cluster.node_size) if cluster.node_size <= 8 else hardware.RACK_TRAY
  nodes = max(1, int(cluster.num_devices) // gpn)
  args = artifact(space, cand, workload)["args"]
  script_args = args + _model_args(workload) + _TRAIN_ARGS + ["--vocab-size", str(workload.model.vocab_size)]
  lines = [f"torchrun --nnodes {nodes} --nproc-per-node {gpn} --node-rank \"$NODE_RANK\" "
           "--master-addr \"$MASTER_ADDR\" --master-port \"$MASTER_PORT\"",
           f"  \"$MEGATRON_LM/{'pretrain_hybrid.py' if workload.model.is_hybrid else 'pretrain_gpt.py'}\""]
  i = 0
  while i < len(script_args):  # one flag (and its value) per line
    j = i + 1
    while j < len(script_args) and not script_args[j].startswith("--"):
      j += 1
    lines.append("  " + " ".join(_quote(x) for x in script_args[i:j]))
    i = j
  return "\n".join([
      "#!/usr/bin/env bash",
      f"# Megatron-LM: {workload.name} on {cluster.name} ({nodes} nodes x {gpn} GPUs), the configuration",
      f"# autoscout_jax recommended{(': ' + summary) if summary else ''} (report.html beside this file).",
      "# On every node: NODE_RANK=<0..nodes-1> MASTER_ADDR=<node 0> MEGATRON_LM=<checkout> bash launch.sh",
      "# Synthetic tokens (--mock-data): swap in --data-path and a tokenizer to train on data.",
      *_packing_comment(workload, cand),
      "set -euo pipefail",
      ': "${MEGATRON_LM:?set MEGATRON_LM to a Megatron-LM checkout}"',
      ': "${NODE_RANK:=0}" "${MASTER_ADDR:=localhost}" "${MASTER_PORT:=6000}" "${TRAIN_ITERS:=100}"',
      ("export CUDA_DEVICE_MAX_CONNECTIONS=8  # FSDP2 overlaps its gathers on several streams (Megatron: > 1)"
       if Config.from_candidate(cand).use_torch_fsdp2 else
       "export CUDA_DEVICE_MAX_CONNECTIONS=1  # Megatron's requirement for overlapped TP/SP communication"),
      " \\\n".join(lines), ""])


def _packing_comment(workload: Workload, cand: Candidate) -> list[str]:
  if not workload.example_lens:
    return []
  note = PACKED_NOTE if Config.from_candidate(cand).sequence_packing else PADDED_NOTE
  return ["# Fine-tuning examples: " + note]


def _quote(x: str) -> str:
  if x.startswith("${"):
    return f'"{x}"'
  return shlex.quote(x)


def launch_files(space: SimSpace, cand: Candidate, workload: Workload, cluster: Any,
                 summary: str = "") -> dict[str, str]:
  return {"launch.sh": launch_sh(space, cand, workload, cluster, summary)}
