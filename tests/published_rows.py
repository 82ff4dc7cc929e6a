"""Test helper: published-run rows through `predict_published`, as a user's
CSV would go (written to a file, read back, predicted)."""

import csv

from autoscout_jax.tools import predict_published


def predict_rows(directory, rows) -> dict[str, dict[str, str]]:
  """Predictions of `rows` (dicts of published_points.csv columns, every
  key any row uses becomes a column), keyed by row_id."""
  cols = list(dict.fromkeys(k for r in rows for k in r))
  with open(directory / "in.csv", "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=cols, restval="")
    w.writeheader()
    w.writerows(rows)
  out = predict_published.predict_file(str(directory / "in.csv"), str(directory / "out.csv"))
  return {r["row_id"]: r for r in out}
