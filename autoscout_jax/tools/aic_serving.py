"""aiconfigurator's own prediction for a silicon-sample row (optional extra `serving`).

Where it sits: `tools/predict_serving.py` asks `aic_predict(row)` for each
row of aiconfigurator's measured serving sample so the summary can show
aiconfigurator's error next to ours on the rows both cover. Nothing else
imports it, and it imports aiconfigurator only when called: without the
extra, `aic_version()` is None and the summary's `aic_*` keys are null.

aiconfigurator ships one perf database per (system, backend) at its latest
engine version, so every row is estimated against that database (rows were
measured on older engine versions too; that is aiconfigurator's own
limitation, reported as it is). A row it cannot estimate (missing kernel
data, unknown model) is `unsupported: <its error>`, never a guess.

Cost: `cli_estimate` without a `backend_version` looks the newest database
up by parsing every database's YAML declarations, several seconds a call on
this machine and nearly all of its time; `database_version` asks that once
per (system, backend) and passes the answer, so a row costs tens of
milliseconds once its database is loaded (the same database, hence the same
answer: the cache key leaves the version out).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import logging
import math
import os
import re
from typing import Any, Iterable, Mapping

# Sample model names aiconfigurator's own config table spells differently
# (same architecture; without this it tries to download them and fails offline).
AIC_MODEL_ALIASES = {
    "meta-llama/Llama-3.1-70B": "meta-llama/Meta-Llama-3.1-70B",
    "meta-llama/Llama-3.1-8B-Instruct": "meta-llama/Meta-Llama-3.1-8B",
    "nvidia/Llama-3.1-8B-Instruct-FP8": "meta-llama/Meta-Llama-3.1-8B",
    "zhipuai/GLM-5": "zai-org/GLM-5",
    "nvidia/Qwen3-32B-NVFP4": "Qwen/Qwen3-32B",
    "nvidia/DeepSeek-R1-NVFP4": "deepseek-ai/DeepSeek-R1",  # the row's quant modes are passed explicitly
}


def scrub(message: str) -> str:
  """An error message on one line, with file paths cut to their last part
  (aiconfigurator names the files of its perf database)."""
  one = " ".join(message.split())
  return re.sub(r"(?:/[\w.+-]+){2,}", lambda m: os.path.basename(m.group(0)), one)


def aic_version() -> str | None:
  """The installed aiconfigurator version, or None when the extra is absent."""
  try:
    from importlib.metadata import PackageNotFoundError, version
    return version("aiconfigurator")
  except PackageNotFoundError:
    return None
  except ImportError:  # pragma: no cover - stdlib always has it
    return None


def _int(row: Mapping[str, Any], key: str) -> int | None:
  v = row.get(key)
  if v is None or v == "":
    return None
  f = float(v)
  return None if math.isnan(f) else int(f)


def estimate_kwargs(row: Mapping[str, Any]) -> dict[str, Any]:
  """The `cli_estimate` keyword arguments that describe one sample row."""
  model = AIC_MODEL_ALIASES.get(str(row["model_path"]), str(row["model_path"]))
  kw: dict[str, Any] = dict(
      model_path=model, system_name=str(row["system"]), mode=str(row["mode"]),
      backend_name=str(row["backend"]), isl=int(float(row["isl"])), osl=int(float(row["osl"])),
      gemm_quant_mode=str(row["gemm_quant_mode"]) or None, moe_quant_mode=str(row["moe_quant_mode"]) or None)
  if kw["mode"] == "agg":
    for k in ("batch_size", "tp_size", "pp_size", "attention_dp_size", "moe_tp_size", "moe_ep_size"):
      v = _int(row, k)
      if v is not None:
        kw[k] = v
    return kw
  for phase in ("prefill", "decode"):
    for k in ("batch_size", "num_workers", "tp_size", "pp_size", "attention_dp_size", "moe_tp_size",
              "moe_ep_size"):
      v = _int(row, f"{phase}_{k}")
      if v is not None:
        kw[f"{phase}_{k}"] = v
  # Shared fallbacks aiconfigurator reads when a phase leaves one out.
  for k in ("tp_size", "pp_size", "attention_dp_size", "moe_tp_size", "moe_ep_size"):
    if f"prefill_{k}" in kw:
      kw[k] = kw[f"prefill_{k}"]
  return kw


@functools.lru_cache(maxsize=None)
def database_version(system: str, backend: str) -> str | None:
  """The engine version of aiconfigurator's newest perf database for
  (system, backend), as cli_estimate would choose it; None: no database."""
  from aiconfigurator.sdk.perf_database import get_latest_database_version  # the optional extra
  sink = io.StringIO()
  with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
    return get_latest_database_version(system=system, backend=backend)


CKPT_QUANT = "ok: quantization from the checkpoint"  # status of an answer under the fallback below


def _estimate(kw: Mapping[str, Any], version: str) -> tuple[float | None, float | None, str]:
  from aiconfigurator.cli.api import cli_estimate  # the optional extra
  sink = io.StringIO()
  try:
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
      r = cli_estimate(backend_version=version, **kw)
  except Exception as e:  # aiconfigurator's own refusal: data it lacks, a model it lacks
    return None, None, f"unsupported: {scrub(f'{type(e).__name__}: {e}')[:200]}"
  ttft, tpot = float(r.ttft), float(r.tpot)
  if not (ttft > 0 and tpot > 0 and math.isfinite(ttft) and math.isfinite(tpot)):
    return None, None, f"unsupported: aiconfigurator returned ttft={ttft} tpot={tpot}"
  return ttft, tpot, "ok"


def _no_kernel_data(status: str) -> bool:
  return "PerfDataNotAvailableError" in status and ("GEMM perf data missing for quant" in status
                                                    or "MoE data missing" in status)


def aic_predict(row: Mapping[str, Any]) -> tuple[float | None, float | None, str]:
  """(ttft_ms, tpot_ms, status) from aiconfigurator for one row; status is
  'ok', CKPT_QUANT or 'unsupported: <aiconfigurator's error>'.

  The row's quantization labels are asked first. Where aiconfigurator has
  no kernel data for them (the sample labels gpt-oss-120b's MXFP4 experts
  'nvfp4', which on Hopper it reads as weight-only nvfp4; Kimi-K2.5's INT4
  weights 'int4_wo'; DeepSeek's block-scaled FP8 checkpoint 'fp8'), it is
  asked again with the quantization it reads from the model's own
  checkpoint -- what those engines ran -- and the answer says so
  (CKPT_QUANT), so a summary can count those rows apart."""
  logging.getLogger("aiconfigurator").setLevel(logging.ERROR)
  try:
    kw = estimate_kwargs(row)
  except (KeyError, TypeError, ValueError) as e:
    return None, None, f"unsupported: row lacks a field aiconfigurator needs ({e})"
  version = database_version(kw["system_name"], kw["backend_name"])
  if version is None:
    return None, None, (f"unsupported: aiconfigurator has no perf database for system {kw['system_name']!r}, "
                        f"backend {kw['backend_name']!r}")
  first = _estimate(kw, version)
  if first[2] == "ok" or not _no_kernel_data(first[2]):
    return first
  ttft, tpot, status = _estimate({**kw, "gemm_quant_mode": None, "moe_quant_mode": None}, version)
  if status != "ok":
    return first  # the refusal of the row as labelled
  return ttft, tpot, CKPT_QUANT


def _key(row: Mapping[str, Any]) -> str:
  try:
    kw = estimate_kwargs(row)
  except (KeyError, TypeError, ValueError) as e:
    kw = {"error": str(e)}
  blob = json.dumps([aic_version(), str(row.get("id", "")), kw], sort_keys=True)
  return hashlib.sha256(blob.encode()).hexdigest()[:20]


def run_aic(rows: Iterable[Mapping[str, Any]], cache_path: str | None = None, progress=None,
            cached_only: bool = False) -> list[tuple[float | None, float | None, str] | None]:
  """aiconfigurator on each row, in order. With `cache_path`, answers already
  in that JSONL file (keyed by aiconfigurator version, row id and the
  estimate's arguments) are reused and new ones appended as they come, so an
  interrupted run resumes; `cached_only` answers None for rows the cache
  lacks instead of running aiconfigurator."""
  cache: dict[str, tuple[float | None, float | None, str]] = {}
  if cache_path and os.path.exists(cache_path):
    with open(cache_path) as f:
      for line in f:
        try:
          d = json.loads(line)
        except json.JSONDecodeError:
          continue  # a line cut by an interrupted run
        cache[d["key"]] = (d["ttft_ms"], d["tpot_ms"], d["status"])
  out = []
  sink = open(cache_path, "a") if cache_path else None
  try:
    for i, row in enumerate(rows):
      k = _key(row)
      if k not in cache and cached_only:
        out.append(None)
        continue
      if k not in cache:
        cache[k] = aic_predict(row)
        if sink:
          t, p, s = cache[k]
          sink.write(json.dumps({"key": k, "id": str(row.get("id", "")), "ttft_ms": t, "tpot_ms": p,
                                 "status": s}) + "\n")
          sink.flush()
      out.append(cache[k])
      if progress:
        progress(i)
  finally:
    if sink:
      sink.close()
  return out
