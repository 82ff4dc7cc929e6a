"""Measurement store: the only stateful object of a run.

Where it sits: the search loop appends every measurement here before the
designer sees it; a run started again on the same workdir reads it back and
re-measures nothing. One JSON object per line in `measurements.jsonl`,
flushed and fsync'd per measurement. A line cut short by a kill is skipped
on load (and the next append starts on a fresh line); nothing complete is
ever rewritten. The workdir's lock (workdir.py) keeps other runs out; within
a run, appends from several threads are serialized and each line goes to
the file in one write on an O_APPEND descriptor, so lines never interleave
or tear. Worker processes never append: they hand measurements back to the
run, which stores them.

A measurement is found again by (workload, cluster, candidate, fidelity,
settings, repeat): `settings_key` digests the evaluator settings that change a
measurement (e.g. timed steps), so a changed setting is measured again;
`repeat` is 0 for the first measurement and r for a designer's deliberate
r-th re-measurement (lines written before repeats existed read as 0).
"""

from __future__ import annotations

import json
import os
import threading
from typing import Iterator

from absl import logging

from autoscout_jax.measurement import Measurement

FILENAME = "measurements.jsonl"

CacheKey = tuple[str, str, str, str, str, int]  # workload, cluster, candidate, fidelity, settings, repeat


class MeasurementStore:

  def __init__(self, workdir: str):
    os.makedirs(workdir, exist_ok=True)
    self.path = os.path.join(workdir, FILENAME)
    self._rows: list[Measurement] = []
    self._index: dict[CacheKey, Measurement] = {}
    self._lock = threading.Lock()
    self.skipped_lines: list[tuple[int, str]] = []  # (line number, why), unreadable lines
    self._needs_newline = False
    if os.path.exists(self.path):
      self._load()

  def _load(self) -> None:
    with open(self.path, "rb") as f:
      data = f.read()
    self._needs_newline = bool(data) and not data.endswith(b"\n")
    for lineno, raw in enumerate(data.split(b"\n"), 1):
      if not raw.strip():
        continue
      try:
        m = Measurement.from_json(json.loads(raw))
      except (ValueError, KeyError, TypeError) as e:
        self.skipped_lines.append((lineno, f"{type(e).__name__}: {e}"[:200]))
        logging.warning("%s:%d: skipping an unreadable line (%s)", self.path, lineno, e)
        continue
      self._remember(m)

  def _remember(self, m: Measurement) -> None:
    self._rows.append(m)
    self._index.setdefault(m.cache_key, m)

  def append(self, m: Measurement) -> None:
    line = (json.dumps(m.to_json(), sort_keys=True, allow_nan=False) + "\n").encode("utf-8")
    with self._lock:
      if self._needs_newline:
        line = b"\n" + line  # end the torn line a kill left, in the same write
      fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
      try:
        view = memoryview(line)
        while view:
          view = view[os.write(fd, view):]
        os.fsync(fd)
      finally:
        os.close(fd)
      self._needs_newline = False
      self._remember(m)

  def get(self, workload_key: str, cluster_key: str, candidate_key: str,
          fidelity: str, settings_key: str = "", repeat: int = 0) -> Measurement | None:
    return self._index.get((workload_key, cluster_key, candidate_key, fidelity, settings_key, repeat))

  def __len__(self) -> int:
    return len(self._rows)

  def __iter__(self) -> Iterator[Measurement]:
    return iter(list(self._rows))

  def measurements(self, workload_key: str | None = None, cluster_key: str | None = None,
                   fidelity: str | None = None) -> list[Measurement]:
    return [m for m in self._rows
            if (workload_key is None or m.workload_key == workload_key)
            and (cluster_key is None or m.cluster_key == cluster_key)
            and (fidelity is None or m.fidelity == fidelity)]
