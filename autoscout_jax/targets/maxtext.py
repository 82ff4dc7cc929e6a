"""The MaxText family: MaxText's own configuration keys as the space, on this
machine's devices (CPU virtual devices, GPUs) or a simulated TPU/GPU
cluster; its plan for the simulators and its launch artifact (MaxText
overrides, `key=value`). Its vocabulary -- MaxText's keys, the typed
`Config`, `overrides` -- is targets/maxtext_keys.py, re-exported here.

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
simulators should see it, translate it in `plan_from_table`; a new key
group goes in maxtext_keys.Config; `overrides` passes every knob on to
MaxText as it is, except the XLA flag knobs (targets/xla.py spells them for
the platform's environment).
"""

from __future__ import annotations

import collections
from typing import Any, Mapping

import numpy as np

from autoscout_jax.sim.plan import Plan
from autoscout_jax.sim.vspace import SimSpace, Table, VecConstraint, nz
from autoscout_jax.space import Boolean, Candidate, Categorical, Ordinal, ProductGroup, When
from autoscout_jax.targets import jax_mesh, xla
from autoscout_jax.targets.common import divisors
# The family's vocabulary (MaxText's keys, the typed Config, the overrides),
# re-exported here: `maxtext.overrides(...)`, `maxtext.Config`, ...
from autoscout_jax.targets.maxtext_keys import (AXES, CATALOG, CPU_RUN_KEYS, DCN_AXES, FLAG_KNOBS, REMAT, Config,
                                                check_job, dcn, ici, model_keys, override_lines, overrides)
from autoscout_jax.workload import Workload

__all__ = ["ATTENTION", "AXES", "CATALOG", "CPU_RUN_KEYS", "Config", "DCN_AXES", "FAMILY", "FLAG_KNOBS", "LATER",
           "MULTIPROCESS_TRAINER", "PROCESS_ENV", "REMAT", "artifact", "check_job", "dcn", "ici", "launch_files",
           "layout", "model_keys", "override_lines", "overrides", "plan_from_table", "space"]

FAMILY = "maxtext"
ATTENTION = {"tpu": ("flash", "dot_product"), "gpu": ("dot_product", "cudnn_flash_te"), "cpu": ()}
# Constraints MaxText's config accepts but its train step refuses when traced.
LATER = ("pipeline_microbatch_shards",)


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


# MaxText's own variables for joining CPU processes (its
# initialize_jax_for_cpu; the coordinator port is MaxText's fixed 1234: for
# CPU it reads only the host, JAX_COORDINATOR_ADDRESS, so two such launches on
# one host collide; its GPU path alone reads JAX_COORDINATOR_PORT) and
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
        "# jax.distributed initialisation (coordinator localhost:1234: MaxText fixes that port for CPU\n"
        "# processes and reads no other, so one such job per host at a time); each runs MaxText's trainer through\n"
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
