"""Search spaces of the cluster-scale simulators: Megatron-LM (GPU) and a JAX
mesh (GPU/TPU, MaxText-style), plus their mapping onto the cost model's
PLAN arrays.

Where it sits: gin binds `megatron_training_space` / `jax_mesh_training_space`
as SPACE_FN(workload, cluster) with a sim catalog workload and cluster; the
F0/F1 evaluators turn candidates into PLAN arrays with `plan_arrays`
(sim/costs.py documents the fields); calibration builds the same PLAN from
published rows through `megatron_plan` / `mesh_plan`.

Megatron formulation: tensor x pipeline x context x data = devices (one
product group; data parallelism is a knob of the group, as Megatron derives
it). Expert parallelism does not multiply the device count: like
Megatron-core, MoE layers regroup the tp*cp*dp ranks of a stage into
expert-tensor x expert x expert-data parallel, so `ep * etp` must divide
tp*cp*dp ("dp folds ep"). Virtual pipelining is a stage COUNT,
`virtual_pipeline_model_parallel_size` (Megatron-core's name; Megatron-LM's
`num_layers_per_virtual_pipeline_stage` = layers / (pp * that)). Tensor
parallelism beyond a node is allowed (the simulator runs it over the
network, so it is just slow).
"""

from __future__ import annotations

import numpy as np

from autoscout_jax.sim import costs
from autoscout_jax.sim.vspace import SimSpace, Table, VecConstraint, nz
from autoscout_jax.space import Boolean, Categorical, Ordinal, ProductGroup, SpaceError, When
from autoscout_jax.workload import Workload

RECOMPUTE = ("none", "selective", "full")
REMAT = ("none", "minimal", "full")  # JAX: nothing / save matmul outputs / save layer inputs
_VP = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20)
_BUCKETS = (10_000_000, 20_000_000, 40_000_000, 80_000_000, 160_000_000)


def _pow2(limit: int, start: int = 1) -> tuple[int, ...]:
  out, v = [], start
  while v <= limit:
    out.append(v)
    v *= 2
  return tuple(out) or (1,)


def _divisors(n: int, limit: int | None = None) -> tuple[int, ...]:
  return tuple(d for d in range(1, n + 1) if n % d == 0 and (limit is None or d <= limit))


def _facts(workload: Workload, cluster) -> dict:
  m = workload.model
  return dict(num_devices=cluster.num_devices, node_size=cluster.node_size, heads=m.num_heads,
              kv_heads=m.kv_heads, layers=m.num_layers, seq_len=m.seq_len, global_batch=workload.global_batch,
              experts=m.num_experts, moe_ffn=m.moe_ffn_hidden_size or m.ffn_hidden_size)


def _layer_split_ok(layers, stages):
  # embedding, loss (and an MTP block) may be placed as pipeline layers
  # (Megatron's account_for_embedding/loss_in_pipeline_split, pipeline layouts)
  return np.any([(layers + extra) % stages == 0 for extra in (0, 1, 2, 3)], axis=0) & (stages <= layers + 3)


# --- Megatron --------------------------------------------------------------------

_TP, _PP, _CP, _DP = ("tensor_model_parallel_size", "pipeline_model_parallel_size", "context_parallel_size",
                      "data_parallel_size")
_EP, _ETP, _VPN = "expert_model_parallel_size", "expert_tensor_parallel_size", "virtual_pipeline_model_parallel_size"


def _megatron_constraints(space_ref: list, moe: bool) -> list[VecConstraint]:
  def code(name, value):
    return space_ref[0].code(name, value)

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
      VecConstraint("pp_divides_layers", lambda t, f: _layer_split_ok(f["layers"], t[_PP] * vp(t)),
                    lambda v, f: f"pipeline_model_parallel_size={v[_PP]} x virtual stages "
                                 f"{v.get(_VPN, 1)} does not divide the {f['layers']} layers "
                                 f"(even counting embedding/loss as pipeline layers)",
                    "pp * vp divides layers (+ up to 3 embedding/loss/MTP blocks)"),
      VecConstraint("batch_divides", lambda t, f: f["global_batch"] % (t[_DP] * t["micro_batch_size"]) == 0,
                    lambda v, f: f"global batch {f['global_batch']} is not divisible by data_parallel_size="
                                 f"{v[_DP]} x micro_batch_size={v['micro_batch_size']}",
                    "global batch divisible by dp * micro_batch_size"),
      VecConstraint("micro_batches_fill_pipeline",
                    lambda t, f: (t[_PP] == 1) | ((micro(t, f) >= t[_PP])
                                                  & ((vp(t) == 1) | (micro(t, f) % t[_PP] == 0))),
                    lambda v, f: f"{f['global_batch'] / (v[_DP] * v['micro_batch_size']):g} micro-batches per step "
                                 f"cannot fill pipeline_model_parallel_size={v[_PP]} (need >= pp, and a "
                                 f"multiple of pp when interleaved)",
                    "micro-batches per step >= pp (multiple of pp when interleaved)"),
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


def megatron_training_space(workload: Workload, cluster, max_tp: int = 16, max_cp: int = 8,
                            micro_batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16)) -> SimSpace:
  """The Megatron-LM training space for `workload` on a sim `cluster`
  (knob names as Megatron-LM's arguments)."""
  n, m = cluster.num_devices, workload.model
  tps = tuple(v for v in _pow2(min(max_tp, n)) if m.num_heads % v == 0) or (1,)
  pps = _divisors(n, m.num_layers + 3)
  cps = tuple(v for v in _pow2(min(max_cp, n)) if m.seq_len % (2 * v) == 0) or (1,)
  dps = _divisors(n, workload.global_batch)
  if not any(n % (t * p * c) == 0 and n // (t * p * c) in dps and workload.global_batch % (n // (t * p * c)) == 0
             and _layer_split_ok(m.num_layers, p) for t in tps for p in pps for c in cps):
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
    eps = tuple(v for v in _divisors(m.num_experts) if v <= n)
    knobs += [Ordinal(_EP, values=eps, default=1, doc="expert parallel degree (folded into dp)"),
              Ordinal(_ETP, values=_pow2(min(8, n)), default=1, doc="tensor parallel degree inside experts")]
  if big_pp:
    vps = tuple(v for v in _VP if v <= m.num_layers)
    knobs.append(Ordinal(_VPN, values=vps, default=1, when=(When(_PP, big_pp),),
                         doc="model chunks per pipeline rank (1 = plain 1F1B)"))
  if big_tp:
    knobs.append(Boolean("sequence_parallel", default=True, when=(When(_TP, big_tp),)))
  knobs += [
      Boolean("use_distributed_optimizer", default=True, doc="ZeRO-1: optimizer state sharded over dp"),
      Ordinal("micro_batch_size", values=micro_batch_sizes, default=micro_batch_sizes[0]),
      Categorical("recompute_granularity", choices=RECOMPUTE, default="selective"),
      Categorical("recompute_method", choices=("uniform", "block"), default="uniform",
                  when=(When("recompute_granularity", "full"),)),
      Ordinal("recompute_num_layers", values=_pow2(16), default=1, when=(When("recompute_granularity", "full"),),
              doc="uniform: layers per checkpointed chunk; block: layers recomputed per stage"),
      Boolean("overlap_grad_reduce", default=True, when=(When("use_distributed_optimizer", True),)),
      Boolean("overlap_param_gather", default=True, when=(When("use_distributed_optimizer", True),)),
      Ordinal("ddp_bucket_size", values=_BUCKETS, default=40_000_000, doc="parameters per DP bucket"),
  ]
  if big_tp:
    knobs.append(Boolean("tp_comm_overlap", default=False, when=(When(_TP, big_tp),)))
  ref: list = []
  space = SimSpace(knobs, _megatron_constraints(ref, m.is_moe), groups=[ProductGroup((_TP, _PP, _CP, _DP), n)],
                   facts=_facts(workload, cluster), name=f"megatron:{m.name}:{cluster.name}", family="megatron")
  ref.append(space)
  return space


def megatron_plan(tp, pp, cp, dp, ep, etp, vp, mbs, sp, dist_opt, recompute, rc_block, rc_layers,
                  overlap_grad, overlap_param, bucket_params, tp_overlap, global_batch, layers, node_size,
                  fsdp=0.0, flash=1.0, grad_bytes=4.0, offload=0.0, rails=1.0,
                  ep_overlap=0.0, loss_bytes=6.0) -> dict[str, np.ndarray]:
  """PLAN arrays (sim/costs.py) of Megatron configurations, placed in
  Megatron's rank order tp (innermost), cp, dp, pp (outermost); MoE layers
  regroup tp*cp*dp as etp, ep, edp."""
  f = lambda x: np.asarray(x, np.float64) + 0 * np.asarray(tp, np.float64)
  tp, pp, cp, dp, ep, etp, vp, mbs = map(f, (tp, pp, cp, dp, ep, etp, vp, mbs))
  node = f(node_size)
  per_stage = np.maximum(f(layers) / (pp * vp), 1.0)
  rcl = f(rc_layers)
  full = f(recompute) == 2
  block = f(rc_block) > 0
  zero = np.where(f(fsdp) > 0, 3.0, np.where(f(dist_opt) > 0, 1.0, 0.0))
  # the gradient / distributed-optimizer group is dp x cp (Megatron's dp-cp group)
  dp_local = np.minimum(dp * cp, np.maximum(np.floor(node / tp), 1.0))
  return dict(
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


def _megatron_plan_from_table(space: SimSpace, t: Table, workload: Workload, cluster) -> dict[str, np.ndarray]:
  code = space.code
  rec = t["recompute_granularity"]  # codes follow RECOMPUTE order: none 0, selective 1, full 2
  n = len(rec)
  ones = np.ones(n)
  dist = t["use_distributed_optimizer"] == code("use_distributed_optimizer", True)
  return megatron_plan(
      t[_TP], t[_PP], t[_CP], t[_DP], nz(t.get(_EP, ones), 1), nz(t.get(_ETP, ones), 1),
      nz(t.get(_VPN, ones), 1), t["micro_batch_size"], nz(t.get("sequence_parallel", 0 * ones), 0), dist,
      rec, nz(t["recompute_method"], 0) == 1, nz(t["recompute_num_layers"], 1),
      nz(t["overlap_grad_reduce"], 0), nz(t["overlap_param_gather"], 0), t["ddp_bucket_size"],
      nz(t.get("tp_comm_overlap", 0 * ones), 0), workload.global_batch, workload.model.num_layers,
      cluster.node_size)


# --- JAX mesh ----------------------------------------------------------------------

_ICI = ("ici_data", "ici_fsdp", "ici_tensor", "ici_sequence", "ici_expert", "ici_stage")
_DCN = ("dcn_data", "dcn_fsdp", "dcn_stage")  # tensor/sequence/expert never span DCN


def jax_mesh_training_space(workload: Workload, cluster, batch_sizes: tuple[int, ...] | None = None,
                            max_axis: int = 1024) -> SimSpace:
  """MaxText-style mesh space: ICI degrees multiply to the chips per
  slice/node, DCN degrees to the number of slices/nodes. The batch is
  sharded over data x fsdp x expert; gradient accumulation steps are
  derived (global batch / (batch shards x per_device_batch_size))."""
  m = workload.model
  per, slices = cluster.node_size, cluster.num_nodes
  batch_sizes = batch_sizes or _divisors(workload.global_batch, 64)  # sequences per shard per micro-step
  ici_vals = _divisors(per, max_axis)
  dcn_vals = _divisors(slices)
  knobs = []
  for name in _ICI:
    vals = ici_vals
    if name == "ici_tensor":
      vals = tuple(v for v in ici_vals if m.num_heads % v == 0 and m.kv_heads % v == 0) or (1,)
    if name == "ici_expert":
      vals = tuple(v for v in ici_vals if m.is_moe and m.num_experts % v == 0) or (1,)
    if name == "ici_stage":
      vals = tuple(v for v in ici_vals if v <= m.num_layers)
    knobs.append(Ordinal(name, values=vals, default=per if name == "ici_fsdp" else 1))
  for name in _DCN:
    knobs.append(Ordinal(name, values=dcn_vals, default=slices if name == "dcn_data" else 1))
  big_tensor = tuple(v for v in knobs[2].values if v > 1)
  knobs += [
      Ordinal("per_device_batch_size", values=batch_sizes, default=batch_sizes[0],
              doc="sequences per batch shard per micro-step"),
      Categorical("remat_policy", choices=REMAT, default="full"),
      Boolean("latency_hiding_scheduler", default=True, doc="XLA latency-hiding scheduler"),
      Boolean("async_collectives", default=True, doc="XLA async all-gather/reduce-scatter/all-reduce"),
  ]
  if big_tensor:
    knobs.append(Boolean("collective_matmul", default=False, when=(When("ici_tensor", big_tensor),),
                         doc="XLA windowed einsum: overlap TP collectives with the matmuls"))

  def shards(t):
    return (t["ici_data"] * t["dcn_data"] * t["ici_fsdp"] * t["dcn_fsdp"] * t["ici_expert"])

  cons = [
      VecConstraint("batch_divides", lambda t, f: f["global_batch"] % (shards(t) * t["per_device_batch_size"]) == 0,
                    lambda v, f: f"global batch {f['global_batch']} is not divisible by the batch shards "
                                 f"x per_device_batch_size={v['per_device_batch_size']}",
                    "global batch divisible by data*fsdp*expert*per_device_batch_size"),
      VecConstraint("stage_divides_layers",
                    lambda t, f: _layer_split_ok(f["layers"], t["ici_stage"] * t["dcn_stage"]),
                    lambda v, f: f"stage degree {v['ici_stage'] * v['dcn_stage']} does not divide the "
                                 f"{f['layers']} layers", "stage divides layers"),
      VecConstraint("micro_batches_fill_pipeline",
                    lambda t, f: (t["ici_stage"] * t["dcn_stage"] == 1)
                    | (f["global_batch"] / (shards(t) * t["per_device_batch_size"]) >= t["ici_stage"] * t["dcn_stage"]),
                    lambda v, f: "fewer accumulation micro-batches than pipeline stages",
                    "micro-batches >= stages"),
      VecConstraint("sequence_divides", lambda t, f: f["seq_len"] % (2 * t["ici_sequence"]) == 0,
                    lambda v, f: f"ici_sequence={v['ici_sequence']}: sequence {f['seq_len']} must split into "
                                 f"2*sequence chunks", "sequence divisible by 2*sequence degree"),
  ]
  groups = [ProductGroup(_ICI, per, name="ici_product"), ProductGroup(_DCN, slices, name="dcn_product")]
  return SimSpace(knobs, cons, groups=groups, facts=_facts(workload, cluster),
                  name=f"jax_mesh:{m.name}:{cluster.name}", family="jax_mesh")


def mesh_plan(ici: dict, dcn: dict, pdb, remat, lhs, async_coll, coll_mm, global_batch,
              layers) -> dict[str, np.ndarray]:
  """PLAN arrays of JAX-mesh configurations: fsdp ~ ZeRO-3 over the fsdp
  axes, tensor ~ tp, stage ~ pp, sequence ~ cp, expert ~ ep; data (and
  expert, for dense layers) replicate parameters. fp32 weights, grads and
  Adam moments (MaxText's defaults): 4 + 4 + 8 bytes per parameter."""
  f = lambda x: np.asarray(x, np.float64) + 0 * np.asarray(pdb, np.float64)
  g = lambda d, k: f(d.get(k, 1.0))
  tp, cp, ep = g(ici, "tensor"), g(ici, "sequence"), g(ici, "expert")
  pp = g(ici, "stage") * g(dcn, "stage")
  fsdp = g(ici, "fsdp") * g(dcn, "fsdp")
  shard = fsdp * cp  # MaxText shards weights over the sequence axis too
  rep = g(ici, "data") * g(dcn, "data") * ep
  dp = fsdp * rep
  overlap = f(lhs) * f(async_coll)
  remat = f(remat)
  remat = np.where(remat == 1, 3.0, remat)  # 'minimal' keeps matmul outputs (code 3)
  # MaxText reduces gradients across data replicas after the backward (the
  # DCN all-reduce is not overlapped); fsdp gathers are prefetched under the
  # latency-hiding scheduler with async collectives.
  return dict(
      tp=tp, pp=pp, dp=dp, cp=cp, ep=ep, etp=tp, vp=f(1.0), mbs=f(pdb), num_micro=f(global_batch) / (dp * f(pdb)),
      sp=f(1.0), zero=np.where(shard > 1, 3.0, 0.0), shard=shard, recompute=remat, rc_frac=f(1.0),
      rc_chunk=f(1.0), overlap_grad=f(0.0), overlap_param=overlap,
      tp_overlap=np.maximum(f(coll_mm), overlap),
      bucket_bytes=f(1e8), tp_local=tp, cp_local=cp, ep_local=ep,
      dp_local=g(ici, "data") * g(ici, "fsdp") * ep,
      shard_local=g(ici, "fsdp") * cp, rep_local=g(ici, "data") * ep,
      pp_inter=np.where(g(dcn, "stage") > 1, 1.0, 0.0),
      w_bytes=f(4.0), g_bytes=f(4.0), o_bytes=f(8.0), flash=f(1.0), xla=f(1.0), offload=f(0.0), rails=f(1.0),
      ep_overlap=f(0.0), loss_bytes=f(8.0))


def _mesh_plan_from_table(space: SimSpace, t: Table, workload: Workload, cluster) -> dict[str, np.ndarray]:
  ici = {k[4:]: t[k] for k in _ICI}
  dcn = {k[4:]: t[k] for k in _DCN}
  yes = lambda name: t[name] == space.code(name, True)
  return mesh_plan(ici, dcn, t["per_device_batch_size"], t["remat_policy"], yes("latency_hiding_scheduler"),
                   yes("async_collectives"),
                   nz(t["collective_matmul"], 0) if "collective_matmul" in t else 0.0,
                   workload.global_batch, workload.model.num_layers)


def plan_arrays(space: SimSpace, table: Table, workload: Workload, cluster) -> dict[str, np.ndarray]:
  """PLAN arrays (float64 numpy, one entry per table row) for a sim space."""
  if space.family == "megatron":
    plan = _megatron_plan_from_table(space, table, workload, cluster)
  elif space.family == "jax_mesh":
    plan = _mesh_plan_from_table(space, table, workload, cluster)
  else:
    raise ValueError(f"space {space.name!r} is not a simulator space (family {space.family!r})")
  missing = set(costs.PLAN_FIELDS) - set(plan)
  assert not missing, missing
  return plan
