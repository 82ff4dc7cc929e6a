"""The scoutbench task `real_maxtext_cpu8` from its measured table: the
workload, cluster and space a task gin binds, and the truth table (JSON)
scoutbench replays, made from the committed CSV.

Where it sits: tools/maxtext_table.py measured the CSV
(`experiments/scoutbench/real_maxtext_cpu8.csv`: MaxText keys as columns,
one row per timed block); `python -m autoscout_jax.tools.maxtext_table_task`
turns it into `experiments/scoutbench/real_maxtext_cpu8.json`
(bench/truth.py's format) over the maxtext target's space restricted to
the measured rows (`space`: targets.maxtext.space + bench.tables.allow_list),
which gin/bench/real_maxtext_cpu8.gin names as a `RecordedProfiling` truth.
The truth of a candidate is the median of its repeats; a candidate with a
failed repeat is a failure. Profiling a candidate costs what the table
measured: (its compile + warm-up and timed steps) x 8 devices.
"""

from __future__ import annotations

import collections
import csv
import os
import sys
from typing import Any, Mapping, Sequence

import numpy as np
from absl import app, flags

from autoscout_jax.tools import maxtext_table as mtab
from autoscout_jax.workload import LocalCluster, ModelConfig, Workload

TABLE = "experiments/scoutbench/real_maxtext_cpu8.csv"
TRUTH = "experiments/scoutbench/real_maxtext_cpu8.json"
NAME = "real_maxtext_cpu8"
STEPS_PER_PROFILE = 1 + 3 * 2  # the table's warm-up step + 3 timed blocks of 2 steps


def _root() -> str:
  return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _path(p: str) -> str:
  return p if os.path.isabs(p) else os.path.join(_root(), p)


def workload() -> Workload:
  """The table's model (tools/maxtext_table.CPU8) as a Workload; its expert
  default is MaxText's own default layout: FSDP over all 8 devices, the
  whole batch in one step, full remat."""
  m = mtab.CPU8.model
  model = ModelConfig("tiny_moe", num_layers=m["base_num_decoder_layers"], hidden_size=m["base_emb_dim"],
                      num_heads=m["base_num_query_heads"], ffn_hidden_size=m["base_mlp_dim"],
                      vocab_size=m["vocab_size"], seq_len=m["max_target_length"],
                      num_kv_heads=m["base_num_kv_heads"], gated_mlp=True, num_experts=m["num_experts"],
                      moe_top_k=m["num_experts_per_tok"])
  default = {"ici_fsdp_parallelism": 8, "per_device_batch_size": 2, "gradient_accumulation_steps": 1,
             "remat_policy": "full"}
  return Workload("tiny_moe", model, global_batch=mtab.CPU8.batch_per_device * 8, default=default)


def cluster() -> LocalCluster:
  return LocalCluster(num_devices=8, platform="cpu", name="local")


def read(path: str = TABLE) -> tuple[list[str], list[tuple[dict[str, Any], list[dict[str, str]]]]]:
  """(the `#` header lines, [(knobs, its rows)] in file order)."""
  with open(_path(path), newline="") as f:
    lines = f.readlines()
  head = [ln[1:].strip() for ln in lines if ln.startswith("#")]
  by: dict[str, tuple[dict[str, Any], list[dict[str, str]]]] = collections.OrderedDict()
  for r in csv.DictReader(ln for ln in lines if not ln.startswith("#")):
    knobs = {k: mtab._typed(r[k]) for k in mtab.KNOB_COLUMNS}
    by.setdefault(mtab.key_of(knobs), ({k: v for k, v in knobs.items() if v is not None}, []))[1].append(r)
  return head, list(by.values())


def _values(knobs: Mapping[str, Any]) -> dict[str, Any]:
  return {k: (int(v) if isinstance(v, float) and v == int(v) else v) for k, v in knobs.items()}


def space(wl: Workload, cl: Any, table: str = TABLE) -> Any:
  """The maxtext space restricted to the table's rows (bench's allow-list
  constraint), keeping the family's plan so the simulators score it."""
  from autoscout_jax.bench.tables import allow_list
  from autoscout_jax.sim.vspace import SimSpace
  from autoscout_jax.targets import maxtext as mt
  full = mt.space(wl, cl)
  _, groups = read(table)
  allow = [dict(full.make(_values(k)).values) for k, _ in groups]
  rows = allow_list(full, allow, os.path.basename(table))
  return SimSpace(rows.knobs, rows.vec_constraints, groups=rows.groups, facts=rows.facts, name=rows.name,
                  family=full.family, plan=full.planner)


def truth(table: str = TABLE, name: str = NAME) -> Any:
  """The truth table (bench/truth.py) of the measured CSV."""
  from autoscout_jax.bench import truth as truth_lib
  head, groups = read(table)
  wl, cl = workload(), cluster()
  sp = space(wl, cl, table)
  reps = max(len(rows) for _, rows in groups)
  n = len(groups)
  step = np.full((n, reps), np.nan)
  cost = np.full((n, reps), np.nan)
  mem = np.full((n, reps), np.nan)
  kinds: list[list[str | None]] = []
  extra: list[list[dict]] = []
  cands = []
  for i, (knobs, rows) in enumerate(groups):
    cand = sp.make(_values(knobs))
    viol = sp.validate(cand)
    if viol:
      raise ValueError(f"{table}: row {cand.short()} is not valid in the maxtext space: {viol[0]}")
    cands.append(cand)
    kinds.append([])
    extra.append([])
    for r in range(reps):
      row = rows[r % len(rows)]
      ok = row["status"] == "ok"
      compile_s = float(row["compile_s"]) if row["compile_s"] else 0.0
      if ok:
        step[i, r] = float(row["step_time_s"])
      cost[i, r] = (compile_s + (STEPS_PER_PROFILE * step[i, r] if ok else 0.0)) * cl.num_devices
      mem[i, r] = float(row["peak_mem_gib"]) * 2**30 if row["peak_mem_gib"] else np.nan
      kinds[i].append(None if ok else row["status"])
      extra[i].append({"compile_s": compile_s, **({"error": row["error"]} if row.get("error") else {})})
  tokens = wl.tokens_per_step / step
  feasible = np.array([all(k is None for k in ks) for ks in kinds])
  true = np.full(n, np.nan)
  true[feasible] = np.median(tokens[feasible], axis=1)
  return truth_lib.TruthTable(
      task=name, workload_key=wl.key, cluster_key=cl.key, source_fidelity="profile", candidates=cands,
      tokens_per_s=tokens, step_time_s=step, cost_s=cost, failure_kind=kinds, true_tokens_per_s=true,
      peak_mem_bytes=mem, extra=extra,
      provenance={"kind": "measured_table", "path": table, "header": head, "rows": sum(len(r) for _, r in groups),
                  "measured_by": "tools/maxtext_table.py (MaxText's own train step, F3)"})


def define_flags() -> None:
  flags.DEFINE_string("csv", TABLE, "the measured CSV")
  flags.DEFINE_string("json", TRUTH, "the truth table JSON to write")


def main(argv: Sequence[str]) -> int:
  del argv
  from autoscout_jax.bench import truth as truth_lib
  F = flags.FLAGS
  try:
    t = truth(F.csv)
  except (OSError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  truth_lib.save_table(t, _path(F.json))
  ok = int(np.isfinite(t.true_tokens_per_s).sum())
  print(f"{F.json}: {len(t.candidates)} candidates x {t.repeats} repeats, {ok} feasible, optimum "
        f"{t.optimum:,.0f} tokens/s, repeat noise (CV) {t.noise_cv():.1%}")
  return 0


if __name__ == "__main__":
  define_flags()
  app.run(lambda argv: sys.exit(main(argv)))
