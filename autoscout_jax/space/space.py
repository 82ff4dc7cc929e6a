"""SearchSpace: a hierarchical conditional space with named constraints.

Where it sits: `spaces/*.py` build one per (workload, cluster); designers
sample, enumerate, move and round in it; `validate` guards every evaluator
(a candidate with a violation never reaches one); `encode` turns candidates
into the fixed-width arrays (features + inactive mask) the surrogate sees.

Structure:
- knobs, in an order where every parent comes before its children;
- product groups: knobs whose product must equal a fixed number (mesh axes
  whose product is the device count). They are sampled jointly from the
  ordered factorizations of that number, and a neighbour move transfers a
  prime factor between two of them, keeping the product;
- constraints: named checks over the active values and the space's facts.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from autoscout_jax.space.candidate import Candidate
from autoscout_jax.space.constraints import (Constraint, ProductGroup, SpaceError, Violation,
                                             factorizations, prime_factors)
from autoscout_jax.space.knobs import Float, Knob, Value


class SearchSpace:
  """See module docstring. `facts` are workload/device numbers constraints use."""

  def __init__(self, knobs: Sequence[Knob], constraints: Sequence[Constraint] = (),
               groups: Sequence[ProductGroup] = (), facts: Mapping[str, Any] | None = None,
               name: str = "space", family: str = ""):
    self.name = name
    self.family = family  # the target family that made it (targets/<family>.py); "" for ad-hoc spaces
    self.knobs: tuple[Knob, ...] = tuple(knobs)
    self.constraints = tuple(constraints)
    self.groups = tuple(groups)
    self.facts = dict(facts or {})
    self._by_name = {k.name: k for k in self.knobs}
    if len(self._by_name) != len(self.knobs):
      raise SpaceError(f"space {name!r}: duplicate knob names")
    seen: set[str] = set()
    for k in self.knobs:
      for c in k.when:
        if c.parent not in seen:
          raise SpaceError(f"knob {k.name!r} depends on {c.parent!r}, which is not declared before it")
        parent = self._by_name[c.parent]
        if parent.finite_values() is not None:
          bad = [v for v in c.values if v not in parent.finite_values()]
          if bad:
            raise SpaceError(f"knob {k.name!r}: condition on {c.parent!r} names values {bad} it never takes")
      seen.add(k.name)
    self._group_of: dict[str, ProductGroup] = {}
    self._factorizations: dict[str, list[tuple[int, ...]]] = {}
    for g in self.groups:
      for n in g.names:
        if n not in self._by_name:
          raise SpaceError(f"product group {g.name!r} names unknown knob {n!r}")
        if self._by_name[n].when:
          raise SpaceError(f"product group {g.name!r}: knob {n!r} must be unconditional")
        self._group_of[n] = g
      domains = [self._by_name[n].finite_values() for n in g.names]
      facts_ = factorizations(g.total, domains)
      if not facts_:
        raise SpaceError(f"no values of {', '.join(g.names)} multiply to {g.total} ({g.name})")
      self._factorizations[g.name] = facts_
    self._offsets: dict[str, int] = {}
    off = 0
    for k in self.knobs:
      self._offsets[k.name] = off
      off += k.width
    self.width = off
    self._enumerated: list[Candidate] | None = None

  # --- basics ---------------------------------------------------------------
  def __getitem__(self, name: str) -> Knob:
    return self._by_name[name]

  def __contains__(self, name: str) -> bool:
    return name in self._by_name

  @property
  def names(self) -> tuple[str, ...]:
    return tuple(k.name for k in self.knobs)

  def feature_names(self) -> list[str]:
    out = []
    for k in self.knobs:
      if k.width == 1:
        out.append(k.name)
      else:
        out.extend(f"{k.name}={c}" for c in k.finite_values())
    return out

  def is_finite(self) -> bool:
    return all(k.finite_values() is not None for k in self.knobs)

  def _complete(self, assigned: dict[str, Value]) -> dict[str, Value]:
    """Drops inactive knobs; gives newly active ones their default."""
    out: dict[str, Value] = {}
    for k in self.knobs:
      if k.is_active(out):
        out[k.name] = assigned[k.name] if k.name in assigned else k.default
    return out

  def make(self, values: Mapping[str, Value] | None = None, fidelity: str | None = None,
           **kw: Value) -> Candidate:
    """A candidate from (partial) values: defaults fill the rest, inactive
    knobs are dropped. Unknown names raise."""
    vals = dict(values or {})
    vals.update(kw)
    unknown = sorted(set(vals) - set(self._by_name))
    if unknown:
      raise SpaceError(f"unknown knob(s) {unknown} for space {self.name!r}; knobs are {list(self.names)}")
    vals = {n: self._by_name[n].coerce(v) for n, v in vals.items()}
    return Candidate.of(self._complete(vals), fidelity)

  def default(self) -> Candidate:
    return self.make({})

  def from_json(self, data: Mapping[str, Any]) -> Candidate:
    return Candidate.of({n: self._by_name[n].coerce(v) if n in self._by_name else v
                         for n, v in data.items()})

  # --- validity -------------------------------------------------------------
  def validate(self, cand: Candidate) -> list[Violation]:
    vals = cand.values
    out, settled = self._check_structure(vals)
    if not settled:
      for c in self.constraints:
        msg = c.check(vals, self.facts)
        if msg:
          out.append(Violation(c.name, msg))
    return out

  def validate_many(self, cands: Sequence[Candidate]) -> list[list[Violation]]:
    """`validate` of each candidate; a space with vectorized constraints
    (sim.vspace.SimSpace) checks a whole batch at once."""
    return [self.validate(c) for c in cands]

  def _check_structure(self, vals: Mapping[str, Value]) -> tuple[list[Violation], bool]:
    """Violations of the knobs (names, conditions, domains) and product
    groups; True when the knob-level ones leave nothing for the constraints
    to check (they read well-formed values only)."""
    out: list[Violation] = []
    unknown = sorted(set(vals) - set(self._by_name))
    if unknown:
      out.append(Violation("known_knobs", f"unknown knob(s) {unknown}"))
      return out, True
    expected = self._complete(vals)
    for k in self.knobs:
      active = k.name in expected
      if active and k.name not in vals:
        conds = " and ".join(c.describe() for c in k.when)
        out.append(Violation("conditions", f"{k.name} is active ({conds}) but has no value"))
      elif not active and k.name in vals:
        conds = " and ".join(c.describe() for c in k.when)
        out.append(Violation("conditions", f"{k.name} is set but only exists when {conds}"))
      elif active and not k.contains(vals[k.name]):
        out.append(Violation("domain", f"{k.name}={vals[k.name]!r} is outside its domain"))
    if out:
      return out, True
    for g in self.groups:
      prod = math.prod(int(vals[n]) for n in g.names)
      if prod != g.total:
        desc = " * ".join(f"{n}={vals[n]}" for n in g.names)
        out.append(Violation(g.name, f"{desc} = {prod}, but must equal {g.total}"))
    return out, False

  def is_valid(self, cand: Candidate) -> bool:
    return not self.validate(cand)

  # --- sampling ---------------------------------------------------------------
  def _sample_raw(self, rng: np.random.Generator) -> dict[str, Value]:
    vals: dict[str, Value] = {}
    for g in self.groups:
      options = self._factorizations[g.name]
      vals.update(zip(g.names, options[rng.integers(len(options))]))
    out: dict[str, Value] = {}
    for k in self.knobs:
      if not k.is_active(out):
        continue
      if k.name in vals:
        out[k.name] = vals[k.name]
      elif isinstance(k, Float):
        out[k.name] = k.sample_unit(float(rng.random()))
      else:
        dom = k.finite_values()
        out[k.name] = dom[rng.integers(len(dom))]
    return out

  def sample(self, rng: np.random.Generator, n: int = 1, max_tries: int = 20000) -> list[Candidate]:
    """n valid candidates. Uniform over valid candidates for finite spaces small
    enough to enumerate; otherwise tree sampling with rejection."""
    pool = self._enumerated_if_small()
    if pool is not None:
      if not pool:
        raw = [Candidate.of(self._sample_raw(rng)) for _ in range(500)]
        raise SpaceError(self._empty_message([v for c in raw for v in self.validate(c)]))
      idx = rng.integers(len(pool), size=n)
      return [pool[i] for i in idx]
    out: list[Candidate] = []
    tries = 0
    rejected: list[Violation] = []
    while len(out) < n:
      cand = Candidate.of(self._sample_raw(rng))
      viol = self.validate(cand)
      if not viol:
        out.append(cand)
        continue
      rejected.extend(viol)
      tries += 1
      if tries >= max_tries and not out:
        raise SpaceError(self._empty_message(rejected))
    return out

  def _empty_message(self, rejected: Sequence[Violation]) -> str:
    msg = f"space {self.name!r} has no valid candidate"
    if rejected:
      counts: dict[str, int] = {}
      example: dict[str, str] = {}
      for v in rejected:
        counts[v.constraint] = counts.get(v.constraint, 0) + 1
        example.setdefault(v.constraint, v.message)
      worst = sorted(counts, key=counts.get, reverse=True)[:3]
      msg += "; most often violated: " + "; ".join(f"{w} (e.g. {example[w]})" for w in worst)
    return msg

  # --- enumeration ------------------------------------------------------------
  def iter_all(self) -> Iterator[Candidate]:
    """Every valid candidate of a finite space, in a deterministic order."""
    if not self.is_finite():
      raise SpaceError(f"space {self.name!r} has continuous knobs and cannot be enumerated")
    group_choices = [self._factorizations[g.name] for g in self.groups]
    free = [k for k in self.knobs if k.name not in self._group_of]
    for combo in itertools.product(*group_choices) if group_choices else [()]:
      fixed: dict[str, Value] = {}
      for g, vals in zip(self.groups, combo):
        fixed.update(zip(g.names, vals))
      yield from self._iter_free(free, 0, fixed)

  def _iter_free(self, free: list[Knob], i: int, acc: dict[str, Value]) -> Iterator[Candidate]:
    if i == len(free):
      ordered = self._complete(acc)
      cand = Candidate.of(ordered)
      if not self.validate(cand):
        yield cand
      return
    k = free[i]
    probe = self._complete(acc)  # parents always precede children
    if not k.is_active({**probe, **acc}):
      yield from self._iter_free(free, i + 1, acc)
      return
    for v in k.finite_values():
      acc[k.name] = v
      yield from self._iter_free(free, i + 1, acc)
    del acc[k.name]

  def enumerate(self, limit: int | None = None) -> list[Candidate]:
    out = []
    for c in self.iter_all():
      out.append(c)
      if limit is not None and len(out) > limit:
        raise SpaceError(f"space {self.name!r} has more than {limit} valid candidates")
    return out

  def _enumerated_if_small(self, limit: int = 50000) -> list[Candidate] | None:
    if self._enumerated is None:
      if not self.is_finite() or self.raw_size() > 4 * limit:
        return None
      self._enumerated = self.enumerate()
    return self._enumerated

  def raw_size(self) -> int:
    """Upper bound on the number of points (ignores conditions/constraints)."""
    size = 1
    for g in self.groups:
      size *= len(self._factorizations[g.name])
    for k in self.knobs:
      if k.name not in self._group_of:
        dom = k.finite_values()
        size *= len(dom) if dom is not None else 1
    return size

  # --- neighbours -------------------------------------------------------------
  def neighbours(self, cand: Candidate) -> list[Candidate]:
    """Valid candidates one move away: change one knob to an adjacent or
    other value, or transfer a prime factor between two axes of a product
    group. Newly activated knobs take their defaults."""
    out, seen = [], {cand}
    for c in self._raw_moves(cand):
      if c not in seen and not self.validate(c):
        seen.add(c)
        out.append(c)
    return out

  # --- encoding ---------------------------------------------------------------
  def encode(self, cands: Sequence[Candidate]) -> tuple[np.ndarray, np.ndarray]:
    """features f32[N, D] (inactive -> 0) and active mask f32[N, D]."""
    x = np.zeros((len(cands), self.width), np.float32)
    m = np.zeros((len(cands), self.width), np.float32)
    for i, c in enumerate(cands):
      vals = c.values
      for k in self.knobs:
        if k.name in vals:
          o = self._offsets[k.name]
          x[i, o:o + k.width] = k.encode(vals[k.name])
          m[i, o:o + k.width] = 1.0
    return x, m

  def knob_slice(self, name: str) -> slice:
    o = self._offsets[name]
    return slice(o, o + self._by_name[name].width)

  def round(self, feats: Sequence[float], max_repair: int = 200) -> Candidate:
    """Nearest valid candidate to a relaxed feature vector: decode each active
    knob to its nearest value, snap product groups to the nearest
    factorization (log distance), then, if constraints still fail, search
    outward by neighbour moves for the closest valid point."""
    feats = np.asarray(feats, np.float64)
    vals: dict[str, Value] = {}
    for k in self.knobs:
      if k.is_active(vals):
        vals[k.name] = k.decode(list(feats[self.knob_slice(k.name)]))
    for g in self.groups:
      want = np.array([self[n].encode(vals[n])[0] for n in g.names])
      best = min(self._factorizations[g.name],
                 key=lambda f: float(np.sum((np.array([self[n].encode(v)[0] for n, v in zip(g.names, f)]) - want) ** 2)))
      vals.update(zip(g.names, best))
    cand = Candidate.of(self._complete(vals))
    if not self.validate(cand):
      return cand
    return self._repair(cand, feats, max_repair)

  def _repair(self, cand: Candidate, feats: np.ndarray, max_repair: int) -> Candidate:
    def dist(c: Candidate) -> float:
      x, _ = self.encode([c])
      return float(np.sum((x[0] - feats) ** 2))

    frontier, seen = [cand], {cand}
    for _ in range(max_repair):
      nxt: list[Candidate] = []
      for c in frontier:
        for m in self._raw_moves(c):
          if m in seen:
            continue
          seen.add(m)
          nxt.append(m)
      valid = [c for c in nxt if not self.validate(c)]
      if valid:
        return min(valid, key=dist)
      if not nxt:
        break
      frontier = sorted(nxt, key=dist)[:32]
    pool = self.sample(np.random.default_rng(0), 64)
    return min(pool, key=dist)

  def _raw_moves(self, cand: Candidate) -> list[Candidate]:
    """Neighbour moves without the validity filter (used to walk out of an
    invalid region)."""
    vals = cand.values
    out = []
    for k in self.knobs:
      if k.name in vals and k.name not in self._group_of:
        for v in k.neighbours(vals[k.name]):
          out.append(Candidate.of(self._complete({**vals, k.name: v})))
    for g in self.groups:
      for a, b in itertools.permutations(g.names, 2):
        va, vb = int(vals[a]), int(vals[b])
        for p in sorted(set(prime_factors(va))):
          if self[a].contains(va // p) and self[b].contains(vb * p):
            out.append(Candidate.of(self._complete({**vals, a: va // p, b: vb * p})))
    return out

  def describe(self) -> str:
    lines = [f"space {self.name}: {len(self.knobs)} knobs, {len(self.constraints)} constraints"]
    for k in self.knobs:
      cond = (" when " + " and ".join(c.describe() for c in k.when)) if k.when else ""
      dom = k.finite_values()
      dom_s = list(dom) if dom is not None else f"[{getattr(k, 'low', '')}, {getattr(k, 'high', '')}]"
      lines.append(f"  {k.name}: {dom_s} default={k.default!r}{cond}")
    for g in self.groups:
      lines.append(f"  product {'*'.join(g.names)} == {g.total}")
    for c in self.constraints:
      lines.append(f"  constraint {c.name}: {c.doc}")
    return "\n".join(lines)
