"""The maxtext family's vocabulary: MaxText's own configuration keys, a
candidate typed (`Config`) and spelled as the keys MaxText reads
(`overrides`: the model, the candidate, the keys of a run on this
machine; `override_lines`: its command line's `key=value` lines).

Where it sits: under targets/maxtext.py (the family module: space, plan
for the simulators, launch artifact), which re-exports these names; what
turns a candidate into a MaxText run -- the F2 evaluator
(maxtext_compile.py), the F3 evaluator (local/maxtext_profile.py), the
table tool (tools/maxtext_table.py) and the artifact -- goes through
`overrides`. The MaxText children (package maxtext_child, Python 3.12)
receive the keys. jax-free.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from autoscout_jax.sim.plan import Recompute
from autoscout_jax.space import Candidate
from autoscout_jax.workload import Workload

# Mesh axes MaxText shards over, in its own names; the knob of axis `a` is
# `ici_<a>_parallelism` (inside a slice) or `dcn_<a>_parallelism` (across).
AXES = ("data", "fsdp", "fsdp_transpose", "tensor", "tensor_sequence", "context", "expert", "pipeline")
# Across slices: pipeline only where the cluster has slices to stage over
# (its knob is left out otherwise; MaxText's default is 1). With pipelining
# only across slices num_pipeline_microbatches stays MaxText's default (one
# per stage): the knob lives under ICI pipelining (a knob has one parent).
DCN_AXES = ("data", "fsdp", "pipeline")
# remat_policy (MaxText's names) -> what the simulators' plan recomputes.
REMAT: Mapping[str, Recompute] = {"full": Recompute.FULL, "save_qkv_proj": Recompute.FULL,
                                  "save_dot_except_mlp": Recompute.DOTS, "minimal": Recompute.DOTS}
FLAG_KNOBS = ("latency_hiding_scheduler", "async_collectives", "collective_matmul")  # TPU/GPU only
# Catalog models (autoscout_jax/sim/catalog.py) MaxText ships a config for
# (maxtext/configs/models/<name>.yml): the workload says `model_name=...`
# when its model is exactly the catalog's (tests check the dims agree).
CATALOG = {"llama2_7b": "llama2-7b", "llama2_13b": "llama2-13b", "llama2_70b": "llama2-70b",
           "llama3_8b": "llama3-8b", "llama3_70b": "llama3-70b", "llama3_405b": "llama3.1-405b",
           "mixtral_8x7b": "mixtral-8x7b", "mixtral_8x22b": "mixtral-8x22b"}
# What a run on this machine's CPU needs besides the candidate (no TPU, no
# dataset, no checkpoints, one process).
CPU_RUN_KEYS = {"hardware": "cpu", "dataset_type": "synthetic", "enable_checkpointing": False,
                "skip_jax_distributed_system": True}


def ici(axis: str) -> str:
  return f"ici_{axis}_parallelism"


def dcn(axis: str) -> str:
  return f"dcn_{axis}_parallelism"


def check_job(workload: Workload) -> None:
  """One clear error for a job this family would measure as something else.
  LoRA: MaxText 0.2.5 trains adapters only in its SFT trainer (Tunix + Qwix);
  the pre-training step this family compiles and times never adds them, so
  every weight would train. Example lengths: its synthetic data fills every
  row, so padding and packing would go unmeasured. Full fine-tuning runs.
  A hybrid Mamba-2 model: MaxText builds transformer decoders."""
  if workload.model.is_hybrid:
    raise ValueError(f"model {workload.model.name!r} is a hybrid Mamba-2/transformer model; MaxText (and the "
                     "JAX-mesh family's MaxText launch) builds transformer decoders: use the megatron family")
  if workload.model.moe_latent_size or workload.model.mtp_layers:
    raise ValueError(f"model {workload.model.name!r} has LatentMoE or multi-token prediction, which this "
                     "family's MaxText mapping does not carry: use the megatron family")
  if workload.is_lora:
    raise ValueError(
        f"workload {workload.name!r}: the maxtext family cannot run LoRA (lora_rank={workload.lora_rank}): "
        "MaxText 0.2.5 trains adapters only in its SFT trainer, not in the pre-training step this family "
        "compiles and times, so every weight would train; use the local family for LoRA, or lora_rank=0 "
        "for full fine-tuning")
  if workload.example_lens:
    raise ValueError(f"workload {workload.name!r}: the maxtext family runs full synthetic rows; example_lens "
                     "(padding, sequence packing) is measured by the local family")


@dataclasses.dataclass(frozen=True)
class Config:
  """A MaxText candidate, typed: ICI and DCN degrees by axis, the batch
  split, pipelining, remat, MoE and attention choices, XLA flag knobs."""

  ici: Mapping[str, int]
  dcn: Mapping[str, int]
  per_device_batch_size: int
  gradient_accumulation_steps: int
  remat_policy: str
  scan_layers: bool = True
  num_pipeline_microbatches: int | None = None
  moe: Mapping[str, bool] = dataclasses.field(default_factory=dict)  # sparse_matmul, megablox
  attention: str | None = None
  flags: Mapping[str, bool] = dataclasses.field(default_factory=dict)

  @classmethod
  def from_candidate(cls, cand: Candidate | Mapping[str, Any]) -> "Config":
    v = dict(cand.values if isinstance(cand, Candidate) else cand)
    ici_d = {a: int(v.pop(ici(a))) for a in AXES if ici(a) in v}
    dcn_d = {a: int(v.pop(dcn(a))) for a in DCN_AXES if dcn(a) in v}
    flags = {k: bool(v.pop(k)) for k in FLAG_KNOBS if k in v}
    moe = {k: bool(v.pop(k)) for k in ("sparse_matmul", "megablox") if k in v}
    remat = str(v.pop("remat_policy"))
    if remat not in REMAT:
      raise ValueError(f"unknown remat_policy {remat!r}; known: {list(REMAT)}")
    npm = v.pop("num_pipeline_microbatches", None)
    cfg = cls(ici_d, dcn_d, int(v.pop("per_device_batch_size")), int(v.pop("gradient_accumulation_steps")),
              remat, bool(v.pop("scan_layers", True)), None if npm is None else int(npm), moe,
              v.pop("attention", None), flags)
    if v:
      raise ValueError(f"unknown knob(s) for the maxtext family: {sorted(v)}")
    return cfg

  @property
  def pipelined(self) -> bool:
    return self.ici.get("pipeline", 1) > 1 or self.dcn.get("pipeline", 1) > 1

  def keys(self) -> dict[str, Any]:
    """The candidate as MaxText keys (every mesh axis spelled, so MaxText's
    defaults, e.g. ici_fsdp_parallelism=-1, never fill in for us)."""
    out: dict[str, Any] = {ici(a): int(self.ici.get(a, 1)) for a in AXES}
    out.update({dcn(a): int(self.dcn.get(a, 1)) for a in DCN_AXES})
    out.update(per_device_batch_size=self.per_device_batch_size,
               gradient_accumulation_steps=self.gradient_accumulation_steps,
               remat_policy=self.remat_policy, scan_layers=True if self.pipelined else self.scan_layers)
    if self.pipelined and self.num_pipeline_microbatches:
      out["num_pipeline_microbatches"] = self.num_pipeline_microbatches
    out.update(self.moe)
    if self.attention:
      out["attention"] = self.attention
    return out


def model_keys(workload: Workload) -> dict[str, Any]:
  """MaxText's model settings for the workload: `model_name` for a catalog
  model MaxText ships (unchanged dims), else the explicit dimensions."""
  from autoscout_jax.sim import catalog
  check_job(workload)  # every path to MaxText's keys (space, overrides, tables) refuses LoRA
  m = workload.model
  out: dict[str, Any] = {"max_target_length": m.seq_len,
                         "dtype": "float32" if workload.precision == "fp32" else "bfloat16"}
  try:
    known = catalog.find_model(m.name)[0] == m
  except (KeyError, ValueError):
    known = False
  if known and m.name in CATALOG:
    return {"model_name": CATALOG[m.name], **out}
  if m.num_dense_layers or m.num_shared_experts or m.moe_layer_freq > 1:
    raise ValueError(f"model {m.name!r}: dense layers among the MoE ones / shared experts need a MaxText model config; "
                     f"the explicit-dims path builds a uniform decoder")
  mlp = (m.moe_ffn_hidden_size or m.ffn_hidden_size) if m.is_moe else m.ffn_hidden_size
  out.update(base_num_decoder_layers=m.num_layers, base_emb_dim=m.hidden_size, base_num_query_heads=m.num_heads,
             base_num_kv_heads=m.kv_heads, head_dim=m.head_dim, base_mlp_dim=mlp, vocab_size=m.vocab_size,
             mlp_activations=["silu", "linear"] if m.gated_mlp else ["gelu"],
             logits_via_embedding=bool(m.tie_embeddings))
  if m.is_moe:  # MaxText's MoE block takes base_moe_mlp_dim == base_mlp_dim
    out.update(num_experts=m.num_experts, num_experts_per_tok=m.moe_top_k, base_moe_mlp_dim=mlp)
  return out


def overrides(cand: Candidate | Mapping[str, Any], workload: Workload, platform: str,
              num_slices: int = 1, local: bool | None = None) -> dict[str, Any]:
  """Every MaxText key of a run of `cand` (what `pyconfig.initialize([""],
  **overrides)` and `python -m maxtext.trainers.pre_train.train key=value
  ...` take): the model, the candidate, `hardware` off TPU, and for a run on
  this machine (`local`; default: on 'cpu') the keys of a local run
  (CPU_RUN_KEYS, with the platform's `hardware`; with several slices, e.g.
  processes mapped as slices, `num_slices`, which MaxText cannot detect off
  TPU). The XLA flag knobs are not MaxText keys (see `xla.xla_flags`)."""
  keys = {**model_keys(workload), **Config.from_candidate(cand).keys()}
  if platform in ("cpu", "gpu"):
    keys["hardware"] = platform
  if platform == "cpu" if local is None else local:
    keys.update({**CPU_RUN_KEYS, "hardware": keys.get("hardware", platform)})
    if num_slices > 1:
      keys["num_slices"] = int(num_slices)
  return keys


def _text(v: Any) -> str:
  if isinstance(v, bool):
    return "true" if v else "false"
  if isinstance(v, (list, tuple)):
    return "[" + ",".join(f"'{x}'" for x in v) + "]"
  return str(v)


def override_lines(keys: Mapping[str, Any]) -> list[str]:
  """`key=value` lines MaxText's command line parses (OmegaConf dotlist)."""
  return [f"{k}={_text(v)}" for k, v in keys.items()]
