"""Published training runs as simulator inputs: one CSV row -> (PLAN, model,
hardware) numbers, plus the row's published throughput in a common unit.

Where it sits: sim/calibration.py fits the SimConstants on these rows and
scores fidelities on them; tools/predict_published.py writes predictions for
any CSV with the same columns (shared/calibration/published_points.csv and
its README define them). A row the simulators cannot model raises
`Unsupported` with the reason; callers report it, never drop it.

Conventions honoured (see the CSV's README): `dp` is the total
data-parallel degree (ZeRO/FSDP included, EP folded in for MoE); TPU rows put
slices in `num_nodes` and chips per slice in `devices_per_node`; TFLOP/s
definitions differ by source, so published throughput is converted to tokens
per second per device with the source's own FLOP count (`published_tokens_per_s`).
"""

from __future__ import annotations

import csv
import dataclasses
import math
import re
from typing import Any, Mapping

import numpy as np

from autoscout_jax import packing
from autoscout_jax.sim import costs, hardware
from autoscout_jax.sim.catalog import find_model
from autoscout_jax.sim.plan import Recompute
from autoscout_jax.sim.stack_recipes import moe_dispatch, offload_layers, recompute_modules
from autoscout_jax.targets.jax_mesh import mesh_plan, xla_loss_bytes
from autoscout_jax.targets.megatron import megatron_plan

PRED_COLUMNS = ("pred_step_time_s", "pred_tokens_per_sec_per_device", "pred_tokens_per_sec_per_device_lo",
                "pred_tokens_per_sec_per_device_hi", "pred_model_tflops_per_device", "pred_mfu_pct",
                "pred_peak_mem_gb_per_device", "pred_peak_mem_gb_per_device_lo", "pred_peak_mem_gb_per_device_hi",
                "pred_feasible", "pred_status")


class Unsupported(ValueError):
  """A row the simulators cannot model; the message is the reason."""


def read_rows(path: str) -> list[dict[str, str]]:
  """The rows of a CSV file: a leading byte-order mark is dropped, and a
  file whose header is separated by semicolons or tabs (a spreadsheet's
  export) is read with that separator."""
  with open(path, newline="", encoding="utf-8-sig") as f:
    head = f.readline()
    f.seek(0)
    sep = max(",;\t", key=head.count) if head.count(",") == 0 else ","
    return list(csv.DictReader(f, delimiter=sep))


def write_rows(path: str, rows: list[Mapping[str, Any]], columns: list[str]) -> None:
  with open(path, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
    w.writeheader()
    for r in rows:
      w.writerow(r)


# a number as people write it in a table: "4096", "4,096", "~2", "4k", "1.5M",
# optionally followed by a unit ("8 GPUs", "64 sequences"); not a range ("1-2")
_NUMBER = re.compile(r"^~?\s*(\d{1,3}(?:,\d{3})+|\d+(?:\.\d*)?|\.\d+)\s*([kKmM])?(?![A-Za-z0-9])\s*(.*)$")
_UNIT = re.compile(r"^[A-Za-z][A-Za-z /._()]*$")


def _number(key: str, text: str, binary: bool | None = None) -> tuple[float, str]:
  """(value, unit text) of a cell; `Unsupported` naming the column when it
  is no number. A k / M suffix is x1024 / x1024^2 for a sequence length
  ("4k", "128k" tokens of context) or where `binary`, x1000 / x10^6 elsewhere."""
  m = _NUMBER.match(text)
  unit = (m.group(3) or "").strip() if m else ""
  # "2 (4)", "37556 (36108)": a second figure in parentheses is another
  # setting's (Megatron-Bridge's tables print an alternative recipe that
  # way); the row's own is the first
  unit = re.sub(r"^\(\s*~?[\d.,]+\s*[kKmM]?\s*\)\s*", "", unit)
  if not m or (unit and not _UNIT.match(unit)):
    raise Unsupported(f"column {key}={text!r} is not a number")
  x = float(m.group(1).replace(",", ""))
  suffix = (m.group(2) or "").lower()
  if suffix:
    binary = key == "seq_len" if binary is None else binary
    x *= {"k": 1024.0, "m": 1024.0 ** 2}[suffix] if binary else {"k": 1e3, "m": 1e6}[suffix]
  return x, unit.lower()


def _num(row, key, default=None):
  v = (row.get(key) or "").strip()
  if not v:
    return default
  try:
    return float(v)
  except ValueError:
    pass
  x, unit = _number(key, v)
  if key == "num_devices" and re.search(r"node|host|vm|instance|slice", unit):
    raise Unsupported(f"column num_devices={v!r} counts {unit}, not devices")
  if key == "global_batch_size" and "token" in unit:
    raise Unsupported(f"column global_batch_size={v!r} is in tokens: needs seq_len")  # _global_batch converts
  return x


def _text(row, *keys) -> str:
  """The row's free-text cells `keys`, joined and lower-cased: what a stack
  setting stated in prose is searched in."""
  return " ".join(row.get(k) or "" for k in keys).lower()


def _global_batch(row, seq_len: float) -> float | None:
  """Sequences per step; a batch given in tokens ("4M tokens") is divided by
  the sequence length."""
  v = (row.get("global_batch_size") or "").strip()
  if v and not re.fullmatch(r"[\d.]+", v):
    x, unit = _number("global_batch_size", v, binary=True)
    if "token" in unit:
      # "4M tokens" of 4k sequences is 1,024 of them (binary k / M), unless
      # only the decimal reading gives whole sequences
      if (x / seq_len) % 1:
        x, _ = _number("global_batch_size", v, binary=False)
      return x / seq_len
  return _num(row, "global_batch_size")


def _is_maxtext(row) -> bool:
  """MaxText's model conventions (head dim 128, gated MLP, untied embeddings)."""
  return "maxtext" in (row.get("framework") or "").lower() or row.get("source_id") == "MAXTEXT"


def _is_xla(row) -> bool:
  """A JAX/XLA program (MaxText, Pax, T5X, or anything on TPUs): the mesh plan."""
  fw = (row.get("framework") or "").lower()
  if _is_maxtext(row) or re.search(r"jax|pax|t5x|xla|pjit", fw):
    return True
  try:
    return hardware.DEVICES[hardware.system_for_hardware_name(row.get("hardware") or "").device].platform == "tpu"
  except ValueError:
    return False


def is_layer_timing(row) -> bool:
  return "single-layer" in (row.get("task") or "")


def _catalog_name(name: str) -> str:
  """A table's model name without the run notes it carries in parentheses
  ("(tokendrop)", "(dropless)", "(w/ MTP)", "(w/o MTP)")."""
  return re.sub(r"\((tokendrop|dropless|w/o? mtp|with(out)? mtp)\)", "", name, flags=re.I).strip()


def model_numbers(row) -> dict[str, float]:
  """Model/job scalars (costs.MODEL_FIELDS) of a row: its own dimensions, or
  the catalog entry its model name matches."""
  name = row.get("model") or ""
  if re.search(r"nemotron[_ ]?3[_ .]*(5[_ ]*)?(ultra|lightning)", name, re.I):
    raise Unsupported("Nemotron 3 Ultra and 3.5 Lightning (hybrid Mamba-2, LatentMoE) are not in the "
                      "catalog: their released recipes build them from a model hub config, not given here")
  task = (row.get("task") or "").lower()
  prec = (row.get("precision") or "").lower()
  L, h = _num(row, "num_layers"), _num(row, "hidden_size")
  try:
    known, _ = find_model(_catalog_name(name))
  except ValueError:
    known = None
  if known is not None and (known.is_moe or known.is_hybrid) and (not L or int(L) == known.num_layers):
    L = h = None  # the row's columns cannot say which layers are experts or Mamba: the catalog entry can
  if known is None and re.search(r"mamba|hybrid|jamba|zamba|falcon[-_ ]?h|nemotron[-_ ]?h\b|granite[-_ ]?4", name, re.I):
    raise Unsupported(f"{name!r} is a hybrid (Mamba / state-space) model the catalog does not have: its layer "
                      "pattern is not in the row")
  if L and h:
    a = _num(row, "num_heads")
    if not a:
      raise Unsupported("num_heads missing")
    maxtext = _is_maxtext(row)
    d = 128.0 if maxtext else h / a  # MaxText's head_dim is 128 regardless of width
    f = _num(row, "ffn_hidden_size", 4 * h)
    V = _num(row, "vocab_size", 51200.0)
    s = _num(row, "seq_len")
    # SwiGLU families, or an FFN width that is not GPT's 4h (Llama's 8h/3, 3.5h)
    gated = 1.0 if (maxtext or re.search(r"llama|mistral|mixtral|qwen|gemma|olmo|deepseek|swiglu", name, re.I)
                    or abs(f / h - 4) > 0.05) else 0.0
    m = dict(L=L, h=h, a=a, g=_num(row, "num_kv_heads", a), d=d, f=f, V=V, s=s, gated=gated, E=0.0, k=0.0,
             fe=f, fs=0.0, Ld=L, tie=0.0 if maxtext or gated else 1.0)
  else:
    try:
      cfg, _ = find_model(_catalog_name(name))
    except ValueError as e:
      given = [k for k, v in (("num_layers", L), ("hidden_size", h)) if v]
      if given:  # a partial shape: name what is missing
        missing = [k for k in ("num_layers", "hidden_size") if k not in given]
        raise Unsupported(f"{', '.join(missing)} missing ({', '.join(given)} given) and {e}") from None
      raise Unsupported(f"no dimensions and {e}") from None
    fe = cfg.moe_ffn_hidden_size or cfg.ffn_hidden_size
    m = dict(L=cfg.num_layers, h=cfg.hidden_size, a=cfg.num_heads, g=cfg.kv_heads, d=cfg.head_dim,
             f=cfg.ffn_hidden_size, V=cfg.vocab_size, s=_num(row, "seq_len", cfg.seq_len),
             gated=float(cfg.gated_mlp), E=cfg.num_experts, k=cfg.moe_top_k, fe=fe,
             fs=cfg.num_shared_experts * fe, Ld=cfg.num_layers - cfg.layer_counts()["moe"],
             tie=float(cfg.tie_embeddings), **costs.arch_scalars(cfg))
  if not m["s"]:
    raise Unsupported("seq_len missing")
  gbs = _global_batch(row, m["s"])
  if not gbs:
    raise Unsupported("global_batch_size missing")
  m["gbs"] = gbs
  # "FP8", "MXFP8", "FP8-CS", and the 25.09 tables' "unstated ... implies FP8"
  m["fp8"] = float("fp8" in prec or "fp4" in prec)
  m["fp4"] = float("fp4" in prec)
  m.update(_lora_fields(row, task, m))
  m.update(costs.packing_scalars())  # published throughput counts every token of full rows
  if packed_squad(row):
    # the rows' slots are counted as published; attention is per example
    m["attn_packed"] = packing.stats(SQUAD_EXAMPLE_LENS, int(gbs), int(m["s"]), True).attn
  return {k: float(v) for k, v in m.items()}


# SQuAD v1.1 training examples in NeMo's SFT prompt (context, question,
# answer) in Llama-tokenizer tokens: paragraphs of ~120 words with a long
# tail, a ~10-word question, a short answer. A rounded right-skewed mix
# (mean ~205 tokens), a property of the data set, not fitted. Packed to 4096
# a row holds ~20 examples, so a segment-aware flash kernel does ~5 % of a
# full causal row's attention work (3-8 % for means of 150-300 tokens: the
# exact mix matters little).
SQUAD_EXAMPLE_LENS = (110, 140, 160, 180, 200, 230, 270, 350)


def packed_squad(row) -> bool:
  """A fine-tuning row on SQuAD packed into full rows (NeMo's SFT/LoRA tables)."""
  return bool(re.search(r"squad\b.*\bpacked", row.get("table") or "", re.I))


# LoRA rows that do not state rank or targets (the NeMo / Megatron-Bridge
# tables): Megatron-Bridge's LoRA defaults, adapters on every linear layer
# of a block (linear_qkv, linear_proj, linear_fc1, linear_fc2) at rank 16,
# frozen base weights kept in bf16.
LORA_ASSUMED_RANK = 16
LORA_ASSUMED_TARGETS = ("query", "key", "value", "out", "wi", "wo")


def _lora_fields(row, task: str, m: Mapping[str, float]) -> dict[str, float]:
  if "lora" not in task:
    return costs.lora_scalars(m, 0, ())
  text = _text(row, "notes", "other_metrics")
  rank = re.search(r"(?:lora[_ ]?)?(?:rank|dim|adapter_dim)\s*[=:]?\s*(\d+)", text, re.I)
  targets = LORA_ASSUMED_TARGETS + (("wg",) if m["gated"] else ())
  return costs.lora_scalars(m, int(rank.group(1)) if rank else LORA_ASSUMED_RANK, targets)


def cluster_for(row) -> hardware.Cluster:
  hw_name = row.get("hardware") or ""
  n = _num(row, "num_devices") or _devices_implied(row)
  if not n:
    raise Unsupported("num_devices missing (and neither num_nodes x devices_per_node nor tp*pp*cp*dp given)")
  try:
    sysm = hardware.system_for_hardware_name(hw_name)
  except ValueError as e:
    raise Unsupported(str(e)) from None
  per = None
  if hardware.DEVICES[sysm.device].platform == "tpu":
    per = int(_num(row, "devices_per_node") or hardware.tpu_chips_from_name(hw_name) or n)
  else:
    row_per = _num(row, "devices_per_node")
    # a rack-scale system's compute tray (4 GPUs of an NVL72 rack: the host
    # a scheduler counts as a node) is not its NVLink domain, the rack is
    if row_per == hardware.RACK_TRAY and sysm.devices_per_node >= 32:
      row_per = None
    if row_per and row_per < sysm.devices_per_node and n % row_per == 0:
      per = int(row_per)  # smaller nodes than the system's (4-GPU nodes, a partial rack per node)
  inter_bw = _nic_bw(row.get("interconnect") or "", per or sysm.devices_per_node or n)
  try:
    cluster = hardware.make_cluster(sysm.name, int(n), devices_per_node=per, inter_bw=inter_bw)
  except ValueError as e:
    raise Unsupported(f"cluster cannot be placed: {e}") from None
  hbm = _stated_memory(hw_name, cluster.device)
  if hbm:
    cluster = dataclasses.replace(cluster, device=dataclasses.replace(cluster.device, hbm_bytes=hbm))
  return cluster


def _stated_memory(hw_name: str, device: hardware.DeviceSpec) -> float | None:
  """Device memory (bytes) a hardware cell states when it is not the
  catalog device's ("H100 96GB HBM2e", "H100 NVL 94GB"): the row's GPUs
  are that variant. Read in the catalog's unit for the device (GiB for
  HBM sized in whole stacks, GB otherwise); None when unstated or the
  same size."""
  if device.platform != "gpu":
    return None
  m = re.search(r"(?<![\d.])(\d{2,3}(?:\.\d)?)\s*gi?b\b", hw_name.lower())
  if not m:
    return None
  size = float(m.group(1))
  same = lambda unit: abs(size * unit / device.hbm_bytes - 1) < 0.03
  if not 8 <= size <= 512 or same(hardware.GIB) or same(hardware.GB):
    return None
  return size * (hardware.GIB if device.hbm_bytes % hardware.GIB == 0 else hardware.GB)


def _devices_implied(row) -> float | None:
  """The device count a row without `num_devices` still states: nodes x
  devices per node, or the product of its parallel degrees when dp is given."""
  nodes, per = _num(row, "num_nodes"), _num(row, "devices_per_node")
  if nodes and per:
    return nodes * per
  if _num(row, "dp"):
    return math.prod(_num(row, k) or 1.0 for k in ("tp", "pp", "cp", "dp"))
  return None


# Per-link signalling rate (Gb/s) of fabrics a row may name without a
# number: InfiniBand generations by their names and Intel's Omni-Path
# (OPA 100); the first match wins, so the more specific names come first.
FABRIC_GBPS = (
    (r"hdr[- ]?100", 100.0), (r"ndr[- ]?200", 200.0), (r"\bedr\b", 100.0), (r"\bhdr\b", 200.0),
    (r"\bndr\b", 400.0), (r"\bxdr\b", 800.0), (r"omni[- ]?path|\bopa\b", 100.0),
)
_LINKS = r"(?:links?|nics?|ports?|adapters?|hcas?|rails?|cards?)"


def _nic_bw(text: str, per_node: float) -> float | None:
  """Inter-node bytes/s per device when the row states its NICs
  ("8x200Gb/s HDR InfiniBand per node", "4x100 Gbps per node",
  "400 Gb/s per GPU"), or names a fabric and how many links a node has
  ("4 Omni-Path links per node", "8x HDR"): the network is a property of
  the row's cluster. A fabric named without its link count leaves the
  system's own network."""
  t = text.lower()
  pair = re.search(r"(\d+)\s*[x×]\s*(\d+)\s*gb(?:it)?(?:/s|ps)", t)
  one = re.search(r"(\d+)\s*gb(?:it)?(?:/s|ps)", t)
  if pair:
    bits, per_gpu = float(pair.group(1)) * float(pair.group(2)), "per gpu" in t
  elif one:
    bits, per_gpu = float(one.group(1)), "per node" not in t
  else:
    rate = next((g for pat, g in FABRIC_GBPS if re.search(pat, t)), None)
    fabrics = "|".join(p for p, _ in FABRIC_GBPS)
    count = (re.search(r"(\d+)\s*[x×]?\s*(?:[\w-]+\s+){0,3}?" + _LINKS + r"\s*(?:per|/|each|a)\s*(?:node|host|server)",
                       t)
             or re.search(r"(\d+)\s*[x×]\s*(?:[\w-]+\s+){0,2}?(?:" + fabrics + ")", t))
    one_each = re.search(r"\b(one|1|an?)\s+(?:[\w-]+\s+){0,3}?" + _LINKS + r"\s*per\s+(gpu|device|accelerator)", t)
    if rate is None or not (count or one_each):
      return None
    bits, per_gpu = (rate, True) if one_each else (rate * float(count.group(1)), False)
  return bits * 1e9 / 8 / (1.0 if per_gpu else max(per_node, 1.0))


def _recompute(text: str, default: str) -> tuple[float, str]:
  t = (text or "").lower().strip()
  if not t or t in ("unstated", "not stated", "n/a", "-"):
    t = default
  # a negation first: "no AC", "no activation checkpointing", "without recompute"
  if (t in ("false", "no", "off", "0", "disabled", "n") or re.match(r"(no|without|w/o|disabled?)\b", t)
      or re.search(r"\b(off|false|disabled)$", t)):
    t = "none"
  elif re.fullmatch(r"(sel|op|ops|op[- ]level|attn|attention|core[ _]attn)", t):
    t = "selective"  # Megatron --recompute-granularity selective: the attention core
  elif (t in ("true", "yes", "on", "1", "y", "enabled", "ac", "gc") or "checkpoint" in t or "activation ckpt" in t
        or re.search(r"\b(per[- ]layer|every layer|block|uniform|layer[- ]wise)\b", t)):
    t = "full"  # every layer's activations recomputed (Megatron's block/uniform methods, full granularity)
  if "minimal" in t or "dots" in t:
    return 1.0, t  # mesh_plan maps JAX 'minimal' to code 3
  if "selective" in t:
    return 1.0, t
  if "full" in t or "offload" in t:
    return 2.0, t
  if "none" in t:
    return 0.0, t
  raise Unsupported(f"unknown recompute setting {text!r}")


def plan_numbers(row, m: Mapping[str, float], cluster: hardware.Cluster) -> dict[str, float]:
  """PLAN scalars (costs.PLAN_FIELDS) of a row."""
  n = cluster.num_devices
  sharding = (row.get("sharding") or "").lower()
  tp, pp = _num(row, "tp"), _num(row, "pp")
  mp = re.search(r"model-parallel size (\d+)", row.get("notes") or "", re.I)
  if (tp is None or pp is None) and mp:
    # Narayanan Table 2 PTD-P rows give only the model-parallel size; Megatron
    # keeps tp at the 8 GPUs of a node and pipelines the rest.
    tp, pp = 8.0, float(int(mp.group(1)) // 8)
  # a row that names no model parallelism (FSDP / DDP tables) has none
  tp, pp = tp or 1.0, pp or 1.0
  cp = _num(row, "cp", 1.0)
  dp = _num(row, "dp") or n / (tp * pp * cp)
  ep = _num(row, "ep", 1.0) if m["E"] > 0 else 1.0
  vp = _num(row, "vp", 1.0)
  if abs(tp * pp * cp * dp - n) > 0.5 and cp > 1 and abs(tp * pp * dp - n) < 0.5:
    dp = dp / cp  # a table that counts context-parallel ranks in its dp (dp = devices / (tp x pp))
  elif abs(tp * pp * cp * dp - n) > 0.5 and ep > 1 and abs(tp * pp * cp * dp * ep - n) < 0.5:
    dp = dp * ep  # one that counts dense data parallelism per expert group (dp = devices / (tp x pp x cp x ep))
  mbs = None if _mbs_auto(row) else _num(row, "micro_batch_size")
  if mbs is None:
    ga = _num(row, "grad_accum")
    if ga:
      mbs = m["gbs"] / (dp * ga)
    elif pp > 1:
      raise Unsupported("micro_batch_size missing (and no grad_accum to derive it): a pipeline's "
                        "micro-batch cannot be inferred")
    else:
      # no pipeline: the whole per-replica batch in one micro-batch, lowered
      # by calibration.simulate until it fits (microbatch_unstated)
      mbs = m["gbs"] / dp
  if abs(tp * pp * cp * dp - n) > 0.5:
    raise Unsupported(f"tp*pp*cp*dp = {tp * pp * cp * dp:g} is not the {n} devices")
  if _is_xla(row):
    fsdp = re.search(r"(\d+)-way", sharding)
    dcn = re.search(r"dcn (\d+)-way", sharding) or re.search(r"dp (\d+)-way", sharding)
    ici_fsdp = float(fsdp.group(1)) if fsdp else dp
    slices = float(dcn.group(1)) if dcn else max(1.0, dp / ici_fsdp)
    rc, _ = _recompute(row.get("recompute", "").replace("remat_policy=", ""), "full")
    # MaxText's per_device_batch_size counts chips; per batch shard it is gbs/dp
    p = mesh_plan({"fsdp": ici_fsdp, "tensor": tp}, {"data": slices}, m["gbs"] / dp, rc, 1.0, 1.0, 0.0,
                  m["gbs"], m["L"], xla_loss_bytes(cluster))
    return {k: float(v) for k, v in p.items()}
  framework = (row.get("framework") or "").lower()
  megatron = ("megatron" in framework or "nemo" in framework
              or row.get("source_id") in ("NARAYANAN2021", "KORTHIKANTI2022", "NEMO_2407", "MBRIDGE"))
  zero = _zero_level(sharding)
  deepspeed = "deepspeed" in sharding or "deepspeed" in framework
  # NeMo / Megatron-Bridge recipes use the distributed optimizer and SP
  # (with tp > 1); Megatron-LM 2021/2022 papers predate both.
  modern = (row.get("source_id") in ("NEMO_2407", "MBRIDGE")
            or bool(re.search(r"nemo|megatron[- ]bridge|megatron[- ]core|mcore", framework)))
  if modern and zero == 0:
    zero = 1
  # PyTorch-native trainers (FSDP2 / torchtitan, not Megatron or DeepSpeed)
  native = not (megatron or deepspeed)
  # FSDP under a pipeline there keeps each stage's parameters gathered
  # across its micro-batches (torchtitan reshards after forward only
  # without PP) and accumulates unsharded gradients in the fp32 reduce
  # dtype until the last micro-batch: the memory and the once-per-step
  # reduce-scatter / all-gather of a sharded optimizer (ZeRO-1)
  fsdp_pp = native and zero == 3 and pp > 1
  if fsdp_pp:
    zero = 1
  # Megatron-LM of 2021-22 and Megatron-DeepSpeed materialized attention
  # scores; every stack since (NeMo, Megatron-Bridge, FSDP/FSDP2 trainers,
  # MaxText) runs fused flash attention unless the row says otherwise.
  old_stack = row.get("source_id") in ("NARAYANAN2021", "KORTHIKANTI2022") or deepspeed
  notes = _text(row, "notes", "other_metrics")
  flash = 0.0 if old_stack or re.search(r"no flash|without flash|flash[_ -]?attn(ention)?[=: ]+(off|false)", notes) \
      else 1.0
  # PyTorch-native trainers call FlashAttention-2 (the flash-attn package,
  # or SDPA's flash backend), whose kernels predate Hopper: on a device
  # whose native kernel is newer they run at its fa2_rate, unless the row
  # names a Hopper-native kernel (FlashAttention-3, cuDNN's fused attention)
  hopper_native = re.search(r"flash[_ -]?attn(ention)?[_ -]?3|\bfa3\b|cudnn|transformer engine", notes + " " + framework)
  if flash and native and not hopper_native:
    flash = cluster.device.fa2_rate or 1.0
  sp_txt = (row.get("sequence_parallel") or "").lower()
  # unstated: NeMo / Megatron-Bridge recipes run SP with TP; so does
  # PyTorch-native TP (torchtitan's and PyTorch's FSDP + TP plans shard the
  # norms' sequence dimension: SequenceParallel); Megatron-LM of 2021-22 and
  # Megatron-DeepSpeed did not
  sp = 1.0 if sp_txt == "on" else 0.0 if sp_txt == "off" else float((modern or native) and tp > 1)
  if m["E"] > 0 and tp > 1:
    sp = 1.0
  # Narayanan 2021 recomputes every run (Table 1 configs); elsewhere an
  # unstated policy starts at none (callers may raise it until it fits).
  rc_text = row.get("recompute", "") or ""
  offload = 1.0 if re.search(r"offload", rc_text + " " + notes, re.I) and "activation" in (rc_text + notes).lower() \
      else 0.0
  rc, _ = _recompute(re.sub(r"(cpu|activation)[ -]*offload(ing|ed)?", "", rc_text, flags=re.I),
                     "full" if (deepspeed or row.get("source_id") == "NARAYANAN2021") else "none")
  if rc == Recompute.SELECTIVE and native:
    # an FSDP trainer's "selective" is PyTorch's selective activation
    # checkpointing (torch.utils.checkpoint with a save policy, as
    # torchtitan's op-level SAC): the matmul and attention outputs are kept
    # and the element-wise work is recomputed -- the dots policy, not
    # Megatron's recompute of the attention core
    rc = float(Recompute.DOTS)
  # Megatron-LM of 2021-22 reduced fp32 gradients; NeMo/Megatron-Bridge
  # performance recipes reduce them in bf16 (grad_reduce_in_fp32=False);
  # DeepSpeed's depend on its optimizer wrapper (deepspeed_state, below).
  # ZeRO-2 shards over the same group as ZeRO-1 (the whole data-parallel
  # group), gradients as well as optimizer state (zero = 2 below)
  p = megatron_plan(tp, pp, cp, dp, ep, 1.0, vp, mbs, sp, float(zero in (1, 2)), rc, 0.0, 1.0, 1.0, 1.0,
                    40e6, float(modern and tp > 1 and sp > 0), m["gbs"], m["L"], cluster.node_size,
                    fsdp=float(zero == 3), flash=flash,
                    grad_bytes=2.0 if modern else 4.0, offload=offload,
                    # DeepSpeed ZeRO-3 (2021) gathers parameter by parameter from
                    # every rank: its collectives do not spread over a node's NICs
                    rails=0.0 if (deepspeed and zero == 3) else 1.0,
                    # Megatron's fused cross entropy, or a fused/compiled one (FSDP trainers)
                    loss_bytes=6.0 if megatron else 8.0)
  p = {k: float(v) for k, v in p.items()}
  if deepspeed:
    p.update(deepspeed_state(row.get("precision") or "", zero))
    if zero <= 2 and not deepspeed_overlaps(row, pp):
      p.update(overlap_grad=0.0, overlap_param=0.0)
  # PyTorch runs eagerly unless the trainer compiles (torch.compile is opt-in:
  # torchtitan's --compile, a row's "torch.compile"); Megatron's and
  # DeepSpeed's Megatron models call fused kernels either way
  p["eager"] = float(native and not compiled(row))
  # Megatron-LM of early 2021 (Narayanan et al.) and BigScience's fork of
  # Megatron-DeepSpeed (BLOOM's) all-reduce a column-parallel linear's input
  # gradient in its backward before the weight-gradient GEMM (no
  # asynchronous all-reduce yet): without SP that collective is exposed in
  # full. Microsoft's Megatron-DeepSpeed took megatron-core's layers in 2023.
  bigscience = deepspeed and re.search(r"bigscience|bloom", _text(row, "source_id", "source_ref", "framework",
                                                                    "model", "notes"))
  p["tp_async"] = 0.0 if (bigscience or row.get("source_id") == "NARAYANAN2021") else 1.0
  p["packed"] = float(packed_squad(row))  # THD-packed rows, per-example flash attention
  p["z3_post"] = float(zero == 3 and backward_post(row))
  if m["E"] > 0:
    p.update(moe_dispatch(row, cross_node=p["ep_local"] < ep, overlappable=vp > 1 or pp <= 1))
  layers = offload_layers(row)
  if layers is not None:  # a Megatron-Bridge FSDP preset: activation offload, no recompute
    p.update(recompute=float(Recompute.NONE), offload=min(layers / max(m["L"], 1.0), 1.0))
  modules = recompute_modules(row)
  if modules is not None:  # a Megatron-Bridge preset's recompute modules
    p.update(recompute=float(Recompute.SELECTIVE if "core_attn" in modules else Recompute.NONE),
             rc_moe=float("moe" in modules), rc_elem=float("layernorm" in modules or "moe_act" in modules))
  if zero == 2:
    p["zero"] = 2.0
  if zero == 3 and ("hybrid" in sharding or "hsdp" in sharding):
    # hybrid sharding: shard inside a node, replicate across nodes
    shard = float(min(dp * cp, max(cluster.node_size // (tp * pp), 1)))
    p.update(shard=shard, shard_local=shard, rep_local=1.0)
  return p


def backward_post(row) -> bool:
  """Whether a fully sharded run issues the all-gather of the unit the
  backward reaches next only once the current unit's gradient is
  computed (PyTorch FSDP1's BACKWARD_POST):
  what its notes say, else its stack's default -- BACKWARD_POST in
  Composer's FSDP config (LLM Foundry, MosaicML); FSDP1's own default
  is BACKWARD_PRE, and FSDP2, Megatron and DeepSpeed prefetch ahead."""
  text = _text(row, "notes", "other_metrics", "sharding", "framework")
  stated = re.search(r"backward[_ ]prefetch\W*(backward[_ ])?(pre|post|none)", text)
  if stated:
    return stated.group(2) in ("post", "none")
  return "fsdp2" not in text and bool(re.search(r"composer|llm[- ]?foundry|mosaic", text))


def deepspeed_overlaps(row, pp: float) -> bool:
  """Whether DeepSpeed (ZeRO-0/1/2) overlaps its data-parallel gradient
  reduction with the backward pass. Its pipeline engine reduces the
  gradients, and ZeRO-1/2 gathers the updated parameters, only after the
  schedule's last micro-batch; without a pipeline the ZeRO-1/2 optimizer
  overlaps only when the config sets `overlap_comm` (default off below
  ZeRO-3), and plain data parallelism reduces after the backward."""
  if pp > 1:
    return False
  text = _text(row, "notes", "other_metrics", "sharding")
  return bool(re.search(r"overlap[_ ]comm\W*(true|on|enabled|1)\b", text))


def compiled(row) -> bool:
  """Whether a row's PyTorch-native trainer compiled its model
  (torch.compile / Inductor), by its notes and framework cells."""
  text = _text(row, "notes", "other_metrics", "framework")
  return bool(re.search(r"torch[._ ]?compile|inductor|\bcompiled?\b", text)) and not re.search(
      r"(no|without|w/o) (torch[._ ]?)?compile|compile[=: ]+(off|false|0)\b", text)


def deepspeed_state(precision: str, zero: int) -> dict[str, float]:
  """Bytes per parameter of DeepSpeed's training state beside the 2-byte
  weights, by the optimizer wrapper its engine picks: bf16 with ZeRO-0/1
  runs BF16_Optimizer (an fp32 gradient buffer for every local parameter,
  reduced in fp32, with each bf16 .grad kept beside it; fp32 master and
  Adam moments partitioned); fp16 (FP16_Optimizer, ZeRO-1/2 stage
  optimizers) and bf16 with ZeRO-2/3 keep 2-byte gradients and add an
  fp32 gradient copy to the partitioned master + Adam state (16 bytes)."""
  p = precision.lower()
  if "bf16" in p.replace("bfloat16", "bf16") and "fp16" not in p and zero <= 1:
    return dict(g_bytes=4.0, lp_grad_bytes=2.0, o_bytes=12.0)
  return dict(g_bytes=2.0, lp_grad_bytes=0.0, o_bytes=16.0)


def _zero_level(sharding: str) -> int:
  """ZeRO stage a sharding description names (0: replicated data parallel)."""
  t = sharding.lower()
  stage = r"zero[- ]?(?:stage[- ]?)?{0}\b|\bstage[- ]?{0}\b"
  if re.search(stage.format(3) + r"|fsdp|full[_ ]shard|fully[ _-]shard|hybrid[_ ]shard|hsdp", t):
    return 3
  if re.search(stage.format(2) + r"|shard[_ ]grad[_ ]op", t):
    return 2
  if re.search(stage.format(1) + r"|distributed optimizer(?! not)|optimizer[- ]state shard", t):
    return 1
  return 0


def _mbs_auto(row) -> bool:
  return (row.get("micro_batch_size") or "").strip().lower() in ("", "auto", "unstated", "not stated", "n/a", "-")


def microbatch_unstated(row) -> bool:
  """The row leaves its micro-batch to the stack (blank or "auto", no
  grad_accum, no pipeline): the largest that fits is inferred."""
  return _mbs_auto(row) and not _num(row, "grad_accum") and (_num(row, "pp") or 1.0) <= 1


def recompute_unstated(row) -> bool:
  """The row does not say how it recomputed (NeMo / Megatron-Bridge tables)."""
  return (not (row.get("recompute") or "").strip() and row.get("source_id") != "NARAYANAN2021"
          and recompute_modules(row) is None and offload_layers(row) is None)


def row_inputs(row) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
  """(plan, model, hw) scalars for one row; raises Unsupported."""
  m = model_numbers(row)
  cluster = cluster_for(row)
  plan = plan_numbers(row, m, cluster)
  if plan["num_micro"] < 1 - 1e-9:
    raise Unsupported(f"global batch {m['gbs']:g} is smaller than dp x micro-batch")
  return plan, m, hardware.cluster_scalars(cluster)


# --- the published side -------------------------------------------------------


def source_flops_per_token(row, m: Mapping[str, float]) -> float:
  """Training FLOPs per token as the row's source counts them."""
  L, h, s, V, a, g, d, f = (m[k] for k in ("L", "h", "s", "V", "a", "g", "d", "f"))
  src = row.get("source_id")
  if src == "NARAYANAN2021":  # eq. 3, counts the recompute forward
    return 96 * L * h * h * (1 + s / (6 * h) + V / (16 * L * h))
  if _is_maxtext(row):  # maxtext_utils.calculate_tflops_training_per_device (non-causal attention)
    mlp = 2 * h * f * (2 + 1)  # two input matrices (silu, linear) + output
    qkv = 2 * h * (a + 2 * g) * d
    proj = 2 * h * a * d
    attn = 4 * s * a * d
    return 3 * (L * (mlp + qkv + proj + attn) + 2 * h * V)
  return float(costs.model_flops_per_token(np, m))


def published_tokens_per_s(row, m: Mapping[str, float]) -> float | None:
  """Published throughput in tokens/s per device (None when the row has no
  throughput: single-layer timing rows use `published_layer_s`)."""
  n = _num(row, "num_devices") or _devices_implied(row)
  tok = _num(row, "tokens_per_sec_per_device")
  if tok:
    return tok
  total = _num(row, "tokens_per_sec_total")
  if total and n:
    return total / n
  samples = _num(row, "samples_per_sec")
  if samples and n and not is_layer_timing(row):
    return samples * m["s"] / n
  step = _num(row, "step_time_s")
  if step and not is_layer_timing(row):
    return m["gbs"] * m["s"] / (step * n)
  tf = _num(row, "tflops_per_device")
  if tf:
    return tf * 1e12 / source_flops_per_token(row, m)
  return None


def published_layer_s(row) -> float | None:
  mt = re.search(r"layer_combined_ms=([\d.]+)", row.get("other_metrics") or "")
  return float(mt.group(1)) / 1e3 if mt else None


def finite(x: float | None) -> bool:
  return x is not None and math.isfinite(x)
