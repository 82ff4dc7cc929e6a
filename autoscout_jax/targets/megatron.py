"""The Megatron-LM family (GPU clusters): its space, typed config and plan
for the simulators. Its knob vocabulary is written here once; knob names
are Megatron-LM's argument names (`sequence_packing` excepted: Megatron-LM
spells it as a data-loader flag set, megatron_launch.py). How a candidate
is spoken to Megatron-LM (the argument list and launch.sh) is
targets/megatron_launch.py.

Where it sits: gin binds `megatron.space` as SPACE_FN(workload, cluster)
with a sim catalog workload and cluster; the F0/F1 evaluators turn
candidates into a `Plan` through `plan_from_table` (targets/__init__.py
dispatches by the space's family); calibration builds the same plan from
published rows through `megatron_plan`; the report launches the best
candidate through megatron_launch.artifact.

Formulation: tensor x pipeline x context x data = devices (one product
group; data parallelism is a knob of the group, as Megatron derives it).
Expert parallelism does not multiply the device count: like Megatron-core,
MoE layers regroup the tp*cp*dp ranks of a stage into expert-tensor x
expert x expert-data parallel, so `ep * etp` must divide tp*cp*dp ("dp
folds ep"). Virtual pipelining is a stage COUNT,
`virtual_pipeline_model_parallel_size` (Megatron-core's name; Megatron-LM's
`num_layers_per_virtual_pipeline_stage` = layers / (pp * that)). Tensor
parallelism beyond a node is allowed (the simulator runs it over the
network, so it is just slow).

Adding a knob: a knob that feeds one plan field as it is goes in `DIRECT`
(it then appears in the space, the plan and the artifact); one with its
own translation goes in `space`, `plan_from_table` (and `megatron_plan`
when calibration rows carry it) and, if Megatron spells it differently,
megatron_launch.artifact (and NOT_ARGS here).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

from autoscout_jax.sim.plan import Plan, Recompute, Zero
from autoscout_jax.sim.vspace import SimSpace, Table, VecConstraint, nz
from autoscout_jax.space import Boolean, Candidate, Categorical, Ordinal, ProductGroup, SpaceError, When
from autoscout_jax.targets.common import Direct, apply_direct, divisors, facts, layer_split_ok, pow2
from autoscout_jax.workload import Workload

FAMILY = "megatron"
_RC_METHODS = ("uniform", "block")
_BLOCK = float(_RC_METHODS.index("block"))  # its code in a space table
RECOMPUTE = tuple(r.name.lower() for r in (Recompute.NONE, Recompute.SELECTIVE, Recompute.FULL))
_VP = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20)
_BUCKETS = (10_000_000, 20_000_000, 40_000_000, 80_000_000, 160_000_000)

_TP, _PP, _CP, _DP = ("tensor_model_parallel_size", "pipeline_model_parallel_size", "context_parallel_size",
                      "data_parallel_size")
_EP, _ETP, _VPN = "expert_model_parallel_size", "expert_tensor_parallel_size", "virtual_pipeline_model_parallel_size"

# Knobs that feed one plan field as they are (sim/costs.py documents the fields).
DIRECT: tuple[Direct, ...] = (
    Direct(Boolean("overlap_grad_reduce", default=True, when=(When("use_distributed_optimizer", True),)),
           "overlap_grad"),
    Direct(Boolean("overlap_param_gather", default=True, when=(When("use_distributed_optimizer", True),)),
           "overlap_param"),
    Direct(Ordinal("ddp_bucket_size", values=_BUCKETS, default=40_000_000, doc="parameters per DP bucket"),
           "bucket_bytes", scale=4.0),  # fp32 gradients
)
# Sequence packing of a fine-tuning job's examples (autoscout_jax/packing.py):
# a knob only for a workload that names its example lengths. The simulators
# already charge padded rows for their padding and packed rows attention per
# example (plan field `packed`); Megatron-LM packs with a flag set
# (megatron_launch.artifact).
PACKING = Direct(Boolean("sequence_packing", default=False,
                         doc="several examples per row, attention within each (THD, cu_seqlens)"), "packed")
# Knobs that are not Megatron-LM arguments as they are: dp is derived from the
# world size; the interleaving is passed as layers per virtual stage; packing
# is a data-loader flag set.
NOT_ARGS = (_DP, _VPN, PACKING.knob.name)


def _direct(workload: Workload) -> tuple[Direct, ...]:
  return DIRECT + ((PACKING,) if workload.example_lens else ())


def _constraints(moe: bool) -> list[VecConstraint]:
  def vp(t):
    return nz(t[_VPN], 1)

  def micro(t, f):
    return f["global_batch"] / (t[_DP] * t["micro_batch_size"])

  cons = [
      VecConstraint("tp_divides_heads",
                    lambda t, f: (f["heads"] % t[_TP] == 0) & (f["kv_heads"] % t[_TP] == 0),
                    lambda v, f: f"tensor_model_parallel_size={v[_TP]} must divide the {f['heads']} attention heads "
                                 f"and the {f['kv_heads']} key/value heads (GQA groups)",
                    "tp divides query heads and KV heads"),
      VecConstraint("cp_divides_sequence", lambda t, f: f["seq_len"] % (2 * t[_CP]) == 0,
                    lambda v, f: f"context_parallel_size={v[_CP]}: the sequence {f['seq_len']} must split into "
                                 f"2*cp load-balanced chunks",
                    "sequence divisible by 2*cp"),
      VecConstraint("pp_divides_layers", lambda t, f: layer_split_ok(f["layers"], t[_PP] * vp(t)),
                    lambda v, f: f"pipeline_model_parallel_size={v[_PP]} x virtual stages "
                                 f"{v.get(_VPN, 1)} does not divide the {f['layers']} layers "
                                 f"(even counting embedding/loss as pipeline layers)",
                    "pp * vp divides layers (+ up to 3 embedding/loss/MTP blocks)"),
      VecConstraint("batch_divides", lambda t, f: f["global_batch"] % (t[_DP] * t["micro_batch_size"]) == 0,
                    lambda v, f: f"global batch {f['global_batch']} is not divisible by data_parallel_size="
                                 f"{v[_DP]} x micro_batch_size={v['micro_batch_size']}",
                    "global batch divisible by dp * micro_batch_size"),
      # megatron-core's 1F1B schedule without interleaving runs any number of
      # micro-batches (its warmup is min(pp - rank - 1, M); with M < pp the
      # step is one fill and drain, the simulators' (M + pp - 1) slots, and
      # vTrain measured such runs); the interleaved schedule takes them in
      # groups of pp (microbatch_group_size_per_vp_stage, default pp) and
      # refuses M < pp or a remainder short of a group
      VecConstraint("micro_batches_fill_pipeline",
                    lambda t, f: (t[_PP] == 1) | (vp(t) == 1)
                    | ((micro(t, f) >= t[_PP]) & (micro(t, f) % t[_PP] == 0)),
                    lambda v, f: f"{f['global_batch'] / (v[_DP] * v['micro_batch_size']):g} micro-batches per step "
                                 f"cannot fill the interleaved schedule of pipeline_model_parallel_size={v[_PP]} "
                                 f"x {v.get(_VPN, 1)} virtual stages (needs a multiple of pp)",
                    "interleaved pipeline: micro-batches per step a multiple of pp"),
      VecConstraint("tp_comm_overlap_needs_sp",
                    lambda t, f: ~(nz(t["tp_comm_overlap"], 0) == 1) | (nz(t["sequence_parallel"], 0) == 1),
                    lambda v, f: "tp_comm_overlap needs sequence_parallel (Transformer Engine userbuffers)",
                    "tp_comm_overlap requires sequence_parallel"),
      VecConstraint("recompute_layers_fit",
                    lambda t, f: nz(t["recompute_num_layers"], 1)
                    <= np.ceil(f["layers"] / (t[_PP] * vp(t))),
                    lambda v, f: f"recompute_num_layers={v.get('recompute_num_layers')} exceeds the layers of a "
                                 f"virtual pipeline stage",
                    "recompute_num_layers <= layers per virtual stage"),
      # megatron-core's uniform recompute walks a stage's layers in chunks of
      # recompute_num_layers and indexes past the last layer when the chunk
      # does not divide them (IndexError in the first forward; measured on an
      # H200, experiments/quickstart/megatron_table_h200.csv). Uneven stages
      # (embedding/loss counted as layers) differ by one layer: only 1 divides both.
      VecConstraint("uniform_recompute_divides_stage",
                    lambda t, f: (nz(t["recompute_method"], _BLOCK) == _BLOCK)
                    | (nz(t["recompute_num_layers"], 1) == 1)
                    | ((f["layers"] % (t[_PP] * vp(t)) == 0)
                       & ((f["layers"] // (t[_PP] * vp(t))) % nz(t["recompute_num_layers"], 1) == 0)),
                    lambda v, f: f"recompute_method=uniform with recompute_num_layers="
                                 f"{v.get('recompute_num_layers')} does not divide the layers of each pipeline "
                                 f"stage ({f['layers']} layers over {v.get(_PP, 1)} x {v.get(_VPN, 1)} stages)",
                    "uniform recompute: recompute_num_layers divides the layers of every virtual stage"),
  ]
  if moe:
    cons += [
        VecConstraint("ep_divides_experts", lambda t, f: f["experts"] % t[_EP] == 0,
                      lambda v, f: f"expert_model_parallel_size={v[_EP]} must divide the {f['experts']} experts",
                      "ep divides experts"),
        VecConstraint("expert_grid_fits",
                      lambda t, f: (t[_TP] * t[_CP] * t[_DP]) % (t[_EP] * t[_ETP]) == 0,
                      lambda v, f: f"expert x expert-tensor parallel = {v[_EP]}x{v[_ETP]} must divide "
                                   f"tp*cp*dp = {v[_TP] * v[_CP] * v[_DP]} (MoE layers regroup those ranks)",
                      "ep * etp divides tp * cp * dp"),
        VecConstraint("etp_divides_expert_ffn", lambda t, f: f["moe_ffn"] % t[_ETP] == 0,
                      lambda v, f: f"expert_tensor_parallel_size={v[_ETP]} must divide the expert FFN "
                                   f"width {f['moe_ffn']}", "etp divides the expert FFN"),
        VecConstraint("moe_tp_needs_sp",
                      lambda t, f: (t[_TP] == 1) | (nz(t["sequence_parallel"], 0) == 1),
                      lambda v, f: "MoE with tensor parallelism needs sequence_parallel (Megatron-core)",
                      "MoE with tp > 1 requires sequence_parallel"),
    ]
  return cons


TRANSFORMER_IMPLS = ("transformer_engine", "local")


def space(workload: Workload, cluster: Any, max_tp: int = 16, max_cp: int = 8,
          micro_batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16),
          transformer_impl: str = "transformer_engine") -> SimSpace:
  """The Megatron-LM training space for `workload` on a sim `cluster`
  (knob names as Megatron-LM's arguments). `transformer_impl` is the stack
  the job runs (Megatron-LM's --transformer-impl): Transformer Engine's
  layers (fused flash attention), or megatron-core's local spec, whose
  attention stores the s x s scores (the simulators' plan field flash=0)."""
  if transformer_impl not in TRANSFORMER_IMPLS:
    raise ValueError(f"transformer_impl must be one of {TRANSFORMER_IMPLS}, got {transformer_impl!r}")
  n, m = cluster.num_devices, workload.model
  tps = tuple(v for v in pow2(min(max_tp, n)) if m.num_heads % v == 0) or (1,)
  pps = divisors(n, m.num_layers + 3)
  cps = tuple(v for v in pow2(min(max_cp, n)) if m.seq_len % (2 * v) == 0) or (1,)
  dps = divisors(n, workload.global_batch)
  if not any(n % (t * p * c) == 0 and n // (t * p * c) in dps and workload.global_batch % (n // (t * p * c)) == 0
             and layer_split_ok(m.num_layers, p) for t in tps for p in pps for c in cps):
    raise SpaceError(f"no tensor x pipeline x context x data layout of {n} devices fits model {m.name!r} "
                     f"(heads={m.num_heads}, layers={m.num_layers}, global batch={workload.global_batch})")
  big_tp, big_pp = tuple(v for v in tps if v > 1), tuple(v for v in pps if v > 1)
  knobs = [
      Ordinal(_TP, values=tps, default=tps[0], doc="tensor parallel degree"),
      Ordinal(_PP, values=pps, default=pps[0], doc="pipeline stages"),
      Ordinal(_CP, values=cps, default=1, doc="context (sequence) parallel degree"),
      Ordinal(_DP, values=dps, default=dps[-1], doc="data parallel degree (derived in Megatron)"),
  ]
  if m.is_moe:
    eps = tuple(v for v in divisors(m.num_experts) if v <= n)
    knobs += [Ordinal(_EP, values=eps, default=1, doc="expert parallel degree (folded into dp)"),
              Ordinal(_ETP, values=pow2(min(8, n)), default=1, doc="tensor parallel degree inside experts")]
  if big_pp:
    vps = tuple(v for v in _VP if v <= m.num_layers)
    knobs.append(Ordinal(_VPN, values=vps, default=1, when=(When(_PP, big_pp),),
                         doc="model chunks per pipeline rank (1 = plain 1F1B)"))
  if big_tp:
    knobs.append(Boolean("sequence_parallel", default=True, when=(When(_TP, big_tp),)))
  knobs += [
      Boolean("use_distributed_optimizer", default=True, doc="ZeRO-1: optimizer state sharded over dp"),
  ]
  if _fsdp_allowed(workload):
    # Megatron-LM refuses torch FSDP2 with pipeline or expert parallelism or
    # its own distributed optimizer (arguments.py): active only where it runs
    fsdp_when = (When("use_distributed_optimizer", False), When(_PP, (1,)))
    if m.is_moe:
      fsdp_when += (When(_EP, (1,)),)
    knobs.append(Boolean("use_torch_fsdp2", default=False, when=fsdp_when,
                         doc="ZeRO-3: parameters, gradients and optimizer state sharded over dp x cp"))
  knobs += [
      Ordinal("micro_batch_size", values=micro_batch_sizes, default=micro_batch_sizes[0]),
      Categorical("recompute_granularity", choices=RECOMPUTE, default="selective"),
      Categorical("recompute_method", choices=_RC_METHODS, default="uniform",
                  when=(When("recompute_granularity", "full"),)),
      Ordinal("recompute_num_layers", values=pow2(16), default=1, when=(When("recompute_granularity", "full"),),
              doc="uniform: layers per checkpointed chunk; block: layers recomputed per stage"),
  ]
  knobs += [d.knob for d in _direct(workload)]
  if big_tp:
    knobs.append(Boolean("tp_comm_overlap", default=False, when=(When(_TP, big_tp),)))
  fact, name = facts(workload, cluster), f"megatron:{m.name}:{cluster.name}"
  if transformer_impl != "transformer_engine":  # the default adds nothing: its spaces stay as they were
    fact["transformer_impl"] = transformer_impl
    name += f":{transformer_impl}"
  return SimSpace(knobs, _constraints(m.is_moe), groups=[ProductGroup((_TP, _PP, _CP, _DP), n)],
                  facts=fact, name=name, family=FAMILY, plan=plan_from_table)


def _fsdp_allowed(workload: Workload) -> bool:
  """Megatron-LM's torch FSDP2 needs untied embedding and output weights and
  does not run in fp16."""
  return not workload.model.tie_embeddings and workload.precision != "fp16"


def megatron_plan(tp, pp, cp, dp, ep, etp, vp, mbs, sp, dist_opt, recompute, rc_block, rc_layers,
                  overlap_grad, overlap_param, bucket_params, tp_overlap, global_batch, layers, node_size,
                  fsdp=0.0, flash=1.0, grad_bytes=4.0, offload=0.0, rails=1.0,
                  ep_overlap=0.0, loss_bytes=6.0) -> Plan:
  """PLAN arrays (sim/costs.py) of Megatron configurations, placed in
  Megatron's rank order tp (innermost), cp, dp, pp (outermost); MoE layers
  regroup tp*cp*dp as etp, ep, edp."""
  f = lambda x: np.asarray(x, np.float64) + 0 * np.asarray(tp, np.float64)
  tp, pp, cp, dp, ep, etp, vp, mbs = map(f, (tp, pp, cp, dp, ep, etp, vp, mbs))
  node = f(node_size)
  per_stage = np.maximum(f(layers) / (pp * vp), 1.0)
  rcl = f(rc_layers)
  full = f(recompute) == Recompute.FULL
  block = f(rc_block) > 0
  zero = np.where(f(fsdp) > 0, Zero.FULL, np.where(f(dist_opt) > 0, Zero.OPTIMIZER, Zero.NONE)).astype(np.float64)
  # the gradient / distributed-optimizer group is dp x cp (Megatron's dp-cp group)
  dp_local = np.minimum(dp * cp, np.maximum(np.floor(node / tp), 1.0))
  return Plan.of(
      tp=tp, pp=pp, dp=dp, cp=cp, ep=ep, etp=etp, vp=vp, mbs=mbs, num_micro=f(global_batch) / (dp * mbs),
      sp=f(sp), zero=zero, shard=np.where(zero > 0, dp * cp, 1.0),
      recompute=f(recompute), rc_frac=np.where(full & block, np.minimum(rcl, per_stage) / per_stage, 1.0),
      rc_chunk=np.where(full & ~block, np.maximum(rcl, 1.0), 1.0),
      overlap_grad=f(overlap_grad), overlap_param=f(overlap_param), tp_overlap=f(tp_overlap),
      bucket_bytes=f(bucket_params) * 4.0,
      tp_local=np.minimum(tp, node), cp_local=np.minimum(cp, np.maximum(np.floor(node / tp), 1.0)),
      ep_local=np.minimum(ep, np.maximum(np.floor(node / etp), 1.0)),
      dp_local=dp_local, shard_local=dp_local, rep_local=np.where(zero > 0, 1.0, dp_local),
      pp_inter=np.where(tp * cp * dp * pp > node, 1.0, 0.0),
      w_bytes=f(2.0), g_bytes=f(grad_bytes), o_bytes=f(12.0), flash=f(flash), xla=f(0.0), offload=f(offload),
      rails=f(rails), ep_overlap=f(ep_overlap), loss_bytes=f(loss_bytes))


def plan_from_table(space: SimSpace, t: Table, workload: Workload, cluster: Any) -> Plan:
  """The plan of every row of a table of this family's space."""
  code = space.code
  rec = t["recompute_granularity"]  # codes follow RECOMPUTE, whose order is Recompute's
  n = len(rec)
  ones = np.ones(n)
  dist = t["use_distributed_optimizer"] == code("use_distributed_optimizer", True)
  fsdp = (t["use_torch_fsdp2"] == code("use_torch_fsdp2", True)) if "use_torch_fsdp2" in t else np.zeros(n, bool)
  plan = megatron_plan(
      t[_TP], t[_PP], t[_CP], t[_DP], nz(t.get(_EP, ones), 1), nz(t.get(_ETP, ones), 1),
      nz(t.get(_VPN, ones), 1), t["micro_batch_size"], nz(t.get("sequence_parallel", 0 * ones), 0), dist,
      rec, nz(t["recompute_method"], 0) == _BLOCK, nz(t["recompute_num_layers"], 1),
      0.0, 0.0, 0.0, nz(t.get("tp_comm_overlap", 0 * ones), 0), workload.global_batch,
      workload.model.num_layers, cluster.node_size, fsdp=fsdp,
      flash=0.0 if space.facts.get("transformer_impl") == "local" else 1.0)
  out = apply_direct(plan, t, space, _direct(workload))
  # FSDP2 prefetches the next unit's all-gather during this one's compute and
  # reduce-scatters each unit's gradients as its backward ends
  for k in ("overlap_param", "overlap_grad"):
    out[k] = np.where(fsdp, 1.0, out[k])
  return Plan.of(**out)


@dataclasses.dataclass(frozen=True)
class Config:
  """A Megatron candidate, typed: parallel degrees, schedule, memory and
  recompute policy (`direct` holds the DIRECT knobs by name)."""

  tensor_model_parallel_size: int
  pipeline_model_parallel_size: int
  context_parallel_size: int
  data_parallel_size: int
  micro_batch_size: int
  recompute: Recompute
  use_distributed_optimizer: bool
  use_torch_fsdp2: bool = False
  expert_model_parallel_size: int = 1
  expert_tensor_parallel_size: int = 1
  virtual_pipeline_model_parallel_size: int = 1
  sequence_parallel: bool = False
  recompute_method: str | None = None
  recompute_num_layers: int | None = None
  tp_comm_overlap: bool = False
  direct: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def sequence_packing(self) -> bool:
    return bool(self.direct.get(PACKING.knob.name, False))

  @classmethod
  def from_candidate(cls, cand: Candidate | Mapping[str, Any]) -> "Config":
    v = dict(cand.values if isinstance(cand, Candidate) else cand)
    direct = {d.knob.name: v.pop(d.knob.name) for d in DIRECT + (PACKING,) if d.knob.name in v}
    ints = (_TP, _PP, _CP, _DP, "micro_batch_size", _EP, _ETP, _VPN, "recompute_num_layers")
    kw: dict[str, Any] = {k: int(v.pop(k)) for k in ints if k in v}
    kw["recompute"] = Recompute[str(v.pop("recompute_granularity")).upper()]
    for k in ("use_distributed_optimizer", "use_torch_fsdp2", "sequence_parallel", "tp_comm_overlap"):
      if k in v:
        kw[k] = bool(v.pop(k))
    if "recompute_method" in v:
      kw["recompute_method"] = str(v.pop("recompute_method"))
    if v:
      raise ValueError(f"unknown knob(s) for the megatron family: {sorted(v)}")
    return cls(direct=direct, **kw)
