"""The JAX-mesh family (GPU/TPU clusters, MaxText-style meshes): its space,
typed config, plan for the simulators and launch artifact. Its knob
vocabulary is written here once, in MaxText's own keys.

Where it sits: gin binds `jax_mesh.space` as SPACE_FN(workload, cluster)
with a sim catalog workload and cluster; the F0/F1 evaluators turn
candidates into a `Plan` through `plan_from_table` (targets/__init__.py
dispatches by the space's family); calibration builds plans of published
MaxText rows through `mesh_plan`; the report launches the best candidate
with `artifact` (the mesh, the XLA flags spelled for the platform by
targets/xla.py, and the train-step keys).

Adding a knob: one that feeds one plan field as it is goes in `DIRECT`
(it then appears in the space, the plan and the artifact); else declare it
in `space`, translate it in `mesh_plan` / `plan_from_table`; if it is an
XLA flag knob, add its flags to
targets/xla.py (the artifact then spells them), else the artifact passes it
on as a train-step key.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

from autoscout_jax.sim.plan import Plan, Recompute, Zero
from autoscout_jax.sim.vspace import SimSpace, Table, VecConstraint, nz
from autoscout_jax.space import Boolean, Candidate, Categorical, Ordinal, ProductGroup, When
from autoscout_jax.targets import xla
from autoscout_jax.targets.common import Direct, apply_direct, divisors, facts, layer_split_ok
from autoscout_jax.workload import Workload

FAMILY = "jax_mesh"
# remat_policy choices -> what the backward recomputes: nothing / everything
# but the matmul outputs / the whole layer from its input.
REMAT: Mapping[str, Recompute] = {"none": Recompute.NONE, "minimal": Recompute.DOTS, "full": Recompute.FULL}
_REMAT_PLAN = tuple(REMAT.values())  # indexed by the space's remat_policy code
ICI = ("ici_data", "ici_fsdp", "ici_tensor", "ici_sequence", "ici_expert", "ici_stage")
DCN = ("dcn_data", "dcn_fsdp", "dcn_stage")  # tensor/sequence/expert never span DCN
FLAG_KNOBS = ("latency_hiding_scheduler", "async_collectives", "collective_matmul")
# Knobs that feed one plan field as they are (none yet; see targets/common.py).
DIRECT: tuple[Direct, ...] = ()
# MaxText's `packing` (several examples per row, segment ids): a knob only
# for a fine-tuning workload that names its example lengths (packing.py)
PACKING = Direct(Boolean("packing", default=False, doc="pack several examples per row (MaxText's packing)"),
                 "packed")


def _direct(workload: Workload) -> tuple[Direct, ...]:
  return DIRECT + ((PACKING,) if workload.example_lens else ())


def space(workload: Workload, cluster: Any, batch_sizes: tuple[int, ...] | None = None,
          max_axis: int = 1024) -> SimSpace:
  """MaxText-style mesh space: ICI degrees multiply to the chips per
  slice/node, DCN degrees to the number of slices/nodes. The batch is
  sharded over data x fsdp x expert; gradient accumulation steps are
  derived (global batch / (batch shards x per_device_batch_size))."""
  m = workload.model
  if m.is_hybrid:
    raise ValueError(f"model {m.name!r} is a hybrid Mamba-2/transformer model; the JAX-mesh family launches "
                     "MaxText, which builds transformer decoders: use the megatron family")
  if m.moe_latent_size or m.mtp_layers:
    raise ValueError(f"model {m.name!r} has LatentMoE or multi-token prediction, which the JAX-mesh family's "
                     "MaxText launch does not carry: use the megatron family")
  per, slices = cluster.node_size, cluster.num_nodes
  batch_sizes = batch_sizes or divisors(workload.global_batch, 64)  # sequences per shard per micro-step
  ici_vals = divisors(per, max_axis)
  dcn_vals = divisors(slices)
  knobs = []
  for name in ICI:
    vals = ici_vals
    if name == "ici_tensor":
      vals = tuple(v for v in ici_vals if m.num_heads % v == 0 and m.kv_heads % v == 0) or (1,)
    if name == "ici_expert":
      vals = tuple(v for v in ici_vals if m.is_moe and m.num_experts % v == 0) or (1,)
    if name == "ici_stage":
      vals = tuple(v for v in ici_vals if v <= m.num_layers)
    knobs.append(Ordinal(name, values=vals, default=per if name == "ici_fsdp" else 1))
  for name in DCN:
    knobs.append(Ordinal(name, values=dcn_vals, default=slices if name == "dcn_data" else 1))
  big_tensor = tuple(v for v in knobs[2].values if v > 1)
  knobs += [
      Ordinal("per_device_batch_size", values=batch_sizes, default=batch_sizes[0],
              doc="sequences per batch shard per micro-step"),
      Categorical("remat_policy", choices=tuple(REMAT), default="full"),
      Boolean("latency_hiding_scheduler", default=True, doc="XLA latency-hiding scheduler"),
      Boolean("async_collectives", default=True, doc="XLA async all-gather/reduce-scatter/all-reduce"),
  ]
  knobs += [d.knob for d in _direct(workload)]
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
                    lambda t, f: layer_split_ok(f["layers"], t["ici_stage"] * t["dcn_stage"]),
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
  groups = [ProductGroup(ICI, per, name="ici_product"), ProductGroup(DCN, slices, name="dcn_product")]
  return SimSpace(knobs, cons, groups=groups, facts=facts(workload, cluster),
                  name=f"jax_mesh:{m.name}:{cluster.name}", family=FAMILY, plan=plan_from_table)


def mesh_plan(ici: dict, dcn: dict, pdb, remat, lhs, async_coll, coll_mm, global_batch,
              layers, loss_bytes=8.0) -> Plan:
  """PLAN arrays of JAX-mesh configurations: fsdp ~ ZeRO-3 over the fsdp
  axes, tensor ~ tp, stage ~ pp, sequence ~ cp, expert ~ ep; data (and
  expert, for dense layers) replicate parameters. fp32 weights, grads and
  Adam moments (MaxText's defaults): 4 + 4 + 8 bytes per parameter.
  `loss_bytes`: bytes per logit live at the loss (`xla_loss_bytes`)."""
  f = lambda x: np.asarray(x, np.float64) + 0 * np.asarray(pdb, np.float64)
  g = lambda d, k: f(d.get(k, 1.0))
  tp, cp, ep = g(ici, "tensor"), g(ici, "sequence"), g(ici, "expert")
  pp = g(ici, "stage") * g(dcn, "stage")
  fsdp = g(ici, "fsdp") * g(dcn, "fsdp")
  shard = fsdp * cp  # MaxText shards weights over the sequence axis too
  rep = g(ici, "data") * g(dcn, "data") * ep
  dp = fsdp * rep
  overlap = f(lhs) * f(async_coll)
  remat = np.asarray(_REMAT_PLAN, np.float64)[f(remat).astype(int)]  # remat_policy code -> Recompute
  # MaxText reduces gradients across data replicas after the backward (the
  # DCN all-reduce is not overlapped); fsdp gathers are prefetched under the
  # latency-hiding scheduler with async collectives.
  return Plan.of(
      tp=tp, pp=pp, dp=dp, cp=cp, ep=ep, etp=tp, vp=f(1.0), mbs=f(pdb), num_micro=f(global_batch) / (dp * f(pdb)),
      sp=f(1.0), zero=np.where(shard > 1, float(Zero.FULL), float(Zero.NONE)), shard=shard, recompute=remat, rc_frac=f(1.0),
      rc_chunk=f(1.0), overlap_grad=f(0.0), overlap_param=overlap,
      tp_overlap=np.maximum(f(coll_mm), overlap),
      bucket_bytes=f(1e8), tp_local=tp, cp_local=cp, ep_local=ep,
      dp_local=g(ici, "data") * g(ici, "fsdp") * ep,
      shard_local=g(ici, "fsdp") * cp, rep_local=g(ici, "data") * ep,
      pp_inter=np.where(g(dcn, "stage") > 1, 1.0, 0.0),
      w_bytes=f(4.0), g_bytes=f(4.0), o_bytes=f(8.0), flash=f(1.0), xla=f(1.0), offload=f(0.0), rails=f(1.0),
      ep_overlap=f(0.0), loss_bytes=f(loss_bytes))


def xla_loss_bytes(cluster: Any) -> float:
  """Bytes per logit live at the loss's peak in a compiled XLA train step
  without vocabulary tiling, by platform (memory_analysis of Llama 3 8B at
  8k tokens): on TPU the bf16 logits, their fp32 copy and the gradient (8;
  v5p-128 within 7 %); XLA:GPU fuses the fp32 upcast into the softmax's
  reductions and keeps about the two bf16 buffers (4; 64 H100, full remat,
  2 sequences per device: 8 bytes put F0 25 % above XLA, 4 within 1 %)."""
  return 4.0 if getattr(cluster, "platform", "tpu") == "gpu" else 8.0


def plan_from_table(space: SimSpace, t: Table, workload: Workload, cluster: Any) -> Plan:
  """The plan of every row of a table of this family's space."""
  ici = {k[4:]: t[k] for k in ICI}
  dcn = {k[4:]: t[k] for k in DCN}
  yes = lambda name: t[name] == space.code(name, True)
  plan = mesh_plan(ici, dcn, t["per_device_batch_size"], t["remat_policy"], yes("latency_hiding_scheduler"),
                   yes("async_collectives"),
                   nz(t["collective_matmul"], 0) if "collective_matmul" in t else 0.0,
                   workload.global_batch, workload.model.num_layers, xla_loss_bytes(cluster))
  return Plan.of(**apply_direct(plan, t, space, _direct(workload)))


@dataclasses.dataclass(frozen=True)
class Config:
  """A JAX-mesh candidate, typed: ICI and DCN degrees per axis (axis name ->
  degree), the per-device batch, the remat policy and the XLA flag knobs."""

  ici: Mapping[str, int]
  dcn: Mapping[str, int]
  per_device_batch_size: int
  remat_policy: str
  flags: Mapping[str, bool]
  direct: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # the DIRECT knobs by name

  @classmethod
  def from_candidate(cls, cand: Candidate | Mapping[str, Any]) -> "Config":
    v = dict(cand.values if isinstance(cand, Candidate) else cand)
    ici = {k: int(v.pop(k)) for k in ICI if k in v}
    dcn = {k: int(v.pop(k)) for k in DCN if k in v}
    flags = {k: bool(v.pop(k)) for k in FLAG_KNOBS if k in v}
    direct = {d.knob.name: v.pop(d.knob.name) for d in DIRECT + (PACKING,) if d.knob.name in v}
    pdb, remat = int(v.pop("per_device_batch_size")), str(v.pop("remat_policy"))
    if remat not in REMAT:
      raise ValueError(f"unknown remat_policy {remat!r}; known: {list(REMAT)}")
    if v:
      raise ValueError(f"unknown knob(s) for the jax_mesh family: {sorted(v)}")
    return cls(ici, dcn, pdb, remat, flags, direct)


def artifact(space: SimSpace, cand: Candidate, platform: str) -> dict[str, Any]:
  """MaxText-style hybrid mesh: ICI degrees inside a slice, DCN across; the
  XLA flags of the flag knobs for `platform`; the other knobs as train-step
  keys."""
  cfg = Config.from_candidate(cand)
  values = cand.values
  plat = "tpu" if platform == "tpu" else "gpu"
  return {"kind": "jax", "xla_flags": xla.xla_flags(values, platform), "xla_flags_env": xla.FLAG_ENV[plat],
          "ici_parallelism": dict(cfg.ici), "dcn_parallelism": dict(cfg.dcn),
          "train_step": {k: v for k, v in values.items()
                         if k not in cfg.ici and k not in cfg.dcn and k not in cfg.flags}}


# --- launch files: a MaxText config and launch.sh (the platform's XLA flag export) ---

# Our mesh axes -> MaxText's parallelism keys (ici_<axis>_parallelism,
# dcn_<axis>_parallelism). 'sequence' is context parallelism (attention
# sharded over the sequence): MaxText's `context` axis.
MAXTEXT_AXES = {"data": "data", "fsdp": "fsdp", "tensor": "tensor", "sequence": "context",
                "expert": "expert", "stage": "pipeline"}
# remat_policy 'none' (keep every activation) is MaxText's 'custom' policy
# with each named tensor kept on the device; 'minimal' and 'full' are MaxText's own.
_KEEP_ON_DEVICE = ("decoder_layer_input", "context", "mlpwi", "mlpwi_0", "mlpwi_1", "mlpwo",
                   "query_proj", "key_proj", "value_proj", "out_proj")


def maxtext_config(cand: Candidate, workload: Workload, steps: int = 20) -> dict[str, Any]:
  """MaxText keys (overrides of its base.yml) for `cand`: the mesh as
  ici_*/dcn_* parallelism, per_device_batch_size, remat_policy, and the
  model's dimensions, sequence length and precision."""
  cfg = Config.from_candidate(cand)
  m = workload.model
  out: dict[str, Any] = {}
  for k, v in cfg.ici.items():
    out[f"ici_{MAXTEXT_AXES[k[len('ici_'):]]}_parallelism"] = int(v)
  for k, v in cfg.dcn.items():
    out[f"dcn_{MAXTEXT_AXES[k[len('dcn_'):]]}_parallelism"] = int(v)
  out["per_device_batch_size"] = int(cfg.per_device_batch_size)
  if cfg.remat_policy == "none":
    out["remat_policy"] = "custom"
    out.update({k: "device" for k in _KEEP_ON_DEVICE})
  else:
    out["remat_policy"] = cfg.remat_policy
  out.update(base_num_decoder_layers=m.num_layers, base_emb_dim=m.hidden_size,
             base_num_query_heads=m.num_heads, base_num_kv_heads=m.kv_heads, head_dim=m.head_dim,
             base_mlp_dim=m.ffn_hidden_size, vocab_size=m.vocab_size, max_target_length=m.seq_len,
             dtype="float32" if workload.precision == "fp32" else "bfloat16")
  if m.is_moe:
    out.update(num_experts=m.num_experts, num_experts_per_tok=m.moe_top_k,
               base_moe_mlp_dim=m.moe_ffn_hidden_size or m.ffn_hidden_size)
  out.update(scan_layers=True, dataset_type="synthetic", steps=int(steps), enable_checkpointing=False)
  out.update({k: bool(v) if isinstance(v, (bool, np.bool_)) else v for k, v in cfg.direct.items()})
  return out


def _yaml_value(v: Any) -> str:
  if isinstance(v, bool):
    return "true" if v else "false"
  if isinstance(v, (int, float)):
    return str(v)
  return f'"{v}"'


def launch_files(space: SimSpace, cand: Candidate, workload: Workload, cluster: Any,
                 summary: str = "") -> dict[str, str]:
  """maxtext.yml (the keys) and launch.sh (the XLA flag export for the
  platform, then MaxText's trainer with the same keys as overrides)."""
  plat = "tpu" if cluster.platform == "tpu" else "gpu"
  keys = maxtext_config(cand, workload)
  head = (f"# MaxText: {workload.name} on {cluster.name} ({cluster.num_devices} {plat.upper()} devices), the\n"
          f"# configuration autoscout_jax recommended{(': ' + summary) if summary else ''}.\n")
  yml = head + "".join(f"{k}: {_yaml_value(v)}\n" for k, v in keys.items())
  flags = " ".join(xla.xla_flags(cand.values, cluster.platform))
  env = xla.FLAG_ENV[plat]
  overrides = " \\\n  ".join(f"{k}={v if not isinstance(v, bool) else str(v).lower()}" for k, v in keys.items())
  sh = ("#!/usr/bin/env bash\n" + head +
        "# On every host of the slice(s), from a MaxText checkout (python3 -m MaxText.train):\n"
        "#   RUN_NAME=<name> BASE_OUTPUT_DIRECTORY=<dir or bucket> bash launch.sh\n"
        "set -euo pipefail\n"
        f"export {env}=\"${{{env}:-}} {flags}\"\n"
        'python3 -m MaxText.train "${MAXTEXT_CONFIG:-MaxText/configs/base.yml}" \\\n'
        '  run_name="${RUN_NAME:-autoscout}" base_output_directory="${BASE_OUTPUT_DIRECTORY:?set BASE_OUTPUT_DIRECTORY}" \\\n'
        f"  {overrides}\n")
  return {"launch.sh": sh, "maxtext.yml": yml}
