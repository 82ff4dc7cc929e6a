"""How well a run's cheap fidelities ranked what it profiled.

    python -m autoscout_jax.tools.ladder_report --workdir=runs/ladder

Where it sits: a tool on top of the store (store.py); nothing imports it.
(For a committed measured table, scoutbench reports the same for its cheap
fidelities: `python -m autoscout_jax.bench --tasks=real_tiny_cpu8 ...`
prints "analytic Spearman ... with the truth".)

For each cheap fidelity in the workdir's store that has a throughput
(analytic, event), over the candidates it and F3 (profile) both measured
feasible: their count, Spearman's rank correlation of tokens/s, and the
median ratio F3 / cheap (how far off the absolute level is). Printed as
JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Mapping, Sequence

import numpy as np


def agreement(cheap: Mapping[str, float], truth: Mapping[str, float]) -> dict:
  """Both: candidate key -> tokens/s of the feasible measurements."""
  both = sorted(set(cheap) & set(truth))
  a = np.array([cheap[k] for k in both])
  b = np.array([truth[k] for k in both])
  rho = None
  if len(both) >= 3:
    from scipy.stats import spearmanr
    r = spearmanr(a, b).statistic
    rho = round(float(r), 4) if np.isfinite(r) else None
  return {"candidates": len(both), "spearman": rho,
          "median_truth_over_cheap": round(float(np.median(b / a)), 4) if both else None}


def from_workdir(workdir: str) -> dict:
  from autoscout_jax.store import MeasurementStore
  if not os.path.exists(os.path.join(workdir, "measurements.jsonl")):
    raise ValueError(f"{workdir} holds no measurements.jsonl")
  by: dict[str, dict[str, float]] = {}
  for m in MeasurementStore(workdir):
    if m.feasible and m.metrics.tokens_per_s:
      by.setdefault(m.fidelity, {})[m.candidate.key] = float(m.metrics.tokens_per_s)
  truth = by.pop("profile", {})
  return {"profiled": len(truth), **{f: agreement(v, truth) for f, v in sorted(by.items())}}


def main(argv: Sequence[str] | None = None) -> int:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--workdir", required=True)
  args = ap.parse_args(argv)
  try:
    out = from_workdir(args.workdir)
  except (OSError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(json.dumps(out, indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())
