"""Target families: one module per family of configuration spaces, each
owning its space factory, its typed config (`Config.from_candidate`), its
translation to the simulators' plan (cluster-scale families) and its launch
artifact.

- local: this machine's devices (F2 compile, F3 profile of our Flax step);
- megatron: Megatron-LM on GPU clusters (F0/F1 simulators); its argument
  list and launch.sh are megatron_launch;
- jax_mesh: MaxText-style JAX meshes on TPU/GPU clusters (F0/F1);
- serving: an LLM inference deployment (vLLM's knobs): this machine's
  prefill + decode engine (F2/F3) or a cluster's serving model;
- maxtext: MaxText's own keys, run by MaxText itself (Python 3.12 children:
  F2 compile, F3 steps) on this machine or compiled for TPU topologies, and
  simulated through jax_mesh's plan translation (F0/F1).

Where it sits: gin binds `<family>.space` as SPACE_FN; the space carries
its family's name (and, for the simulators, its plan translation), so
nothing downstream guesses a family from knob names; the report calls
`launch_artifact`.
"""

from __future__ import annotations

from typing import Any

from autoscout_jax.space import Candidate, SearchSpace
from autoscout_jax.targets import jax_mesh, local, maxtext, megatron, megatron_launch, serving, xla

FAMILIES = {m.FAMILY: m for m in (local, megatron, jax_mesh, maxtext, serving)}
# where a family's launch files are written, when not in its own module
_LAUNCHERS = {megatron.FAMILY: megatron_launch}


def launch_artifact(space: SearchSpace, cand: Candidate, workload: Any, cluster: Any) -> dict[str, Any]:
  """What a user runs for `cand`, by the family that made `space`."""
  platform = cluster.platform
  if space.family == megatron.FAMILY:
    return megatron_launch.artifact(space, cand, workload)
  if space.family == serving.FAMILY:
    return serving.artifact(space, cand, workload, cluster)
  if space.family == maxtext.FAMILY:
    return maxtext.artifact(space, cand, workload, cluster)
  if space.family in (local.FAMILY, jax_mesh.FAMILY):
    return FAMILIES[space.family].artifact(space, cand, platform)
  return {"kind": "values", "values": dict(cand.values)}  # an ad-hoc space: nothing to translate


def launch_files(space: SearchSpace, cand: Candidate, workload: Any, cluster: Any,
                 summary: str = "") -> dict[str, str]:
  """Files to write beside the report (name -> text): local: launch.py;
  megatron: launch.sh (torchrun); jax_mesh: launch.sh (XLA flag export +
  MaxText) and maxtext.yml; maxtext: maxtext_overrides.txt (`key=value`
  lines) and launch.sh; serving: launch.sh (vllm serve); an ad-hoc space:
  none."""
  module = _LAUNCHERS.get(space.family) or FAMILIES.get(space.family)
  if module is None:
    return {}
  return module.launch_files(space, cand, workload, cluster, summary)


__all__ = ["FAMILIES", "jax_mesh", "launch_artifact", "launch_files", "local", "maxtext", "megatron",
           "megatron_launch", "serving", "xla"]
