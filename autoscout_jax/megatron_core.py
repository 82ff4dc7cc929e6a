"""megatron-core's own verdict on a Megatron candidate (the `megatron` extra).

Where it sits: the hand-written constraints of the Megatron space
(sim/spaces.py) are the fast screen every search uses; this module asks
megatron-core itself, so a test can check that the two agree on every
candidate of the bench spaces, and a search can validate with the real
library where it is installed: `validated_space(space, workload)` adds the
verdict to a Megatron simulator space as one more named constraint
(`constraint(workload)` is the same for a plain SearchSpace). Nothing here
needs CUDA or torch.distributed.

What megatron-core is asked, all in its own code:
- `TransformerConfig(...)` (which includes `ModelParallelConfig`) with the
  candidate's parallel degrees, sequence parallelism, recompute settings and
  tp_comm_overlap; its __post_init__ raises for invalid combinations. A
  pipeline split may count the embedding and/or the loss as a pipeline layer
  (`account_for_*_in_pipeline_split`), so a candidate is valid when one of
  those four choices is.
- `get_num_layers_to_build(config, vp_stage, pp_rank)` for every pipeline
  rank and virtual stage: how the model build splits layers (it asserts
  divisibility there, not in the config).
- `megatron.core.utils.divide`, as the attention and expert layers call it
  when they are built: heads and query groups by tp, the expert FFN by the
  expert-tensor degree; and the MoE layer's own check that ep divides the
  experts.

Knobs megatron-core does not see (batch and micro-batch sizes, DDP bucket
and overlap flags, the distributed optimizer) are Megatron-LM arguments and
stay with the hand constraints.
"""

from __future__ import annotations

import functools
import importlib.util
import warnings
from typing import Any, Mapping

import numpy as np

from autoscout_jax.space import Constraint
from autoscout_jax.workload import ModelConfig, Workload

# The Megatron knobs megatron-core sees (the others are Megatron-LM arguments).
SEEN = ("tensor_model_parallel_size", "pipeline_model_parallel_size", "context_parallel_size",
        "expert_model_parallel_size", "expert_tensor_parallel_size", "virtual_pipeline_model_parallel_size",
        "sequence_parallel", "tp_comm_overlap", "recompute_granularity", "recompute_method", "recompute_num_layers")

EXTRA_HINT = 'pip install -e ".[megatron]"'


def available() -> bool:
  return importlib.util.find_spec("megatron") is not None and importlib.util.find_spec("megatron.core") is not None


def _first_line(e: BaseException) -> str:
  text = str(e).strip() or type(e).__name__
  return " ".join(text.split())


@functools.lru_cache(maxsize=200_000)
def _verdict(m: ModelConfig, tp: int, pp: int, cp: int, ep: int, etp: int, vp: int, sp: bool,
             recompute: str, rc_method: str | None, rc_layers: int | None, tp_overlap: bool) -> str | None:
  import torch
  from megatron.core.transformer.transformer_block import get_num_layers_to_build
  from megatron.core.transformer.transformer_config import TransformerConfig
  from megatron.core.utils import divide
  kw: dict[str, Any] = dict(
      num_layers=m.num_layers, hidden_size=m.hidden_size, num_attention_heads=m.num_heads,
      num_query_groups=m.kv_heads, ffn_hidden_size=m.ffn_hidden_size, kv_channels=m.head_dim,
      gated_linear_unit=m.gated_mlp, add_bias_linear=False, bf16=True, params_dtype=torch.bfloat16,
      pipeline_dtype=torch.bfloat16, tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp,
      virtual_pipeline_model_parallel_size=vp if pp > 1 and vp > 1 else None, context_parallel_size=cp,
      sequence_parallel=sp, tp_comm_overlap=tp_overlap,
      recompute_granularity=None if recompute == "none" else recompute)
  if recompute == "full":
    kw.update(recompute_method=rc_method, recompute_num_layers=rc_layers)
  if m.is_moe:
    fe = m.moe_ffn_hidden_size or m.ffn_hidden_size
    kw.update(num_moe_experts=m.num_experts, moe_router_topk=m.moe_top_k, moe_ffn_hidden_size=fe,
              expert_model_parallel_size=ep, expert_tensor_parallel_size=etp)
    if m.num_shared_experts:
      kw["moe_shared_expert_intermediate_size"] = m.num_shared_experts * fe
  first_error = None
  for emb, loss in ((False, False), (True, False), (False, True), (True, True)):
    try:
      with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = TransformerConfig(**kw, account_for_embedding_in_pipeline_split=emb,
                                account_for_loss_in_pipeline_split=loss)
        for rank in range(pp):
          for stage in range(vp if pp > 1 and vp > 1 else 1):
            get_num_layers_to_build(cfg, vp_stage=stage if vp > 1 and pp > 1 else None, pp_rank=rank)
      break
    except (ValueError, AssertionError, TypeError) as e:
      first_error = first_error or _first_line(e)
  else:
    return first_error
  try:
    divide(m.num_heads, tp)
    divide(m.kv_heads, tp)
    if m.is_moe:
      assert m.num_experts % ep == 0, f"num_moe_experts ({m.num_experts}) % expert_model_parallel_size ({ep}) != 0"
      fe = m.moe_ffn_hidden_size or m.ffn_hidden_size
      divide(fe * (2 if m.gated_mlp else 1), etp)
  except AssertionError as e:
    return _first_line(e)
  return None


def verdict(workload: Workload, values: Mapping[str, Any]) -> str | None:
  """None when megatron-core accepts the candidate's Megatron values, else
  its own error message (one line)."""
  v = dict(values)
  g = lambda name, default: v.get(name) if v.get(name) is not None else default
  recompute = str(g("recompute_granularity", "none"))
  full = recompute == "full"
  return _verdict(workload.model, int(g("tensor_model_parallel_size", 1)), int(g("pipeline_model_parallel_size", 1)),
                  int(g("context_parallel_size", 1)), int(g("expert_model_parallel_size", 1)),
                  int(g("expert_tensor_parallel_size", 1)), int(g("virtual_pipeline_model_parallel_size", 1)),
                  bool(g("sequence_parallel", False)), recompute,
                  str(g("recompute_method", "uniform")) if full else None,
                  int(g("recompute_num_layers", 1)) if full else None, bool(g("tp_comm_overlap", False)))


def constraint(workload: Workload) -> Constraint:
  """A named space constraint that asks megatron-core (needs the extra)."""
  if not available():
    raise ValueError(f"validating Megatron candidates with megatron-core needs the 'megatron' extra ({EXTRA_HINT})")

  def check(values, facts):
    why = verdict(workload, values)
    return None if why is None else f"megatron-core rejects it: {why}"
  return Constraint("megatron_core", check, "megatron-core's TransformerConfig and model-build checks accept it")


def validated_space(space: Any, workload: Workload) -> Any:
  """A copy of a Megatron simulator space (sim.vspace.SimSpace) with one
  more constraint, `megatron_core`: megatron-core's own verdict on every
  candidate (`verdict`), evaluated row by row (cached per distinct
  combination), so it also prunes enumerations. Needs the extra."""
  if not available():
    raise ValueError(f"validating Megatron candidates with megatron-core needs the 'megatron' extra ({EXTRA_HINT})")
  from autoscout_jax.sim.vspace import SimSpace, VecConstraint
  names = [n for n in SEEN if n in space]

  def decode(name: str, x: float) -> Any:
    if np.isnan(x):
      return None
    dom = space[name].finite_values()
    return dom[int(x)] if isinstance(dom[0], (bool, str)) else space[name].coerce(x)

  def ok(t, facts):
    cols = {n: np.asarray(t[n]) for n in names}  # every seen knob present (enumeration waits for them)
    rows = len(next(iter(cols.values())))
    return np.fromiter((verdict(workload, {n: decode(n, cols[n][i]) for n in names}) is None
                        for i in range(rows)), bool, rows)

  def message(values, facts):
    return f"megatron-core rejects it: {verdict(workload, values)}"

  vc = VecConstraint("megatron_core", ok, message, "megatron-core's TransformerConfig and model-build checks accept it")
  return SimSpace(space.knobs, list(space.vec_constraints) + [vc], groups=space.groups, facts=space.facts,
                  name=space.name + "+megatron_core", family=space.family)
