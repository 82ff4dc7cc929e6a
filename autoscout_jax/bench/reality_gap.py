"""Reality-gap truth: F1 times seeded effects the cheap fidelity (F0) does not model.

Where it sits: a task gin file binds `RealityGapProfiling` as its truth;
`tasks.build_task` calls `gap_truth` once per task (cached in the workdir
under a digest that includes the simulator's source, so the truth follows
the simulators as they change, and the seed). Designers get F0 (and F1) as
cheap fidelities scored live; the truth they replay is this table.

On simulated same-model tasks the truth is F1, which shares F0's cost model
(Spearman ~0.998): a designer that trusts F0 looks perfect. Here the truth
adds three documented effects a real cluster has and F0 lacks, each drawn
from `seed`:

1. kernel efficiency per GEMM shape: small matrix multiplies run below
   the roofline F0 assumes. The compute and recompute time of a candidate
   is multiplied by 1 + `kernel` x max(0, log2(ref / (rows x cols))) / 8,
   rows = micro-batch tokens per device (mbs x seq / cp), cols = hidden /
   tp, ref = 2^25, times a seeded log-normal factor (sigma `kernel_jitter`)
   per (tp, micro-batch) shape: tuned kernels exist for some shapes only.
2. congestion on cross-node collectives: exposed data-parallel and
   pipeline communication that leaves the node is slowed by
   1 + c x log2(1 + nodes the data-parallel group spans), c drawn in
   [`congestion`/2, `congestion`] (a shared fabric under other jobs'
   traffic); tensor-parallel traffic leaving a node pays the same factor.
3. allocator fragmentation moving the memory limit: the peak memory a run
   really reaches is F1's estimate x (1 + phi), phi = a per-recompute-mode
   offset (`frag_offsets`: none, selective, full) + `frag_mbs` x
   log2(micro-batch) + a seeded normal term (sigma `frag_jitter`) per
   (tp, pp, micro-batch, recompute); a candidate is out of memory when
   that exceeds the device's memory. With full recompute the real
   allocator reuses the recomputed layer's buffers, so F0 is pessimistic
   there (it calls OOM what runs); without recompute it is optimistic.

Profiling cost and repeat noise are those of `tasks.SimulatedProfiling`.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Sequence

import numpy as np

from autoscout_jax.bench import truth as truth_lib
from autoscout_jax.space import Candidate


@dataclasses.dataclass(frozen=True)
class RealityGapProfiling:
  profiled_steps: int = 10
  overhead_s: float = 120.0
  noise: float = 0.02  # log-normal sigma of repeats
  repeats: int = 3
  seed: int = 0
  kernel: float = 0.6
  kernel_jitter: float = 0.14
  congestion: float = 0.8
  frag_offsets: tuple[float, float, float] = (0.06, -0.02, -0.12)  # recompute none, selective, full
  frag_mbs: float = 0.02
  frag_jitter: float = 0.07
  evaluator: Any = None  # unused; the F1 simulator is called directly (kept for digests)


def _seeded(rng_seed: int, tag: str, keys: np.ndarray, fn: Callable[[np.random.Generator, int], np.ndarray]):
  """One seeded draw per distinct row of `keys` [N, K] (non-negative
  integers), broadcast back to N. A row's draw depends on the seed, the tag
  and the row's own values only: never on which other rows are present, so
  a shape's effect is the same in every chunk of candidates and stays put
  when the space gains or loses configurations."""
  uniq, inv = np.unique(keys, axis=0, return_inverse=True)
  code = sum(ord(ch) * (i + 1) for i, ch in enumerate(tag))
  draws = [fn(np.random.default_rng([rng_seed, code, *(int(round(float(v))) for v in row)]), 1)[0] for row in uniq]
  return np.asarray(draws)[inv.reshape(-1)]


def gap_effects(spec: RealityGapProfiling, plan: dict, model: dict, node_size: int) -> dict[str, np.ndarray]:
  """Per candidate: the factors and the memory multiplier (see module docstring)."""
  tp, cp, mbs = plan["tp"], np.maximum(plan["cp"], 1), plan["mbs"]
  rows = mbs * model["s"] / cp
  cols = model["h"] / tp
  small = np.maximum(0.0, np.log2(2.0**25 / (rows * cols))) / 8
  jit = _seeded(spec.seed, "kernel", np.stack([tp, mbs], 1),
                lambda r, n: np.exp(spec.kernel_jitter * r.standard_normal(n)))
  kernel = (1 + spec.kernel * small) * jit
  c = _seeded(spec.seed, "congestion", np.zeros((1, 1)), lambda r, n: r.uniform(0.5, 1.0, n) * spec.congestion)[0]
  dp_nodes = np.maximum(1.0, plan["dp"] / np.maximum(plan["dp_local"], 1))
  congest = 1 + c * np.log2(1 + dp_nodes)
  tp_cross = plan["tp_local"] < plan["tp"]
  rc = np.clip(plan["recompute"].astype(int), 0, 2)
  offs = np.asarray(spec.frag_offsets)[rc]
  fj = _seeded(spec.seed, "frag", np.stack([tp, plan["pp"], mbs, rc], 1),
               lambda r, n: spec.frag_jitter * r.standard_normal(n))
  mem = 1 + offs + spec.frag_mbs * np.log2(np.maximum(mbs, 1)) + fj
  return dict(kernel=kernel, congestion=congest, tp_cross=tp_cross, mem=mem)


def gap_truth(task: str, workload, cluster, candidates: Sequence[Candidate], spec: RealityGapProfiling,
              space, chunk: int = 4096, progress: Callable[[str], None] | None = None) -> truth_lib.TruthTable:
  """The truth table of a reality-gap task (module docstring); `space` is
  the task's (simulator) space the candidates belong to."""
  from autoscout_jax.sim import analytic, costs, hardware
  from autoscout_jax.sim.event import simulate_f1
  if spec.repeats < 1 or spec.profiled_steps < 1 or spec.overhead_s < 0 or spec.noise < 0:
    raise truth_lib.TruthError(f"task {task!r}: repeats and profiled_steps must be >= 1, overhead_s and noise >= 0")
  cands = list(candidates)
  n = len(cands)
  mscal, hscal = costs.model_scalars(workload), hardware.cluster_scalars(cluster)
  base, mem = np.full(n, np.nan), np.full(n, np.nan)
  kinds: list[str | None] = [None] * n
  t0 = time.time()
  for lo in range(0, n, chunk):
    part = cands[lo:lo + chunk]
    plan = analytic.candidates_to_arrays(space, part, workload, cluster)
    out = simulate_f1(plan, mscal, hscal)
    eff = gap_effects(spec, {k: np.asarray(v, np.float64) for k, v in plan.items()},
                      {k: np.asarray(v, np.float64) for k, v in mscal.items()}, cluster.devices_per_node)
    step = np.asarray(out["step_time_s"], np.float64)
    g = lambda k: np.nan_to_num(np.asarray(out.get(k, np.zeros_like(step)), np.float64))
    comp = g("compute_s") + g("recompute_s")
    cross = g("dp_comm_s") + g("pp_comm_s") + np.where(eff["tp_cross"], g("tp_comm_s"), 0.0)
    true_step = step + comp * (eff["kernel"] - 1) + cross * (eff["congestion"] - 1)
    stalled = np.asarray(out.get("stalled", np.zeros(len(part), bool)), bool)
    m = np.asarray(out["peak_mem_bytes"], np.float64) * eff["mem"]
    ok = (~stalled) & np.isfinite(true_step) & (m <= hscal["hbm_bytes"])
    base[lo:lo + len(part)] = np.where(ok, true_step, np.nan)
    for j in np.flatnonzero(~ok):
      kinds[lo + j] = "crash" if stalled[j] or not np.isfinite(true_step[j]) else "oom"
    mem[lo:lo + len(part)] = m
    if progress is not None:
      progress(f"{task}: reality-gap truth {min(lo + chunk, n)}/{n} candidates ({time.time() - t0:.0f} s)")
  # each candidate's repeat noise from its own key: the same whatever else the space holds
  z = np.stack([np.random.default_rng([spec.seed + 1, int(c.key, 16)]).standard_normal(spec.repeats)
                for c in cands]) if n else np.zeros((0, spec.repeats))
  step = base[:, None] * np.exp(spec.noise * z - 0.5 * spec.noise ** 2)
  feasible = np.isfinite(base)
  devices = float(cluster.num_devices)
  cost = np.where(feasible[:, None], step * spec.profiled_steps + spec.overhead_s, spec.overhead_s) * devices
  return truth_lib.TruthTable(
      task=task, workload_key=workload.key, cluster_key=cluster.key, source_fidelity="event",
      candidates=cands, tokens_per_s=workload.tokens_per_step / step, step_time_s=step, cost_s=cost,
      failure_kind=[[k] * spec.repeats for k in kinds], true_tokens_per_s=workload.tokens_per_step / base,
      peak_mem_bytes=np.repeat(mem[:, None], spec.repeats, axis=1),
      provenance=dict(kind="reality_gap", **{k: v for k, v in dataclasses.asdict(spec).items() if k != "evaluator"},
                      date=time.strftime("%Y-%m-%d"), seconds=round(time.time() - t0, 1)))
