"""Measure the `real_maxtext_cpu8` table: MaxText's real train step on this
machine's 8 CPU devices, every candidate of the table's space.

Where it sits: a program (jax-free here), run once to produce the committed
CSV `experiments/scoutbench/real_maxtext_cpu8.csv` that scoutbench replays
on any machine (bench/tables.py reads it: MaxText keys as columns, one row
per timed repeat). Each candidate is measured by a long-lived MaxText child
(`autoscout_jax.maxtext_child/profile_child.py`, Python 3.12) fed through
`local/runner.run_candidates` in chunks: a crash, OOM kill or hang costs one
candidate (recorded as a failed row) and a fresh child takes the rest.
Rows are appended and flushed chunk by chunk, so an interrupted run resumes
where it stopped (`--out` already holding a candidate's rows skips it).

    python -m autoscout_jax.tools.maxtext_table --python=<python with maxtext> \
      --out=experiments/scoutbench/real_maxtext_cpu8.csv

What one candidate costs: MaxText builds config, mesh, model, optimizer
state and jitted step; we compile it, run `--warmup_steps` steps, then
`--repeats` blocks of `--timed_steps` steps, each block timed with
block_until_ready; each block is one row (`repeat` 0..repeats-1, all from
one compile in one process).
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import hashlib
import itertools
import json
import math
import os
import random
import sys
import time
from typing import Any, Iterable, Mapping, Sequence

from absl import app, flags

@dataclasses.dataclass(frozen=True)
class Preset:
  """One kind of table: the model (MaxText keys), the run keys of the
  platform, the global batch per device and the XLA flags of every row."""

  name: str
  platform: str  # 'cpu' (virtual devices) or 'gpu'
  model: Mapping[str, Any]
  run: Mapping[str, Any]
  batch_per_device: int
  xla_flags: tuple[str, ...] = ()
  num_devices: int | None = None  # None: every device the machine has (gpu)


_RUN = {"run_name": "autoscout", "dataset_type": "synthetic", "enable_checkpointing": False,
        "skip_jax_distributed_system": True, "steps": 1000, "enable_tensorboard": False}
# A small MoE decoder (every layer MoE, 4 experts, top-2) on 8 virtual CPU devices.
CPU8 = Preset(
    name="cpu8", platform="cpu", num_devices=8, batch_per_device=2,
    model={"base_emb_dim": 128, "base_num_query_heads": 8, "base_num_kv_heads": 8, "head_dim": 16,
           "base_mlp_dim": 256, "base_moe_mlp_dim": 256, "num_experts": 4, "num_experts_per_tok": 2,
           "base_num_decoder_layers": 4, "vocab_size": 512, "max_target_length": 128},
    run={**_RUN, "hardware": "cpu"},
    # XLA:CPU deadlocks in collective rendezvous (gradient accumulation loops) on a 2-core host
    # unless its concurrency-optimized scheduler is off; a fixed setting of every row.
    xla_flags=("--xla_cpu_enable_concurrency_optimized_scheduler=false",))
# The same kind of MoE decoder at a size a GPU notices (~0.4 B parameters), 1-8 GPUs of one host.
GPU = Preset(
    name="gpu", platform="gpu", batch_per_device=8,
    model={"base_emb_dim": 1024, "base_num_query_heads": 16, "base_num_kv_heads": 8, "head_dim": 64,
           "base_mlp_dim": 2048, "base_moe_mlp_dim": 2048, "num_experts": 4, "num_experts_per_tok": 2,
           "base_num_decoder_layers": 8, "vocab_size": 32768, "max_target_length": 1024},
    run={**_RUN, "hardware": "gpu", "attention": "dot_product"})
PRESETS = {p.name: p for p in (CPU8, GPU)}
# Kept for the cpu8 table's readers.
MODEL, NUM_DEVICES, GLOBAL_BATCH = CPU8.model, 8, 16
RUN = CPU8.run
AXES = ("data", "fsdp", "tensor", "context", "expert", "pipeline")
REMATS = ("full", "minimal")
CPU_XLA_FLAGS = CPU8.xla_flags
KNOB_COLUMNS = tuple(f"ici_{a}_parallelism" for a in AXES) + (
    "remat_policy", "per_device_batch_size", "gradient_accumulation_steps", "num_pipeline_microbatches")
RESULT_COLUMNS = ("step_time_s", "status", "peak_mem_gib", "repeat", "compile_s", "error")


def workload_columns(preset: Preset, num_devices: int) -> dict[str, Any]:
  """The table's workload columns (bench/tables.py reads them)."""
  m = preset.model
  return {"num_devices": num_devices, "global_batch": preset.batch_per_device * num_devices,
          "hidden_size": m["base_emb_dim"], "num_layers": m["base_num_decoder_layers"],
          "num_heads": m["base_num_query_heads"], "num_kv_heads": m["base_num_kv_heads"],
          "seq_len": m["max_target_length"], "ffn_hidden_size": m["base_mlp_dim"], "vocab_size": m["vocab_size"],
          "num_experts": m["num_experts"], "experts_per_token": m["num_experts_per_tok"]}


WORKLOAD_COLUMNS = workload_columns(CPU8, 8)
COLUMNS = KNOB_COLUMNS + tuple(WORKLOAD_COLUMNS) + RESULT_COLUMNS


def meshes(num_devices: int, max_expert: int = 4, max_pipeline: int = 4) -> list[dict[str, int]]:
  """Every ordered factorization of the device count over AXES (powers of
  two), with expert <= the expert count and pipeline <= the layer count."""
  powers = [2 ** i for i in range(num_devices.bit_length()) if num_devices % 2 ** i == 0]
  out = []
  for combo in itertools.product(powers, repeat=len(AXES)):
    if math.prod(combo) != num_devices:
      continue
    mesh = dict(zip(AXES, combo))
    if mesh["expert"] > max_expert or mesh["pipeline"] > max_pipeline:
      continue
    out.append(mesh)
  return out


def candidates(preset: Preset = CPU8, num_devices: int = 8) -> list[dict[str, Any]]:
  """The table's candidates as MaxText keys: per mesh, remat full and
  minimal without micro-batching, and one micro-batched variant with full
  remat (gradient accumulation 2, or twice as many pipeline micro-batches as
  stages)."""
  out = []
  per_device = float(preset.batch_per_device)
  m = preset.model
  for mesh in meshes(num_devices, m["num_experts"], m["base_num_decoder_layers"]):
    if m["base_num_query_heads"] % mesh["tensor"] or m["base_num_kv_heads"] % mesh["tensor"]:
      continue
    ici = {f"ici_{a}_parallelism": v for a, v in mesh.items()}
    pp = mesh["pipeline"]
    base = {**ici, "per_device_batch_size": per_device, "gradient_accumulation_steps": 1}
    if pp > 1:
      base["num_pipeline_microbatches"] = pp
    for remat in REMATS:
      out.append({**base, "remat_policy": remat})
    if pp > 1:
      out.append({**base, "remat_policy": "full", "num_pipeline_microbatches": 2 * pp})
    else:
      out.append({**base, "remat_policy": "full", "per_device_batch_size": per_device / 2,
                  "gradient_accumulation_steps": 2})
  return out


def overrides(knobs: Mapping[str, Any], preset: Preset = CPU8) -> dict[str, Any]:
  """Every MaxText key of one table row's run."""
  return {**preset.run, **preset.model, **dict(knobs)}


def key_of(knobs: Mapping[str, Any]) -> str:
  blob = json.dumps({k: knobs.get(k) for k in KNOB_COLUMNS}, sort_keys=True, default=str)
  return hashlib.sha1(blob.encode()).hexdigest()[:16]


def child_env(preset: Preset = CPU8, num_devices: int = 8, base: Mapping[str, str] | None = None) -> dict[str, str]:
  env = dict(os.environ if base is None else base)
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  flags_ = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
  if preset.platform == "cpu":
    flags_ = [f"--xla_force_host_platform_device_count={num_devices}", *flags_]
    env["JAX_PLATFORMS"] = "cpu"
  else:
    env["JAX_PLATFORMS"] = "cuda"
  env.update(XLA_FLAGS=" ".join([*flags_, *preset.xla_flags]), DECOUPLE_GCLOUD="TRUE",
             PYTHONPATH=os.pathsep.join([root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])))
  return env


def done_keys(path: str) -> set[str]:
  if not os.path.exists(path):
    return set()
  with open(path, newline="") as f:
    rows = csv.DictReader(ln for ln in f if not ln.startswith("#"))
    return {key_of({k: _typed(r[k]) for k in KNOB_COLUMNS}) for r in rows}


def _typed(raw: str) -> Any:
  if raw == "":
    return None
  for cast in (int, float):
    try:
      return cast(raw)
    except ValueError:
      pass
  return raw


def rows_of(knobs: Mapping[str, Any], metrics: Mapping[str, Any], repeats: int,
            workload: Mapping[str, Any] = WORKLOAD_COLUMNS) -> list[dict[str, Any]]:
  """One CSV row per timed block; a failure is `repeats` rows with a status."""
  base = {**{k: knobs.get(k, "") for k in KNOB_COLUMNS}, **workload}
  extra = metrics.get("extra") or {}
  mem = metrics.get("peak_mem_bytes")
  common = {"peak_mem_gib": f"{mem / 2**30:.6f}" if mem else "",
            "compile_s": f"{extra['compile_s']:.2f}" if extra.get("compile_s") is not None else ""}
  if metrics.get("feasible"):
    return [{**base, **common, "step_time_s": f"{t:.6f}", "status": "ok", "repeat": r, "error": ""}
            for r, t in enumerate(extra.get("step_times_s") or [metrics["step_time_s"]])]
  err = " ".join(str(metrics.get("error") or "").split())[:160]
  return [{**base, **common, "step_time_s": "", "status": metrics.get("failure_kind") or "crash", "repeat": r,
           "error": err} for r in range(repeats)]


def header(prov: Mapping[str, Any], argv: Sequence[str], options: Mapping[str, Any], preset: Preset,
           num_devices: int) -> list[str]:
  now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
  keep = ("device_kind", "platform", "device_count", "process_count", "cpu_count", "python", "jax", "jaxlib",
          "maxtext")
  m = preset.model
  where = "virtual CPU devices of one host" if preset.platform == "cpu" else f"{prov.get('device_kind', 'GPU')}s"
  lines = [
      f"MaxText's own train step (a {m['base_num_decoder_layers']}-layer MoE decoder, {m['num_experts']} experts "
      f"top-{m['num_experts_per_tok']}) measured on {num_devices} {where}",
      f"measured {now}; " + ", ".join(f"{k}={prov[k]}" for k in keep if k in prov),
      f"per candidate: one compile, {options['warmup_steps']} warm-up step(s), then {options['repeats']} timed "
      f"blocks of {options['timed_steps']} steps (block_until_ready); one row per block (repeat)",
      "fixed MaxText keys: " + " ".join(f"{k}={v}" for k, v in overrides({}, preset).items()),
      "XLA_FLAGS: " + (" ".join(preset.xla_flags) or "(none)"),
      "command: python -m autoscout_jax.tools.maxtext_table " + " ".join(argv),
  ]
  return [f"# {ln}\n" for ln in lines]


def measure(todo: Sequence[Mapping[str, Any]], python: str, options: Mapping[str, Any], timeout_s: float,
            startup_timeout_s: float, preset: Preset = CPU8, num_devices: int = 8) -> tuple[dict[int, Any], dict]:
  from autoscout_jax.local.runner import run_candidates
  items = [{"index": i, "key": key_of(k), "values": overrides(k, preset)} for i, k in enumerate(todo)]
  out = run_candidates({"options": dict(options), "faults": {}}, items, child_env(preset, num_devices), timeout_s,
                       startup_timeout_s, argv=[python, "-m", "autoscout_jax.maxtext_child.profile_child"])
  prov = next((dict(o.provenance) for o in out.values() if o.provenance), {})
  return out, prov


def run(out_path: str, python: str, chunk: int, options: Mapping[str, Any], timeout_s: float,
        startup_timeout_s: float, limit: int | None, argv: Sequence[str], preset: Preset = CPU8,
        num_devices: int = 8, max_time_s: float | None = None, shard: tuple[int, int] = (0, 1),
        done_from: Sequence[str] = (), reverse: bool = False, log=print) -> int:
  """Measure the candidates `out_path` (and the tables `done_from`) lack,
  chunk by chunk, only those of shard i of n (by key: several workers can
  share a table, each appending to its own file); returns how many of its
  shard are still missing (0: done)."""
  t0 = time.monotonic()
  i_shard, n_shard = shard
  cands = [c for c in candidates(preset, num_devices) if int(key_of(c), 16) % n_shard == i_shard]
  done = set().union(*(done_keys(p) for p in (out_path, *done_from)))
  todo = [c for c in cands if key_of(c) not in done]
  done &= {key_of(c) for c in cands}
  random.Random(0).shuffle(todo)  # machine-load drift spreads over the whole space, not one corner
  if reverse:  # a second worker on the same shard starts from the other end
    todo.reverse()
  if limit is not None:
    todo = todo[:limit]
  log(f"{len(cands)} candidates, {len(cands) - len(done)} missing from {out_path}, measuring {len(todo)}")
  workload = workload_columns(preset, num_devices)
  measured = 0
  for start in range(0, len(todo), chunk):
    if max_time_s is not None and time.monotonic() - t0 > max_time_s:
      log(f"stopping: --max_time_s={max_time_s:g} passed")
      break
    part = todo[start:start + chunk]
    outcomes, prov = measure(part, python, options, timeout_s, startup_timeout_s, preset, num_devices)
    new = not os.path.exists(out_path)
    with open(out_path, "a", newline="") as f:
      if new:
        f.writelines(header(prov, argv, options, preset, num_devices))
      w = csv.DictWriter(f, fieldnames=COLUMNS)
      if new:
        w.writeheader()
      for i, knobs in enumerate(part):
        w.writerows(rows_of(knobs, outcomes[i].metrics.to_json(), int(options["repeats"]), workload))
      f.flush()
      os.fsync(f.fileno())
    measured += len(part)
    ok = sum(outcomes[i].metrics.feasible for i in range(len(part)))
    log(f"{measured}/{len(todo)} measured ({ok}/{len(part)} ok in this chunk, {time.monotonic() - t0:.0f}s)")
  return len(cands) - len(done) - measured


def merge(paths: Sequence[str], out_path: str, note: str = "") -> tuple[int, int]:
  """One table from the files of several workers: the first file's `#`
  header (plus `note`), every candidate's rows once (the first file that has
  it wins), sorted by the knob columns. Returns (candidates, rows)."""
  head: list[str] = []
  by_key: dict[str, list[dict[str, str]]] = {}
  for n, path in enumerate(paths):
    with open(path, newline="") as f:
      lines = f.readlines()
    if n == 0:
      head = [ln for ln in lines if ln.startswith("#")]
    seen: dict[str, list[dict[str, str]]] = {}
    for r in csv.DictReader(ln for ln in lines if not ln.startswith("#")):
      seen.setdefault(key_of({k: _typed(r[k]) for k in KNOB_COLUMNS}), []).append(r)
    for k, rows in seen.items():
      by_key.setdefault(k, rows)
  order = sorted(by_key, key=lambda k: [str(by_key[k][0][c]) for c in KNOB_COLUMNS])
  with open(out_path, "w", newline="") as f:
    f.writelines(head)
    if note:
      f.write(f"# {note}\n")
    w = csv.DictWriter(f, fieldnames=COLUMNS)
    w.writeheader()
    for k in order:
      w.writerows(by_key[k])
  return len(order), sum(len(v) for v in by_key.values())


def define_flags() -> None:
  """The command line (defined only when run as a program: importing this
  module, e.g. from a bench task, defines no flags)."""
  flags.DEFINE_string("out", "experiments/scoutbench/real_maxtext_cpu8.csv", "the table (appended to)")
  flags.DEFINE_string("python", None, "a Python with maxtext (default: $AUTOSCOUT_MAXTEXT_PYTHON)")
  flags.DEFINE_enum("preset", "cpu8", list(PRESETS), "cpu8: 8 virtual CPU devices; gpu: this host's GPUs")
  flags.DEFINE_integer("num_devices", None, "devices of the table (default: the preset's)")
  flags.DEFINE_integer("chunk", 8, "candidates per child before rows are written")
  flags.DEFINE_integer("warmup_steps", 1, "untimed steps after the compile")
  flags.DEFINE_integer("timed_steps", 2, "steps per timed block")
  flags.DEFINE_integer("repeats", 3, "timed blocks (rows) per candidate")
  flags.DEFINE_float("timeout_s", 300.0, "per-candidate limit (a hang past it is a 'timeout' row)")
  flags.DEFINE_integer("limit", None, "measure at most this many (still missing) candidates")
  flags.DEFINE_float("max_time_s", None, "start no new chunk after this many seconds")
  flags.DEFINE_string("shard", "0/1", "i/n: measure only shard i of n (by candidate key)")
  flags.DEFINE_list("done_from", [], "other tables whose candidates count as measured")
  flags.DEFINE_list("merge", [], "instead of measuring: merge these worker files into --out")
  flags.DEFINE_string("note", "", "with --merge: one more header line")
  flags.DEFINE_bool("reverse", False, "measure the shard's candidates in reverse order (a second worker)")


def main(argv: Sequence[str]) -> int:
  del argv
  F = flags.FLAGS
  if F.merge:
    n, rows = merge(F.merge, F.out, F.note)
    print(f"{F.out}: {n} candidates, {rows} rows")
    return 0
  python = F.python or os.environ.get("AUTOSCOUT_MAXTEXT_PYTHON")
  if not python:
    print("error: --python (or $AUTOSCOUT_MAXTEXT_PYTHON) must name a Python with maxtext installed",
          file=sys.stderr)
    return 2
  preset = PRESETS[F.preset]
  num_devices = F.num_devices or preset.num_devices
  if not num_devices or num_devices < 1 or num_devices & (num_devices - 1):
    print(f"error: --num_devices must be a power of two >= 1 (preset {preset.name} has none), got {num_devices}",
          file=sys.stderr)
    return 2
  options = {"warmup_steps": F.warmup_steps, "timed_steps": F.timed_steps, "repeats": F.repeats, "seed": 0}
  shown = [a for a in sys.argv[1:] if not a.startswith("--python")]
  try:
    i_shard, n_shard = (int(x) for x in F.shard.split("/"))
    assert 0 <= i_shard < n_shard
  except (ValueError, AssertionError):
    print(f"error: --shard must be i/n with 0 <= i < n, got {F.shard!r}", file=sys.stderr)
    return 2
  missing = run(F.out, python, F.chunk, options, F.timeout_s, 600.0, F.limit, shown, preset,
                num_devices, F.max_time_s, (i_shard, n_shard), F.done_from, F.reverse)
  print(f"{missing} candidate(s) still missing from {F.out}" if missing else f"{F.out} is complete")
  return 0


if __name__ == "__main__":
  define_flags()
  app.run(lambda argv: sys.exit(main(argv)))
