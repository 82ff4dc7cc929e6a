"""Plain-Python discrete-event simulation of one pipelined training step.

Where it sits: the test oracle (and a readable statement of the model) for
the vectorized F1 engine in `sim/event_engine.py`. It takes one candidate's
`PipelineInputs` row and plays the step out with a time-ordered event loop:
each pipeline rank walks Megatron-LM's 1F1B / interleaved op order, an op
starts when its rank is free and its input has arrived, buckets of
gradients are queued on the data-parallel link one by one, and transfers on
a shared link slow each other down. It is far too slow for a search (one
candidate at a time, Python objects) and is never used on a hot path.

The model (the engine implements exactly this, in closed form):
- One representative rank per pipeline stage; its ops are forward (F) and
  backward (B) passes of (model chunk, micro-batch) pairs, in Megatron's
  order: warm-up forwards, then one-forward-one-backward, then cool-down
  backwards; interleaving walks chunks in groups of `pp` micro-batches.
- F of virtual stage q needs F of stage q-1 for the same micro-batch; B
  of q needs B of q+1 (the last stage's B follows its own F). A pass that
  feeds another stage sends its output afterwards, synchronously (the rank
  waits for the send, as Megatron's batched isend/irecv does in 1F1B;
  with `p2p_async`, as Megatron's interleaved schedule overlaps p2p with
  compute, it does not), and the receiver may start once the send is
  over.
- Gradients of a chunk become ready during the last micro-batch's backward
  of that chunk, evenly over `buckets` buckets; with `overlap_grad` each
  bucket is reduced as soon as it is ready, first-in first-out on the
  data-parallel link; without it, all buckets are reduced after the rank's
  last op.
- With `overlap_param`, parameter all-gathers run from t=0 in chunk order;
  the first forward of a chunk cannot end before its chunk is gathered plus
  one bucket's worth of compute. Without it (but with gathers), they run
  after the optimizer.
- Contention (fluid fair sharing of one link between two flows): a send
  that starts while the DP queue still holds r seconds of work takes
  min(p, r) longer and delays the queue by as much; the in-op
  communication `comm` of a pass (spread evenly over the pass) is slowed by
  the share of the pass during which the DP link was busy, and the queue is
  delayed by the same amount. Compute itself is slowed by `interference`
  times the DP traffic that overlaps it (collective kernels take SMs and
  memory bandwidth); the queue is not.
- Step = the last rank's end (its last op, or its DP queue if later) +
  the slowest rank's optimizer step and exposed parameter gather (gradient
  clipping synchronises all ranks before the update).
"""

from __future__ import annotations

import heapq
from typing import Any, Mapping

# --- the schedule ----------------------------------------------------------------


def schedule_table(m: int, vp: int, group: int) -> list[tuple[int, int]]:
  """(micro-batch, chunk) in forward order: groups of `group` micro-batches
  walk all chunks; the last group takes whatever micro-batches are left."""
  out = []
  start = 0
  while start < m:
    end = m if start + group >= m else start + group
    for c in range(vp):
      out.extend((j, c) for j in range(start, end))
    start = end
  return out


def warmup_count(pp: int, vp: int, m: int, rank: int) -> int:
  total = m * vp
  if vp == 1:
    return min(pp - rank - 1, m)
  if m == pp:
    return total
  return min((pp - rank - 1) * 2 + (vp - 1) * pp, total)


def rank_order(pp: int, vp: int, m: int, rank: int) -> list[tuple[str, int, int]]:
  """The ops of one rank in execution order: ('F' | 'B', chunk, micro-batch)."""
  table = schedule_table(m, vp, pp)
  fwd = [("F", c, j) for j, c in table]
  bwd = [("B", vp - 1 - c, j) for j, c in table]
  w = warmup_count(pp, vp, m, rank)
  order = fwd[:w]
  for i in range(len(fwd) - w):
    order += [fwd[w + i], bwd[i]]
  return order + bwd[len(fwd) - w:]


# --- the event loop ----------------------------------------------------------------


def simulate_one(row: Mapping[str, Any]) -> dict[str, float]:
  """Simulates one candidate. `row` holds scalars pp, vp, m, p2p,
  p2p_shared, p2p_async, interference, overlap_grad, overlap_param and per-virtual-stage tables
  indexed [chunk][rank]: fwd, bwd, fwd_comm, bwd_comm, dp, buckets, ag;
  and opt[rank]. Returns step time and the critical rank's figures."""
  pp, vp, m = int(row["pp"]), int(row["vp"]), int(row["m"])
  last_q = pp * vp - 1

  def at(name, c, s):
    return float(row[name][c][s])

  orders = [rank_order(pp, vp, m, s) for s in range(pp)]
  nxt = [0] * pp                # next op index per rank
  free = [0.0] * pp             # when the rank may start its next op
  dp_done = [0.0] * pp          # when the rank's DP queue empties
  busy = [0.0] * pp             # sum of nominal op durations
  sends = [0.0] * pp            # sum of nominal send durations
  ext = [0.0] * pp              # contention delay of this rank's ops and sends
  ag_wait = [0.0] * pp          # delay of first forwards waiting on parameter gathers
  arrived: dict[tuple[str, int, int], float] = {}  # (kind, virtual stage, mb) -> ready time
  ag_cum = [[0.0] * vp for _ in range(pp)]
  for s in range(pp):
    acc = 0.0
    for c in range(vp):
      acc += at("ag", c, s) if row["overlap_param"] else 0.0
      ag_cum[s][c] = acc

  def needs(s: int, op) -> tuple[str, int, int] | None:
    kind, c, j = op
    q = c * pp + s
    if kind == "F":
      return None if q == 0 else ("F", q - 1, j)
    return None if q == last_q else ("B", q + 1, j)

  def start_time(s: int) -> float | None:
    op = orders[s][nxt[s]]
    dep = needs(s, op)
    if dep is not None and dep not in arrived:
      return None
    return max(free[s], arrived[dep] if dep is not None else 0.0)

  # Event loop: among ranks whose next op is ready, run the one that can
  # start earliest. An op's inputs always finish before it starts, so this
  # visits ops in time order.
  heap: list[tuple[float, int]] = []
  for s in range(pp):
    t = start_time(s)
    if t is not None:
      heapq.heappush(heap, (t, s))
  done_ops, total_ops = 0, 2 * m * vp * pp
  while heap:
    t0, s = heapq.heappop(heap)
    if nxt[s] >= len(orders[s]) or start_time(s) != t0:
      continue  # stale entry
    kind, c, j = orders[s][nxt[s]]
    q = c * pp + s
    dur = at("fwd" if kind == "F" else "bwd", c, s)
    comm = at("fwd_comm" if kind == "F" else "bwd_comm", c, s)
    busy[s] += dur
    end = t0 + dur
    first_of_chunk = kind == "F" and j == 0
    if first_of_chunk and row["overlap_param"]:
      gated = ag_cum[s][c] + dur / max(at("buckets", c, s), 1.0)
      ag_wait[s] += max(0.0, gated - end)
      end = max(end, gated)
    # DP link: backlog before this op, then this op's buckets, one by one
    backlog = max(0.0, dp_done[s] - t0)
    new_work = 0.0
    if kind == "B" and j == m - 1 and row["overlap_grad"]:
      nb = max(int(round(at("buckets", c, s))), 1)
      per = at("dp", c, s) / nb
      for b in range(nb):
        ready = t0 + (b + 1) * (end - t0) / nb
        dp_done[s] = max(dp_done[s], ready) + per
      new_work = nb * per
    busy_in_op = backlog + new_work - max(0.0, dp_done[s] - end)
    slow = comm * busy_in_op / (end - t0) if end > t0 else 0.0
    dp_done[s] += slow
    slow += float(row["interference"]) * busy_in_op
    end += slow
    ext[s] += slow
    # the send to the next stage (forward) or the previous one (backward)
    sends_to = (kind == "F" and q != last_q) or (kind == "B" and q != 0)
    finish = end
    if sends_to:
      p = float(row["p2p"])
      slow = 0.0
      if row["p2p_shared"]:
        slow = min(p, max(0.0, dp_done[s] - end))
        dp_done[s] += slow
      finish = end + p + slow
      if not row["p2p_async"]:  # the rank waits for its send
        sends[s] += p
        ext[s] += slow
    arrived[(kind, q, j)] = finish
    free[s] = end if row["p2p_async"] else finish
    nxt[s] += 1
    done_ops += 1
    for r in range(pp):  # this op may have unblocked any rank (ranks wrap for interleaving)
      if nxt[r] < len(orders[r]):
        t = start_time(r)
        if t is not None:
          heapq.heappush(heap, (t, r))
  if done_ops != total_ops:
    raise RuntimeError(f"schedule deadlocked after {done_ops} of {total_ops} ops")

  ends = []
  for s in range(pp):
    if not row["overlap_grad"]:
      dp_done[s] = free[s] + sum(at("dp", c, s) for c in range(vp))
    ends.append(max(free[s], dp_done[s]))
  ag_tail = [0.0 if row["overlap_param"] else sum(at("ag", c, s) for c in range(vp)) for s in range(pp)]
  tail = max(float(row["opt"][s]) + ag_tail[s] for s in range(pp))
  crit = max(range(pp), key=lambda s: (ends[s], -s))
  return dict(step_time_s=max(ends) + tail, critical_rank=crit, pipe_end_s=free[crit],
              dp_end_s=ends[crit], busy_s=busy[crit], send_s=sends[crit], contention_s=ext[crit],
              ag_wait_s=ag_wait[crit], tail_s=tail,
              idle_s=free[crit] - busy[crit] - sends[crit] - ext[crit])


def row_of(inputs: Any, i: int) -> dict[str, Any]:
  """Candidate i of a `PipelineInputs` batch as plain Python values."""
  pp, vp = int(inputs.pp[i]), int(inputs.vp[i])

  def tab(a):
    return [[float(a[i, c, s]) for s in range(pp)] for c in range(vp)]

  return dict(pp=pp, vp=vp, m=int(inputs.m[i]), p2p=float(inputs.p2p[i]),
              p2p_shared=bool(inputs.p2p_shared[i]), p2p_async=bool(inputs.p2p_async[i]),
              interference=float(inputs.interference[i]), overlap_grad=bool(inputs.overlap_grad[i]),
              overlap_param=bool(inputs.overlap_param[i]),
              fwd=tab(inputs.fwd), bwd=tab(inputs.bwd), fwd_comm=tab(inputs.fwd_comm),
              bwd_comm=tab(inputs.bwd_comm), dp=tab(inputs.dp), buckets=tab(inputs.buckets),
              ag=tab(inputs.ag), opt=[float(inputs.opt[i, s]) for s in range(pp)])
