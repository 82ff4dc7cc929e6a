"""The local family (this machine's devices): its space, the typed config
of the sharded train step, and its launch artifact. Its knob vocabulary is
written here once.

Where it sits: gin binds `local.space` as SPACE_FN(workload, cluster) with
a `LocalCluster`; the F2/F3 evaluators (local/evaluators.py) run each
candidate in a child process, which builds `Config.from_candidate` and
`Config.check`s it against the same constraints the space declares before
local/train_step.py builds the step; the flag knobs set the child's
XLA_FLAGS (local/xla_flags.py, spelled by targets/xla.py); the report
launches the best candidate with `artifact`. jax-free.

Knobs: mesh axes data x fsdp x tensor (product = device count), number of
gradient-accumulation micro-batches (the global batch is fixed by the
workload, so the per-device micro-batch is derived), remat policy, scan over
layers and, under it, the scan unroll factor; for a fine-tuning workload
that names its example lengths, `sequence_packing` (several examples per
row with segment ids, or one padded example per row; autoscout_jax/packing.py);
optionally XLA GPU flags.

Adding a knob: declare it in `space`, add its field to `Config` (and a
constraint to CONSTRAINTS if it restricts others), and honour it in
local/train_step.py (or, for an XLA flag knob, add it to FLAG_KNOBS and its
flags to targets/xla.py); the artifact passes any other knob on as a
train-step key.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

from autoscout_jax import finetune
from autoscout_jax.sim.plan import Plan, Recompute, Zero
from autoscout_jax.space import (Boolean, Candidate, Categorical, Constraint, Ordinal, ProductGroup,
                                 SearchSpace, SpaceError, When)
from autoscout_jax.targets import xla
from autoscout_jax.workload import LocalCluster, Workload

FAMILY = "local"
MESH_AXES = ("data", "fsdp", "tensor")
REMAT_POLICIES = ("none", "dots_saveable", "full")
# XLA flag knobs (GPU flags; the CPU parses and ignores them). Their flags
# are spelled in targets/xla.py, for the child's XLA_FLAGS and the artifact.
FLAG_KNOBS = (
    Boolean("xla_latency_hiding_scheduler", default=False, doc="--xla_gpu_enable_latency_hiding_scheduler"),
    Boolean("xla_triton_gemm", default=True, doc="--xla_gpu_enable_triton_gemm"),
)
XLA_FLAG_KNOBS = tuple(k.name for k in FLAG_KNOBS)

# Leaf name -> mesh axes of each dimension of the unstacked parameter (see
# local/model.py); the train step shards by these, the artifact shows them.
# A stacked (scan_layers) parameter gets a leading unsharded layer axis.
PARAM_RULES: dict[str, tuple[Any, ...]] = {
    "embedding": ("tensor", "fsdp"),
    "unembed": ("fsdp", "tensor"),
    "query": ("fsdp", "tensor", None),
    "key": ("fsdp", "tensor", None),
    "value": ("fsdp", "tensor", None),
    "out": ("tensor", None, "fsdp"),
    "wi": ("fsdp", "tensor"),
    "wg": ("fsdp", "tensor"),
    "wo": ("tensor", "fsdp"),
    "scale": (None,),
    # LoRA (local/model.py): adapter A maps a projection's input to rank r,
    # B maps r to its output, each sharded like the dimension it shares
    # with the frozen weight; int8 frozen weights carry a scale per output
    # channel, sharded like that output.
    "query_lora_a": ("fsdp", None), "query_lora_b": (None, "tensor", None),
    "key_lora_a": ("fsdp", None), "key_lora_b": (None, "tensor", None),
    "value_lora_a": ("fsdp", None), "value_lora_b": (None, "tensor", None),
    "out_lora_a": ("tensor", None, None), "out_lora_b": (None, "fsdp"),
    "wi_lora_a": ("fsdp", None), "wi_lora_b": (None, "tensor"),
    "wg_lora_a": ("fsdp", None), "wg_lora_b": (None, "tensor"),
    "wo_lora_a": ("tensor", None), "wo_lora_b": (None, "fsdp"),
    "query_scale": ("tensor", None), "key_scale": ("tensor", None), "value_scale": ("tensor", None),
    "out_scale": ("fsdp",), "wi_scale": ("tensor",), "wg_scale": ("tensor",), "wo_scale": ("fsdp",),
}
BATCH_AXES = ("data", "fsdp")  # the batch dimension's mesh axes
# remat_policy -> what the backward recomputes (sim/plan.py)
REMAT_PLAN: Mapping[str, Recompute] = {"none": Recompute.NONE, "dots_saveable": Recompute.DOTS,
                                       "full": Recompute.FULL}


class LayoutError(ValueError):
  """Knob values this model, batch or device set cannot take."""


def _pow2_upto(n: int) -> tuple[int, ...]:
  out, v = [], 1
  while v <= n:
    out.append(v)
    v *= 2
  if n not in out:  # non power-of-two device counts: allow n itself
    out.append(n)
  return tuple(out)


def _divides(knob: str, fact: str, what: str) -> Constraint:
  def check(vals, facts):
    v, f = int(vals[knob]), int(facts[fact])
    if f % v:
      return f"{knob}={v} does not divide {what} ({fact}={f})"
    return None
  return Constraint(f"{knob}_divides_{fact}", check, f"{knob} divides {what}")


def _batch_split(vals, facts):
  shards = int(vals["data"]) * int(vals["fsdp"])
  mb = int(vals["num_microbatches"])
  gb = int(facts["global_batch"])
  if gb % (shards * mb):
    return (f"global batch {gb} cannot be split into data*fsdp={shards} shards "
            f"x num_microbatches={mb} micro-batches")
  return None


CONSTRAINTS = (
    _divides("tensor", "num_heads", "the attention heads"),
    _divides("tensor", "kv_heads", "the key/value heads"),
    _divides("tensor", "ffn_hidden_size", "the MLP width"),
    _divides("tensor", "vocab_size", "the vocabulary"),
    _divides("fsdp", "hidden_size", "the model width (fsdp shards parameters along it)"),
    Constraint("batch_split", _batch_split, "global batch divisible by data*fsdp*num_microbatches"),
)


def facts(workload: Workload, num_devices: int) -> dict[str, int]:
  m = workload.model
  return dict(num_devices=num_devices, num_heads=m.num_heads, kv_heads=m.kv_heads, hidden_size=m.hidden_size,
              ffn_hidden_size=m.ffn_hidden_size, vocab_size=m.vocab_size,
              global_batch=workload.global_batch, num_layers=m.num_layers)


def param_count(workload: Workload) -> int:
  """Parameters of the local model (local/model.py): embedding, per layer
  q/k/v/out projections, MLP (two or three matrices) and two norms, final
  norm, untied output layer."""
  m = workload.model
  d, hd = m.hidden_size, m.head_dim
  attn = d * hd * (m.num_heads + 2 * m.kv_heads) + m.num_heads * hd * d
  mlp = (3 if m.gated_mlp else 2) * d * m.ffn_hidden_size
  per_layer = attn + mlp + 2 * d
  unembed = 0 if m.tie_embeddings else d * m.vocab_size
  return m.vocab_size * d + m.num_layers * per_layer + d + unembed


def min_state_bytes_per_device(workload: Workload, num_devices: int) -> int:
  """Lower bound on per-device memory of any layout, fully sharded: fp32
  parameters, gradients and two Adam moments (16 bytes a parameter); for
  LoRA the frozen base in its dtype plus the adapters' 16 bytes."""
  return int(finetune.state_bytes(workload, param_count(workload))) // num_devices


def space(workload: Workload, cluster: LocalCluster, microbatch_choices: tuple[int, ...] = (1, 2, 4, 8),
          remat_policies: tuple[str, ...] = REMAT_POLICIES, xla_gpu_flags: bool = False) -> SearchSpace:
  n = cluster.num_devices
  need = min_state_bytes_per_device(workload, n)
  if need > cluster.memory_bytes_per_device:
    raise SpaceError(
        f"model {workload.model.name!r} cannot fit: its training state (parameters, gradients, Adam states) needs "
        f"at least {need:,} bytes per device even fully sharded over {n} devices, but the budget is "
        f"{cluster.memory_bytes_per_device:,} bytes per device")
  axes = _pow2_upto(n)
  knobs = [
      Ordinal("data", values=axes, default=n, doc="data-parallel mesh axis"),
      Ordinal("fsdp", values=axes, default=1, doc="parameters and optimizer state sharded"),
      Ordinal("tensor", values=axes, default=1, doc="column/row-parallel attention and MLP"),
      Ordinal("num_microbatches", values=microbatch_choices,
              default=microbatch_choices[0] if microbatch_choices else None,
              doc="gradient accumulation steps (lax.scan over micro-batches)"),
      Categorical("remat_policy", choices=remat_policies,
                  default=remat_policies[0] if remat_policies else None),
      Boolean("scan_layers", default=False, doc="lax.scan over the layer stack"),
      Ordinal("scan_unroll", values=(1, 2), default=1, when=(When("scan_layers", True),),
              doc="unroll factor of the layer scan"),
  ]
  if workload.example_lens:
    knobs.append(Boolean("sequence_packing", default=False,
                         doc="pack several examples per row (segment ids) instead of padding one per row"))
  if xla_gpu_flags:
    knobs += list(FLAG_KNOBS)
  return SearchSpace(knobs, CONSTRAINTS, groups=[ProductGroup(MESH_AXES, n)],
                     facts=facts(workload, n), name=f"local:{workload.name}:{n}dev", family=FAMILY)


@dataclasses.dataclass(frozen=True)
class Config:
  """The program knobs of a local candidate (the XLA flag knobs shape the
  child's runtime, not the program, and are left out)."""

  data: int = 1
  fsdp: int = 1
  tensor: int = 1
  num_microbatches: int = 1
  remat_policy: str = "none"
  scan_layers: bool = False
  scan_unroll: int = 1
  sequence_packing: bool = False

  @classmethod
  def from_candidate(cls, cand: Candidate | Mapping[str, Any]) -> "Config":
    values = cand.values if isinstance(cand, Candidate) else cand
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names - set(XLA_FLAG_KNOBS))
    if unknown:
      raise LayoutError(f"unknown knob(s) for the local train step: {unknown}")
    kw = {k: v for k, v in values.items() if k in names}
    for k in ("data", "fsdp", "tensor", "num_microbatches", "scan_unroll"):
      if k in kw:
        kw[k] = int(kw[k])
    for k in ("scan_layers", "sequence_packing"):
      if k in kw:
        kw[k] = bool(kw[k])
    return cls(**kw)

  @property
  def num_devices(self) -> int:
    return self.data * self.fsdp * self.tensor

  def check(self, workload: Workload, num_devices: int) -> None:
    """One clear error naming the first problem, from the space's own
    constraints (they normally rule these out before a candidate gets here)."""
    for k in ("data", "fsdp", "tensor", "num_microbatches", "scan_unroll"):
      if getattr(self, k) < 1:
        raise LayoutError(f"{k} must be >= 1, got {getattr(self, k)}")
    if self.remat_policy not in REMAT_POLICIES:
      raise LayoutError(f"unknown remat_policy {self.remat_policy!r}; known: {REMAT_POLICIES}")
    if self.sequence_packing and not workload.example_lens:
      raise LayoutError("sequence_packing needs a fine-tuning workload that names its example lengths "
                        "(example_lens); its rows are full sequences already")
    if self.num_devices != num_devices:
      raise LayoutError(f"mesh data*fsdp*tensor = {self.data}*{self.fsdp}*{self.tensor} = "
                        f"{self.num_devices} but {num_devices} devices are given")
    values, f = dataclasses.asdict(self), facts(workload, num_devices)
    for c in CONSTRAINTS:
      msg = c.check(values, f)
      if msg:
        raise LayoutError(msg)


def plan(candidates: Sequence[Candidate | Mapping[str, Any]], workload: Workload) -> Plan:
  """The simulators' plan of local candidates (the F0/F1 evaluators of
  local/sim_evaluators.py score them on the measured devices): tensor ~ tp
  (activations whole between the attention and MLP blocks: no sequence
  parallelism), data x fsdp ~ the data-parallel degree with fsdp ~ ZeRO-3
  over the fsdp axis, num_microbatches ~ gradient accumulation, remat as
  REMAT_PLAN; float32 parameters, gradients and Adam moments (4 + 4 + 8
  bytes a parameter), materialized attention scores (no flash kernel), one
  XLA program with no collective overlap (the CPU runs collectives in
  line). scan_layers and scan_unroll have no plan field: the simulators see
  the same step with or without the scan. sequence_packing -> `packed`
  (the workload's example mix gives the useful share of the token slots;
  the materialized scores cost the whole row either way)."""
  cfgs = [Config.from_candidate(c) for c in candidates]
  col = lambda f: np.array([float(f(c)) for c in cfgs], np.float64)
  tp, data, fsdp, mic = col(lambda c: c.tensor), col(lambda c: c.data), col(lambda c: c.fsdp), \
      col(lambda c: c.num_microbatches)
  dp = data * fsdp
  one, zero = np.ones(len(cfgs)), np.zeros(len(cfgs))
  return Plan.of(
      tp=tp, pp=one, dp=dp, cp=one, ep=one, etp=tp, vp=one, mbs=workload.global_batch / (dp * mic), num_micro=mic,
      sp=zero, zero=np.where(fsdp > 1, float(Zero.FULL), float(Zero.NONE)), shard=fsdp,
      recompute=col(lambda c: REMAT_PLAN[c.remat_policy]), rc_frac=one, rc_chunk=one, overlap_grad=zero,
      overlap_param=zero, tp_overlap=zero, bucket_bytes=one * 1e8, tp_local=tp, cp_local=one, ep_local=one,
      dp_local=dp, shard_local=fsdp, rep_local=data, pp_inter=zero, w_bytes=one * 4.0, g_bytes=one * 4.0,
      o_bytes=one * 8.0, flash=zero, xla=one, offload=zero, rails=one, ep_overlap=zero, loss_bytes=one * 8.0,
      packed=col(lambda c: c.sequence_packing))


def artifact(space: SearchSpace, cand: Candidate, platform: str) -> dict[str, Any]:
  """The mesh (axis names and shape), the sharding rules the train step
  uses, the XLA flags of the flag knobs for `platform`, the other knobs as
  train-step keys."""
  values = cand.values
  plat = "tpu" if platform == "tpu" else "gpu"
  return {"kind": "jax", "xla_flags": xla.xla_flags(values, platform), "xla_flags_env": xla.FLAG_ENV[plat],
          "mesh_axis_names": list(MESH_AXES), "mesh_shape": [int(values[a]) for a in MESH_AXES],
          "sharding_rules": {"batch": list(BATCH_AXES),
                             **{leaf: list(axes) for leaf, axes in PARAM_RULES.items()}},
          "train_step": {k: v for k, v in values.items() if k not in MESH_AXES and k not in XLA_FLAG_KNOBS}}


def launch_files(space: SearchSpace, cand: Candidate, workload: Workload, cluster: LocalCluster,
                 summary: str = "") -> dict[str, str]:
  """launch.py: the profiled layout, runnable (local/launch_script.py)."""
  from autoscout_jax.local.launch_script import script
  return {"launch.py": script(workload, cluster.platform, cluster.num_devices, cand.values, summary)}
