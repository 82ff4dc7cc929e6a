"""Alpha-beta costs of collectives and the tier a device group talks on.

Where it sits: sim/costs.py (`layer_costs`) prices every tensor-, context-,
expert- and data-parallel collective with these; written over an array
module `xp` (numpy or jax.numpy) so they broadcast over candidates.
"""

from __future__ import annotations


def log2(xp, n):
  return xp.log2(xp.maximum(n, 1.0))


def all_reduce_s(xp, n, nbytes, bw, lat):
  """Ring bandwidth term, tree-like latency term (NCCL picks the better)."""
  return xp.where(n > 1, 2 * (n - 1) / n * nbytes / bw + 2 * log2(xp, n) * lat, 0.0)


def gather_s(xp, n, nbytes, bw, lat, steps=None, ops=1.0):
  """All-gather or reduce-scatter of a `nbytes` full buffer in `ops`
  collectives. They have no tree algorithm: each op pays the latency of
  every ring step (`steps`, default log2 n as for a small group)."""
  steps = log2(xp, n) if steps is None else steps
  return xp.where(n > 1, (n - 1) / n * nbytes / bw + ops * steps * lat, 0.0)


def ring_steps(xp, n, hw):
  """Steps of a ring all-gather over n devices: n - 1 on GPUs (NCCL rings);
  on a TPU torus the rings run along each axis at once (about 2 sqrt(n))."""
  return xp.where(hw["torus"] > 0, 2 * xp.sqrt(xp.maximum(n, 1.0)), xp.maximum(n - 1, 0.0))


def tier(xp, local, size, hw, c, rails=1.0):
  """(bandwidth, latency) of a group: the slow tier as soon as it leaves
  the node/slice. A ring collective crosses each node boundary once per
  channel, so a group with `local` members on a node drives `local` NICs
  (multi-rail, NCCL's channels; every other group on the node has its own
  members and NICs): its cross-node bandwidth is `local` times a device's,
  never more than the fast tier. Point-to-point traffic (`rails=False`)
  leaves through one device's NIC; so do collectives of a framework that
  issues one call per tensor from every rank (`rails=0`, plan field)."""
  inter = local < size
  rail = xp.maximum(local, 1.0) * rails + (1 - rails)
  bw = xp.where(inter, xp.minimum(hw["inter_bw"] * rail, hw["intra_bw"]), hw["intra_bw"]) * c["comm_eff"]
  lat = xp.where(inter, hw["inter_lat"], hw["intra_lat"])
  return bw, lat


def all_reduce_tiered_s(xp, n, local, nbytes, hw, c, rails=1.0):
  """All-reduce of a group with `local` members per node/slice: the better
  of a flat ring over the group's tier and the hierarchical algorithm
  (NCCL's tree / NVLS-tree, XLA's multi-slice all-reduce): reduce-scatter
  inside the node, all-reduce of each member's 1/local share across the
  n/local nodes on that member's own NIC, all-gather inside the node. Only
  the node count's (N-1)/N crosses the slow tier, which matters for groups
  of few nodes (tensor parallelism over two nodes). A framework that
  drives one NIC per rank (`rails` 0) keeps the flat ring."""
  bw, lat = tier(xp, local, n, hw, c, rails)
  ring = all_reduce_s(xp, n, nbytes, bw, lat)
  loc = xp.clip(local, 1.0, xp.maximum(n, 1.0))
  nodes = n / loc
  intra = hw["intra_bw"] * c["comm_eff"]
  hier = (2 * (loc - 1) / loc * nbytes / intra + 2 * (nodes - 1) / nodes * nbytes / bw
          + 2 * log2(xp, loc) * hw["intra_lat"] + 2 * log2(xp, nodes) * hw["inter_lat"])
  use = (loc < n) & (loc > 1) & (rails > 0)
  return xp.where(use, xp.minimum(ring, hier), ring)
