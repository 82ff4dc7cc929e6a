#!/usr/bin/env bash
# Measure a real_maxtext_gpu<N> table on the GPUs of this machine (1-8):
# MaxText's own train step of a small MoE decoder (4 experts, top-2) over
# data x fsdp x tensor x context x expert x pipeline x micro-batching x remat,
# each candidate compiled once and timed in 3 blocks (one CSV row per block),
# the same kind of table as experiments/scoutbench/real_maxtext_cpu8.csv.
# Candidates are measured in a fixed shuffled order until the time limit, so
# a short lease yields a uniform sample of the space; rerun to add to it.
#
#   bash scripts/gpu_bench.sh [--dry_run] [OUT_CSV]
#
# --dry_run: print the commands it would run (set-up, measurement, summary)
# for GPU_BENCH_DEVICES GPUs (default: those nvidia-smi lists, else 1)
# and exit 0; it needs no GPU, no MaxText and writes nothing.
#
# Environment: MAXTEXT_PYTHON (a Python 3.12 with maxtext[cuda12]; default:
# .venv-maxtext-gpu/bin/python, created here with pip when missing),
# GPU_BENCH_LIMIT_S (default 420: the whole script stays under 8 minutes),
# GPU_BENCH_DEVICES (default: every GPU nvidia-smi lists, rounded down to a
# power of two, at most 8). Writes OUT_CSV (default
# experiments/scoutbench/real_maxtext_gpu<N>.csv); commit it.
set -euo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)
LIMIT_S=${GPU_BENCH_LIMIT_S:-420}
say() { echo "gpu_bench: $*"; }
DRY=0
if [ "${1:-}" = "--dry_run" ]; then DRY=1; shift; fi

if ! command -v nvidia-smi >/dev/null || ! timeout 60 nvidia-smi -L >/dev/null 2>&1; then
  if [ "${DRY}" = 0 ]; then
    say "no NVIDIA GPU visible (nvidia-smi failed); nothing to measure"
    exit 1
  fi
  FOUND=0
else
  FOUND=$(nvidia-smi -L | grep -c '^GPU ')
fi
N=${GPU_BENCH_DEVICES:-$FOUND}
if [ "${N}" -lt 1 ]; then N=1; fi
P=1; while [ $((P * 2)) -le "$N" ] && [ $((P * 2)) -le 8 ]; do P=$((P * 2)); done; N=$P
OUT=${1:-experiments/scoutbench/real_maxtext_gpu${N}.csv}
say "${FOUND} GPU(s) visible; measuring on ${N}; table ${OUT}"

PY=${MAXTEXT_PYTHON:-.venv-maxtext-gpu/bin/python}
MEASURE=(env PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" CUDA_VISIBLE_DEVICES="$(seq -s, 0 $((N - 1)))"
         "$PY" -m autoscout_jax.tools.maxtext_table --preset=gpu --num_devices="${N}" --out="${OUT}"
         --python="${PY}" --chunk=2 --timed_steps=5 --timeout_s=150)
if [ "${DRY}" = 1 ]; then
  if [ -z "${MAXTEXT_PYTHON:-}" ]; then
    say "would run (when ${PY} cannot import maxtext): python3.12 -m venv .venv-maxtext-gpu && .venv-maxtext-gpu/bin/pip install maxtext[cuda12]"
  fi
  say "would run: ${MEASURE[*]} --max_time_s=<time left - 150 s> (under timeout <time left of ${LIMIT_S} s>)"
  say "would run: ${PY} <summary of ${OUT}: rows by status, the five fastest candidates>"
  exit 0
fi
has_maxtext() {
  JAX_PLATFORMS=cuda timeout 300 "$1" -c \
    "import sys, jax, maxtext; assert sys.version_info >= (3, 12); d = jax.devices('gpu'); print(jax.__version__, d[0].device_kind, len(d))" 2>/dev/null
}
if ! INFO=$(has_maxtext "$PY"); then
  if [ -z "${MAXTEXT_PYTHON:-}" ] && command -v python3.12 >/dev/null; then
    say "creating .venv-maxtext-gpu with maxtext[cuda12] (needs a package index; a few minutes)"
    python3.12 -m venv .venv-maxtext-gpu
    if ! timeout 900 .venv-maxtext-gpu/bin/pip install -q "maxtext[cuda12]"; then
      say "pip install maxtext[cuda12] failed (no package index reachable?); set MAXTEXT_PYTHON to a Python 3.12 with it"
      exit 1
    fi
  fi
  if ! INFO=$(has_maxtext "$PY"); then
    say "${PY} cannot import maxtext with JAX seeing a GPU; set MAXTEXT_PYTHON to a Python 3.12 with maxtext[cuda12]"
    exit 1
  fi
fi
say "jax version, device kind, device count: ${INFO}"

# The driver is jax-free (absl only); it runs in the same interpreter.
LEFT=$((LIMIT_S - ($(date +%s) - T0)))
if [ "${LEFT}" -lt 60 ]; then
  say "the set-up took the time; ${LEFT}s left, nothing measured"
  exit 1
fi
# Start no new chunk after LEFT - 150 s (a chunk of 2 candidates on a GPU: well under that), kill at LEFT.
timeout --kill-after=20 "${LEFT}" "${MEASURE[@]}" --max_time_s=$((LEFT - 150 > 30 ? LEFT - 150 : 30)) \
  || say "stopped by the time limit"
ROWS=$(grep -v '^#' "${OUT}" 2>/dev/null | tail -n +2 | wc -l || true)
say "${ROWS} rows in ${OUT} after $(( $(date +%s) - T0 ))s"
"$PY" - "${OUT}" <<'PYEOF'
import collections, csv, statistics, sys
rows = list(csv.DictReader(l for l in open(sys.argv[1]) if not l.startswith("#")))
status = collections.Counter(r["status"] for r in rows)
print("gpu_bench: rows by status:", dict(status))
by = collections.defaultdict(list)
knobs = [c for c in rows[0] if c.startswith("ici_") or c in ("remat_policy", "gradient_accumulation_steps",
                                                              "num_pipeline_microbatches")] if rows else []
for r in rows:
  if r["status"] == "ok":
    by[tuple(r[k] for k in knobs)].append(float(r["step_time_s"]))
best = sorted((statistics.median(v), k) for k, v in by.items())[:5]
for t, k in best:
  print(f"  {t * 1e3:9.2f} ms  " + " ".join(f"{n}={v}" for n, v in zip(knobs, k) if v not in ("1", "")))
sys.exit(0 if by else 1)
PYEOF
