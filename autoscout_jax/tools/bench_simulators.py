"""Benchmark of the simulators: candidates scored per second, in one run.

    python -m autoscout_jax.tools.bench_simulators [--output=FILE.json] [--repeats=3]

Where it sits: a program over sim/analytic.py (F0) and sim/event.py (F1),
not a test. On the Megatron space of GPT-3 175B on 1024 A100s it measures
- F0: one vectorized call on every valid configuration (after a warm-up
  call that compiles it);
- F1: the event simulator on a random sample of those configurations
  (after a warm-up call on the same sample);
- the plain per-candidate Python path of the same F0 model
  (analytic.simulate_f0_reference, numpy scalars) and of the F1 model
  (sim/event_reference.py), on small samples;
- enumerating and scoring every valid configuration with F0, end to end.
It prints a table of candidates/s and ratios to the Python path (ratios
measured in the same run; absolute numbers on a shared machine are noise)
and writes the medians of the repeats to --output as JSON, also per
CPU-second of this process (on a shared machine the wall-clock figures
move with the load; the CPU-second ones much less).
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import numpy as np
from absl import app, flags

from autoscout_jax.sim import analytic, catalog, costs, event, event_reference, hardware
from autoscout_jax.targets import megatron

FLAGS = flags.FLAGS
flags.DEFINE_string("output", None, "write the results as JSON here")
flags.DEFINE_integer("repeats", 3, "timed repeats per measurement (medians are reported)")
flags.DEFINE_integer("f1_batch", 4096, "configurations per F1 call")
flags.DEFINE_integer("python_batch", 300, "configurations for the per-candidate F0 Python path")
flags.DEFINE_integer("event_reference_batch", 8, "configurations for the per-candidate F1 event loop")
flags.DEFINE_integer("seed", 0, "sampling seed")


CPU_S: dict[int, float] = {}  # id(fn) -> median process CPU seconds of its last _timed call


def _timed(fn, repeats: int) -> tuple[float, object]:
  """Median wall seconds of `repeats` calls (and, in CPU_S, median CPU
  seconds of this process: on a shared machine the load-independent one)."""
  times, cpu, out = [], [], None
  for _ in range(repeats):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    times.append(time.perf_counter() - t0)
    cpu.append(time.process_time() - c0)
  CPU_S[id(fn)] = statistics.median(cpu)
  return statistics.median(times), out


def _rows(d: dict, idx: np.ndarray) -> dict:
  return {k: (np.asarray(v)[idx] if np.ndim(v) else v) for k, v in d.items()}


def run(repeats: int = 3, f1_batch: int = 4096, python_batch: int = 300, event_reference_batch: int = 8,
        seed: int = 0) -> dict:
  """All measurements (see module docstring); returns the JSON record."""
  wl = catalog.make_workload("gpt3_175b", 1024)
  cl = hardware.make_cluster("dgx_a100_80gb", 1024)

  def enumerate_and_score():
    space = megatron.space(wl, cl)
    table, out = analytic.score_space(space, wl, cl)
    return space, table, out

  enumerate_and_score()  # compile
  t_all, (space, table, _) = _timed(enumerate_and_score, repeats)
  plan = space.plan(table, wl, cl)
  model, hw = costs.model_scalars(wl), hardware.cluster_scalars(cl)
  n = int(np.size(plan["tp"]))
  rng = np.random.default_rng(seed)

  def f0():
    return analytic.simulate_f0(plan, model, hw)

  f0()  # compile
  t_f0, _ = _timed(f0, repeats)

  sample = rng.choice(n, size=min(f1_batch, n), replace=False)
  plan_f1 = _rows(plan, sample)
  def f1():
    return event.simulate_f1(plan_f1, model, hw)

  f1()  # compile the shapes this sample needs
  t_f1, _ = _timed(f1, repeats)
  ops = 2 * plan_f1["num_micro"] * plan_f1["vp"] * plan_f1["pp"]

  py = rng.choice(n, size=min(python_batch, n), replace=False)
  consts = event._consts(None)

  def python_f0():
    for i in py:
      analytic.simulate_f0_reference({k: float(v[i]) for k, v in plan.items()}, model, hw, consts)

  t_py, _ = _timed(python_f0, repeats)

  ev_idx = rng.choice(len(sample), size=min(event_reference_batch, len(sample)), replace=False)
  inp, _ = event.pipeline_inputs(_rows(plan_f1, ev_idx), model, hw, consts)

  def python_f1():
    for i in range(len(ev_idx)):
      event_reference.simulate_one(event_reference.row_of(inp, i))

  t_ev, _ = _timed(python_f1, 1)

  rec = dict(
      workload="gpt3_175b (global batch %d)" % wl.global_batch, cluster="1024 x A100-80GB (DGX, HDR IB)",
      repeats=repeats,
      f0_candidates_per_s=n / t_f0, f0_batch=n, f0_candidates_per_cpu_s=n / CPU_S[id(f0)],
      f1_candidates_per_s=len(sample) / t_f1, f1_batch=int(len(sample)),
      f1_candidates_per_cpu_s=len(sample) / CPU_S[id(f1)],
      f1_mean_ops_per_candidate=float(ops.mean()),
      python_reference_candidates_per_s=len(py) / t_py, python_reference_batch=int(len(py)),
      python_reference_candidates_per_cpu_s=len(py) / CPU_S[id(python_f0)],
      event_reference_candidates_per_s=len(ev_idx) / t_ev, event_reference_batch=int(len(ev_idx)),
      gpt3_175b_a100_1024_valid_configs=n, gpt3_175b_a100_1024_enumerate_and_score_s=t_all)
  rec["f0_over_python"] = rec["f0_candidates_per_s"] / rec["python_reference_candidates_per_s"]
  rec["f1_over_python"] = rec["f1_candidates_per_s"] / rec["python_reference_candidates_per_s"]
  rec["f1_over_event_reference"] = rec["f1_candidates_per_s"] / rec["event_reference_candidates_per_s"]
  return rec


def format_table(rec: dict) -> str:
  py = rec["python_reference_candidates_per_s"]
  rows = [("F0 analytic, one vectorized call", rec["f0_candidates_per_s"], rec["f0_batch"]),
          ("F1 event, vectorized timeline", rec["f1_candidates_per_s"], rec["f1_batch"]),
          ("F0 formulas, per-candidate Python", py, rec["python_reference_batch"]),
          ("F1 event loop, per-candidate Python", rec["event_reference_candidates_per_s"],
           rec["event_reference_batch"])]
  lines = [f"{rec['workload']} on {rec['cluster']}, medians of {rec['repeats']} repeats",
           f"  {'simulator':38s} {'candidates/s':>13s} {'x python F0':>12s} {'batch':>8s}"]
  lines += [f"  {name:38s} {v:13.4g} {v / py:12.3g} {b:8d}" for name, v, b in rows]
  lines.append(f"  valid Megatron configurations: {rec['gpt3_175b_a100_1024_valid_configs']}, enumerated and "
               f"scored by F0 in {rec['gpt3_175b_a100_1024_enumerate_and_score_s']:.2f} s")
  lines.append(f"  F1 sample: {rec['f1_mean_ops_per_candidate']:.0f} passes per candidate on average")
  lines.append(f"  per CPU-second of this process (load-independent): F0 {rec['f0_candidates_per_cpu_s']:.4g}, "
               f"F1 {rec['f1_candidates_per_cpu_s']:.4g}, per-candidate Python F0 "
               f"{rec['python_reference_candidates_per_cpu_s']:.4g}")
  return "\n".join(lines)


def main(argv):
  del argv
  if FLAGS.repeats < 1:
    print("bench_simulators: --repeats must be >= 1", file=sys.stderr)
    sys.exit(2)
  rec = run(FLAGS.repeats, FLAGS.f1_batch, FLAGS.python_batch, FLAGS.event_reference_batch, FLAGS.seed)
  print(format_table(rec))
  if FLAGS.output:
    with open(FLAGS.output, "w") as f:
      json.dump(rec, f, indent=2, sort_keys=True)
    print(f"wrote {FLAGS.output}")


if __name__ == "__main__":
  app.run(main)
