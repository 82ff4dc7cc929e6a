"""Measured tables as scoutbench tasks: the candidates are exactly the rows.

Where it sits: a task gin file (or `python -m autoscout_jax.bench
--table=my_sweep.csv --family=megatron`) names a CSV through
`TableProfiling`; `tasks.task_spec` calls `table_task_parts` to turn it
into the task's workload, cluster, space (the family's space restricted to
an explicit allow-list: the rows' configurations) and truth table; the
family's simulators are then on offer to designers as cheap fidelities, and
they score the rows live from the current simulator code (nothing the
simulators say is frozen into the truth).

The CSV (one row per measured run; `#` lines are comments):
- knob columns: the family's knob names (`tensor_model_parallel_size`, ...;
  short names `tp pp cp dp vp ep mbs` are accepted). Knobs no column names
  take the value of `fixed`, else the space's default.
  Without a data-parallel column, data parallelism is what the other
  degrees leave: num_devices / (tp x pp x cp).
- `step_time_s` (or `iteration_time_ms`, or a throughput:
  `tokens_per_s_per_device` / `tokens_per_sec_per_device` per device,
  `tokens_per_s` for the job; step time = global batch x sequence /
  throughput): empty on a failed row; `status`: ok (default) | oom | crash
  | timeout | compile_error (or an `oom` column, yes/true/1 on a row that
  ran out of memory); optional `peak_mem_gib`; rows repeating a
  configuration are its repeats.
- the workload, equal on every row: `num_devices`, `global_batch` (or
  `global_batch_size`), and either `model` (a catalog model or a published
  table's name for one; a `seq_len` column sets its sequence length, other
  dimension columns must agree with the catalog's) or `hidden_size`,
  `num_layers`, `num_heads`, `seq_len` (optional `ffn_hidden_size` = 4 x
  hidden, `vocab_size` = 51200, `num_kv_heads`); optional `system` (a
  catalog system) or `hardware` (a published run's spelling, "H100 80GB
  (DGX-H100)"), default: the `system` argument, and `precision` (bf16).
  The published-runs CSV that `predict_published` reads is such a table
  once its rows are one workload (`--table_groups=model,hardware,...`).
A bad row ends everything with one error naming the file, its line and the
problem.

The `vtrain` dialect reads vTrain's `ground_truth_*.csv` (data/vtrain/):
its column names, one sweep selected by `select` (parameters in billions,
GPU count; single-node groups also by hidden size, layers, global batch),
and what those runs were (vTrain's configurations: Megatron-DeepSpeed,
fp16, full recompute of every layer, no sequence parallelism, no
distributed optimizer, GPT-2 vocabulary of 50,257, 8-GPU A100 nodes with
800 Gb/s of InfiniBand per node).

Profiling a row costs (step x `profiled_steps` + `overhead_s`) x devices
device-seconds (a failed row pays the overhead), as on simulated tasks.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
from typing import Any, Mapping, Sequence

import numpy as np

from autoscout_jax.bench import truth as truth_lib
from autoscout_jax.measurement import FAILURE_KINDS, INVALID
from autoscout_jax.space import Candidate, SearchSpace, SpaceError
from autoscout_jax.workload import ModelConfig, Workload

SHORT = {"tp": "tensor_model_parallel_size", "pp": "pipeline_model_parallel_size",
         "cp": "context_parallel_size", "dp": "data_parallel_size", "ep": "expert_model_parallel_size",
         "vp": "virtual_pipeline_model_parallel_size", "mbs": "micro_batch_size"}
WORKLOAD_COLUMNS = ("num_devices", "global_batch", "model", "hidden_size", "num_layers", "num_heads", "seq_len",
                    "ffn_hidden_size", "vocab_size", "num_kv_heads", "system", "hardware", "precision")
RESULT_COLUMNS = ("step_time_s", "iteration_time_ms", "tokens_per_s_per_device", "tokens_per_s", "status", "oom",
                  "peak_mem_gib", "repeat")
# other spellings of a column (the published-runs CSV's, common ones)
COLUMN_ALIASES = {"global_batch_size": "global_batch", "tokens_per_sec_per_device": "tokens_per_s_per_device",
                  "tokens_per_sec": "tokens_per_s"}
FAMILIES = ("megatron",)

_VTRAIN_COLUMNS = {"Parameters (billion)": "params_b", "# GPUs": "num_devices", "global batch": "global_batch",
                   "micro batch": "mbs", "hidden size": "hidden_size", "attention heads": "num_heads",
                   "# layers": "num_layers", "sequence length": "seq_len", "tensor parallelism": "tp",
                   "data parallelism": "dp", "pipeline parallelism": "pp", "iteration time (ms)": "iteration_time_ms"}
VTRAIN_FIXED = {"recompute_granularity": "full", "recompute_method": "uniform", "recompute_num_layers": 1,
                "sequence_parallel": False, "use_distributed_optimizer": False, "context_parallel_size": 1,
                "virtual_pipeline_model_parallel_size": 1, "tp_comm_overlap": False, "ddp_bucket_size": 40_000_000}
VTRAIN_VOCAB = 50257
VTRAIN_INTER_BW = 800e9 / 8 / 8  # 800 Gb/s of InfiniBand per 8-GPU node: bytes/s per GPU


class TableError(ValueError):
  """A measured table that cannot become a task; the message names the row."""


@dataclasses.dataclass(frozen=True)
class TableProfiling:
  """Truth from a measured CSV (module docstring). `path` is relative to the
  repository root unless absolute; `select` keeps the rows whose columns
  have these values (the `vtrain` dialect also matches `params_b`)."""

  path: str
  family: str = "megatron"
  dialect: str = "scoutbench"  # or "vtrain"
  select: Mapping[str, float | str] = dataclasses.field(default_factory=dict)  # numbers match numerically
  fixed: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  system: str = "dgx_a100_80gb"
  inter_bw: float | None = None  # bytes/s per device between nodes; None: the system's
  profiled_steps: int = 10
  overhead_s: float = 120.0
  source: str = ""  # who measured it (provenance)
  # a row the family's space rejects: "error" ends everything naming it;
  # "drop" leaves it out, named with its reason in the truth's provenance
  # (vTrain ran pipelines with fewer micro-batches than stages, which
  # Megatron allows and the space prunes)
  outside_space: str = "error"


@dataclasses.dataclass(frozen=True)
class Row:
  line: int
  knobs: Mapping[str, Any]
  step_time_s: float | None
  failure: str | None
  peak_mem_bytes: float | None


@dataclasses.dataclass
class TableParts:
  """What `tasks.task_spec` needs of a table task."""

  workload: Workload
  cluster: Any
  space_fn: Any
  space_kwargs: dict[str, Any]
  restrict: dict[str, list]
  allow: tuple[Mapping[str, Any], ...]  # the rows' configurations (knob values, before completion)
  rows: tuple[Row, ...]
  dropped: tuple[str, ...] = ()  # "file:line: why" of rows left out (`outside_space` = "drop")


def _resolve(path: str) -> str:
  if os.path.isabs(path):
    return path
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  return path if os.path.exists(path) else os.path.join(root, path)


def _num(raw: str, where: str, col: str, integer: bool = False) -> float:
  try:
    v = float(raw)
  except ValueError:
    raise TableError(f"{where}: column {col!r} is {raw!r}, not a number") from None
  if not math.isfinite(v):
    raise TableError(f"{where}: column {col!r} is {raw!r}, not a finite number")
  if integer and v != int(v):
    raise TableError(f"{where}: column {col!r} is {raw!r}, not an integer")
  return v


def read_rows(spec: TableProfiling) -> tuple[list[dict[str, str]], list[int], str]:
  """(rows as {column: text}, their line numbers, file path), dialect applied, selected."""
  path = _resolve(spec.path)
  if not os.path.exists(path):
    raise TableError(f"measured table {spec.path!r} does not exist")
  if spec.dialect not in ("scoutbench", "vtrain"):
    raise TableError(f"measured table {spec.path!r}: unknown dialect {spec.dialect!r}; known: scoutbench, vtrain")
  with open(path, newline="", encoding="utf-8-sig") as f:
    lines = [(i + 1, ln) for i, ln in enumerate(f.read().splitlines()) if ln.strip() and not _comment(ln, spec.dialect)]
  if not lines:
    raise TableError(f"measured table {spec.path!r} is empty")
  reader = csv.reader([ln for _, ln in lines])
  header = [h.strip() for h in next(reader)]
  if spec.dialect == "vtrain":
    header = [_VTRAIN_COLUMNS.get(h, h) for h in header]
  else:
    named = set(header)
    header = [COLUMN_ALIASES[h] if h in COLUMN_ALIASES and COLUMN_ALIASES[h] not in named else h for h in header]
  out, numbers = [], []
  for (line, _), cells in zip(lines[1:], reader):
    if len(cells) != len(header):
      raise TableError(f"{spec.path}:{line}: {len(cells)} cells, the header has {len(header)} columns")
    row = {h: c.strip() for h, c in zip(header, cells)}
    keep = True
    for col, want in spec.select.items():
      if col not in row:
        raise TableError(f"measured table {spec.path!r}: select names column {col!r}, which it lacks; "
                         f"columns: {header}")
      keep &= _matches(row[col], want, f"{spec.path}:{line}", col)
    if keep:
      out.append(row)
      numbers.append(line)
  if not out:
    raise TableError(f"measured table {spec.path!r}: no row matches select {dict(spec.select)}")
  return out, numbers, path


def _matches(raw: str, want: Any, where: str, col: str) -> bool:
  """A cell against a `select` value: numerically when the value is a
  number ("8" matches 8.0), else as text."""
  if isinstance(want, (int, float)) and not isinstance(want, bool):
    return math.isclose(_num(raw, where, col), float(want), rel_tol=1e-9)
  return raw == str(want)


def _comment(line: str, dialect: str) -> bool:
  """A line starting with '#' is a comment, except vTrain's own header,
  whose first column is '# GPUs' in ground_truth_single.csv."""
  if not line.lstrip().startswith("#"):
    return False
  return not (dialect == "vtrain" and line.split(",")[0].strip() in _VTRAIN_COLUMNS)


def _workload_and_cluster(spec: TableProfiling, rows, lines) -> tuple[Workload, Any]:
  from autoscout_jax.sim import catalog, hardware
  first = rows[0]
  for col in WORKLOAD_COLUMNS:
    if col in first:
      for r, ln in zip(rows, lines):
        if r.get(col) != first[col]:
          raise TableError(f"{spec.path}:{ln}: column {col!r} is {r.get(col)!r}, but the first row has "
                           f"{first[col]!r}; one table holds one workload on one cluster")
  where = f"{spec.path}:{lines[0]}"
  for col in ("num_devices", "global_batch"):
    if col not in first:
      raise TableError(f"measured table {spec.path!r}: needs a {col!r} column")
  devices = int(_num(first["num_devices"], where, "num_devices", True))
  gbs = int(_num(first["global_batch"], where, "global_batch", True))
  precision = first.get("precision") or ("fp16" if spec.dialect == "vtrain" else "bf16")
  if "model" in first and first["model"]:
    try:
      model, _ = catalog.find_model(first["model"])
    except ValueError as e:
      raise TableError(f"{where}: {e}") from None
    for col, field in (("hidden_size", "hidden_size"), ("num_layers", "num_layers"), ("num_heads", "num_heads"),
                       ("ffn_hidden_size", "ffn_hidden_size"), ("vocab_size", "vocab_size")):
      if first.get(col) and int(_num(first[col], where, col, True)) != getattr(model, field):
        raise TableError(f"{where}: column {col!r} is {first[col]}, but catalog model {model.name!r} has "
                         f"{getattr(model, field)}; name no model to use the columns' dimensions")
    if first.get("seq_len"):
      seq = int(_num(first["seq_len"], where, "seq_len", True))
      if seq != model.seq_len:
        try:
          model = dataclasses.replace(model, seq_len=seq)
        except ValueError as e:
          raise TableError(f"{where}: {e}") from None
  else:
    need = [c for c in ("hidden_size", "num_layers", "num_heads", "seq_len") if c not in first]
    if need:
      raise TableError(f"measured table {spec.path!r}: needs a 'model' column or the model columns {need}")
    dims = {c: int(_num(first[c], where, c, True)) for c in ("hidden_size", "num_layers", "num_heads", "seq_len")}
    ffn = int(_num(first["ffn_hidden_size"], where, "ffn_hidden_size", True)) if first.get("ffn_hidden_size") else 4 * dims["hidden_size"]
    vocab = VTRAIN_VOCAB if spec.dialect == "vtrain" else 51200
    if first.get("vocab_size"):
      vocab = int(_num(first["vocab_size"], where, "vocab_size", True))
    kv = int(_num(first["num_kv_heads"], where, "num_kv_heads", True)) if first.get("num_kv_heads") else None
    name = f"table_h{dims['hidden_size']}_l{dims['num_layers']}"
    try:
      model = ModelConfig(name, dims["num_layers"], dims["hidden_size"], dims["num_heads"], ffn, vocab,
                          dims["seq_len"], num_kv_heads=kv, tie_embeddings=True)
    except ValueError as e:
      raise TableError(f"{where}: {e}") from None
  system = first.get("system") or spec.system
  if not first.get("system") and first.get("hardware"):
    try:
      system = hardware.system_for_hardware_name(first["hardware"]).name
    except ValueError as e:
      raise TableError(f"{where}: column 'hardware': {e}") from None
  inter_bw = spec.inter_bw if spec.inter_bw is not None else (VTRAIN_INTER_BW if spec.dialect == "vtrain" else None)
  try:
    cluster = hardware.make_cluster(system, devices, inter_bw=inter_bw)
  except ValueError as e:
    raise TableError(f"{where}: {e}") from None
  seq = f"_s{model.seq_len}" if first.get("model") and first.get("seq_len") else ""
  wl = Workload(name=f"{model.name}{seq}_gbs{gbs}", model=model, global_batch=gbs, precision=precision)
  return wl, cluster


def _parse_row(spec: TableProfiling, r: Mapping[str, str], line: int, knob_names: Sequence[str],
               workload: Workload, devices: int) -> Row:
  where = f"{spec.path}:{line}"
  knobs: dict[str, Any] = {}
  for col, raw in r.items():
    name = SHORT.get(col, col)
    if name in knob_names and raw != "":
      knobs[name] = raw
  status = (r.get("status") or "ok").lower()
  oom = (r.get("oom") or "").strip().lower()
  if oom not in ("", "no", "false", "0", "yes", "true", "1"):
    raise TableError(f"{where}: column 'oom' is {r['oom']!r}; yes/true/1 or no/false/0")
  if oom in ("yes", "true", "1"):
    if status not in ("ok", "oom"):
      raise TableError(f"{where}: status {status!r} but column 'oom' says the run ran out of memory")
    status = "oom"
  if status not in ("ok",) + tuple(k for k in FAILURE_KINDS if k != INVALID):
    raise TableError(f"{where}: status {status!r}; known: ok, oom, crash, timeout, compile_error")
  step = None
  if r.get("step_time_s"):
    step = _num(r["step_time_s"], where, "step_time_s")
  elif r.get("iteration_time_ms"):
    step = _num(r["iteration_time_ms"], where, "iteration_time_ms") / 1e3
  else:
    for col, per in (("tokens_per_s_per_device", devices), ("tokens_per_s", 1)):
      if r.get(col):
        tput = _num(r[col], where, col)
        if tput <= 0:
          raise TableError(f"{where}: column {col!r} is {r[col]}, not a positive throughput")
        step = workload.tokens_per_step / (tput * per)
        break
  if status == "ok" and (step is None or step <= 0):
    raise TableError(f"{where}: a row with status ok needs a positive step_time_s (or iteration_time_ms, "
                     f"tokens_per_s_per_device, tokens_per_s)")
  mem = _num(r["peak_mem_gib"], where, "peak_mem_gib") * 2**30 if r.get("peak_mem_gib") else None
  return Row(line, knobs, step if status == "ok" else None, None if status == "ok" else status, mem)


def table_task_parts(spec: TableProfiling) -> TableParts:
  """Workload, cluster, family space (restricted to the rows) and rows."""
  if spec.family not in FAMILIES:
    raise TableError(f"measured table {spec.path!r}: unknown family {spec.family!r}; known: {list(FAMILIES)}")
  if spec.outside_space not in ("error", "drop"):
    raise TableError(f"measured table {spec.path!r}: outside_space must be 'error' or 'drop', "
                     f"not {spec.outside_space!r}")
  if spec.profiled_steps < 1 or spec.overhead_s < 0:
    raise TableError(f"measured table {spec.path!r}: profiled_steps must be >= 1 and overhead_s >= 0")
  from autoscout_jax.targets import megatron
  rows, lines, _ = read_rows(spec)
  workload, cluster = _workload_and_cluster(spec, rows, lines)
  fixed = {**(VTRAIN_FIXED if spec.dialect == "vtrain" else {}), **dict(spec.fixed)}
  mbs = sorted({int(_num(r.get("micro_batch_size") or r.get("mbs") or "1", f"{spec.path}:{ln}", "micro_batch_size",
                         True)) for r, ln in zip(rows, lines)})
  space_kwargs = {"micro_batch_sizes": tuple(mbs)}
  try:
    space = megatron.space(workload, cluster, **space_kwargs)
  except SpaceError as e:
    raise TableError(f"measured table {spec.path!r}: {e}") from None
  unknown = sorted(set(fixed) - set(space.names))
  parsed = [_parse_row(spec, r, ln, space.names, workload, cluster.num_devices) for r, ln in zip(rows, lines)]
  allow, checked, dropped = [], [], []
  for row in parsed:
    vals = {n: v for n, v in fixed.items() if n in space.names}
    vals.update(row.knobs)
    if "data_parallel_size" not in vals:
      vals["data_parallel_size"] = _data_parallel(vals, cluster.num_devices, f"{spec.path}:{row.line}")
    try:
      cand = space.make({n: space[n].coerce(_typed(space[n], v)) for n, v in vals.items()})
    except (SpaceError, ValueError, TypeError) as e:
      raise TableError(f"{spec.path}:{row.line}: {e}") from None
    viol = space.validate(cand)
    if viol:
      why = f"{spec.path}:{row.line}: configuration {cand.short()} is not valid in the {spec.family} space: {viol[0]}"
      if spec.outside_space == "drop":
        dropped.append(why)
        continue
      raise TableError(why)
    allow.append(dict(cand.values))
    checked.append(row)
  del unknown  # fixed knobs a space lacks (e.g. vp when pp is 1 everywhere) are dropped on purpose
  workload = dataclasses.replace(workload, default=_default_row(workload, allow, checked))
  restrict: dict[str, list] = {}
  for k in space.knobs:
    used = sorted({a[k.name] for a in allow if k.name in a}, key=lambda v: (str(type(v)), v))
    if used:
      restrict[k.name] = used
  if not allow:
    raise TableError(f"measured table {spec.path!r}: no row is valid in the {spec.family} space ({dropped[0]})")
  return TableParts(workload, cluster, megatron.space, space_kwargs, restrict, tuple(allow),
                    tuple(checked), tuple(dropped))


def _data_parallel(vals: Mapping[str, Any], devices: int, where: str) -> int:
  """Data parallelism a row without a data-parallel column runs: the
  devices the tensor, pipeline and context degrees leave."""
  mp = 1
  for k in ("tensor_model_parallel_size", "pipeline_model_parallel_size", "context_parallel_size"):
    mp *= int(_num(str(vals.get(k, 1)), where, k, True))
  if mp < 1 or devices % mp:
    raise TableError(f"{where}: tp x pp x cp = {mp} does not divide the {devices} devices, and no column "
                     f"gives data parallelism")
  return devices // mp


def _default_row(workload: Workload, allow: Sequence[Mapping[str, Any]], rows: Sequence[Row]) -> dict[str, Any]:
  """The task's expert default: the catalog recipe of a model with the same
  dimensions when it is one of the rows (Narayanan et al.'s settings for
  vTrain's GPT sizes), else the row of median measured time (a typical run
  of the sweep: the table says nothing of what an expert would pick)."""
  from autoscout_jax.sim import catalog
  m = workload.model
  for name in catalog.MODELS:
    cm, recipe = catalog.find_model(name)
    if (cm.num_layers, cm.hidden_size, cm.num_heads) != (m.num_layers, m.hidden_size, m.num_heads):
      continue
    want = {"tensor_model_parallel_size": recipe.tp, "pipeline_model_parallel_size": recipe.pp,
            "micro_batch_size": recipe.mbs}
    for a in allow:
      if all(a.get(k) == v for k, v in want.items()):
        return dict(a)
  ok = [(r.step_time_s, i) for i, r in enumerate(rows) if r.step_time_s is not None]
  if not ok:
    return dict(allow[0])
  ok.sort()
  return dict(allow[ok[len(ok) // 2][1]])


def _typed(knob, raw):
  if not isinstance(raw, str):
    return raw
  dom = knob.finite_values() or ()
  for v in dom:
    if str(v).lower() == raw.lower():
      return v
  for v in dom:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
      try:
        if float(raw) == float(v):
          return v
      except ValueError:
        break
  raise ValueError(f"{knob.name}={raw!r} is not one of {list(dom)}")


def allow_list(space: SearchSpace, allow: Sequence[Mapping[str, Any]], what: str) -> SearchSpace:
  """`space` plus a constraint that only the listed configurations pass."""
  keys = {Candidate.of(dict(a)).key for a in allow}
  doc = f"one of the {len(keys)} configurations of {what}"

  def message(v, f):
    return f"{Candidate.of(dict(v)).short()} is not a row of {what}"

  if hasattr(space, "vec_constraints"):
    from autoscout_jax.sim.vspace import SimSpace, VecConstraint

    def ok(t, f):
      n = len(next(iter(t.values())))
      cands = space.candidates_from_table(t, range(n))
      return np.array([c.key in keys for c in cands], bool)

    vc = VecConstraint("measured_rows", ok, message, doc)
    kw = {k: getattr(space, k) for k in ("kind", "family") if hasattr(space, k)}
    if "family" in kw:
      kw.pop("kind", None)
    return SimSpace(space.knobs, list(space.vec_constraints) + [vc], groups=space.groups, facts=space.facts,
                    name=space.name + "|rows", plan=space.planner, **kw)
  from autoscout_jax.space import Constraint
  con = Constraint("measured_rows", lambda v, f: None if Candidate.of(dict(v)).key in keys else message(v, f), doc)
  kw = {"family": space.family} if hasattr(space, "family") else {}
  return SearchSpace(space.knobs, list(space.constraints) + [con], groups=space.groups, facts=space.facts,
                     name=space.name + "|rows", **kw)


def table_truth(task: str, spec: TableProfiling, parts: TableParts, space: SearchSpace) -> truth_lib.TruthTable:
  """The truth table of a measured task: one row per configuration, repeats
  as measured (a configuration with fewer repeats than the most-repeated
  one serves its own repeats cyclically); the truth is the median of its
  feasible repeats, a configuration with none is a failure."""
  groups: dict[Candidate, list[Row]] = {}
  for a, row in zip(parts.allow, parts.rows):
    groups.setdefault(space.make(a), []).append(row)
  cands = list(groups)
  reps = max(len(v) for v in groups.values())
  n, dev = len(cands), float(parts.cluster.num_devices)
  step = np.full((n, reps), np.nan)
  mem = np.full((n, reps), np.nan)
  kinds: list[list[str | None]] = []
  for i, c in enumerate(cands):
    rs = groups[c]
    kinds.append([rs[r % len(rs)].failure for r in range(reps)])
    for r in range(reps):
      row = rs[r % len(rs)]
      step[i, r] = row.step_time_s if row.step_time_s is not None else np.nan
      mem[i, r] = row.peak_mem_bytes if row.peak_mem_bytes is not None else np.nan
  tokens = parts.workload.tokens_per_step / step
  cost = np.where(np.isfinite(step), step * spec.profiled_steps + spec.overhead_s, spec.overhead_s) * dev
  true = np.array([np.median(r[np.isfinite(r)]) if np.isfinite(r).any() else np.nan for r in tokens])
  return truth_lib.TruthTable(
      task=task, workload_key=parts.workload.key, cluster_key=parts.cluster.key, source_fidelity="profile",
      candidates=cands, tokens_per_s=tokens, step_time_s=step, cost_s=cost, failure_kind=kinds,
      true_tokens_per_s=true, peak_mem_bytes=mem if np.isfinite(mem).any() else None,
      provenance=dict(kind="measured_table", path=spec.path, dialect=spec.dialect, select=dict(spec.select),
                      rows=len(parts.rows), source=spec.source, profiled_steps=spec.profiled_steps,
                      overhead_s=spec.overhead_s, dropped_rows=list(parts.dropped)))
