"""Warm-start rows on disk: what a finished run of the cheap-order stage
saves in its workdir (`CheapOrder.export()`: features by name and centred
residuals) and another workload's run loads (`WARM_START` in gin).

Where it sits: experiment.py calls `save_rows` after a run; the designer's
factory calls `load_rows` for `WARM_START`; ranked.py's `CheapOrder` takes
the loaded rows. JSON only, no numpy.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

WARM_FILE = "residual_rows.json"  # what a run saves in its workdir for another workload's warm start


def save_rows(rows: Mapping[str, Any], workdir: str) -> str:
  """Writes `export()`'s rows as JSON into `workdir` (temporary name, then rename)."""
  path = os.path.join(workdir, WARM_FILE)
  os.makedirs(workdir, exist_ok=True)
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    json.dump({"format": "autoscout-residual-rows-v1", **rows}, f)
  os.replace(path + ".tmp", path)
  return path


def load_rows(workdir: str | None) -> dict[str, Any] | None:
  """The rows another run saved (`workdir` or its residual_rows.json); None
  for None. A missing or malformed file is a ValueError naming it."""
  if not workdir:
    return None
  path = workdir if workdir.endswith(".json") else os.path.join(workdir, WARM_FILE)
  try:
    with open(path, encoding="utf-8") as f:
      data = json.load(f)
  except (OSError, ValueError) as e:
    raise ValueError(f"WARM_START: cannot read {path!r} ({e}); a finished AutoScout run writes it") from None
  if data.get("format") != "autoscout-residual-rows-v1":
    raise ValueError(f"WARM_START: {path!r} is not an AutoScout residual-rows file")
  return {"names": list(data.get("names", [])),
          "value": [(dict(f), float(y)) for f, y in data.get("value", [])],
          "memory": [(dict(f), float(y)) for f, y in data.get("memory", [])]}
