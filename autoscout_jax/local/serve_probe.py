"""Measure one serving candidate inside the child process: F2 figures (the
compiled prefill / decode / insert programs and their memory, KV cache
included), F3 TTFT and TPOT of the workload's request mix.

Where it sits: `local/child.py` calls `measure(...)` for each candidate of
a serving space (targets/serving.py) and streams the `Metrics` back to the
parent; `local/serve_step.py` builds the programs.

The engine (`Engine`) is a small continuous-batching server over those
programs. A closed-loop client keeps every decode slot busy: the first
requests arrive at once, and each finished request lets the next one in.
A request waits for a prefill replica and a free decode slot; its prompt
is prefilled in passes of `prefill_len` tokens (one request per replica
per pass), its first token comes from the last pass, its cache moves into
the slot, and each decode pass then gives every busy slot one token.
Scheduling, as in vLLM: without chunking, waiting prompts are prefilled
before the next decode pass (prefill first: short TTFT, decode stalls);
with chunking, one chunk per decode pass (bounded stalls, longer TTFT);
disaggregated, prefill and decode passes run at once on their own devices.

Metrics (targets/serving.SERVE_METRICS): per request TTFT = first token -
arrival, TPOT = (last token - first token) / (output tokens - 1); p50 and
p90 over the mix; throughput = output tokens / wall time of the run;
`tokens_per_s` = throughput per device used (the objective); `step_time_s`
= TPOT p50. Missing the workload's SLO is failure kind 'slo' (infeasible),
with every figure kept.
"""

from __future__ import annotations

import collections
import dataclasses
import gc
import time
import traceback
from typing import Any, Mapping, Sequence

import jax
import numpy as np

from autoscout_jax.local.runner import classify
from autoscout_jax.local.serve_step import ServeSetup, build_serve_setup
from autoscout_jax.measurement import COMPILE_ERROR, CRASH, INVALID, OOM, SLO, Metrics
from autoscout_jax.targets.serving import LayoutError, kv_capacity, slo_log_margins, slo_verdict
from autoscout_jax.units import fmt_bytes
from autoscout_jax.workload import LocalCluster, Workload


def _device_bytes(tree: Any) -> int:
  """Bytes of one device's shard of every array in `tree` (ShapeDtypeStructs)."""
  total = 0
  for a in jax.tree.leaves(tree):
    shard = a.sharding.shard_shape(a.shape)
    total += int(np.prod(shard)) * np.dtype(a.dtype).itemsize
  return total


def compile_figures(setup: ServeSetup) -> tuple[dict[str, Any], dict[str, Any]]:
  """(compiled programs, figures). Peak per device: the larger phase's
  program (arguments + outputs + temporaries - donated) plus, on shared
  devices, the other phase's KV cache, which stays resident."""
  t0 = time.perf_counter()
  lowered = setup.lowered()
  t1 = time.perf_counter()
  compiled = {k: v.compile() for k, v in lowered.items()}
  t2 = time.perf_counter()
  fig: dict[str, Any] = {"lower_s": t1 - t0, "compile_s": t2 - t1}
  peaks = {}
  for name, c in compiled.items():
    mem = c.memory_analysis()
    if mem is None:
      continue
    peaks[name] = (mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
                   - mem.alias_size_in_bytes)
    fig[f"{name}_temp_bytes"] = int(mem.temp_size_in_bytes)
  pg, dg = setup.prefill_group, setup.decode_group
  prefill_cache = _device_bytes(setup.abstract_cache(pg, 1, setup.prefill_cache_len))
  decode_cache = _device_bytes(setup.abstract_cache(dg, setup.slots))
  fig.update(kv_cache_bytes=decode_cache, prefill_cache_bytes=prefill_cache,
             argument_bytes=int(compiled["decode"].memory_analysis().argument_size_in_bytes)
             if compiled["decode"].memory_analysis() is not None else None)
  if peaks:
    if setup.disaggregated:
      fig["peak_mem_bytes"] = max(peaks.values())
    else:
      fig["peak_mem_bytes"] = max(peaks.get("decode", 0) + prefill_cache, peaks.get("prefill", 0) + decode_cache)
  return compiled, fig


@dataclasses.dataclass
class _Slot:
  req: int = -1
  pos: int = 0
  token: int = 0
  made: int = 0


class Engine:
  """See the module docstring. `run()` serves `num_requests` requests of
  the workload's mix once and returns per-request times (and, with
  `keep_tokens`, every generated token, for tests)."""

  def __init__(self, setup: ServeSetup, programs: Mapping[str, Any], params: Any,
               num_requests: int, seed: int = 0, keep_tokens: bool = False,
               prompts: Sequence[Sequence[int]] | None = None):
    self.s, self.p = setup, programs
    spec = setup.workload.serving
    rng = np.random.default_rng(seed)
    vocab = setup.workload.model.vocab_size
    self.shapes = [spec.request(i) for i in range(num_requests)]
    self.prompts = ([np.asarray(p, np.int32) for p in prompts] if prompts is not None else
                    [rng.integers(0, vocab, size=n, dtype=np.int32) for n, _ in self.shapes])
    if prompts is not None:
      self.shapes = [(len(p), o) for p, (_, o) in zip(self.prompts, self.shapes)]
    self.keep = keep_tokens
    pg, dg = setup.prefill_group, setup.decode_group
    self.pparams = setup.place(params, pg)
    self.dparams = self.pparams if pg is dg else setup.place(params, dg)

  def warm(self) -> None:
    """One pass of every program on throw-away caches (first executions
    allocate; the timed run should not pay for that)."""
    s, prog = self.s, self.p
    pg, dg = s.prefill_group, s.decode_group
    z = lambda g, *shape: self._put(g, np.zeros(shape, np.int32))
    pc = s.new_cache(pg, 1, s.prefill_cache_len)
    out, _, pc = prog["prefill"](self.pparams, pc, z(pg, pg.replicas, 1, s.prefill_len), z(pg, pg.replicas, 1),
                                 z(pg, pg.replicas, 1))
    row = prog["route"](pc, jax.device_put(np.zeros(dg.replicas, np.int32),
                                           jax.sharding.NamedSharding(pg.mesh, jax.sharding.PartitionSpec(None))))
    row = jax.device_put(row, jax.tree.map(lambda _: dg.cache_sharding, row))
    dc = prog["insert"](s.new_cache(dg, s.slots), row, z(dg, dg.replicas),
                        self._put(dg, np.zeros(dg.replicas, bool)))
    out2, _, dc = prog["decode"](self.dparams, dc, z(dg, dg.replicas, s.slots, 1), z(dg, dg.replicas, s.slots),
                                 z(dg, dg.replicas, s.slots))
    jax.block_until_ready((out, out2, dc))

  def _put(self, group, array):
    return jax.device_put(array, jax.sharding.NamedSharding(
        group.mesh, jax.sharding.PartitionSpec("data", *([None] * (array.ndim - 1)))))

  def run(self) -> dict[str, Any]:
    s, prog = self.s, self.p
    pg, dg = s.prefill_group, s.decode_group
    rp, rd, nslots, t_len = pg.replicas, dg.replicas, s.slots, s.prefill_len
    n = len(self.shapes)
    pcache = s.new_cache(pg, 1, s.prefill_cache_len)
    dcache = s.new_cache(dg, nslots)
    slots = [[_Slot() for _ in range(nslots)] for _ in range(rd)]
    reserved: set[tuple[int, int]] = set()
    prefilling: list[list[int] | None] = [None] * rp  # [request, cursor, decode replica, slot]
    arrive, first, done = np.zeros(n), np.full(n, np.nan), np.full(n, np.nan)
    tokens: dict[int, list[int]] = collections.defaultdict(list)
    waiting = collections.deque()
    nxt = 0
    t0 = time.perf_counter()
    for _ in range(min(n, rd * nslots)):
      waiting.append(nxt)
      arrive[nxt] = 0.0
      nxt += 1
    finished, passes = 0, collections.Counter()

    def free_slot(r_pre):
      reps = [r_pre] if not s.disaggregated else range(rd)
      for d in reps:
        for j in range(nslots):
          if slots[d][j].req < 0 and (d, j) not in reserved:
            return d, j
      return None

    def admit():
      for r in range(rp):
        if prefilling[r] is None and waiting:
          dest = free_slot(r)
          if dest is None:
            continue
          reserved.add(dest)
          prefilling[r] = [waiting.popleft(), 0, *dest]

    def prefill_dispatch():
      if not any(prefilling):
        return None
      tok = np.zeros((rp, 1, t_len), np.int32)
      start = np.zeros((rp, 1), np.int32)
      last = np.zeros((rp, 1), np.int32)
      for r, st in enumerate(prefilling):
        if st is None:
          continue
        req, cur = st[0], st[1]
        piece = self.prompts[req][cur:cur + t_len]
        tok[r, 0, :len(piece)] = piece
        start[r, 0] = cur
        last[r, 0] = len(piece) - 1
      nonlocal pcache
      out, _, pcache = prog["prefill"](self.pparams, pcache, self._put(pg, tok), self._put(pg, start),
                                       self._put(pg, last))
      passes["prefill"] += 1
      return out

    def prefill_finish(out):
      nonlocal dcache
      toks = np.asarray(out)
      now = time.perf_counter() - t0
      ready = []
      for r, st in enumerate(prefilling):
        if st is None:
          continue
        st[1] += t_len
        if st[1] >= len(self.prompts[st[0]]):
          ready.append((r, st))
          prefilling[r] = None
      while ready:  # one insert per decode replica per round
        src, slot, take, rest, used = np.zeros(rd, np.int32), np.zeros(rd, np.int32), np.zeros(rd, bool), [], set()
        for r, st in ready:
          req, _, d, j = st
          if d in used:
            rest.append((r, st))
            continue
          used.add(d)
          src[d], slot[d], take[d] = r, j, True
          first[req] = now
          tok = int(toks[r, 0])
          if self.keep:
            tokens[req].append(tok)
          reserved.discard((d, j))
          slots[d][j] = _Slot(req, len(self.prompts[req]), tok, 1)
        row = prog["route"](pcache, jax.device_put(src, jax.sharding.NamedSharding(
            pg.mesh, jax.sharding.PartitionSpec(None))))
        row = jax.device_put(row, jax.tree.map(lambda _: dg.cache_sharding, row))
        dcache = prog["insert"](dcache, row, self._put(dg, slot), self._put(dg, take))
        ready = rest

    def decode_dispatch():
      if not any(sl.req >= 0 for rep in slots for sl in rep):
        return None
      tok = np.array([[[sl.token] for sl in rep] for rep in slots], np.int32)
      start = np.array([[sl.pos for sl in rep] for rep in slots], np.int32)
      nonlocal dcache
      out, _, dcache = prog["decode"](self.dparams, dcache, self._put(dg, tok), self._put(dg, start),
                                      self._put(dg, np.zeros((rd, nslots), np.int32)))
      passes["decode"] += 1
      return out

    def decode_finish(out):
      nonlocal finished, nxt
      toks = np.asarray(out)
      now = time.perf_counter() - t0
      for d, rep in enumerate(slots):
        for j, sl in enumerate(rep):
          if sl.req < 0:
            continue
          if sl.made < self.shapes[sl.req][1]:
            sl.token, sl.pos, sl.made = int(toks[d, j]), sl.pos + 1, sl.made + 1
            if self.keep:
              tokens[sl.req].append(sl.token)
          if sl.made >= self.shapes[sl.req][1]:
            done[sl.req] = now
            finished += 1
            rep[j] = _Slot()
            if nxt < n:
              waiting.append(nxt)
              arrive[nxt] = now
              nxt += 1

    chunked = bool(s.config.chunked_prefill_size)
    while finished < n:
      admit()
      if s.disaggregated:
        pout, dout = prefill_dispatch(), decode_dispatch()  # both in flight at once
        if dout is not None:
          decode_finish(dout)
        if pout is not None:
          prefill_finish(pout)
        continue
      while True:  # prefill first, or one chunk per decode pass
        pout = prefill_dispatch()
        if pout is None:
          break
        prefill_finish(pout)
        admit()
        if chunked:
          break
      # A request whose output is one token is done at its first token.
      dout = decode_dispatch()
      if dout is not None:
        decode_finish(dout)
      elif not any(prefilling) and not waiting:
        break
    wall = time.perf_counter() - t0
    outs = np.array([o for _, o in self.shapes], float)
    ttft = first - arrive
    tpot = np.where(outs > 1, (done - first) / np.maximum(outs - 1, 1), np.nan)
    return {"ttft_s": ttft, "tpot_s": tpot, "wall_s": wall, "output_tokens": int(outs.sum()),
            "passes": dict(passes), "tokens": dict(tokens)}


def _pct(x: np.ndarray, q: int) -> float | None:
  x = x[np.isfinite(x)]
  return float(np.percentile(x, q)) if x.size else None


def serve_metrics(run: Mapping[str, Any], devices: int) -> dict[str, Any]:
  ms = lambda v: None if v is None else 1000.0 * v
  tput = run["output_tokens"] / run["wall_s"]
  return {"ttft_ms_p50": ms(_pct(run["ttft_s"], 50)), "ttft_ms_p90": ms(_pct(run["ttft_s"], 90)),
          "ttft_ms_p99": ms(_pct(run["ttft_s"], 99)), "tpot_ms_p50": ms(_pct(run["tpot_s"], 50)),
          "tpot_ms_p90": ms(_pct(run["tpot_s"], 90)), "tpot_ms_p99": ms(_pct(run["tpot_s"], 99)),
          "throughput_tok_s": tput, "devices_used": devices, "serve_wall_s": run["wall_s"],
          "passes": run["passes"]}


def measure(fidelity: str, workload: Workload, cluster: LocalCluster, values: Mapping[str, Any],
            devices: Sequence[jax.Device], options: Mapping[str, Any]) -> Metrics:
  """One serving candidate at 'compile' or 'profile'. Never raises for a
  failing candidate (see probe.measure for the failure kinds; 'slo' when
  the measured TTFT/TPOT miss the workload's SLOs)."""
  if fidelity not in ("compile", "profile"):
    raise ValueError(f"the local child measures 'compile' or 'profile', not {fidelity!r}")
  try:
    setup = build_serve_setup(workload, cluster, values, devices)
    programs, fig = compile_figures(setup)
  except LayoutError as e:
    return Metrics.failed(INVALID, f"{type(e).__name__}: {e}")
  except Exception:
    text = traceback.format_exc()
    return Metrics.failed(classify(text, COMPILE_ERROR), text)
  cap = kv_capacity(workload, cluster, dataclasses.asdict(setup.config))
  used = setup.config.num_devices
  fig.update(kv_capacity_tokens=cap.tokens, effective_batch=setup.slots * setup.decode_group.replicas,
             devices_used=used, prefill_len=setup.prefill_len)
  peak = fig.pop("peak_mem_bytes", None)
  if peak is not None and peak > cluster.memory_bytes_per_device:
    return Metrics.failed(OOM, f"needs {fmt_bytes(peak)} per device (XLA memory analysis, KV cache "
                          f"included) but the cluster has {fmt_bytes(cluster.memory_bytes_per_device)}; "
                          f"not run", peak_mem_bytes=peak, extra=fig)
  if fidelity == "compile":
    return Metrics(feasible=True, peak_mem_bytes=peak, extra=fig)
  try:
    params = setup.init_params(int(options.get("seed", 0)))
    engine = Engine(setup, programs, params, workload.global_batch, seed=int(options.get("seed", 0)))
    engine.warm()
    run = engine.run()
  except Exception:
    text = traceback.format_exc()
    return Metrics.failed(classify(text, CRASH), text, peak_mem_bytes=peak, extra=fig)
  finally:
    gc.collect()
  fig.update(serve_metrics(run, used))
  per_device = fig["throughput_tok_s"] / used
  fig["tokens_per_s_per_device"] = per_device
  tpot = fig["tpot_ms_p50"]
  # measured: the search learns its model's latency errors from them
  fig.update(slo_log_margins(workload.serving, fig))
  miss = slo_verdict(workload.serving, fig)
  if miss:  # infeasible: no objective, every figure kept in extra for the report
    return Metrics.failed(SLO, miss, peak_mem_bytes=peak, extra=fig)
  return Metrics(feasible=True, tokens_per_s=per_device, step_time_s=None if tpot is None else tpot / 1000.0,
                 peak_mem_bytes=peak, extra=fig)
