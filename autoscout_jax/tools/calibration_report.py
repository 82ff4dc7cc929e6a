"""How well the simulators predict published training runs.

Where it sits: a program on top of sim/calibration.py (which fits the
constants the simulators import from sim/constants.py) and sim/vtrain.py;
no library module imports it.

    python -m autoscout_jax.tools.calibration_report --input=published_points.csv

(the calibration set is not shipped with the repository: --input names
your copy of it, a CSV with sim/published.py's columns).

Prints, per source and for all rows, for each fidelity (event only when
autoscout_jax/sim/event.py exists): coverage (rows the simulator can model),
throughput MAPE (tokens/s per device; single-layer timing rows by layer
time), mean Spearman rank correlation inside groups of rows sharing model
and hardware, and OOM agreement (published runs predicted feasible,
published OOMs predicted infeasible; "runs fit": memory verdict yes,
"fit|unc": yes or uncertain), and "in 80%": the share of rows whose
published throughput lies inside the predicted 80 % interval. Targets:
MAPE <= 8 % per source, Spearman >= 0.8, every run fit or uncertain,
coverage >= 90 %, in 80% >= 80 %.

    python -m autoscout_jax.tools.calibration_report --validate=vtrain

prints, instead, F0 and F1 on vTrain's measured multi-node A100 sweeps
(validation only, never fitted; sim/vtrain.py): per sweep MAPE of the
iteration time, its bias and the within-sweep Spearman rank correlation.
"""

from __future__ import annotations

import math
import sys

from absl import app, flags

from autoscout_jax.sim import calibration, published

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Flags are defined only when run as a program (importing stays side-effect free)."""
  flags.DEFINE_string("input", None, "published runs CSV (sim/published.py's columns); required "
                      "unless --validate is given")
  flags.DEFINE_enum("validate", None, ["vtrain"], "instead of the calibration set, report on a validation "
                    "set the constants were never fitted to (vtrain: vTrain's measured A100 sweeps)")


def _fmt(x, pct=False) -> str:
  if x is None or (isinstance(x, float) and math.isnan(x)):
    return "-"
  return f"{100 * x:.1f}%" if pct else f"{x:.2f}"


def format_report(rep: dict, fidelity: str) -> str:
  lines = [f"fidelity {fidelity}",
           f"  {'source':16s} {'rows':>5s} {'coverage':>9s} {'MAPE':>7s} {'spearman':>9s} {'groups':>6s} "
           f"{'runs fit':>9s} {'fit|unc':>8s} {'OOMs caught':>11s} {'in 80%':>7s}"]
  for name, d in rep.items():
    ooms = _fmt(d.get("ooms_pred_infeasible"), True) if d.get("published_ooms") else "none"
    lines.append(f"  {name:16s} {d['rows']:5d} {_fmt(d['coverage'], True):>9s} {_fmt(d.get('mape'), True):>7s} "
                 f"{_fmt(d.get('spearman')):>9s} {d.get('spearman_groups', 0):6d} "
                 f"{_fmt(d.get('runs_pred_feasible'), True):>9s} "
                 f"{_fmt(d.get('runs_pred_feasible_or_uncertain'), True):>8s} {ooms:>11s} "
                 f"{_fmt(d.get('interval_coverage'), True):>7s}")
  return "\n".join(lines)


def validate_vtrain() -> None:
  from autoscout_jax.sim import vtrain
  for fidelity in ("analytic", "event"):
    print(vtrain.format_report(vtrain.report(fidelity), fidelity))
  for fidelity in ("analytic", "event"):
    print(vtrain.format_single(vtrain.report_single(fidelity), fidelity))


def main(argv):
  del argv
  if FLAGS.validate == "vtrain":
    validate_vtrain()
    return
  path = FLAGS.input
  if not path:
    print("calibration_report: --input=<published runs CSV> is required (or --validate=vtrain)", file=sys.stderr)
    sys.exit(2)
  try:
    rows = published.read_rows(path)
  except OSError as e:
    print(f"calibration_report: cannot read {path}: {e}", file=sys.stderr)
    sys.exit(1)
  prep = calibration.prepare(rows)
  print(f"{path}: {len(rows)} rows, {len(prep.index)} supported")
  for fidelity in ("analytic", "event"):
    if fidelity == "event" and calibration.event_simulator() is None:
      print("fidelity event: not available (autoscout_jax/sim/event.py does not exist yet)")
      continue
    out = calibration.simulate(prep, fidelity)
    print(format_report(calibration.report(prep, out), fidelity))


if __name__ == "__main__":
  define_flags()
  app.run(main)
