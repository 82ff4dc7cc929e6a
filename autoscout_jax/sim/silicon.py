"""aiconfigurator's measured serving sample as serving-model inputs.

Where it sits: tools/predict_serving.py reads a CSV with the columns of
aiconfigurator's `silicon_sample.csv` (ai-dynamo/aiconfigurator, Apache-2.0)
and asks `row_inputs(row)` for (plan, arch, system, request) per row;
bench/serving_tables.py groups the same rows into scoutbench tasks.
`sample_path()` is the copy shipped in autoscout_jax/data/aiconfigurator/
(source, licence and checksum in its README). A row the model cannot take raises
`Unsupported` with the reason; callers report it, never drop it.

Column conventions (read off the sample itself): aiconfigurator writes
`batch_size` per attention-data-parallel rank, an engine spans
tp_size * attention_dp_size * pp_size GPUs (= moe_tp_size * moe_ep_size *
pp_size), and the source field carries `silicon_concurrency=<n>`, the
requests in flight. An aggregated row whose concurrency is a multiple of
its engine batch is that many replicas of the engine. Disaggregated rows
that give only the layouts (no batch sizes or worker counts) are unsupported:
the deployment they measured is not in the row.
Rows without quant modes or precision use the checkpoint's own format
(bf16 unless its name says FP8 or FP4).

What the rows do not say, and what is assumed (engine defaults): the KV
cache is fp8 under TRT-LLM with quantized weights and bf16 otherwise, it
gets 90 % of the memory the weights leave, and prefill runs in 8192-token
chunks.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from typing import Any, Mapping

from autoscout_jax.sim import hardware
from autoscout_jax.sim.serving import EngineLayout, ServingPlan, ServingRequest
from autoscout_jax.sim.serving_catalog import WEIGHT_BYTES, ServingArch, find_arch


class Unsupported(ValueError):
  """A row the serving model cannot take; the message is the reason."""


SAMPLE_COLUMNS = ("model_path", "system", "backend", "mode", "isl", "osl", "gemm_quant_mode", "moe_quant_mode")

# aiconfigurator's system names -> the hardware catalog's systems.
SYSTEMS = {"h100_sxm": "dgx_h100", "h200_sxm": "dgx_h200", "b200_sxm": "dgx_b200", "b300_sxm": "dgx_b300",
           "gb200": "gb200_nvl72", "gb300": "gb300_nvl72"}

CHUNK_TOKENS = 8192

# The `precision` column's checkpoint formats, for rows without quant modes.
PRECISION_FORMATS = {"bf16": "bf16", "fp8": "fp8", "fp4": "nvfp4", "int4": "int4_wo"}


def sample_path() -> str:
  """The copy of the measured sample shipped in autoscout_jax/data/aiconfigurator/
  (its README names the source and licence)."""
  return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "aiconfigurator",
                      "silicon_sample.csv")


def _int(row: Mapping[str, Any], key: str) -> int | None:
  v = str(row.get(key) or "").strip()
  if not v:
    return None
  try:
    f = float(v)
  except ValueError:
    raise Unsupported(f"{key} is not a number: {v!r}") from None
  if math.isnan(f):
    return None
  if f != int(f) or f < 0:
    raise Unsupported(f"{key} is not a count: {v!r}")
  return int(f)


def is_calibration(row_id: str) -> bool:
  """The calibration split of the sample (sha1 of the row id = 0 mod 5,
  about a fifth): tools/calibrate_serving.py fits on these rows only, every
  other row is held out."""
  return int(hashlib.sha1(str(row_id).encode()).hexdigest(), 16) % 5 == 0


def checkpoint_format(model_path: str) -> str:
  """The weight format a checkpoint's name declares (bf16 when it names none)."""
  low = model_path.lower()
  return "nvfp4" if "fp4" in low else "fp8" if "fp8" in low else "bf16"


def concurrency(row: Mapping[str, Any]) -> int | None:
  m = re.search(r"silicon_concurrency=(\d+)", str(row.get("silicon_data_source", "")))
  return int(m.group(1)) if m else None


def _layout(row, prefix: str, batch: int | None, arch: ServingArch) -> EngineLayout:
  moe, heads = arch.is_moe, arch.heads
  tp, pp = _int(row, prefix + "tp_size"), _int(row, prefix + "pp_size") or 1
  dp = _int(row, prefix + "attention_dp_size")
  mtp, ep = _int(row, prefix + "moe_tp_size"), _int(row, prefix + "moe_ep_size")
  if not dp:
    dp = 1  # empty or 0 where attention data parallelism was not used
  if not tp or not dp:
    raise Unsupported(f"{prefix or 'engine '}layout incomplete (tp_size={tp}, attention_dp_size={dp})")
  mtp, ep = mtp or 1, ep or 1
  if not moe:  # a dense model: the MoE columns carry placeholders
    ep = 1
  elif mtp * ep != tp * dp:
    raise Unsupported(f"{prefix or ''}moe_tp_size*moe_ep_size={mtp * ep} is not tp_size*attention_dp_size="
                      f"{tp * dp}")
  if heads % tp:
    raise Unsupported(f"{prefix}tp_size {tp} does not divide the model's {heads} attention heads "
                      f"(not a tensor-parallel layout)")
  return EngineLayout(tp=tp, pp=pp, ep=ep, attn_dp=dp, batch=max(1, (batch or 1) * dp))


def row_inputs(row: Mapping[str, Any]) -> tuple[ServingPlan, ServingArch, hardware.System, ServingRequest]:
  """One sample row as the serving model's inputs, or Unsupported(reason)."""
  row = dict(row)
  for k in ("gemm_quant_mode", "moe_quant_mode"):  # older rows name only the checkpoint
    if not str(row.get(k) or "").strip():
      row[k] = PRECISION_FORMATS.get(str(row.get("precision") or "").strip()) or checkpoint_format(
          str(row.get("model_path") or ""))
  missing = [k for k in SAMPLE_COLUMNS if not str(row.get(k) or "").strip()]
  if missing:
    raise Unsupported(f"missing {', '.join(missing)}")
  arch = find_arch(row["model_path"].strip())
  if arch is None:
    raise Unsupported(f"model {row['model_path']!r} is not in the serving catalog")
  sys_name = SYSTEMS.get(row["system"].strip())
  if sys_name is None:
    raise Unsupported(f"system {row['system']!r} is not in the hardware catalog")
  system = hardware.SYSTEMS[sys_name]
  backend = row["backend"].strip()
  gq, mq = row["gemm_quant_mode"].strip(), row["moe_quant_mode"].strip()
  for q in (gq, mq):
    if q not in WEIGHT_BYTES:
      raise Unsupported(f"weight format {q!r} is not modelled")
  isl, osl = _int(row, "isl"), _int(row, "osl")
  if not isl or not osl:
    raise Unsupported("isl and osl must be positive")
  conc = concurrency(row)
  kw = dict(weight_dtype=gq, moe_dtype=mq,
            kv_dtype="fp8" if backend == "trtllm" and gq != "bf16" else "bf16",
            kv_fraction=0.9, chunk_tokens=CHUNK_TOKENS, engine=backend)
  mode = row["mode"].strip()
  try:
    if mode == "agg":
      lay = _layout(row, "", _int(row, "batch_size") or conc, arch)
      conc = conc or lay.batch
      # A concurrency that is a multiple of the engine's batch is served by
      # that many replicas of the engine the row describes.
      replicas = conc // lay.batch if conc > lay.batch and conc % lay.batch == 0 else 1
      plan = ServingPlan(layout=lay, replicas=replicas, **kw)
    elif mode == "disagg":
      pb, pw = _int(row, "prefill_batch_size"), _int(row, "prefill_num_workers")
      db, dw = _int(row, "decode_batch_size"), _int(row, "decode_num_workers")
      if pb is None or db is None:
        raise Unsupported("disaggregated row gives no batch sizes or worker counts (only the layouts)")
      dlay = _layout(row, "decode_", db, arch)
      pre = _layout(row, "prefill_", pb, arch)
      plan = ServingPlan(layout=pre, replicas=pw or 1, decode_layout=dlay, decode_replicas=dw or 1, **kw)
      conc = conc or dlay.batch * plan.decode_replicas
    else:
      raise Unsupported(f"mode {mode!r} is neither agg nor disagg")
  except ValueError as e:
    if isinstance(e, Unsupported):
      raise
    raise Unsupported(str(e)) from None
  return plan, arch, system, ServingRequest(isl=isl, osl=osl, concurrency=conc)
