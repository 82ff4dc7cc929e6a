"""`MegatronProfileEvaluator`: fidelity 'profile' (F3) for the Megatron family
-- megatron-core's own training step of the workload's GPT, run for real on
one GPU of this machine.

Where it sits: the search (or tools/megatron_table.py) hands it candidates
of `targets.megatron.space` (Megatron-LM's argument names); each is measured
in a child process, `python -m autoscout_jax.megatron_child` (torch +
megatron-core; see that module for what one step is), driven by
local/runner.py: a crash, OOM kill or hang past `timeout_s` costs one
candidate and is recorded as its failure; a fresh child takes the rest of
the batch. A machine where the child cannot start (no CUDA, no
megatron-core) raises LocalSetupError naming what is missing.

One child is one rank: candidates with tensor, pipeline, context or expert
degrees above 1 come back 'invalid' with that reason (check_fits refuses a
cluster of more than one device outright).

cost_s is device-seconds: the seconds a candidate held the child (build,
warm-up, steps) on its one GPU. Metrics: step_time_s (median of
`timed_steps`), tokens_per_s (global batch x sequence / step), mfu (model
FLOPs of sim/costs.model_flops_per_token against the device kind's dense
bf16 peak from the hardware catalog; None for a kind it does not know),
peak_mem_bytes (torch's peak allocation).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from autoscout_jax.evaluator import CheckedEvaluator
from autoscout_jax.local.runner import ChildFaults, Outcome, run_candidates
from autoscout_jax.measurement import Measurement
from autoscout_jax.problem import Problem
from autoscout_jax.sim import costs
from autoscout_jax.sim.hardware import device_for_kind
from autoscout_jax.space import Candidate
from autoscout_jax.workload import Workload

__all__ = ["MegatronProfileEvaluator", "child_request"]

ROOT = Path(__file__).resolve().parents[1]
EXTRA_HINT = "it needs torch with CUDA and megatron-core (pip install -e \".[megatron]\" on a GPU machine)"
MODULE = "autoscout_jax.megatron_child"


def child_request(workload: Workload) -> dict[str, Any]:
  """The model and batch part of a child request (megatron_child.py)."""
  m = workload.model
  if m.is_moe:
    raise ValueError(f"model {m.name!r}: the Megatron profile child builds dense GPTs only")
  return {"model": {"num_layers": m.num_layers, "hidden_size": m.hidden_size, "num_heads": m.num_heads,
                    "num_kv_heads": m.kv_heads, "ffn_hidden_size": m.ffn_hidden_size,
                    "vocab_size": m.vocab_size, "seq_len": m.seq_len, "gated_mlp": m.gated_mlp},
          "global_batch": int(workload.global_batch)}


_PROBE = ("import torch, megatron.core; "
          "assert torch.cuda.is_available(), 'no CUDA device visible to torch (megatron-core\\'s training step "
          "needs one)'")


@functools.lru_cache(maxsize=None)
def _can_train(python: str) -> str | None:
  """Why `python` cannot run the child here (no torch, no megatron-core, no
  CUDA device), or None; asked once per interpreter, before a search starts."""
  try:
    proc = subprocess.run([python, "-W", "ignore", "-c", _PROBE], capture_output=True, text=True, timeout=180,
                          env=_child_env())
  except (OSError, subprocess.TimeoutExpired) as e:
    return f"the Megatron profile child cannot start with {python}: {type(e).__name__}: {e}"
  if proc.returncode == 0:
    return None
  last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
  return f"the Megatron profile evaluator cannot train here ({last}); {EXTRA_HINT}"


def _child_env() -> dict[str, str]:
  env = dict(os.environ)
  root = str(ROOT)
  env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
                                                if p and p != root])
  return env


class MegatronProfileEvaluator(ChildFaults, CheckedEvaluator):
  """F3 of the Megatron family on one GPU. Arguments:

  warmup_steps, timed_steps: untimed steps after the build, then timed ones
    (each between two CUDA synchronizations); the median is the step time.
  timeout_s: per-candidate limit (start to result); past it the child is
    killed and the candidate is 'timeout'.
  startup_timeout_s: limit for a child to import torch and megatron-core.
  max_per_child: candidates one child measures before a fresh one starts.
  python: interpreter with torch (CUDA) and megatron-core (default: this one).
  faults: test hook {candidate key: kind} (child_protocol.py kinds).
  """

  fidelity = "profile"
  contends_for_devices = True

  def __init__(self, warmup_steps: int = 2, timed_steps: int = 5, timeout_s: float = 300.0,
               startup_timeout_s: float = 180.0, max_per_child: int | None = None, seed: int = 0,
               python: str | None = None, faults: Mapping[str, str] | None = None):
    if warmup_steps < 0 or timed_steps < 1:
      raise ValueError(f"need warmup_steps >= 0 and timed_steps >= 1, got {warmup_steps}, {timed_steps}")
    if timeout_s <= 0 or startup_timeout_s <= 0:
      raise ValueError(f"timeouts must be positive, got timeout_s={timeout_s}, startup_timeout_s={startup_timeout_s}")
    self._init_faults(faults)
    self.warmup_steps, self.timed_steps = int(warmup_steps), int(timed_steps)
    self.timeout_s, self.startup_timeout_s = float(timeout_s), float(startup_timeout_s)
    self.max_per_child = max_per_child
    self.seed = int(seed)
    self.python = python

  def _options(self) -> dict[str, Any]:
    return {"warmup_steps": self.warmup_steps, "timed_steps": self.timed_steps, "seed": self.seed}

  def settings(self) -> dict[str, Any]:
    return {**self._options(), "runner": "megatron-core", **self.fault_settings()}

  def check_fits(self, workload: Workload, cluster: Any) -> str | None:
    n = int(getattr(cluster, "num_devices", 0) or 0)
    if n != 1:
      return (f"the Megatron profile evaluator runs one rank on one GPU; cluster "
              f"{getattr(cluster, 'name', '?')!r} has {n} devices")
    try:
      child_request(workload)
    except ValueError as e:
      return str(e)
    return _can_train(self.python or sys.executable)

  def measure(self, problem: Problem, candidates: Sequence[Candidate]) -> list[Measurement]:
    workload, cluster = problem.workload, problem.cluster
    faults = self.faults_for(candidates)
    request = {**child_request(workload), "options": self._options(), "faults": faults}
    items = [{"index": i, "key": c.key, "values": dict(c.values)} for i, c in enumerate(candidates)]
    argv = [self.python or sys.executable, "-m", MODULE]
    outcomes = run_candidates(request, items, _child_env(), self.timeout_s, self.startup_timeout_s,
                              self.max_per_child, argv=argv)
    flops_tok = float(costs.model_flops_per_token(np, costs.model_scalars(workload)))
    return [self._measurement(workload, cluster, cand, outcomes[i], faults.get(cand.key), flops_tok)
            for i, cand in enumerate(candidates)]

  def _measurement(self, workload: Workload, cluster: Any, cand: Candidate, outcome: Outcome,
                   fault: str | None, flops_per_token: float) -> Measurement:
    m = outcome.metrics
    if m.feasible and m.tokens_per_s:
      dev = device_for_kind(str(outcome.provenance.get("device_kind", "")))
      mfu = flops_per_token * m.tokens_per_s / dev.peak_bf16 if dev is not None else None
      m = dataclasses.replace(m, mfu=mfu, flops_per_step=flops_per_token * m.tokens_per_s * m.step_time_s)
      outcome = Outcome(m, outcome.wall_s, outcome.provenance)
    return outcome.measurement(
        cand, self.fidelity, workload, cluster, outcome.wall_s,
        {"evaluator": "megatron.profile", **({"injected_fault": fault} if fault else {})},
        defaults={"platform": "gpu", "device_count": 1})
