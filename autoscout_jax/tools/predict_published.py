"""Predicts published training runs with a simulator fidelity.

    python -m autoscout_jax.tools.predict_published --input=IN.csv --output=OUT.csv [--fidelity=analytic|event]

Where it sits: a thin program over sim/calibration.py (`prepare`,
`simulate`, `predictions`). IN.csv has the columns of
shared/calibration/published_points.csv (architecture dims or a catalog
model name, hardware as named there, tp/pp/dp/cp/ep/vp, sharding,
sequence_parallel, micro/global batch, recompute, precision). OUT.csv is
every input row, in order, plus pred_step_time_s,
pred_tokens_per_sec_per_device, pred_model_tflops_per_device,
pred_mfu_pct, pred_peak_mem_gb_per_device, pred_feasible and pred_status
(`ok`, or `unsupported: <reason>`). No row is dropped.
"""

from __future__ import annotations

import sys

from absl import app, flags

from autoscout_jax.sim import calibration, published

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Flags are defined only when run as a program (importing stays side-effect free)."""
  flags.DEFINE_string("input", None, "CSV of published runs (published_points.csv columns)")
  flags.DEFINE_string("output", None, "where to write the rows with pred_* columns")
  flags.DEFINE_enum("fidelity", "analytic", ["analytic", "event"], "simulator fidelity")


def predict_file(input_path: str, output_path: str, fidelity: str = "analytic") -> list[dict]:
  """Reads, predicts, writes; returns the written rows."""
  rows = published.read_rows(input_path)
  if not rows:
    raise ValueError(f"{input_path}: no rows")
  if fidelity == "event" and calibration.event_simulator() is None:
    raise RuntimeError("fidelity 'event' is not available: autoscout_jax/sim/event.py (F1) does not exist "
                       "or exposes no simulate function")
  prep = calibration.prepare(rows)
  out = calibration.simulate(prep, fidelity) if prep.index else None
  res = calibration.predictions(prep, out) if out is not None else calibration.predictions(prep, {})
  columns = list(rows[0].keys()) + [c for c in published.PRED_COLUMNS if c not in rows[0]]
  published.write_rows(output_path, res, columns)
  return res


def main(argv):
  del argv
  if not FLAGS.input or not FLAGS.output:
    print("predict_published: --input and --output are required", file=sys.stderr)
    sys.exit(2)
  try:
    res = predict_file(FLAGS.input, FLAGS.output, FLAGS.fidelity)
  except (OSError, ValueError, RuntimeError) as e:
    print(f"predict_published: {e}", file=sys.stderr)
    sys.exit(1)
  ok = sum(r["pred_status"] == "ok" for r in res)
  print(f"predicted {ok} of {len(res)} rows ({FLAGS.fidelity}); {len(res) - ok} unsupported -> {FLAGS.output}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
