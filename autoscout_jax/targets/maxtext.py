"""The MaxText family: MaxText's own configuration keys as the space, on this
machine's devices (CPU virtual devices, GPUs) or a simulated TPU/GPU
cluster; its typed config, its plan for the simulators and its launch
artifact (MaxText overrides, `key=value`).

Where it sits: gin binds `maxtext.space` as SPACE_FN(workload, cluster);
knob names ARE MaxText keys, so a candidate's values go to MaxText as they
are (`overrides`); MaxText itself runs only in Python 3.12 children
(autoscout_jax/maxtext_env.py, package autoscout_jax.maxtext_child): the F2 evaluator
(maxtext_compile.py) and the F3 runner. The F0/F1 simulators get the plan
of `plan_from_table`, which goes through `jax_mesh.mesh_plan` (one plan
translation for both JAX families; MAXTEXT_AXES in jax_mesh.py names the
axes). jax-free.

Constraints are MaxText's own (its config validation is the oracle:
tests/test_maxtext_target.py enumerates a space and compares every
candidate with `pyconfig.initialize` + MaxText's device mesh in the 3.12
child; for several slices MaxText's config parsed from the launch lines):
ICI degrees multiply to the devices per slice and DCN degrees to the
slices; the stages (ICI x DCN pipeline) divide the layers; pipeline
micro-batches (the knob, else MaxText's one per stage) are a multiple of
the stages and divide the micro-batch (devices x per_device_batch_size). One more is MaxText's
too but only checked when its train step is traced (LATER): a pipeline
micro-batch must split over the batch shards. Things MaxText accepts
in its config but fails on later are kept out of the space by structure
instead: pipelining forces scan_layers=true; `ici_sequence_parallelism`
(not a default mesh axis) is not offered; 'none' is not offered as a remat
policy (MaxText runs it as 'full'); pipeline stages divide the layers.

Adding a knob: declare it in `space` under its MaxText key (a condition
with `When` if it exists only under another knob's values); if the
simulators should see it, translate it in `plan_from_table`; `overrides`
passes every knob on to MaxText as it is, except the XLA flag knobs
(targets/xla.py spells them for the platform's environment).
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, Mapping

import numpy as np

from autoscout_jax.sim.plan import Plan, Recompute
from autoscout_jax.sim.vspace import SimSpace, Table, VecConstraint, nz
from autoscout_jax.space import Boolean, Candidate, Categorical, Ordinal, ProductGroup, When
from autoscout_jax.targets import jax_mesh, xla
from autoscout_jax.targets.common import divisors
from autoscout_jax.workload import Workload

FAMILY = "maxtext"
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
ATTENTION = {"tpu": ("flash", "dot_product"), "gpu": ("dot_product", "cudnn_flash_te"), "cpu": ()}
FLAG_KNOBS = ("latency_hiding_scheduler", "async_collectives", "collective_matmul")  # TPU/GPU only
# Catalog models (autoscout_jax/sim/catalog.py) MaxText ships a config for
# (maxtext/configs/models/<name>.yml): the workload says `model_name=...`
# when its model is exactly the catalog's (tests check the dims agree).
CATALOG = {"llama2_7b": "llama2-7b", "llama2_13b": "llama2-13b", "llama2_70b": "llama2-70b",
           "llama3_8b": "llama3-8b", "llama3_70b": "llama3-70b", "llama3_405b": "llama3.1-405b",
           "mixtral_8x7b": "mixtral-8x7b", "mixtral_8x22b": "mixtral-8x22b"}
# What a run on this machine's CPU needs besides the candidate (no TPU, no
# dataset, no checkpoints, one process).
# Constraints MaxText's config accepts but its train step refuses when traced.
LATER = ("pipeline_microbatch_shards",)
CPU_RUN_KEYS = {"hardware": "cpu", "dataset_type": "synthetic", "enable_checkpointing": False,
                "skip_jax_distributed_system": True}


def ici(axis: str) -> str:
  return f"ici_{axis}_parallelism"


def dcn(axis: str) -> str:
  return f"dcn_{axis}_parallelism"


def layout(cluster: Any) -> tuple[int, int, str]:
  """(devices per slice, slices, platform) of a local or simulated cluster.
  A sim cluster's node (TPU slice, GPU node) is a slice; a local cluster is
  one slice unless it says `num_slices` (processes mapped as slices)."""
  platform = cluster.platform if cluster.platform in ("tpu", "gpu") else "cpu"
  if hasattr(cluster, "node_size"):
    return int(cluster.node_size), int(cluster.num_nodes), platform
  slices = int(getattr(cluster, "num_slices", 1) or 1)
  if cluster.num_devices % slices:
    raise ValueError(f"cluster {cluster.name!r}: {cluster.num_devices} devices do not split into {slices} slices")
  return cluster.num_devices // slices, slices, platform


def _axis_values(axis: str, workload: Workload, per: int, max_axis: int) -> tuple[int, ...]:
  m = workload.model
  vals = tuple(v for v in divisors(per) if v <= max_axis)
  if axis in ("tensor", "tensor_sequence"):
    vals = tuple(v for v in vals if m.num_heads % v == 0 and m.kv_heads % v == 0)
  elif axis == "context":  # load-balanced causal attention: 2 x context chunks of the sequence
    vals = tuple(v for v in vals if m.seq_len % (2 * v) == 0)
  elif axis == "expert":
    vals = tuple(v for v in vals if m.is_moe and m.num_experts % v == 0)
  elif axis == "pipeline":  # one layer per stage and repeat: stages divide the layers
    vals = tuple(v for v in vals if m.num_layers % v == 0)
  return vals or (1,)


def check_job(workload: Workload) -> None:
  """One clear error for a job this family would measure as something else.
  LoRA: MaxText 0.2.5 trains adapters only in its SFT trainer (Tunix + Qwix);
  the pre-training step this family compiles and times never adds them, so
  every weight would train. Example lengths: its synthetic data fills every
  row, so padding and packing would go unmeasured. Full fine-tuning runs."""
  if workload.is_lora:
    raise ValueError(
        f"workload {workload.name!r}: the maxtext family cannot run LoRA (lora_rank={workload.lora_rank}): "
        "MaxText 0.2.5 trains adapters only in its SFT trainer, not in the pre-training step this family "
        "compiles and times, so every weight would train; use the local family for LoRA, or lora_rank=0 "
        "for full fine-tuning")
  if workload.example_lens:
    raise ValueError(f"workload {workload.name!r}: the maxtext family runs full synthetic rows; example_lens "
                     "(padding, sequence packing) is measured by the local family")


def space(workload: Workload, cluster: Any, axes: tuple[str, ...] = AXES,
          per_device_batch_sizes: tuple[int, ...] | None = None,
          remat_policies: tuple[str, ...] = tuple(REMAT), pipeline_microbatches: tuple[int, ...] | None = None,
          max_axis: int = 1024, attention: bool = True, flag_knobs: bool = True) -> SimSpace:
  """MaxText's keys as knobs. `axes`: the ICI axes searched (the others stay
  1); per_device_batch_size x gradient_accumulation_steps = global batch /
  devices (both knobs, a product group); num_pipeline_microbatches only
  under ici pipelining, scan_layers only without it; sparse_matmul and
  megablox for MoE models; attention and the XLA flag knobs where the
  platform has a choice (TPU/GPU)."""
  check_job(workload)
  unknown = sorted(set(axes) - set(AXES))
  if unknown:
    raise ValueError(f"unknown MaxText mesh axes {unknown}; known: {list(AXES)}")
  bad = sorted(set(remat_policies) - set(REMAT))
  if bad or not remat_policies:
    raise ValueError(f"remat_policies {list(remat_policies)}: choose from {list(REMAT)}")
  m = workload.model
  per, slices, platform = layout(cluster)
  n = per * slices
  if workload.global_batch % n:
    raise ValueError(f"workload {workload.name!r}: global batch {workload.global_batch} is not a multiple of "
                     f"the {n} devices (MaxText's per_device_batch_size x devices x accumulation steps)")
  per_step = workload.global_batch // n
  pdbs = tuple(v for v in divisors(per_step) if per_device_batch_sizes is None or v in per_device_batch_sizes)
  if not pdbs:
    raise ValueError(f"per_device_batch_sizes {per_device_batch_sizes}: none divides global batch / devices "
                     f"= {per_step}")
  knobs: list[Any] = []
  for axis in AXES:
    vals = _axis_values(axis, workload, per, max_axis) if axis in axes else (1,)
    knobs.append(Ordinal(ici(axis), values=vals, default=per if axis == "fsdp" and per in vals else 1,
                         doc=f"MaxText {ici(axis)}"))
  for axis in DCN_AXES:
    vals = divisors(slices) if axis != "pipeline" else tuple(v for v in divisors(slices) if m.num_layers % v == 0)
    if axis == "pipeline" and len(vals) < 2:
      continue
    knobs.append(Ordinal(dcn(axis), values=vals, default=slices if axis == "data" else 1,
                         doc=f"MaxText {dcn(axis)} (across slices)"))
  dcn_pp = any(k.name == dcn("pipeline") for k in knobs)
  # default: MaxText's recipes, the whole batch in one micro-step
  knobs.append(Ordinal("per_device_batch_size", values=pdbs, default=pdbs[-1],
                       doc="sequences per device per micro-step"))
  knobs.append(Ordinal("gradient_accumulation_steps", values=divisors(per_step), default=per_step // pdbs[-1]))
  stages = knobs[AXES.index("pipeline")].values
  if any(s > 1 for s in stages):
    piped = tuple(s for s in stages if s > 1)
    npm = pipeline_microbatches or tuple(v for v in divisors(n * max(pdbs)) if v >= min(piped))
    knobs.append(Ordinal("num_pipeline_microbatches", values=npm, default=npm[0],
                         when=(When(ici("pipeline"), piped),), doc="micro-batches through the pipeline"))
  knobs.append(Boolean("scan_layers", default=True, when=(When(ici("pipeline"), (1,)),) + (
      (When(dcn("pipeline"), (1,)),) if dcn_pp else ()), doc="lax.scan over the layers (pipelining always scans)"))
  knobs.append(Categorical("remat_policy", choices=tuple(remat_policies),
                           default="full" if "full" in remat_policies else remat_policies[0]))
  if m.is_moe:
    knobs.append(Boolean("sparse_matmul", default=True, doc="dropless MoE with grouped matmuls"))
    knobs.append(Boolean("megablox", default=True, when=(When("sparse_matmul", (True,)),),
                         doc="MaxText's grouped-matmul kernel for sparse_matmul"))
  if attention and len(ATTENTION[platform]) > 1:
    knobs.append(Categorical("attention", choices=ATTENTION[platform], default=ATTENTION[platform][0]))
  tensor_vals = tuple(v for v in knobs[AXES.index("tensor")].values if v > 1)
  if flag_knobs and platform in ("tpu", "gpu"):
    knobs.append(Boolean("latency_hiding_scheduler", default=True, doc="XLA latency-hiding scheduler"))
    knobs.append(Boolean("async_collectives", default=True, doc="XLA async collectives"))
    if tensor_vals:
      knobs.append(Boolean("collective_matmul", default=False, when=(When(ici("tensor"), tensor_vals),),
                           doc="XLA windowed einsum: overlap TP collectives with the matmuls"))
  # pipelined rows (ICI x DCN stages > 1) run num_pipeline_microbatches, or
  # MaxText's default of one per stage where the knob is inactive
  has_npm = any(k.name == "num_pipeline_microbatches" for k in knobs)
  stages = lambda t: _stages(t, dcn_pp)
  micro = lambda t: _microbatches(t, has_npm, dcn_pp)
  off = lambda t: stages(t) <= 1
  cons = [
      VecConstraint("stages_divide_layers", lambda t, f: np.mod(f["layers"], stages(t)) == 0,
                    lambda v, f: f"{_at(stages, v)} pipeline stages (ICI x DCN) do not divide {f['layers']} layers",
                    "the pipeline stages across and within slices divide the layers (MaxText asserts it)"),
      VecConstraint("microbatches_multiple_of_stages",
                    lambda t, f: off(t) | (np.mod(micro(t), stages(t)) == 0),
                    lambda v, f: f"{_at(micro, v)} pipeline micro-batches: not a multiple of the stages",
                    "num_pipeline_microbatches is a multiple of the pipeline stages (MaxText asserts it)"),
      VecConstraint("microbatches_divide_batch",
                    lambda t, f: off(t) | (np.mod(f["num_devices"] * t["per_device_batch_size"],
                                                  micro(t)) == 0),
                    lambda v, f: f"the micro-batch of {f['num_devices']} devices x per_device_batch_size="
                                 f"{v['per_device_batch_size']} does not split into the pipeline's "
                                 f"{_at(micro, v)} micro-batches",
                    "the pipeline micro-batches divide devices x per_device_batch_size (MaxText asserts it)"),
      VecConstraint("pipeline_microbatch_shards",
                    lambda t, f: off(t) | (np.mod(f["num_devices"] * t["per_device_batch_size"] / micro(t),
                                                  _batch_shards(t)) == 0),
                    lambda v, f: f"a pipeline micro-batch of {f['num_devices']} x {v['per_device_batch_size']} / "
                                 f"{_at(micro, v)} sequences does not split over the {_at(_batch_shards, v)} "
                                 f"batch shards (data x fsdp x fsdp_transpose x expert)",
                    "a pipeline micro-batch splits over the batch shards (MaxText's pipeline shard_map)"),
  ] if has_npm or dcn_pp else []
  groups = [ProductGroup(tuple(ici(a) for a in AXES), per, name="ici_product"),
            ProductGroup(tuple(k.name for k in knobs if k.name.startswith("dcn_")), slices, name="dcn_product"),
            ProductGroup(("per_device_batch_size", "gradient_accumulation_steps"), per_step, name="global_batch")]
  facts = dict(num_devices=n, devices_per_slice=per, slices=slices, global_batch=workload.global_batch,
               layers=m.num_layers, seq_len=m.seq_len, platform=platform)
  return SimSpace(knobs, cons, groups=groups, facts=facts, name=f"maxtext:{m.name}:{cluster.name}",
                  family=FAMILY, plan=plan_from_table)


def _at(fn: Any, values: Mapping[str, Any]) -> int:
  """`fn` of one candidate's values (an inactive knob reads as NaN)."""
  row = collections.defaultdict(lambda: np.asarray([np.nan]), {k: np.asarray([x]) for k, x in values.items()})
  return int(fn(row)[0])


def _stages(t: Mapping[str, Any], across: bool) -> np.ndarray:
  """Pipeline stages of each row: ICI x DCN (`across`: the space has the
  DCN knob). A column not assigned yet raises KeyError: the space's
  enumeration checks the constraint later."""
  ici_pp = np.asarray(t[ici("pipeline")], np.float64)
  return ici_pp * np.asarray(t[dcn("pipeline")], np.float64) if across else ici_pp


def _microbatches(t: Mapping[str, Any], knob: bool, across: bool) -> np.ndarray:
  """Pipeline micro-batches of each row: the knob (`knob`: the space has
  it), else MaxText's default of one per stage."""
  npm = np.asarray(t["num_pipeline_microbatches"], np.float64) if knob else np.nan
  return np.where(np.isnan(npm), _stages(t, across), npm)


def _batch_shards(t: Mapping[str, Any]) -> np.ndarray:
  """Devices a micro-batch's sequences are split over (MaxText's
  activation batch axes besides the pipeline stage)."""
  out = np.ones(1)
  for k in (ici("data"), ici("fsdp"), ici("fsdp_transpose"), ici("expert"), dcn("data"), dcn("fsdp")):
    if k in t:
      out = out * np.asarray(t[k], np.float64)
  return out


def plan_from_table(space: SimSpace, t: Table, workload: Workload, cluster: Any) -> Plan:
  """The simulators' plan of every row, through jax_mesh.mesh_plan: fsdp and
  fsdp_transpose shard like fsdp, tensor and tensor_sequence split like
  tensor, context is the sequence axis, pipeline the stage axis. MaxText's
  per-device batch becomes sequences per batch shard; a pipelined row runs
  accumulation steps x pipeline micro-batches of a pipeline micro-batch each."""
  g = lambda k: np.asarray(t[k], np.float64) if k in t else np.ones(len(next(iter(t.values()))))
  n = float(space.facts["num_devices"])
  ici_d = {"data": g(ici("data")), "fsdp": g(ici("fsdp")) * g(ici("fsdp_transpose")),
           "tensor": g(ici("tensor")) * g(ici("tensor_sequence")), "sequence": g(ici("context")),
           "expert": g(ici("expert")), "stage": g(ici("pipeline"))}
  dcn_d = {"data": g(dcn("data")), "fsdp": g(dcn("fsdp")), "stage": g(dcn("pipeline"))}
  batch_shards = ici_d["data"] * ici_d["fsdp"] * ici_d["expert"] * dcn_d["data"] * dcn_d["fsdp"]
  per_shard = g("per_device_batch_size") * n / batch_shards
  yes = lambda name: (t[name] == space.code(name, True)).astype(np.float64) if name in t else np.ones_like(per_shard)
  coll_mm = nz(t["collective_matmul"], 0) if "collective_matmul" in t else np.zeros_like(per_shard)
  plan = dict(jax_mesh.mesh_plan(ici_d, dcn_d, per_shard, np.zeros_like(per_shard), yes("latency_hiding_scheduler"),
                                 yes("async_collectives"), coll_mm, workload.global_batch, workload.model.num_layers,
                                 jax_mesh.xla_loss_bytes(cluster)))
  npm = _microbatches(t, "num_pipeline_microbatches" in t, dcn("pipeline") in t) + 0 * per_shard
  piped = ici_d["stage"] * dcn_d["stage"] > 1
  plan["mbs"] = np.where(piped, per_shard / npm, per_shard)
  plan["num_micro"] = g("gradient_accumulation_steps") * np.where(piped, npm, 1.0)
  policies = space["remat_policy"].choices
  codes = np.asarray([float(REMAT[p]) for p in policies])
  plan["recompute"] = codes[np.asarray(t["remat_policy"], np.int64)]
  return Plan.of(**plan)


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
  if m.num_dense_layers or m.num_shared_experts:
    raise ValueError(f"model {m.name!r}: leading dense layers / shared experts need a MaxText model config; "
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


# MaxText's own variables for joining CPU processes (its
# initialize_jax_for_cpu; the coordinator port is MaxText's fixed 1234) and
# the trainer that forms a multi-slice mesh over processes
# (maxtext_child/train.py: JAX's process-as-granule fallback, then MaxText's
# trainer).
PROCESS_ENV = ("JAX_COORDINATOR_ADDRESS", "JOB_INDEX", "JOB_COMPLETION_INDEX", "PROCESSES_IN_JOB", "JAX_PROCESS_COUNT")
MULTIPROCESS_TRAINER = "autoscout_jax.maxtext_child.train"


def _multiprocess(cluster: Any) -> int:
  """Processes of a local cluster mapped as slices (0: one process, or not local)."""
  _, slices, _ = layout(cluster)
  return slices if slices > 1 and not hasattr(cluster, "device") else 0


def artifact(space: SimSpace, cand: Candidate, workload: Workload, cluster: Any) -> dict[str, Any]:
  """MaxText overrides for the best candidate, the XLA flags of its flag
  knobs for the platform and the command that trains with them. For
  processes mapped as slices on this machine MaxText joins them itself
  (`skip_jax_distributed_system=false`, PROCESS_ENV) and each runs
  MULTIPROCESS_TRAINER."""
  per, slices, platform = layout(cluster)
  keys = overrides(cand, workload, platform, slices, local=not hasattr(cluster, "device"))
  procs = _multiprocess(cluster)
  if procs:
    keys["skip_jax_distributed_system"] = False
  plat = "tpu" if platform == "tpu" else "gpu"
  trainer = MULTIPROCESS_TRAINER if procs else "maxtext.trainers.pre_train.train"
  out = {"kind": "maxtext", "overrides": override_lines(keys),
         "xla_flags": xla.xla_flags({k: v for k, v in cand.values.items() if k in FLAG_KNOBS}, platform),
         "xla_flags_env": xla.FLAG_ENV[plat],
         "command": ["python", "-m", trainer, *override_lines(keys)]}
  if procs:
    out["processes"] = {"count": procs, "devices_each": per, "env": {
        "JAX_COORDINATOR_ADDRESS": "localhost", "JOB_INDEX": "0", "JOB_COMPLETION_INDEX": "<process 0..count-1>",
        "PROCESSES_IN_JOB": str(procs), "JAX_PROCESS_COUNT": str(procs)}}
  return out


def launch_files(space: SimSpace, cand: Candidate, workload: Workload, cluster: Any,
                 summary: str = "") -> dict[str, str]:
  """maxtext_overrides.txt (`key=value` lines, what report.md shows) and
  launch.sh (the XLA flag export, then MaxText's trainer with those lines;
  for processes mapped as slices, one trainer per process, joined by
  MaxText). Arguments of launch.sh are appended as further overrides."""
  art = artifact(space, cand, workload, cluster)
  head = (f"# MaxText overrides for {workload.name} on {cluster.name} ({cluster.num_devices} devices): the "
          f"configuration autoscout_jax recommended{(': ' + summary) if summary else ''}.\n"
          f"# python -m {art['command'][2]} run_name=<name> base_output_directory=<dir> "
          f"$(grep -v '^#' maxtext_overrides.txt)\n")
  txt = head + "".join(line + "\n" for line in art["overrides"])
  env, flags = art["xla_flags_env"], " ".join(art["xla_flags"])
  common = ("set -euo pipefail\n"
            + (f"export {env}=\"${{{env}:-}} {flags}\"\n" if flags else "") +
            'mapfile -t OVERRIDES < <(grep -v "^#" "$(dirname "$0")/maxtext_overrides.txt")\n')
  run_args = ('run_name="${RUN_NAME:-autoscout}" base_output_directory="${BASE_OUTPUT_DIRECTORY:?set '
              'BASE_OUTPUT_DIRECTORY}" "${OVERRIDES[@]}" "$@"')
  if "processes" not in art:
    sh = ("#!/usr/bin/env bash\n" + head +
          "# In MaxText's Python (3.12), on every host:  RUN_NAME=<name> BASE_OUTPUT_DIRECTORY=<dir> bash launch.sh\n"
          + common + f"python3 -m maxtext.trainers.pre_train.train {run_args}\n")
    return {"maxtext_overrides.txt": txt, "launch.sh": sh}
  n, per = art["processes"]["count"], art["processes"]["devices_each"]
  sh = ("#!/usr/bin/env bash\n" + head +
        f"# {n} processes x {per} CPU devices on this host, one slice each, joined by MaxText's own\n"
        "# jax.distributed initialisation (coordinator localhost:1234); each runs MaxText's trainer through\n"
        f"# {MULTIPROCESS_TRAINER} (CPU devices carry no slice ids: see that module).\n"
        "# In MaxText's Python (3.12):  AUTOSCOUT_JAX=<autoscout_jax checkout> RUN_NAME=<name> "
        "BASE_OUTPUT_DIRECTORY=<dir> bash launch.sh\n"
        "# One log per process in $LOG_DIR (default: the current directory); one process failing ends the job.\n"
        + common +
        ': "${AUTOSCOUT_JAX:?set AUTOSCOUT_JAX to the autoscout_jax checkout}"\n'
        'export PYTHONPATH="$AUTOSCOUT_JAX${PYTHONPATH:+:$PYTHONPATH}" JAX_PLATFORMS=cpu DECOUPLE_GCLOUD=TRUE\n'
        f'export XLA_FLAGS="${{XLA_FLAGS:-}} --xla_force_host_platform_device_count={per}"\n'
        f"export JAX_COORDINATOR_ADDRESS=localhost JOB_INDEX=0 PROCESSES_IN_JOB={n} JAX_PROCESS_COUNT={n}\n"
        "pids=()\n"
        "trap 'kill \"${pids[@]}\" 2>/dev/null || true' EXIT\n"
        f"for i in $(seq 0 {n - 1}); do\n"
        f"  JOB_COMPLETION_INDEX=$i python3 -m {MULTIPROCESS_TRAINER} {run_args} \\\n"
        '    > "${LOG_DIR:-.}/process_$i.log" 2>&1 &\n'
        "  pids+=($!)\n"
        "done\n"
        'for _ in "${pids[@]}"; do wait -n || exit 1; done\n'
        "pids=()\n")
  return {"maxtext_overrides.txt": txt, "launch.sh": sh}
