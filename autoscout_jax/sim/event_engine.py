"""Vectorized event engine: the timeline of one pipelined training step for
a whole batch of candidates at once (the core of the F1 simulator).

Where it sits: `sim/event.py` turns candidates into `PipelineInputs` (per
virtual stage pass times from the shared per-layer cost model,
sim/costs.py) and calls `simulate_pipeline`; this module knows nothing of
models, knobs or clusters, only of ranks, passes, sends and links. The
model it computes is stated in `sim/event_reference.py`, a plain event loop
the tests hold this engine to.

Why it is fast: the op order of every rank under 1F1B or interleaved 1F1B
is fixed by (pp, vp, micro-batches); only the durations differ. So instead
of a priority queue we sweep "rounds": in each round every rank runs its
next op if that op's input (the op of the neighbouring stage) is already
done. Readiness depends only on the op order, never on times, so the
rounds visit each op after its inputs, and each round is a handful of
array operations over "lanes" (one per candidate and rank, all candidates
of a call side by side) inside one jitted `lax.while_loop`. Per-op time,
the DP bucket queue and link contention are closed-form updates (a FIFO of
buckets that arrive evenly during a pass finishes at the max of three
linear terms). A lane keeps only its last few finish times (a rank never
waits on an op of its neighbour more than about pp/2 ops old). Calls hold
256 or 2048 lanes of candidates with similar run lengths, so a few
compiled shapes serve every batch; a rank-less (pp = 1) candidate is a
closed form; a candidate with many more micro-batches than its schedule
needs to settle into its periodic steady state is run three times with
fewer and extended linearly (checked, else run in full).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

# per-virtual-stage features, stacked for one gather per round
_FEATS = ("fwd", "bwd", "fwd_comm", "bwd_comm", "dp", "buckets", "ag_cum")


@dataclasses.dataclass(frozen=True)
class PipelineInputs:
  """One step of N candidates. Per-virtual-stage arrays are [N, V, P]:
  [candidate, model chunk, pipeline rank] (virtual stage = chunk*pp+rank),
  seconds per micro-batch; entries beyond a candidate's (vp, pp) are
  ignored.

  fwd, bwd      a forward / backward pass (backward includes recompute)
  fwd_comm, bwd_comm  the part of fwd/bwd that is communication on the
                same link as the data-parallel traffic (0 if none): what
                slows down when both are busy
  dp            reducing this virtual stage's gradients, alone on the link
  buckets       gradient buckets of this virtual stage (>= 1)
  ag            gathering this virtual stage's parameters (0 without a
                distributed optimizer)
  p2p [N]       one activation/gradient send between stages, alone
  p2p_shared [N]  the send rides the data-parallel link
  p2p_async [N]   the sender does not wait for its send (interleaved
                schedule with p2p overlap)
  interference [N]  compute slow-down per second of overlapping DP traffic
  overlap_grad, overlap_param [N]  bool knobs
  opt [N, P]    optimizer step of each rank
  """

  pp: np.ndarray
  vp: np.ndarray
  m: np.ndarray
  fwd: np.ndarray
  bwd: np.ndarray
  fwd_comm: np.ndarray
  bwd_comm: np.ndarray
  dp: np.ndarray
  buckets: np.ndarray
  ag: np.ndarray
  p2p: np.ndarray
  p2p_shared: np.ndarray
  p2p_async: np.ndarray
  interference: np.ndarray
  overlap_grad: np.ndarray
  overlap_param: np.ndarray
  opt: np.ndarray

  def __post_init__(self):
    n = len(self.pp)
    for f in dataclasses.fields(self):
      a = np.asarray(getattr(self, f.name))
      object.__setattr__(self, f.name, a)
      if a.shape[:1] != (n,):
        raise ValueError(f"PipelineInputs.{f.name}: leading dimension {a.shape[:1]} != {n} candidates")
    if n == 0:
      return
    if np.any(self.pp < 1) or np.any(self.vp < 1) or np.any(self.m < 1):
      raise ValueError("PipelineInputs: pp, vp and micro-batch counts must be >= 1")
    if np.any((self.vp > 1) & (self.pp == 1)):
      raise ValueError("PipelineInputs: interleaving (vp > 1) needs pp > 1")
    v, p = int(self.vp.max()), int(self.pp.max())
    for f in ("fwd", "bwd", "fwd_comm", "bwd_comm", "dp", "buckets", "ag"):
      a = getattr(self, f)
      if a.ndim != 3 or a.shape[1] < v or a.shape[2] < p:
        raise ValueError(f"PipelineInputs.{f}: shape {a.shape} must be [N, >= {v} chunks, >= {p} ranks]")
    if self.opt.ndim != 2 or self.opt.shape[1] < p:
      raise ValueError(f"PipelineInputs.opt: shape {self.opt.shape} must be [N, >= {p} ranks]")

  def take(self, idx: np.ndarray) -> "PipelineInputs":
    return PipelineInputs(**{f.name: getattr(self, f.name)[idx] for f in dataclasses.fields(self)})


def _pow2(x: int) -> int:
  return 1 << max(0, int(math.ceil(math.log2(max(int(x), 1)))))


# --- schedule arithmetic (array versions of event_reference.rank_order) ---------------


def warmup_counts(pp, vp, m, s):
  """Warm-up forwards of rank s (Megatron's rule; all-warm-up when
  interleaving with exactly pp micro-batches)."""
  total = m * vp
  w1 = np.minimum(pp - s - 1, m)
  wi = np.where(m == pp, total, np.minimum((pp - s - 1) * 2 + (vp - 1) * pp, total))
  return np.maximum(np.where(vp == 1, w1, wi), 0)


def _lanes(inp: PipelineInputs, members: np.ndarray) -> dict[str, np.ndarray]:
  """One lane per (candidate, rank), with its candidate's schedule numbers
  and the offset of its rows in the per-chunk feature table."""
  pp, vp, m = (inp.pp[members].astype(np.int64), inp.vp[members].astype(np.int64),
               inp.m[members].astype(np.int64))
  cand = np.repeat(np.arange(len(members)), pp)
  base = np.repeat(np.cumsum(pp) - pp, pp)
  s = np.arange(len(cand)) - base
  lp, lv, lm = pp[cand], vp[cand], m[cand]
  nops = 2 * lm * lv
  nfull = (lm + lp - 1) // lp - 1
  return dict(cand=cand, s=s, base=base, pp=lp, vp=lv, m=lm, w=warmup_counts(lp, lv, lm, s),
              nfull=nfull, last=lm - nfull * lp, frow=np.cumsum(lv) - lv, nops=nops)


@functools.partial(jax.jit, static_argnames=("ring",))
def _sweep(lane, feats, p2p, interference, p2p_shared, p2p_async, overlap_grad, overlap_param, ring):
  """Rounds over lanes (see module docstring). `lane` holds int32 [L]
  arrays from `_lanes`; feats [rows, len(_FEATS)] per (lane, chunk); p2p
  and flags per lane. Each lane keeps the finish times of its last `ring`
  ops (a power of two): a rank never reads an op of its neighbour that is
  more than about pp/2 ops old, and a read that would be is flagged.
  Returns the op pointer, per-lane free time, DP end, busy, send,
  contention and gather-wait totals, and the overflow flag."""
  s, base, pp, vp, m = lane["s"], lane["base"], lane["pp"], lane["vp"], lane["m"]
  w, nfull, last, frow, nops = (lane[k] for k in ("w", "nfull", "last", "frow", "nops"))
  total = m * vp
  last_q = pp * vp - 1
  f32 = feats.dtype
  L = s.shape[0]
  lane_ids = jnp.arange(L, dtype=jnp.int32)

  def body(st):
    (ptr, free, dp_done, busy, sends, ext, agw, fg, fc, fr, bg, bc, br, table, over, _) = st
    k = ptr
    active = k < nops
    in_warm = k < w
    steady = ~in_warm & (k < 2 * total - w)
    is_f = in_warm | (steady & (((k - w) & 1) == 0))
    # odometers (group, chunk position, micro-batch in group) of the next F and B
    grp, cpos, mbr = jnp.where(is_f, fg, bg), jnp.where(is_f, fc, bc), jnp.where(is_f, fr, br)
    gsize = jnp.where(grp < nfull, pp, last)
    mb = grp * pp + mbr
    c = jnp.where(is_f, cpos, vp - 1 - cpos)
    q = c * pp + s
    first, final = s == 0, s == pp - 1
    has_dep = jnp.where(is_f, q > 0, q < last_q)
    dep_r = jnp.where(is_f, jnp.where(first, pp - 1, s - 1), jnp.where(final, 0, s + 1))
    dep_cpos = jnp.where(is_f, cpos - first, cpos - final)  # crossing the wrap changes chunk
    dep_o = grp * pp * vp + dep_cpos * gsize + mbr
    dep_lane = base + dep_r
    w_dep = w[dep_lane]
    dep_k = jnp.where(is_f, jnp.where(dep_o < w_dep, dep_o, 2 * dep_o - w_dep),
                      jnp.minimum(w_dep + 2 * dep_o + 1, total + dep_o))
    ready = ~has_dep | (ptr[dep_lane] > dep_k)
    go = active & ready
    over = over | (go & has_dep & (ptr[dep_lane] - dep_k > ring))
    arrival = jnp.where(has_dep, table[dep_lane * ring + (dep_k & (ring - 1))], 0.0)
    t0 = jnp.maximum(free, arrival)

    fe = feats[frow + jnp.clip(c, 0, vp - 1)]
    dur = jnp.where(is_f, fe[:, 0], fe[:, 1])
    comm = jnp.where(is_f, fe[:, 2], fe[:, 3])
    dp_c, nb, ag_cum = fe[:, 4], jnp.maximum(fe[:, 5], 1.0), fe[:, 6]
    end = t0 + dur
    gated = jnp.where(is_f & (mb == 0) & overlap_param, ag_cum + dur / nb, -jnp.inf)
    wait = jnp.maximum(gated - end, 0.0)
    end = jnp.maximum(end, gated)
    # DP bucket FIFO: nb buckets of dp_c/nb seconds, ready evenly over [t0, end];
    # the last bucket leaves at the max of three linear terms
    backlog = jnp.maximum(dp_done - t0, 0.0)
    produce = ~is_f & (mb == m - 1) & overlap_grad
    per, delta = dp_c / nb, (end - t0) / nb
    fifo = jnp.maximum(jnp.maximum(dp_done + dp_c, t0 + delta + dp_c), t0 + nb * delta + per)
    dp_new = jnp.where(produce, fifo, dp_done)
    busy_in = backlog + jnp.where(produce, dp_c, 0.0) - jnp.maximum(dp_new - end, 0.0)
    span = end - t0
    slow = jnp.where(span > 0, comm * busy_in / jnp.where(span > 0, span, 1.0), 0.0)
    dp_new = dp_new + slow
    slow = slow + interference * busy_in
    end = end + slow
    sends_to = jnp.where(is_f, q != last_q, q != 0)
    p = jnp.where(sends_to, p2p, 0.0)
    slow_p = jnp.where(sends_to & p2p_shared, jnp.minimum(p, jnp.maximum(dp_new - end, 0.0)), 0.0)
    dp_new = dp_new + slow_p
    finish = end + p + slow_p
    blocked = jnp.where(p2p_async, 0.0, 1.0)  # an async send does not hold the rank

    table = table.at[jnp.where(go, lane_ids * ring + (k & (ring - 1)), table.shape[0])].set(finish, mode="drop")
    # advance the odometer of the op just run
    r2 = mbr + 1
    wrap_r = r2 >= gsize
    c2 = cpos + wrap_r
    wrap_c = c2 >= vp
    n_grp, n_cpos, n_mbr = grp + wrap_c, jnp.where(wrap_c, 0, c2), jnp.where(wrap_r, 0, r2)
    gf, gb = go & is_f, go & ~is_f
    upd = lambda new, old: jnp.where(go, new, old)
    return (ptr + go.astype(ptr.dtype), upd(jnp.where(p2p_async, end, finish), free), upd(dp_new, dp_done),
            upd(busy + dur, busy), upd(sends + blocked * p, sends), upd(ext + slow + blocked * slow_p, ext),
            upd(agw + wait, agw),
            jnp.where(gf, n_grp, fg), jnp.where(gf, n_cpos, fc), jnp.where(gf, n_mbr, fr),
            jnp.where(gb, n_grp, bg), jnp.where(gb, n_cpos, bc), jnp.where(gb, n_mbr, br),
            table, over, jnp.any(go))

  def cond(st):
    return st[-1] & jnp.any(st[0] < nops)

  zi, zf = jnp.zeros(L, jnp.int32), jnp.zeros(L, f32)
  init = (zi, zf, zf, zf, zf, zf, zf, zi, zi, zi, zi, zi, zi, jnp.zeros(L * ring, f32),
          jnp.zeros(L, bool), jnp.array(True))
  st = jax.lax.while_loop(cond, body, init)
  return st[:7] + (st[14],)


# --- public entry ------------------------------------------------------------------------

_SMALL, _LANES = 256, 2048  # lanes per compiled call: a small batch, or a slice of a big one
RING = 32  # finish times kept per lane; reads reach back about pp/2 ops (larger rings on overflow)
SETTLE_GROUPS = 8  # groups of pp micro-batches after which a schedule is taken to be periodic
OUT_KEYS = ("step_time_s", "pipe_end_s", "dp_end_s", "busy_s", "send_s", "contention_s", "ag_wait_s",
            "idle_s", "tail_s", "critical_rank")


def _chunks(inp: PipelineInputs, idx: np.ndarray) -> list[np.ndarray]:
  """Candidates packed into calls of at most _LANES lanes, longest runs
  first; a call is closed early when the runs get much shorter than its
  first one (every lane of a call pays for its longest run)."""
  rounds = 2 * inp.m[idx].astype(np.int64) * inp.vp[idx] + 2 * inp.pp[idx] * inp.vp[idx]
  out, cur, lanes, top = [], [], 0, 0
  for i in np.argsort(-rounds, kind="stable"):
    full = lanes + inp.pp[idx[i]] > _LANES
    if cur and (full or (rounds[i] * 2 < top and lanes >= _SMALL // 2)):
      out.append(idx[np.asarray(cur)])
      cur, lanes = [], 0
    if not cur:
      top = rounds[i]
    cur.append(i)
    lanes += int(inp.pp[idx[i]])
  if cur:
    out.append(idx[np.asarray(cur)])
  return out


def _pad(a: np.ndarray, size: int, fill=0) -> np.ndarray:
  out = np.full((size,) + a.shape[1:], fill, a.dtype)
  out[:len(a)] = a
  return out


def _rows(inp: PipelineInputs, gc: np.ndarray, ln: dict[str, np.ndarray]) -> np.ndarray:
  """The per-chunk features of every lane, [sum of lanes' vp, len(_FEATS)]."""
  n_rows = ln["vp"]
  rc = np.repeat(gc, n_rows)
  cc = np.arange(int(n_rows.sum())) - np.repeat(ln["frow"], n_rows)
  sc = np.repeat(ln["s"], n_rows)
  pick = lambda a: a[rc, cc, sc].astype(np.float64)
  ag = np.where(inp.overlap_param[rc], pick(inp.ag), 0.0)
  ag_cum = np.cumsum(ag)
  ag_cum -= np.repeat(ag_cum[ln["frow"]] - ag[ln["frow"]], n_rows)  # restart at each lane's chunk 0
  cols = [pick(inp.fwd), pick(inp.bwd), pick(inp.fwd_comm), pick(inp.bwd_comm), pick(inp.dp),
          pick(inp.buckets), ag_cum]
  return np.stack(cols, axis=1).astype(np.float32)


def _run_chunk(inp: PipelineInputs, members: np.ndarray, ring: int):
  ln = _lanes(inp, members)
  L = len(ln["cand"])
  Lp = _SMALL if L <= _SMALL else max(_LANES, _pow2(L))
  gc = members[ln["cand"]]  # global candidate of each lane
  rows = _rows(inp, gc, ln)
  lane = {k: _pad(ln[k], Lp) for k in ("s", "base", "pp", "vp", "m", "w", "nfull", "last", "frow", "nops")}
  for k in ("pp", "vp", "m", "last"):  # padding lanes: one rank, no ops
    lane[k][L:] = 1
  lane["base"][L:] = np.arange(L, Lp)
  lane = {k: jnp.asarray(v, jnp.int32) for k, v in lane.items()}
  flags = [jnp.asarray(_pad(getattr(inp, f)[gc].astype(bool), Lp))
           for f in ("p2p_shared", "p2p_async", "overlap_grad", "overlap_param")]
  res = _sweep(lane, jnp.asarray(_pad(rows, max(Lp, _pow2(len(rows))))),
               jnp.asarray(_pad(inp.p2p[gc].astype(np.float32), Lp)),
               jnp.asarray(_pad(inp.interference[gc].astype(np.float32), Lp)), *flags, ring=ring)
  res = [np.asarray(x)[:L] for x in res]
  return gc, ln, res


def _single_stage(inp: PipelineInputs, idx: np.ndarray) -> np.ndarray:
  """Without a pipeline a rank runs F0 B0 F1 ... F(m-1) B(m-1) back to back:
  only the first forward (parameter gathers) and the last backward (the
  gradient buckets) can differ from their nominal time, so the rounds are
  skipped. Returns free, dp_done, busy, sends, contention, gather wait."""
  f, b, bc, dp, ag = (getattr(inp, k)[idx, 0, 0].astype(np.float64) for k in ("fwd", "bwd", "bwd_comm", "dp", "ag"))
  nb = np.maximum(inp.buckets[idx, 0, 0].astype(np.float64), 1.0)
  m = inp.m[idx].astype(np.float64)
  gated = np.where(inp.overlap_param[idx], ag + f / nb, -np.inf)
  wait = np.maximum(gated - f, 0.0)
  t0 = np.maximum(f, gated) + (m - 1) * (f + b)  # start of the last backward
  end = t0 + b
  produce = inp.overlap_grad[idx]
  fifo = np.maximum(np.maximum(dp, t0 + b / nb + dp), t0 + b + dp / nb)
  dp_new = np.where(produce, fifo, 0.0)
  busy_in = np.where(produce, dp, 0.0) - np.maximum(dp_new - end, 0.0)
  slow = np.where(b > 0, bc * busy_in / np.where(b > 0, b, 1.0), 0.0)
  dp_new = dp_new + slow
  slow = slow + inp.interference[idx] * busy_in
  return np.stack([end + slow, dp_new, m * (f + b), 0 * m, slow, wait])


def _simulate(inp: PipelineInputs) -> dict[str, np.ndarray]:
  """Every op of every candidate (no extrapolation)."""
  n = len(inp.pp)
  out = {k: np.zeros(n, np.float64) for k in OUT_KEYS}
  out["stalled"] = np.zeros(n, bool)
  if n == 0:
    return out
  pp, vp = inp.pp.astype(np.int64), inp.vp.astype(np.int64)
  P = int(pp.max())
  res = np.zeros((6, n, P))
  stalled = np.zeros(n, bool)
  single = np.flatnonzero(pp == 1)
  res[:, single, 0] = _single_stage(inp, single)
  piped = np.flatnonzero(pp > 1)
  todo = [(c, RING) for c in _chunks(inp, piped)] if len(piped) else []
  while todo:
    members, ring = todo.pop()
    gc, ln, r = _run_chunk(inp, members, ring)
    over = np.zeros(n, bool)
    np.logical_or.at(over, gc, r[7])
    if over.any():  # a read reached past the ring: redo those candidates with a longer one
      todo.append((np.flatnonzero(over), ring * 4))
    keep = ~over[gc]
    for j in range(6):
      res[j, gc[keep], ln["s"][keep]] = r[j + 1][keep]
    np.logical_or.at(stalled, gc[keep], r[0][keep] < ln["nops"][keep])

  free, dp_done, busy, sends, ext, agw = res
  live = np.arange(P)[None, :] < pp[:, None]
  vmask = np.arange(inp.dp.shape[1])[None, :, None] < vp[:, None, None]
  dp_sum = (inp.dp * vmask).sum(axis=1)[:, :P]
  ag_sum = (inp.ag * vmask).sum(axis=1)[:, :P]
  dp_done = np.where(inp.overlap_grad[:, None], dp_done, free + dp_sum)
  ends = np.where(live, np.maximum(free, dp_done), -np.inf)
  crit = np.argmax(ends, axis=1)
  tail = np.where(live, inp.opt[:, :P] + np.where(inp.overlap_param[:, None], 0.0, ag_sum), -np.inf).max(axis=1)
  rows = np.arange(n)

  def at(a):
    return a[rows, crit]

  out.update(step_time_s=ends.max(axis=1) + tail, pipe_end_s=at(free), dp_end_s=at(ends),
             busy_s=at(busy), send_s=at(sends), contention_s=at(ext), ag_wait_s=at(agw),
             idle_s=at(free) - at(busy) - at(sends) - at(ext), tail_s=tail,
             critical_rank=crit.astype(np.float64), stalled=stalled)
  return out


def simulate_pipeline(inp: PipelineInputs, extrapolate: bool = True) -> dict[str, np.ndarray]:
  """Simulates the step of every candidate; returns [N] arrays:
  step_time_s, pipe_end_s (critical rank's last op), dp_end_s (its end
  including the DP queue), busy_s (its passes), send_s (its sends, alone),
  contention_s (delay from shared links), ag_wait_s (first forwards
  waiting on parameter gathers), idle_s (the rest of pipe_end_s: bubble),
  tail_s (optimizer + exposed gathers), critical_rank, and stalled (bool:
  the op order deadlocks, e.g. interleaving with a micro-batch count that
  is not a multiple of pp).

  With `extrapolate`, a candidate with many more micro-batches than its
  schedule needs to settle is run with m1, m1+g and m1+2g micro-batches
  (g = pp, m1 = SETTLE_GROUPS*g); every figure above is then linear in m,
  so it is extended to m exactly. If the three runs are not collinear
  (the schedule had not settled), the candidate is run in full."""
  n = len(inp.pp)
  g = inp.pp.astype(np.int64)
  m1 = SETTLE_GROUPS * g
  ext = np.flatnonzero(extrapolate & (inp.pp > 1) & (inp.m > 4 * m1))
  if not len(ext):
    return _simulate(inp)
  rest = np.setdiff1d(np.arange(n), ext)
  sub = inp.take(ext)
  parts = [inp.take(rest)] + [dataclasses.replace(sub, m=m1[ext] + k * g[ext]) for k in range(3)]
  joined = PipelineInputs(**{f.name: np.concatenate([getattr(p, f.name) for p in parts])
                             for f in dataclasses.fields(PipelineInputs)})
  res = _simulate(joined)
  out = {k: np.empty(n, v.dtype) for k, v in res.items()}
  for k, v in res.items():
    out[k][rest] = v[:len(rest)]
  r = [{k: v[len(rest) + j * len(ext):len(rest) + (j + 1) * len(ext)] for k, v in res.items()} for j in range(3)]
  steps = (inp.m[ext] - m1[ext]) / g[ext]
  settled = (r[0]["critical_rank"] == r[1]["critical_rank"]) & (r[1]["critical_rank"] == r[2]["critical_rank"])
  for k in OUT_KEYS[:-1]:
    d1, d2 = r[1][k] - r[0][k], r[2][k] - r[1][k]
    settled &= np.abs(d2 - d1) <= 1e-4 * np.maximum(np.abs(r[2][k]), 1e-3)  # f32 timelines
    out[k][ext] = r[0][k] + steps * d1
  out["critical_rank"][ext] = r[0]["critical_rank"]
  out["stalled"][ext] = r[0]["stalled"] | r[1]["stalled"] | r[2]["stalled"]
  redo = ext[~settled & ~out["stalled"][ext]]
  if len(redo):
    full = _simulate(inp.take(redo))
    for k in out:
      out[k][redo] = full[k]
  return out
