"""Measure a Megatron table on one GPU: megatron-core's own training step of a
small GPT over the knobs that act on one rank (micro-batch size, recompute
granularity / method / layers, the distributed optimizer), each candidate
measured by `MegatronProfileEvaluator` (F3) and predicted by F0 (the
analytic simulator, for the same device kind), one CSV row per candidate.

    python -m autoscout_jax.tools.megatron_table --out=megatron_h200.csv \
      [--system=dgx_h200] [--max_time_s=150] [--limit=N] [--chunk=4]

Where it sits: the Megatron part of scripts/gpu_check.sh (a lent GPU
machine); nothing in CI runs it (megatron-core's step needs CUDA). The
candidates are the Megatron space of the workload on one device
(targets/megatron.py), reduced to one per class of knobs that change what
one rank does (the DDP overlap and bucket knobs only matter with data
parallel peers; torch FSDP2 is not wired in the child), in a fixed shuffled
order (`--seed`), so a short lease measures a uniform sample; rows are
appended chunk by chunk and a rerun skips candidates already in `--out`.
The summary line compares F0's ranking with the measured one (Spearman
rho over the measured-feasible rows, and the measured rank of F0's pick).

Exit status: 0 when at least one candidate trained; 1 when the child
cannot start here (no CUDA, no megatron-core: the message names it) or
nothing trained; 2 for bad flags.
"""

from __future__ import annotations

import csv
import datetime
import os
import random
import sys
import time
from typing import Any, Mapping, Sequence

import numpy as np
from absl import app, flags

from autoscout_jax.tools.maxtext_table_sims import spearman  # ties share their mean rank

ONE_RANK_KNOBS = ("micro_batch_size", "recompute_granularity", "recompute_method", "recompute_num_layers",
                  "use_distributed_optimizer")
COLUMNS = (*ONE_RANK_KNOBS, "status", "step_time_s", "tokens_per_s", "mfu", "peak_mem_gb", "f0_tokens_per_s",
           "f0_peak_mem_gb", "f0_feasible", "error", "key")


def _flags() -> None:
  flags.DEFINE_string("out", None, "CSV to write (appended; a rerun skips measured candidates)")
  flags.DEFINE_string("system", "dgx_h200", "catalog system of the device (F0 and the MFU peak)")
  flags.DEFINE_integer("num_layers", 24, "GPT layers")
  flags.DEFINE_integer("hidden_size", 1024, "GPT hidden size")
  flags.DEFINE_integer("num_heads", 16, "attention heads")
  flags.DEFINE_integer("seq_len", 2048, "sequence length")
  flags.DEFINE_integer("vocab_size", 51200, "vocabulary")
  flags.DEFINE_integer("global_batch", 16, "sequences per step")
  flags.DEFINE_integer("seed", 0, "order of the candidates and the child's seed")
  flags.DEFINE_integer("limit", None, "measure at most this many candidates")
  flags.DEFINE_float("max_time_s", 150.0, "start no new chunk after this many seconds")
  flags.DEFINE_integer("chunk", 4, "candidates per child session")
  flags.DEFINE_integer("warmup_steps", 2, "untimed steps")
  flags.DEFINE_integer("timed_steps", 5, "timed steps")
  flags.DEFINE_float("timeout_s", 120.0, "per-candidate limit")
  flags.DEFINE_string("python", None, "interpreter with torch (CUDA) and megatron-core (default: this one)")
  flags.DEFINE_bool("refresh_f0", False, "measure nothing: rewrite the F0 columns of --out with the current "
                    "simulator (rows the space now refuses get empty F0 columns)")
  flags.mark_flag_as_required("out")


def problem_and_candidates(system: str, model: Mapping[str, int], global_batch: int, seed: int):
  """The workload, the one-device cluster, the Megatron space and its
  candidates, one per one-rank knob class, in a seeded shuffled order."""
  from autoscout_jax.problem import Problem
  from autoscout_jax.sim import hardware
  from autoscout_jax.targets import megatron
  from autoscout_jax.workload import ModelConfig, Workload
  cfg = ModelConfig(name=f"gpt_l{model['num_layers']}_h{model['hidden_size']}", num_layers=model["num_layers"],
                    hidden_size=model["hidden_size"], num_heads=model["num_heads"],
                    ffn_hidden_size=4 * model["hidden_size"], vocab_size=model["vocab_size"],
                    seq_len=model["seq_len"])
  workload = Workload(name=f"{cfg.name}_gbs{global_batch}", model=cfg, global_batch=global_batch)
  cluster = hardware.make_cluster(system, 1, devices_per_node=1)
  # the child builds megatron-core's local spec: F0 prices that stack (scores stored, no flash kernel)
  space = megatron.space(workload, cluster, transformer_impl="local")
  seen: dict[tuple, Any] = {}
  for cand in space.enumerate():
    v = cand.values
    if v.get("use_torch_fsdp2"):
      continue
    seen.setdefault(tuple(v.get(k) for k in ONE_RANK_KNOBS), cand)
  cands = sorted(seen.values(), key=lambda c: c.key)
  random.Random(seed).shuffle(cands)
  return Problem(workload=workload, cluster=cluster, space=space, fidelities=("analytic", "profile")), cands


def _fmt(x: Any, digits: int = 6) -> str:
  if x is None:
    return ""
  if isinstance(x, float):
    return f"{x:.{digits}g}"
  return str(x)


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _portable(text: str) -> str:
  """Error texts and commands without this checkout's location (a committed
  table must not carry a machine's paths)."""
  return text.replace(ROOT + os.sep, "")


def row_of(cand: Any, meas: Any, f0: Any) -> dict[str, str]:
  m = meas.metrics
  p = f0.metrics if f0 is not None else None
  row = {k: _fmt(cand.values.get(k)) for k in ONE_RANK_KNOBS}
  row.update(status="ok" if m.feasible else str(m.failure_kind), step_time_s=_fmt(m.step_time_s),
             tokens_per_s=_fmt(m.tokens_per_s), mfu=_fmt(m.mfu, 4),
             peak_mem_gb=_fmt(m.peak_mem_bytes / 1e9 if m.peak_mem_bytes else None, 4),
             f0_tokens_per_s=_fmt(p.tokens_per_s if p else None),
             f0_peak_mem_gb=_fmt(p.peak_mem_bytes / 1e9 if p and p.peak_mem_bytes else None, 4),
             f0_feasible="" if p is None else str(bool(p.feasible)),
             error=_portable(" ".join((m.error or "").split()))[:300], key=cand.key)
  return row


def done_keys(path: str) -> set[str]:
  if not os.path.exists(path):
    return set()
  with open(path) as f:
    return {r["key"] for r in csv.DictReader(l for l in f if not l.startswith("#"))}


def summary(path: str) -> tuple[str, int]:
  with open(path) as f:
    rows = list(csv.DictReader(l for l in f if not l.startswith("#")))
  ok = [r for r in rows if r["status"] == "ok"]
  status: dict[str, int] = {}
  for r in rows:
    status[r["status"]] = status.get(r["status"], 0) + 1
  lines = [f"megatron_table: {len(rows)} rows by status: {status}"]
  for r in sorted(ok, key=lambda r: -float(r["tokens_per_s"]))[:5]:
    lines.append(f"  {float(r['tokens_per_s']):10,.0f} tok/s  mfu {r['mfu'] or 'n/a':>6}  "
                 f"mem {r['peak_mem_gb']:>7} GB  F0 {float(r['f0_tokens_per_s'] or 0):10,.0f} tok/s  "
                 + " ".join(f"{k}={r[k]}" for k in ONE_RANK_KNOBS if r[k]))
  both = [r for r in ok if r["f0_tokens_per_s"]]
  rho = (spearman([float(r["tokens_per_s"]) for r in both], [float(r["f0_tokens_per_s"]) for r in both])
         if len(both) >= 3 else None)
  if both:
    pick = max(both, key=lambda r: float(r["f0_tokens_per_s"]))
    order = sorted(both, key=lambda r: -float(r["tokens_per_s"]))
    best = float(order[0]["tokens_per_s"])
    lines.append(f"megatron_table: F0 vs measured over {len(both)} trained rows: spearman "
                 f"{'n/a' if rho is None else f'{rho:.2f}'}; F0's pick is measured #{order.index(pick) + 1} "
                 f"at {float(pick['tokens_per_s']) / best:.3f} of the best")
    level = sorted(float(r["f0_tokens_per_s"]) / float(r["tokens_per_s"]) for r in both)
    mem = sorted(float(r["peak_mem_gb"]) / float(r["f0_peak_mem_gb"]) for r in both
                 if r["peak_mem_gb"] and r["f0_peak_mem_gb"])
    lines.append(f"megatron_table: F0 / measured tok/s {level[0]:.2f}-{level[-1]:.2f} (median "
                 f"{float(np.median(level)):.2f})" + (f"; measured / F0 memory {mem[0]:.2f}-{mem[-1]:.2f} (median "
                                                      f"{float(np.median(mem)):.2f})" if mem else ""))
  ooms = [r for r in rows if r["status"] == "oom" and r["f0_feasible"]]
  if ooms:
    lines.append(f"megatron_table: measured OOMs F0 called infeasible: "
                 f"{sum(r['f0_feasible'] == 'False' for r in ooms)} of {len(ooms)}")
  return "\n".join(lines), len(ok)


def refresh_f0(path: str, problem: Any, cands: Sequence[Any]) -> tuple[int, int]:
  """Rewrite the F0 columns of the table at `path` in place (comments and
  measured columns unchanged). Returns (rows predicted, rows left empty)."""
  from autoscout_jax.sim import AnalyticEvaluator
  with open(path) as f:
    lines = f.readlines()
  comments = [l for l in lines if l.startswith("#")]
  rows = list(csv.DictReader(l for l in lines if not l.startswith("#")))
  by_key = {c.key: c for c in cands}
  inside = [r for r in rows if r["key"] in by_key]
  preds = AnalyticEvaluator().evaluate(problem, [by_key[r["key"]] for r in inside]) if inside else []
  for r, p in zip(inside, preds):
    new = row_of(by_key[r["key"]], p, p)
    r.update({k: new[k] for k in ("f0_tokens_per_s", "f0_peak_mem_gb", "f0_feasible")})
  for r in rows:
    if r["key"] not in by_key:
      r.update(f0_tokens_per_s="", f0_peak_mem_gb="", f0_feasible="")
  tmp = path + ".tmp"
  with open(tmp, "w", newline="") as f:
    f.writelines(comments)
    w = csv.DictWriter(f, fieldnames=COLUMNS)
    w.writeheader()
    w.writerows(rows)
  os.replace(tmp, path)  # never a half-written table
  return len(inside), len(rows) - len(inside)


def main(argv: Sequence[str]) -> int:
  del argv
  F = flags.FLAGS
  for name in ("num_layers", "hidden_size", "num_heads", "seq_len", "vocab_size", "global_batch", "chunk",
               "timed_steps"):
    if getattr(F, name) < 1:
      print(f"error: --{name} must be >= 1, got {getattr(F, name)}", file=sys.stderr)
      return 2
  # This process never needs the GPU (F0 is numpy; JAX would take most of its memory).
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  from autoscout_jax.local.runner import LocalSetupError
  from autoscout_jax.megatron_profile import MegatronProfileEvaluator
  from autoscout_jax.sim import AnalyticEvaluator
  model = {k: getattr(F, k) for k in ("num_layers", "hidden_size", "num_heads", "seq_len", "vocab_size")}
  try:
    problem, cands = problem_and_candidates(F.system, model, F.global_batch, F.seed)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  if F.refresh_f0:
    if not os.path.exists(F.out):
      print(f"error: --refresh_f0 needs an existing table, {F.out} does not exist", file=sys.stderr)
      return 2
    n_in, n_out = refresh_f0(F.out, problem, cands)
    print(f"megatron_table: F0 columns rewritten for {n_in} rows ({n_out} outside the space left empty)")
    text, n_ok = summary(F.out)
    print(text)
    return 0
  done = done_keys(F.out)
  todo = [c for c in cands if c.key not in done][:F.limit]
  print(f"megatron_table: {len(cands)} one-rank candidates of {problem.space.name}; {len(done)} already in "
        f"{F.out}; measuring up to {len(todo)}")
  f0 = AnalyticEvaluator()
  prof = MegatronProfileEvaluator(warmup_steps=F.warmup_steps, timed_steps=F.timed_steps, timeout_s=F.timeout_s,
                                  seed=F.seed, python=F.python)
  why = prof.check_fits(problem.workload, problem.cluster) if todo else None  # no torch/CUDA/megatron-core
  if why:
    print(f"megatron_table: the Megatron child cannot run here: {why}", file=sys.stderr)
    return 1
  t0 = time.time()
  for i in range(0, len(todo), F.chunk):
    if time.time() - t0 > F.max_time_s:
      print(f"megatron_table: --max_time_s={F.max_time_s:g} reached; {len(todo) - i} candidates left for a rerun")
      break
    part = todo[i:i + F.chunk]
    try:
      measured = prof.measure(problem, part)
    except LocalSetupError as e:
      print(f"megatron_table: the Megatron child cannot run here: {e}", file=sys.stderr)
      return 1
    try:
      predicted = f0.evaluate(problem, part)
    except Exception as e:  # noqa: BLE001 -- F0 is a column beside the measurement, never its loss
      print(f"megatron_table: F0 failed on this chunk ({type(e).__name__}: {e}); its columns stay empty",
            file=sys.stderr)
      predicted = [None] * len(part)
    new = not os.path.exists(F.out)
    with open(F.out, "a", newline="") as f:
      if new:
        prov = measured[0].provenance
        f.write(f"# megatron-core training step of {problem.workload.name} on one "
                f"{prov.get('device_kind', 'GPU')}; measured {datetime.date.today().isoformat()}\n")
        f.write("# versions: " + " ".join(f"{k}={prov.get(k)}" for k in ("python", "torch", "cuda",
                                                                           "megatron_core")) + "\n")
        f.write(f"# command: python -m autoscout_jax.tools.megatron_table {_portable(' '.join(sys.argv[1:]))}\n")
        f.write(f"# F0: the analytic simulator on system {F.system} (1 device), same candidates\n")
      w = csv.DictWriter(f, fieldnames=COLUMNS)
      if new:
        w.writeheader()
      for c, m, p in zip(part, measured, predicted):
        w.writerow(row_of(c, m, p))
    print(f"megatron_table: {min(i + F.chunk, len(todo))}/{len(todo)} measured ({time.time() - t0:.0f}s)",
          flush=True)
  if not os.path.exists(F.out):
    print("megatron_table: nothing measured", file=sys.stderr)
    return 1
  text, n_ok = summary(F.out)
  print(text)
  return 0 if n_ok else 1


if __name__ == "__main__":
  _flags()
  app.run(lambda argv: sys.exit(main(argv)))
