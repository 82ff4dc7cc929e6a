"""Sequence packing: how a fine-tuning job's examples fill the rows of a batch.

Where it sits: a fine-tuning `Workload` names the lengths of its training
examples (`example_lens`, a cyclic mix); the local family's
`sequence_packing` knob (targets/local.py, targets/megatron.py; MaxText's
`packing` in the jax_mesh family) chooses between one example per row, padded to `seq_len`,
and several examples per row, told apart by segment ids. The local train step (local/train_step.py) builds its batch
from `step_layout`; the simulators read `stats` through
`sim/costs.packing_scalars` (useful share of the token slots, attention work
of a packed row). jax-free and numpy-free.

An example of L tokens is L trained positions (L input tokens, each
predicting the next one). Padding positions carry no loss; a packed
position attends only to earlier positions of its own example, and
positions restart at 0 for every example, so packing changes how many
examples a step trains on, not what each one computes.

The packer reads the example stream in order and puts each example into
the first row of the step with room for it (first fit); an example that
fits no row waits for the next step, where it goes first (nothing is
dropped or truncated). `stats` averages `STEPS` consecutive steps, so an
example mix whose long examples keep waiting is charged for it.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

STEPS = 4  # consecutive steps `stats` averages (the packer's carry settles within a few)


@dataclasses.dataclass(frozen=True)
class PackingStats:
  """A step's batch of `rows` x `seq_len` token slots, averaged over STEPS:
  `fill` = trained (non-padding) share of the slots; `attn` = attention
  work of the examples (sum of L^2 over examples) relative to full causal
  rows (rows * seq_len^2), what a segment-aware attention kernel pays;
  `examples` = examples per step."""

  fill: float
  attn: float
  examples: float


def _full(rows: int, seq_len: int) -> list[tuple[int, ...]]:
  return [(seq_len,) for _ in range(rows)]


def steps(example_lens: Sequence[int], rows: int, seq_len: int, packed: bool,
          num_steps: int = STEPS) -> list[list[tuple[int, ...]]]:
  """`num_steps` consecutive steps, each a list of `rows` rows, each row the
  lengths of the examples it holds, in order (an empty mix: every row one
  full `seq_len` window, as pre-training)."""
  lens = tuple(int(x) for x in example_lens)
  if not lens:
    return [_full(rows, seq_len) for _ in range(num_steps)]
  if max(lens) > seq_len:
    raise ValueError(f"an example of {max(lens)} tokens does not fit a sequence of {seq_len}")
  k, nxt = len(lens), 0
  if not packed:
    out = []
    for _ in range(num_steps):
      out.append([(lens[(nxt + r) % k],) for r in range(rows)])
      nxt += rows
    return out
  shortest, carry, out = min(lens), [], []
  for _ in range(num_steps):
    free, placed = [seq_len] * rows, [[] for _ in range(rows)]
    waiting, failures = [], 0

    def put(length: int) -> bool:
      for r in range(rows):
        if free[r] >= length:
          free[r] -= length
          placed[r].append(length)
          return True
      return False

    for length in carry:
      if not put(length):
        waiting.append(length)
    # pull from the stream until no row can take even the shortest example,
    # or a whole cycle of the mix found no room
    while max(free) >= shortest and failures < k:
      length = lens[nxt % k]
      nxt += 1
      if put(length):
        failures = 0
      else:
        waiting.append(length)
        failures += 1
    carry = waiting
    out.append([tuple(p) for p in placed])
  return out


def step_layout(example_lens: Sequence[int], rows: int, seq_len: int, packed: bool) -> list[tuple[int, ...]]:
  """The rows of one steady-state step (the last of STEPS): the batch the
  local train step runs."""
  return steps(example_lens, rows, seq_len, packed)[-1]


def segment_ids(layout: Sequence[Sequence[int]], seq_len: int) -> list[list[int]]:
  """Per row, per position: 0 for padding, 1, 2, ... for the row's examples."""
  out = []
  for row in layout:
    ids: list[int] = []
    for j, length in enumerate(row):
      ids += [j + 1] * int(length)
    if len(ids) > seq_len:
      raise ValueError(f"a row of {len(ids)} tokens does not fit a sequence of {seq_len}")
    out.append(ids + [0] * (seq_len - len(ids)))
  return out


def stats(example_lens: Sequence[int], rows: int, seq_len: int, packed: bool) -> PackingStats:
  all_steps = steps(example_lens, rows, seq_len, packed)
  slots = rows * seq_len * len(all_steps)
  useful = sum(sum(row) for step in all_steps for row in step)
  attn = sum(x * x for step in all_steps for row in step for x in row)
  n = sum(len(row) for step in all_steps for row in step)
  return PackingStats(fill=useful / slots, attn=attn / (slots * seq_len), examples=n / len(all_steps))


def useful_tokens(layout: Sequence[Sequence[int]]) -> int:
  """Trained positions of one step's rows."""
  return sum(sum(row) for row in layout)
