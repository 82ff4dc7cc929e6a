"""Helpers the cluster-scale targets (megatron.py, jax_mesh.py) share:
domains of parallel degrees, the facts their constraints read, how a
layer stack splits into pipeline stages, and knobs that feed one plan
field as they are.

Where it sits: imported by the target modules only; jax-free.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

from autoscout_jax.sim.vspace import nz
from autoscout_jax.space import Boolean, Knob


def pow2(limit: int, start: int = 1) -> tuple[int, ...]:
  out, v = [], start
  while v <= limit:
    out.append(v)
    v *= 2
  return tuple(out) or (1,)


def divisors(n: int, limit: int | None = None) -> tuple[int, ...]:
  return tuple(d for d in range(1, n + 1) if n % d == 0 and (limit is None or d <= limit))


def facts(workload: Any, cluster: Any) -> dict:
  m = workload.model
  return dict(num_devices=cluster.num_devices, node_size=cluster.node_size, heads=m.num_heads,
              kv_heads=m.kv_heads, layers=m.num_layers, seq_len=m.seq_len, global_batch=workload.global_batch,
              experts=m.num_experts, moe_ffn=m.moe_ffn_hidden_size or m.ffn_hidden_size)


def layer_split_ok(layers, stages):
  # embedding, loss (and an MTP block) may be placed as pipeline layers
  # (Megatron's account_for_embedding/loss_in_pipeline_split, pipeline layouts)
  return np.any([(layers + extra) % stages == 0 for extra in (0, 1, 2, 3)], axis=0) & (stages <= layers + 3)


@dataclasses.dataclass(frozen=True)
class Direct:
  """A knob whose value feeds one plan field as it is (a boolean as 0/1, a
  number times `scale`; `inactive` where its condition does not hold).
  Declaring one in a target's DIRECT table is all it takes for the knob to
  be in the family's space, its plan and its launch artifact."""

  knob: Knob
  field: str  # a PLAN_FIELDS entry (sim/costs.py)
  scale: float = 1.0
  inactive: float = 0.0


def apply_direct(plan: Mapping[str, np.ndarray], table: Mapping[str, np.ndarray], space: Any,
                 direct: Sequence[Direct]) -> dict[str, np.ndarray]:
  """`plan` with each Direct knob's column written into its field."""
  out = dict(plan)
  for d in direct:
    col = np.asarray(table[d.knob.name], np.float64)
    if isinstance(d.knob, Boolean):
      col = np.where(np.isnan(col), np.nan, (col == space.code(d.knob.name, True)).astype(np.float64))
    out[d.field] = nz(col, d.inactive) * d.scale
  return out
