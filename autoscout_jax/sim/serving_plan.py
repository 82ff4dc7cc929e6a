"""The serving plan: what a serving deployment is, as the F0 serving model reads it.

Where it sits: targets/serving.py maps a serving candidate to a
`ServingPlan`; sim/silicon.py maps a measured row to one; sim/serving.py
(`predict`) turns a plan, an architecture, a system and a `ServingRequest`
into a `ServingPrediction`. Plain frozen values, no numpy or jax, importing
only the catalog's format tables.
"""

from __future__ import annotations

import dataclasses

from autoscout_jax.sim.serving_catalog import KV_BYTES, WEIGHT_BYTES

ENGINES = ("trtllm", "vllm", "sglang")


@dataclasses.dataclass(frozen=True)
class EngineLayout:
  """One serving engine: tp * pp * attn_dp devices. MoE layers split the
  experts over `ep` devices and the rest of tp * attn_dp tensor-parallel;
  `batch` is the most sequences the engine runs at once (max_num_seqs)."""

  tp: int = 1
  pp: int = 1
  ep: int = 1
  attn_dp: int = 1
  batch: int = 1

  def __post_init__(self):
    for f in ("tp", "pp", "ep", "attn_dp", "batch"):
      v = getattr(self, f)
      if not isinstance(v, int) or v < 1:
        raise ValueError(f"EngineLayout.{f} must be a positive integer, got {v!r}")
    if (self.tp * self.attn_dp) % self.ep:
      raise ValueError(f"EngineLayout: ep {self.ep} must divide tp * attn_dp = {self.tp * self.attn_dp}")

  @property
  def devices(self) -> int:
    return self.tp * self.pp * self.attn_dp

  @property
  def moe_tp(self) -> int:
    return self.tp * self.attn_dp // self.ep


@dataclasses.dataclass(frozen=True)
class ServingPlan:
  """A serving deployment. Aggregated: `replicas` engines of `layout`, each
  prefilling and decoding. Disaggregated (`decode_layout` set): `replicas`
  prefill workers of `layout` and `decode_replicas` decode workers."""

  layout: EngineLayout
  replicas: int = 1
  decode_layout: EngineLayout | None = None
  decode_replicas: int = 0
  weight_dtype: str = "bf16"
  moe_dtype: str | None = None  # None: as weight_dtype
  kv_dtype: str = "bf16"
  kv_fraction: float = 0.9  # of the memory the weights and the reserve leave (TRT-LLM's convention)
  kv_of_total: bool = False  # True: kv_fraction is a share of the device's whole memory (vLLM's)
  chunk_tokens: int = 0  # chunked-prefill size; 0: a prompt in one pass
  engine: str = "vllm"

  def __post_init__(self):
    if self.replicas < 1:
      raise ValueError(f"ServingPlan.replicas must be >= 1, got {self.replicas!r}")
    if self.decode_layout is not None and self.decode_replicas < 1:
      raise ValueError("ServingPlan: a disaggregated plan needs decode_replicas >= 1")
    for f, table in (("weight_dtype", WEIGHT_BYTES), ("kv_dtype", KV_BYTES)):
      if getattr(self, f) not in table:
        raise ValueError(f"ServingPlan.{f} {getattr(self, f)!r} is not one of {sorted(table)}")
    if self.moe_dtype is not None and self.moe_dtype not in WEIGHT_BYTES:
      raise ValueError(f"ServingPlan.moe_dtype {self.moe_dtype!r} is not one of {sorted(WEIGHT_BYTES)}")
    if not 0 < self.kv_fraction <= 1:
      raise ValueError(f"ServingPlan.kv_fraction must be in (0, 1], got {self.kv_fraction!r}")
    if self.chunk_tokens < 0:
      raise ValueError(f"ServingPlan.chunk_tokens must be >= 0, got {self.chunk_tokens!r}")
    if self.engine not in ENGINES:
      raise ValueError(f"ServingPlan.engine {self.engine!r} is not one of {ENGINES}")

  @property
  def disaggregated(self) -> bool:
    return self.decode_layout is not None

  @property
  def devices(self) -> int:
    d = self.layout.devices * self.replicas
    return d + (self.decode_layout.devices * self.decode_replicas if self.decode_layout else 0)


@dataclasses.dataclass(frozen=True)
class ServingRequest:
  """The request mix: prompt and output lengths, and how many requests are in
  flight (a closed loop of `concurrency` users; None fills every slot)."""

  isl: int
  osl: int
  concurrency: int | None = None

  def __post_init__(self):
    if self.isl < 1 or self.osl < 1:
      raise ValueError(f"ServingRequest: isl and osl must be >= 1, got {self.isl}, {self.osl}")
    if self.concurrency is not None and self.concurrency < 1:
      raise ValueError(f"ServingRequest.concurrency must be >= 1, got {self.concurrency}")


@dataclasses.dataclass(frozen=True)
class ServingPrediction:
  ttft_s: float
  tpot_s: float
  fits: bool
  reason: str  # why it does not fit ('' when it does)
  kv_capacity_tokens: float  # per engine (decode engine when disaggregated)
  effective_batch: int  # sequences one (decode) engine runs at once
  throughput_tok_s: float  # output tokens/s of the whole deployment
  tokens_per_s_per_device: float
