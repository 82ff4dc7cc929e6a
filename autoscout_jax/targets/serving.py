"""The serving family: the knobs of an LLM inference deployment, its typed
config and plan, the KV-cache capacity both fidelities share, the SLO
check, and its launch artifact (a vLLM flag set). Its knob vocabulary is
written here once (vLLM's spelling).

Where it sits: gin binds `serving.space` as SPACE_FN(workload, cluster) for
a workload with `task='serve'` (its `ServingSpec` holds the request mix and
the SLOs). On this machine the local evaluators run each candidate in a
child (local/serve_probe.py: a real prefill + decode loop with a KV cache);
at cluster scale the serving model (sim/serving.py) reads `plan(space,
cand)`, a sim/serving_plan.ServingPlan. Both call
`kv_capacity` for the cache size and `slo_verdict` for feasibility, and
report the same metrics (`SERVE_METRICS`): `tokens_per_s` is output tokens
per second per device used (the objective), `step_time_s` the p50 time per
output token. jax-free.

Knobs: tensor / pipeline / expert (MoE models) parallel sizes, replicas
(`data_parallel_size`; disaggregated, `prefill_workers` of them prefill
and the rest decode); max concurrent sequences per replica;
KV-cache dtype and the share of device memory given to the KV cache;
chunked-prefill size (0: a prompt in one pass). By default the replicas
fill the cluster (tp x pp x replicas = its devices).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

from autoscout_jax.space import (Boolean, Candidate, Categorical, Constraint, Ordinal, ProductGroup, SearchSpace,
                                 SpaceError, When)
from autoscout_jax.workload import LocalCluster, ServingSpec, Workload

FAMILY = "serving"
KV_CACHE_DTYPES = ("auto", "fp8")  # auto: the workload's compute precision
_PRECISION_BYTES = {"fp32": 4, "tf32": 4, "bf16": 2, "fp16": 2, "fp8": 1}
# Metrics.extra keys every serving evaluator writes (local F3, the simulator).
SERVE_METRICS = ("ttft_ms_p50", "ttft_ms_p90", "tpot_ms_p50", "tpot_ms_p90", "throughput_tok_s",
                 "devices_used", "kv_capacity_tokens", "effective_batch")


class LayoutError(ValueError):
  """Knob values this model, cluster or request mix cannot take."""


def serving_spec(workload: Workload) -> ServingSpec:
  if workload.task != "serve" or workload.serving is None:
    raise SpaceError(f"workload {workload.name!r} has task {workload.task!r}: the serving space needs a "
                     f"task='serve' workload with its request mix (serving=ServingSpec(...))")
  return workload.serving


def _pow2_upto(n: int) -> tuple[int, ...]:
  out, v = [], 1
  while v <= n:
    out.append(v)
    v *= 2
  return tuple(out)


def _get(vals: Mapping[str, Any], k: str, default: int = 1) -> int:
  v = vals.get(k)
  return default if v is None else int(v)


def devices_used(vals: Mapping[str, Any]) -> int:
  """tp x pp x replicas (disaggregated: the replicas are split into
  prefill and decode workers)."""
  return _get(vals, "tensor_parallel_size") * _get(vals, "pipeline_parallel_size") * _get(vals, "data_parallel_size")


def _workers(vals: Mapping[str, Any]) -> tuple[int, int]:
  """(prefill workers, decode workers): one group doing both when aggregated."""
  dp = _get(vals, "data_parallel_size")
  if vals.get("disaggregated"):
    p = _get(vals, "prefill_workers")
    return p, dp - p
  return dp, dp


def _divides(knob: str, fact: str, what: str) -> Constraint:
  def check(vals, facts):
    v, f = _get(vals, knob), int(facts[fact])
    return f"{knob}={v} does not divide {what} ({fact}={f})" if f % v else None
  return Constraint(f"{knob}_divides_{fact}", check, f"{knob} divides {what}")


def _fits_devices(vals, facts):
  used, n = devices_used(vals), int(facts["num_devices"])
  return f"the layout uses {used} devices but the cluster has {n}" if used > n else None


def _split(vals, facts):
  if not vals.get("disaggregated"):
    return None
  p, dp = _get(vals, "prefill_workers"), _get(vals, "data_parallel_size")
  return (f"prefill_workers={p} leaves no decode worker of data_parallel_size={dp}"
          if p >= dp else None)


def _expert_fits(vals, facts):
  ep = _get(vals, "expert_parallel_size")
  group = _get(vals, "tensor_parallel_size") * (1 if vals.get("disaggregated") else _get(vals, "data_parallel_size"))
  return (f"expert_parallel_size={ep} must divide the devices of one expert group "
          f"(tensor x data parallel = {group})") if group % ep else None


def _kv_holds_a_request(vals, facts):
  cap = kv_capacity_from_facts(vals, facts)
  if cap.slots < 1:
    return (f"a KV cache of {vals['kv_cache_memory_fraction']} of device memory holds "
            f"{cap.tokens} tokens per replica, less than the longest request ({facts['max_len']} tokens)")
  return None


def facts(workload: Workload, cluster: Any) -> dict[str, Any]:
  m, spec = workload.model, serving_spec(workload)
  return dict(num_devices=cluster.num_devices, num_heads=m.num_heads, kv_heads=m.kv_heads,
              head_dim=m.head_dim, num_layers=m.num_layers, vocab_size=m.vocab_size,
              ffn_hidden_size=m.ffn_hidden_size, num_experts=m.num_experts, max_len=spec.max_len,
              compute_bytes=_PRECISION_BYTES.get(workload.precision, 2), precision=workload.precision,
              memory_bytes_per_device=int(cluster.memory_bytes_per_device))


@dataclasses.dataclass(frozen=True)
class KVCapacity:
  """The KV cache of one replica (or decode worker): bytes one token's keys
  and values take on one device, the tokens the pool holds, and the
  sequence slots of the longest request it can keep (capped by
  max_num_seqs): the real concurrency."""

  bytes_per_token: int
  tokens: int
  slots: int


def kv_capacity_from_facts(vals: Mapping[str, Any], f: Mapping[str, Any]) -> KVCapacity:
  tp, pp = _get(vals, "tensor_parallel_size"), _get(vals, "pipeline_parallel_size")
  # Engines replicate KV heads when tp exceeds them (GQA).
  kv_per_device = max(1, math.ceil(int(f["kv_heads"]) / tp))
  layers_per_device = math.ceil(int(f["num_layers"]) / pp)
  elem = 1 if vals.get("kv_cache_dtype") == "fp8" else int(f["compute_bytes"])
  per_token = 2 * layers_per_device * kv_per_device * int(f["head_dim"]) * elem
  pool = int(float(vals["kv_cache_memory_fraction"]) * int(f["memory_bytes_per_device"]))
  tokens = pool // per_token
  return KVCapacity(per_token, tokens, min(_get(vals, "max_num_seqs"), tokens // int(f["max_len"])))


def kv_capacity(workload: Workload, cluster: Any, vals: Mapping[str, Any]) -> KVCapacity:
  return kv_capacity_from_facts(vals, facts(workload, cluster))


def space(workload: Workload, cluster: Any, max_num_seqs: tuple[int, ...] = (1, 2, 4, 8, 16),
          kv_cache_memory_fractions: tuple[float, ...] = (0.05, 0.1, 0.2, 0.4, 0.8),
          chunked_prefill_sizes: tuple[int, ...] = (0, 32, 128),
          kv_cache_dtypes: tuple[str, ...] = KV_CACHE_DTYPES, pipeline_parallel_sizes: tuple[int, ...] = (1,),
          disaggregation: bool = True, fill_devices: bool = True) -> SearchSpace:
  """The serving space of `workload` (task 'serve') on `cluster`.
  fill_devices: replicas fill the cluster (tp x pp x data_parallel_size =
  its devices, a product group); else a layout may leave devices idle.
  Disaggregated, `prefill_workers` of the replicas prefill and the rest
  decode. A knob with one choice (pipeline stages by default: the local
  engine runs one stage) is left out."""
  serving_spec(workload)  # one clear error for a training workload
  n, m = cluster.num_devices, workload.model
  axes = _pow2_upto(n)
  bad = [k for k in kv_cache_dtypes if k not in KV_CACHE_DTYPES]
  if bad:
    raise SpaceError(f"unknown kv_cache_dtypes {bad}; known: {KV_CACHE_DTYPES}")
  knobs: list[Any] = [Ordinal("tensor_parallel_size", values=axes, default=1,
                              doc="heads and MLP columns over devices (one all-reduce per block)")]
  group = ["tensor_parallel_size"]
  constraints = [_divides("tensor_parallel_size", "num_heads", "the attention heads")]
  if isinstance(cluster, LocalCluster):  # the local model shards these whole (local/serve_step.py)
    constraints += [_divides("tensor_parallel_size", "kv_heads", "the key/value heads"),
                    _divides("tensor_parallel_size", "vocab_size", "the vocabulary"),
                    _divides("tensor_parallel_size", "ffn_hidden_size", "the MLP width")]
  pps = tuple(p for p in pipeline_parallel_sizes if p <= n)
  if len(pps) > 1 and isinstance(cluster, LocalCluster):
    raise SpaceError("pipeline_parallel_sizes: the local serving engine (local/serve_step.py) runs one "
                     "pipeline stage; pipeline stages are a knob of cluster-scale serving spaces only")
  if len(pps) > 1:
    knobs.append(Ordinal("pipeline_parallel_size", values=pps, default=1, doc="layer stages"))
    constraints.append(_divides("pipeline_parallel_size", "num_layers", "the layers"))
    group.append("pipeline_parallel_size")
  knobs.append(Ordinal("data_parallel_size", values=axes, default=n if fill_devices else 1,
                       doc="replicas, each serving its share of the requests"))
  group.append("data_parallel_size")
  if m.is_moe:
    knobs.append(Ordinal("expert_parallel_size", values=axes, default=1, doc="experts over devices"))
    constraints += [_divides("expert_parallel_size", "num_experts", "the experts"),
                    Constraint("expert_group", _expert_fits, "experts shard within tensor x data")]
  if disaggregation and n >= 2:
    knobs.append(Boolean("disaggregated", default=False,
                         doc="replicas split into prefill and decode workers"))
    knobs.append(Ordinal("prefill_workers", values=tuple(range(1, n)), default=1, log=False,
                         when=(When("disaggregated", True),), doc="replicas that prefill; the rest decode"))
    constraints.append(Constraint("prefill_decode_split", _split, "prefill_workers < data_parallel_size"))
  knobs += [
      Ordinal("max_num_seqs", values=tuple(max_num_seqs), default=max_num_seqs[len(max_num_seqs) // 2],
              doc="max concurrent sequences per replica (the decode batch)"),
      Categorical("kv_cache_dtype", choices=tuple(kv_cache_dtypes), default=kv_cache_dtypes[0]),
      Ordinal("kv_cache_memory_fraction", values=tuple(kv_cache_memory_fractions),
              default=kv_cache_memory_fractions[len(kv_cache_memory_fractions) // 2],
              doc="share of each device's memory given to the KV cache"),
      Ordinal("chunked_prefill_size", values=tuple(chunked_prefill_sizes), default=chunked_prefill_sizes[0],
              doc="prompt tokens per prefill pass (0: the whole prompt at once)"),
  ]
  constraints.append(Constraint("kv_holds_a_request", _kv_holds_a_request,
                                "the KV cache holds at least the longest request"))
  groups = [ProductGroup(tuple(group), n, "devices")] if fill_devices else []
  if not fill_devices:
    constraints.append(Constraint("fits_devices", _fits_devices, "the layout uses at most the cluster's devices"))
  return SearchSpace(knobs, constraints, groups=groups, facts=facts(workload, cluster),
                     name=f"serving:{workload.name}:{n}dev", family=FAMILY)


@dataclasses.dataclass(frozen=True)
class Config:
  """A serving candidate, typed. `data_parallel_size` replicas of tp x pp
  devices; disaggregated, `prefill_workers` of them prefill and
  `decode_workers` (the rest, derived) decode."""

  tensor_parallel_size: int = 1
  pipeline_parallel_size: int = 1
  expert_parallel_size: int = 1
  data_parallel_size: int = 1
  disaggregated: bool = False
  prefill_workers: int = 0
  decode_workers: int = 0
  max_num_seqs: int = 8
  kv_cache_dtype: str = "auto"
  kv_cache_memory_fraction: float = 0.2
  chunked_prefill_size: int = 0

  @classmethod
  def from_candidate(cls, cand: Candidate | Mapping[str, Any]) -> "Config":
    values = dict(cand.values if isinstance(cand, Candidate) else cand)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
      raise LayoutError(f"unknown knob(s) for the serving family: {unknown}")
    kw: dict[str, Any] = {k: v for k, v in values.items() if v is not None}
    for k in ("tensor_parallel_size", "pipeline_parallel_size", "expert_parallel_size", "data_parallel_size",
              "prefill_workers", "decode_workers", "max_num_seqs", "chunked_prefill_size"):
      if k in kw:
        kw[k] = int(kw[k])
    kw["disaggregated"] = bool(kw.get("disaggregated", False))
    if "kv_cache_memory_fraction" in kw:
      kw["kv_cache_memory_fraction"] = float(kw["kv_cache_memory_fraction"])
    if kw["disaggregated"]:
      kw.setdefault("prefill_workers", 1)
      kw["decode_workers"] = kw.get("data_parallel_size", 1) - kw["prefill_workers"]
    else:
      kw.update(prefill_workers=0, decode_workers=0)
    cfg = cls(**kw)
    if cfg.kv_cache_dtype not in KV_CACHE_DTYPES:
      raise LayoutError(f"unknown kv_cache_dtype {cfg.kv_cache_dtype!r}; known: {KV_CACHE_DTYPES}")
    return cfg

  @property
  def worker_devices(self) -> int:
    return self.tensor_parallel_size * self.pipeline_parallel_size

  @property
  def num_devices(self) -> int:
    return devices_used(dataclasses.asdict(self))

  @property
  def decode_replicas(self) -> int:
    """Groups that hold KV caches and generate tokens."""
    return self.decode_workers if self.disaggregated else self.data_parallel_size

  @property
  def prefill_replicas(self) -> int:
    return self.prefill_workers if self.disaggregated else self.data_parallel_size

  def check(self, workload: Workload, cluster: Any) -> None:
    """One clear error naming the first problem, from the space's own
    constraints (they normally rule these out before a candidate gets here)."""
    for k in ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size", "max_num_seqs"):
      if getattr(self, k) < 1:
        raise LayoutError(f"{k} must be >= 1, got {getattr(self, k)}")
    if self.disaggregated and min(self.prefill_workers, self.decode_workers) < 1:
      raise LayoutError("a disaggregated layout needs at least one prefill and one decode worker")
    values, f = dataclasses.asdict(self), facts(workload, cluster)
    checks = [_divides("tensor_parallel_size", "num_heads", ""), Constraint("fits", _fits_devices),
              Constraint("split", _split),
              _divides("pipeline_parallel_size", "num_layers", ""), Constraint("kv", _kv_holds_a_request)]
    if isinstance(cluster, LocalCluster):
      checks += [_divides("tensor_parallel_size", k, "") for k in ("kv_heads", "vocab_size", "ffn_hidden_size")]
    for c in checks:
      msg = c.check(values, f)
      if msg:
        raise LayoutError(msg)


def plan(space: SearchSpace, cand: Candidate) -> Any:
  """The candidate as the serving model's plan (sim/serving_plan.ServingPlan).
  Aggregated: `data_parallel_size` engines of tp x pp; disaggregated:
  `prefill_workers` prefill engines and `decode_workers` decode engines of
  the same layout. Expert parallelism over replicas (vLLM's EP = TP x DP)
  is one engine whose attention is data-parallel over them."""
  from autoscout_jax.sim.serving_plan import EngineLayout, ServingPlan  # sim: only when a model asks
  cfg, f = Config.from_candidate(cand), space.facts
  dp, ep = cfg.data_parallel_size, cfg.expert_parallel_size
  wide = ep > cfg.tensor_parallel_size and not cfg.disaggregated
  layout = EngineLayout(tp=cfg.tensor_parallel_size, pp=cfg.pipeline_parallel_size, ep=ep,
                        attn_dp=dp if wide else 1, batch=cfg.max_num_seqs)
  weight = f.get("precision") if f.get("precision") in ("bf16", "fp16", "fp8") else "bf16"
  kv = "fp8" if cfg.kv_cache_dtype == "fp8" else ("fp16" if weight == "fp16" else "bf16")
  common = dict(weight_dtype=weight, kv_dtype=kv, kv_fraction=cfg.kv_cache_memory_fraction, kv_of_total=True,
                chunk_tokens=cfg.chunked_prefill_size, engine="vllm")
  if cfg.disaggregated:
    return ServingPlan(layout, replicas=cfg.prefill_workers, decode_layout=layout,
                       decode_replicas=cfg.decode_workers, **common)
  return ServingPlan(layout, replicas=1 if wide else dp, **common)


def slo_verdict(spec: ServingSpec, extra: Mapping[str, Any]) -> str | None:
  """Why a measurement misses the workload's SLOs (at its percentile), or
  None when it meets them (or has none)."""
  p, misses = spec.slo_percentile, []
  for name, slo in (("ttft", spec.ttft_slo_ms), ("tpot", spec.tpot_slo_ms)):
    got = extra.get(f"{name}_ms_p{p}")
    if slo is None:
      continue
    if got is None:
      misses.append(f"{name.upper()} p{p} was not measured (SLO {slo:g} ms)")
    elif got > slo:
      misses.append(f"{name.upper()} p{p} {got:.1f} ms > SLO {slo:g} ms")
  return "; ".join(misses) or None


MARGIN_KEYS = ("ttft_log_margin", "tpot_log_margin")  # one log margin per latency SLO


def log_margins(ttft_ms: float | None, tpot_ms: float | None, ttft_slo_ms: float | None,
                tpot_slo_ms: float | None) -> dict[str, float]:
  """log(SLO / latency) for each latency that has an SLO and a positive
  value (< 0 misses, > 0 meets; keys `MARGIN_KEYS`), and their minimum as
  `slo_log_margin`; {} when there is none. A designer learns each
  latency's model error from its own margin: a TTFT model that errs does
  not show in the minimum while TPOT is the one that binds."""
  out: dict[str, float] = {}
  for key, got, slo in zip(MARGIN_KEYS, (ttft_ms, tpot_ms), (ttft_slo_ms, tpot_slo_ms)):
    if slo is not None and got is not None and got > 0:
      out[key] = math.log(float(slo) / float(got))
  if out:
    out["slo_log_margin"] = min(out.values())
  return out


def slo_log_margins(spec: ServingSpec, extra: Mapping[str, Any]) -> dict[str, float]:
  """`log_margins` of a measurement's latencies at the workload's SLO
  percentile ({} without SLOs or latencies)."""
  p = spec.slo_percentile
  return log_margins(extra.get(f"ttft_ms_p{p}"), extra.get(f"tpot_ms_p{p}"), spec.ttft_slo_ms, spec.tpot_slo_ms)


def artifact(space: SearchSpace, cand: Candidate, workload: Workload, cluster: Any) -> dict[str, Any]:
  """vLLM flags for the candidate (`vllm serve <model> ...`); disaggregated:
  one flag set per role, with the worker counts."""
  cfg = Config.from_candidate(cand)
  f = space.facts
  flags = ["--tensor-parallel-size", str(cfg.tensor_parallel_size),
           "--pipeline-parallel-size", str(cfg.pipeline_parallel_size),
           "--max-num-seqs", str(cfg.max_num_seqs),
           "--kv-cache-dtype", cfg.kv_cache_dtype]
  if cfg.expert_parallel_size > 1:
    flags.append("--enable-expert-parallel")
  if cfg.chunked_prefill_size:
    flags += ["--enable-chunked-prefill", "--max-num-batched-tokens", str(cfg.chunked_prefill_size)]
  else:
    flags.append("--no-enable-chunked-prefill")
  # vLLM's budget counts weights and the cache together: the weights' share
  # of a device plus the KV share this candidate was measured with.
  from autoscout_jax.targets.local import param_count
  weights = param_count(workload) * int(f["compute_bytes"]) / cfg.worker_devices
  util = min(0.98, weights / int(f["memory_bytes_per_device"]) + cfg.kv_cache_memory_fraction)
  flags += ["--gpu-memory-utilization", f"{util:.2f}"]
  out: dict[str, Any] = {"kind": "vllm", "model": workload.model.name, "devices": cfg.num_devices,
                         "config": dataclasses.asdict(cfg)}
  if cfg.disaggregated:
    out["roles"] = {"prefill": {"instances": cfg.prefill_workers, "flags": flags},
                    "decode": {"instances": cfg.decode_workers, "flags": flags}}
  else:
    out["flags"] = flags + ["--data-parallel-size", str(cfg.data_parallel_size)]
  return out


def launch_files(space: SearchSpace, cand: Candidate, workload: Workload, cluster: Any,
                 summary: str = "") -> dict[str, str]:
  """launch.sh: the vLLM command line(s) of the recommendation."""
  art = artifact(space, cand, workload, cluster)
  lines = ["#!/bin/sh", f"# {summary}" if summary else "# autoscout_jax serving recommendation",
           "# Generated by autoscout_jax (serving family); MODEL is the checkpoint to serve.",
           f"MODEL=${{MODEL:-{workload.model.name}}}"]
  if "roles" in art:
    lines.append("# Disaggregated: run the prefill and the decode instances with a KV connector between them "
                 "(vLLM --kv-transfer-config, roles kv_producer / kv_consumer).")
    for role, r in art["roles"].items():
      lines.append(f"# {role}: {r['instances']} instance(s)")
      lines.append("vllm serve \"$MODEL\" " + " ".join(r["flags"]) + f"  # {role}")
  else:
    lines.append("exec vllm serve \"$MODEL\" " + " ".join(art["flags"]))
  return {"launch.sh": "\n".join(lines) + "\n"}
