"""A surrogate fit, seen in TensorBoard: losses per epoch, validation metrics.

Where it sits in the data flow::

    surrogates.fit ──► FitHistory ─┐
    surrogates.evaluate (or any    ├─► write_fit(writer, prefix, ...) ──► Writer
      held-out metrics) ──► dict  ─┘     (TensorBoard scalars, JSONL, logging)

Tags, under `prefix` (one prefix per fit, e.g. "surrogate/round_3"):
  {prefix}/train_loss, {prefix}/val_loss    per epoch (step = epoch; val_loss
                                             only when the fit held rows out)
  {prefix}/validation/{name}                once, at the last epoch: spearman,
                                             kendall, coverage_2sigma,
                                             feasibility_auc, top5_regret, ...
  {prefix}/epochs, {prefix}/restarts        once, at the last epoch
Non-finite values (a metric undefined on this data) are not written.
"""

from __future__ import annotations

import math
from typing import Mapping

from autoscout_jax.writers import Writer

# The metrics a reader looks for first; other finite metrics follow them.
HEADLINE = ("spearman", "kendall", "coverage_2sigma", "feasibility_auc")


def _finite(v: object) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def write_fit(writer: Writer, prefix: str, history, metrics: Mapping[str, float],
              step_offset: int = 0) -> int:
  """Writes one fit; returns the step its summary scalars were written at.

  Args:
    writer: the project's Writer (TensorBoard, JSONL, logging or a fan-out).
    prefix: tag prefix of this fit, without a trailing slash.
    history: a `surrogates.FitHistory`.
    metrics: validation metrics, {name: value} (e.g. `surrogates.evaluate`).
    step_offset: added to every step, to place several fits on one axis.
  """
  prefix = prefix.strip("/")
  if not prefix:
    raise ValueError("write_fit needs a non-empty tag prefix, e.g. 'surrogate/round_0'")
  for epoch, scalars in history.scalars(prefix):
    writer.write_scalars(step_offset + epoch, scalars)
  last = step_offset + max(history.num_epochs - 1, 0)
  names = [n for n in HEADLINE if n in metrics] + sorted(n for n in metrics if n not in HEADLINE)
  summary = {f"{prefix}/validation/{n}": float(metrics[n]) for n in names
             if _finite(metrics[n])}
  summary[f"{prefix}/epochs"] = float(history.num_epochs)
  summary[f"{prefix}/restarts"] = float(history.restarts)
  writer.write_scalars(last, summary)
  writer.flush()
  return last
