"""Workload and local-cluster descriptions: the "what" and "where" of a search.

Where it sits: gin builds a `Workload` and a cluster; `SearchSpace`
factories, evaluators and the store key on them. Simulated clusters (GPU/TPU
catalogs) live in `autoscout_jax.sim`; this module holds what every
fidelity shares.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Mapping


def _digest(obj: Any) -> str:
  blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
  return hashlib.sha1(blob.encode()).hexdigest()[:12]


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """A decoder-only transformer (dense or mixture-of-experts), or a hybrid
  of Mamba-2 and transformer layers in Megatron's notation: `layer_pattern`
  names each of the `num_layers` layers, "M" a Mamba-2 mixer, "*" self
  attention, "-" a dense MLP, "E" an MoE MLP, each layer one of these with
  its own norm and residual (Nemotron-H: "M-M-M-M*-..."). Empty: every
  layer is attention followed by an MLP (MoE after `num_dense_layers`)."""

  name: str
  num_layers: int
  hidden_size: int
  num_heads: int
  ffn_hidden_size: int
  vocab_size: int
  seq_len: int
  num_kv_heads: int | None = None  # None: multi-head attention (= num_heads)
  gated_mlp: bool = False  # SwiGLU-style MLP: three matrices instead of two
  tie_embeddings: bool = False
  num_experts: int = 0  # 0: dense
  moe_top_k: int = 0
  moe_ffn_hidden_size: int | None = None  # per-expert FFN width (default ffn_hidden_size)
  num_shared_experts: int = 0
  num_dense_layers: int = 0  # leading dense layers in an MoE model (DeepSeek-style)
  # after those, every `moe_layer_freq`-th layer is MoE and the others dense
  # (Llama 4 Maverick: 2, MoE and dense layers alternate)
  moe_layer_freq: int = 1
  kv_channels: int | None = None  # per-head width when not hidden_size // num_heads (Qwen3, MaxText)
  layer_pattern: str = ""  # hybrid models: one of "M*-E" per layer (see above)
  mamba_num_heads: int = 0  # Mamba-2 heads; inner width = mamba_num_heads x mamba_head_dim
  mamba_head_dim: int = 64
  mamba_state_dim: int = 128  # SSM state size N
  mamba_num_groups: int = 8  # groups sharing the B and C projections
  # LatentMoE (Nemotron 3 Super/Ultra): tokens are projected from the hidden
  # width down to this width before routing; the routed experts (and the
  # all-to-all) work at it, the router and shared experts at the hidden
  # width; 0: routed experts at the hidden width
  moe_latent_size: int = 0
  # multi-token prediction: `mtp_layers` extra forward passes on the last
  # stage, each through an MTP block (its layers in the pattern notation,
  # `mtp_pattern`; empty: one layer like the model's last) after a 2h -> h
  # projection, each with its own output layer and loss; `mtp_shared`: the
  # passes reuse one block's weights (Megatron's mtp_use_repeated_layer)
  mtp_layers: int = 0
  mtp_pattern: str = ""
  mtp_shared: bool = False

  def __post_init__(self):
    for f in ("num_layers", "hidden_size", "num_heads", "ffn_hidden_size", "vocab_size", "seq_len"):
      v = getattr(self, f)
      if not isinstance(v, int) or v <= 0:
        raise ValueError(f"model {self.name!r}: {f} must be a positive integer, got {v!r}")
    if self.kv_channels is not None and (not isinstance(self.kv_channels, int) or self.kv_channels <= 0):
      raise ValueError(f"model {self.name!r}: kv_channels must be a positive integer, got {self.kv_channels!r}")
    if self.kv_channels is None and self.hidden_size % self.num_heads:
      raise ValueError(f"model {self.name!r}: hidden_size {self.hidden_size} is not divisible by "
                       f"num_heads {self.num_heads}")
    kv = self.kv_heads
    if kv <= 0 or self.num_heads % kv:
      raise ValueError(f"model {self.name!r}: num_kv_heads {kv} must divide num_heads {self.num_heads}")
    if self.num_experts and not 0 < self.moe_top_k <= self.num_experts:
      raise ValueError(f"model {self.name!r}: moe_top_k {self.moe_top_k} must be in 1..{self.num_experts}")
    if self.layer_pattern:
      bad = sorted(set(self.layer_pattern) - set("M*-E"))
      if bad:
        raise ValueError(f"model {self.name!r}: layer_pattern may hold only M (Mamba-2), * (attention), "
                         f"- (MLP) and E (MoE), got {''.join(bad)!r}")
      if len(self.layer_pattern) != self.num_layers:
        raise ValueError(f"model {self.name!r}: layer_pattern has {len(self.layer_pattern)} layers, "
                         f"num_layers is {self.num_layers}")
      if ("E" in self.layer_pattern) != self.is_moe:
        raise ValueError(f"model {self.name!r}: layer_pattern {'has' if self.is_moe else 'has no'} MoE "
                         f"layers (E) only with num_experts > 0")
      if "M" in self.layer_pattern:
        for f in ("mamba_num_heads", "mamba_head_dim", "mamba_state_dim", "mamba_num_groups"):
          v = getattr(self, f)
          if not isinstance(v, int) or v <= 0:
            raise ValueError(f"model {self.name!r}: a pattern with Mamba layers needs {f} > 0, got {v!r}")

    if not isinstance(self.moe_layer_freq, int) or self.moe_layer_freq < 1:
      raise ValueError(f"model {self.name!r}: moe_layer_freq must be a positive integer, got {self.moe_layer_freq!r}")
    if self.moe_layer_freq > 1 and (not self.is_moe or self.layer_pattern
                                    or (self.num_layers - self.num_dense_layers) % self.moe_layer_freq):
      raise ValueError(f"model {self.name!r}: moe_layer_freq {self.moe_layer_freq} needs experts, no layer "
                       f"pattern, and layers after the dense ones in whole groups of it")
    if not isinstance(self.moe_latent_size, int) or self.moe_latent_size < 0:
      raise ValueError(f"model {self.name!r}: moe_latent_size must be a non-negative integer, "
                       f"got {self.moe_latent_size!r}")
    if self.moe_latent_size and not self.is_moe:
      raise ValueError(f"model {self.name!r}: moe_latent_size needs experts (num_experts > 0)")
    if not isinstance(self.mtp_layers, int) or self.mtp_layers < 0:
      raise ValueError(f"model {self.name!r}: mtp_layers must be a non-negative integer, got {self.mtp_layers!r}")
    if self.mtp_pattern:
      bad = sorted(set(self.mtp_pattern) - set("M*-E"))
      if bad or not self.mtp_layers:
        raise ValueError(f"model {self.name!r}: mtp_pattern takes M, *, - and E, and needs mtp_layers > 0; "
                         f"got {self.mtp_pattern!r} with mtp_layers {self.mtp_layers}")
      if "E" in self.mtp_pattern and not self.is_moe:
        raise ValueError(f"model {self.name!r}: mtp_pattern has an MoE layer (E) but the model has no experts")

  @property
  def mtp_block_layers(self) -> int:
    """Layers of one MTP block: its pattern's, or one transformer layer."""
    return len(self.mtp_pattern) or (1 if self.mtp_layers else 0)

  @property
  def kv_heads(self) -> int:
    return self.num_kv_heads or self.num_heads

  @property
  def head_dim(self) -> int:
    return self.kv_channels or self.hidden_size // self.num_heads

  @property
  def is_moe(self) -> bool:
    return self.num_experts > 0

  @property
  def is_hybrid(self) -> bool:
    return bool(self.layer_pattern)

  def layer_counts(self) -> dict[str, int]:
    """Layers of each kind: attention, mamba, dense (MLP), moe, and
    blocks -- what the simulators call a layer (sim/costs.py): a
    transformer's attention + MLP pair, or one entry of a hybrid's pattern."""
    if not self.layer_pattern:
      moe = (self.num_layers - self.num_dense_layers) // self.moe_layer_freq if self.is_moe else 0
      return dict(attention=self.num_layers, mamba=0, dense=self.num_layers - moe, moe=moe,
                  blocks=self.num_layers)
    p = self.layer_pattern
    return dict(attention=p.count("*"), mamba=p.count("M"), dense=p.count("-"), moe=p.count("E"),
                blocks=self.num_layers)


# Projections that can carry LoRA adapters, by the local model's leaf names
# (local/model.py): attention query/key/value/out, MLP in (wi), gate (wg,
# gated MLPs only) and out (wo). Megatron calls them linear_qkv,
# linear_proj, linear_fc1, linear_fc2.
LORA_TARGETS = ("query", "key", "value", "out", "wi", "wg", "wo")
FROZEN_DTYPES = ("bf16", "int8")
# Fields a pre-training workload leaves at these values; `Workload.key`
# omits them then, so the keys of workloads that predate them do not change.
_FINETUNE_DEFAULTS = {"lora_rank": 0, "lora_targets": ("query", "key", "value", "out"),
                      "lora_alpha": 16.0, "frozen_dtype": "bf16"}


@dataclasses.dataclass(frozen=True)
class ServingSpec:
  """What a serving job is judged by: a fixed synthetic request mix and its
  latency targets. Request i asks `input_lens[i % k]` prompt tokens and
  generates `output_lens[i % k]` tokens (k = the mix's length; one entry
  is a single (isl, osl) shape). A measurement whose time to first token
  (TTFT) or time per output token after the first (TPOT), at the
  `slo_percentile` over the mix's requests, exceeds its SLO is infeasible
  (None: no SLO)."""

  input_lens: tuple[int, ...] = (128,)
  output_lens: tuple[int, ...] = (128,)
  ttft_slo_ms: float | None = None
  tpot_slo_ms: float | None = None
  slo_percentile: int = 90

  def __post_init__(self):
    for f in ("input_lens", "output_lens"):
      v = tuple(getattr(self, f))
      if not v or any(not isinstance(x, int) or isinstance(x, bool) or x <= 0 for x in v):
        raise ValueError(f"serving: {f} must be a non-empty list of positive integers, got {v!r}")
      object.__setattr__(self, f, v)
    if len(self.input_lens) != len(self.output_lens):
      raise ValueError(f"serving: input_lens ({len(self.input_lens)}) and output_lens "
                       f"({len(self.output_lens)}) must have one entry per request shape")
    for f in ("ttft_slo_ms", "tpot_slo_ms"):
      v = getattr(self, f)
      if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0):
        raise ValueError(f"serving: {f} must be a positive number of milliseconds or None, got {v!r}")
    if self.slo_percentile not in (50, 90, 99):
      raise ValueError(f"serving: slo_percentile must be 50, 90 or 99, got {self.slo_percentile!r}")

  def request(self, i: int) -> tuple[int, int]:
    """(input tokens, output tokens) of request i."""
    k = len(self.input_lens)
    return self.input_lens[i % k], self.output_lens[i % k]

  @property
  def max_len(self) -> int:
    """Longest sequence (prompt + generated) of any request in the mix."""
    return max(a + b for a, b in zip(self.input_lens, self.output_lens))

  @property
  def isl(self) -> float:
    return sum(self.input_lens) / len(self.input_lens)

  @property
  def osl(self) -> float:
    return sum(self.output_lens) / len(self.output_lens)


@dataclasses.dataclass(frozen=True)
class Workload:
  """A model and a job. `global_batch` counts sequences per optimizer step
  (pretrain, finetune) or requests in the synthetic mix (serve, whose
  request shapes and SLOs are `serving`). `default` is the expert default
  configuration (knob values) that results are compared against.

  Fine-tuning (`task='finetune'`): `lora_rank` 0 trains every weight (full
  fine-tuning: the same step and state as pre-training); `lora_rank` r > 0
  is LoRA: rank-r adapters (scaled by `lora_alpha / r`) on the projections
  named in `lora_targets` (part of the job, not a knob) train, every other
  weight is frozen, stored in `frozen_dtype` (bf16, or int8 with a scale per
  output channel), and carries no gradient and no optimizer state.

  `example_lens` (fine-tuning): the lengths in tokens of the job's training
  examples, a cyclic mix (example i has `example_lens[i % k]` tokens), each
  at most `model.seq_len`. A batch row then holds one padded example, or
  several packed ones (the `sequence_packing` knob; autoscout_jax/packing.py),
  and throughput counts trained tokens only. Empty: every row is a full
  `seq_len` window (pre-training's corpus)."""

  name: str
  model: ModelConfig
  global_batch: int
  task: str = "pretrain"  # pretrain | finetune | serve
  precision: str = "bf16"
  optimizer: str = "adam"
  default: tuple[tuple[str, Any], ...] = ()
  lora_rank: int = 0
  lora_targets: tuple[str, ...] = _FINETUNE_DEFAULTS["lora_targets"]
  lora_alpha: float = 16.0
  frozen_dtype: str = "bf16"
  serving: ServingSpec | None = None  # task 'serve' only; the serving space and engine need it
  example_lens: tuple[int, ...] = ()  # finetune only: the examples' lengths in tokens (a cyclic mix)

  def __post_init__(self):
    if self.global_batch <= 0:
      raise ValueError(f"workload {self.name!r}: global_batch must be positive, got {self.global_batch}")
    if self.task not in ("pretrain", "finetune", "serve"):
      raise ValueError(f"workload {self.name!r}: unknown task {self.task!r}")
    if isinstance(self.default, Mapping):
      object.__setattr__(self, "default", tuple(sorted(dict(self.default).items())))
    if isinstance(self.serving, Mapping):  # from JSON (the local child's request)
      object.__setattr__(self, "serving", ServingSpec(**self.serving))
    if self.serving is not None and self.task != "serve":
      raise ValueError(f"workload {self.name!r}: only a 'serve' workload has a request mix and SLOs "
                       f"(serving=...), this one has task {self.task!r}")
    if isinstance(self.lora_targets, str):
      object.__setattr__(self, "lora_targets", (self.lora_targets,))
    object.__setattr__(self, "lora_targets", tuple(self.lora_targets))  # JSON gives a list
    self._check_finetune()
    self._check_examples()

  def _check_examples(self) -> None:
    lens = self.example_lens
    if isinstance(lens, int) and not isinstance(lens, bool):
      lens = (lens,)
    lens = tuple(lens)
    object.__setattr__(self, "example_lens", lens)
    if not lens:
      return
    if self.task != "finetune":
      raise ValueError(f"workload {self.name!r}: example_lens (a fine-tuning data set's example lengths) "
                       f"needs task='finetune', got task={self.task!r}")
    s = self.model.seq_len
    if any(not isinstance(x, int) or isinstance(x, bool) or not 0 < x <= s for x in lens):
      raise ValueError(f"workload {self.name!r}: example_lens must be integers in 1..seq_len={s}, got {lens!r}")

  def _check_finetune(self) -> None:
    who = f"workload {self.name!r}"
    if not isinstance(self.lora_rank, int) or self.lora_rank < 0:
      raise ValueError(f"{who}: lora_rank must be a non-negative integer, got {self.lora_rank!r}")
    if self.lora_rank and self.task != "finetune":
      raise ValueError(f"{who}: lora_rank={self.lora_rank} needs task='finetune', got task={self.task!r}")
    if self.frozen_dtype not in FROZEN_DTYPES:
      raise ValueError(f"{who}: frozen_dtype must be one of {FROZEN_DTYPES}, got {self.frozen_dtype!r}")
    if self.frozen_dtype != "bf16" and not self.lora_rank:
      raise ValueError(f"{who}: frozen_dtype={self.frozen_dtype!r} needs LoRA (lora_rank > 0): "
                       "full fine-tuning and pre-training train every weight")
    if not self.lora_rank:
      return
    bad = [t for t in self.lora_targets if t not in LORA_TARGETS]
    if bad or not self.lora_targets or len(set(self.lora_targets)) != len(self.lora_targets):
      raise ValueError(f"{who}: lora_targets must be distinct names from {LORA_TARGETS}, "
                       f"got {self.lora_targets!r}")
    if "wg" in self.lora_targets and not self.model.gated_mlp:
      raise ValueError(f"{who}: lora_targets names 'wg' but model {self.model.name!r} has no gated MLP")
    if not self.lora_alpha > 0:
      raise ValueError(f"{who}: lora_alpha must be positive, got {self.lora_alpha!r}")

  @property
  def is_lora(self) -> bool:
    """LoRA fine-tuning: frozen base weights, only adapters train."""
    return self.lora_rank > 0

  @property
  def kind(self) -> str:
    """pretrain | finetune (full) | lora | serve."""
    return "lora" if self.is_lora else self.task

  @property
  def default_values(self) -> dict[str, Any]:
    return dict(self.default)

  @property
  def tokens_per_step(self) -> int:
    """Token slots per step (global_batch x seq_len); with `example_lens`
    the trained tokens are fewer (packing.useful_tokens)."""
    return self.global_batch * self.model.seq_len

  @property
  def key(self) -> str:
    d = dataclasses.asdict(self)
    d.pop("default")  # the default is a comparison point, not part of the job
    if not d["model"]["layer_pattern"]:  # keeps the keys of models that predate hybrids
      for f in ("layer_pattern", "mamba_num_heads", "mamba_head_dim", "mamba_state_dim", "mamba_num_groups"):
        d["model"].pop(f)
    for f, v in (("moe_latent_size", 0), ("mtp_layers", 0), ("mtp_pattern", ""), ("mtp_shared", False),
                 ("moe_layer_freq", 1)):
      if d["model"][f] == v:  # keeps the keys of models without LatentMoE or MTP
        d["model"].pop(f)
    if d["serving"] is None:
      d.pop("serving")  # keeps the keys of training workloads as they were
    d["lora_targets"] = tuple(d["lora_targets"])
    if not d["example_lens"]:
      d.pop("example_lens")  # keeps the keys of workloads that predate it
    for k, v in _FINETUNE_DEFAULTS.items():
      if not self.lora_rank and d[k] == v:
        d.pop(k)
    return f"{self.name}-{_digest(d)}"


@dataclasses.dataclass(frozen=True)
class LocalCluster:
  """The devices of this machine: CPU virtual devices here, GPUs/TPUs where
  present. `platform='auto'` takes an accelerator when JAX sees one, else
  the CPU with `num_devices` virtual devices. `num_slices` > 1 runs the job
  as that many processes on this machine (`jax.distributed`, one slice of
  num_devices / num_slices devices each, DCN axes across them; the maxtext
  family's F3 does this)."""

  num_devices: int = 8
  memory_bytes_per_device: int = 2 * 2**30
  platform: str = "auto"
  name: str = "local"
  num_slices: int = 1

  def __post_init__(self):
    if self.num_devices <= 0:
      raise ValueError(f"cluster {self.name!r}: num_devices must be positive, got {self.num_devices}")
    if self.memory_bytes_per_device <= 0:
      raise ValueError(f"cluster {self.name!r}: memory_bytes_per_device must be positive")
    if self.platform not in ("auto", "cpu", "gpu", "tpu"):
      raise ValueError(f"cluster {self.name!r}: platform must be auto, cpu, gpu or tpu, got {self.platform!r}")
    if self.num_slices < 1 or self.num_devices % self.num_slices:
      raise ValueError(f"cluster {self.name!r}: num_slices={self.num_slices} must be >= 1 and divide "
                       f"num_devices={self.num_devices}")

  @property
  def key(self) -> str:
    d = dataclasses.asdict(self)
    if d["num_slices"] == 1:  # one process: the key clusters had before slices existed
      d.pop("num_slices")
    return f"{self.name}-{_digest(d)}"
