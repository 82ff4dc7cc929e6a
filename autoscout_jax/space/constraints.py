"""The parts of a space's structure besides its knobs: named constraints and
the violations they report, product groups (knobs whose product is fixed)
and the factorizations a product group samples from.

Where it sits: space.py's SearchSpace holds them; the target modules
(autoscout_jax/targets/) declare them for their families.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

from autoscout_jax.space.knobs import Value


class SpaceError(ValueError):
  """Bad space definition, or no valid candidate exists."""


@dataclasses.dataclass(frozen=True)
class Violation:
  constraint: str
  message: str

  def __str__(self):
    return f"[{self.constraint}] {self.message}"


# A check returns None when satisfied, else a sentence a user understands.
Check = Callable[[Mapping[str, Value], Mapping[str, Any]], "str | None"]


@dataclasses.dataclass(frozen=True)
class Constraint:
  name: str
  check: Check
  doc: str = ""


@dataclasses.dataclass(frozen=True)
class ProductGroup:
  """Knobs (each an Ordinal/IntRange of positive ints) whose product == total."""

  names: tuple[str, ...]
  total: int
  name: str = "mesh_product"


def factorizations(total: int, domains: Sequence[Sequence[int]]) -> list[tuple[int, ...]]:
  """Ordered tuples (one value per domain) whose product is `total`."""
  out: list[tuple[int, ...]] = []

  def rec(i: int, rest: int, acc: tuple[int, ...]):
    if i == len(domains) - 1:
      if rest in domains[i]:
        out.append(acc + (rest,))
      return
    for v in domains[i]:
      if v > 0 and rest % v == 0:
        rec(i + 1, rest // v, acc + (v,))

  rec(0, total, ())
  return out


def prime_factors(n: int) -> list[int]:
  out, p = [], 2
  while p * p <= n:
    while n % p == 0:
      out.append(p)
      n //= p
    p += 1
  if n > 1:
    out.append(n)
  return out
