#!/usr/bin/env bash
# GPU check of the real local evaluators: a short F2 (compile) + F3 (profile)
# search on one GPU of this machine, then a summary of what was measured.
# Not run by CI (no GPU there); meant for a machine with one NVIDIA GPU.
#
#   bash scripts/gpu_check.sh [WORKDIR]
#
# Then, where torch sees the GPU and megatron-core is installed, a Megatron
# table: megatron-core's own training step of a small GPT on that GPU over
# micro-batch x recompute x distributed optimizer, each row with F0's
# prediction beside it (tools/megatron_table.py; WORKDIR/megatron_table.csv).
# Skipped with the reason where either is missing.
#
# Environment knobs: PYTHON (default python3), GPU_CHECK_LIMIT_S (wall-clock
# limit of the search, default 420; 0 skips the search and the JAX install
# check), MEGATRON_LIMIT_S (of the Megatron
# table, default 150; 0 skips it), JAX_CUDA_EXTRA (pip extra used when JAX
# cannot see the GPU yet, default cuda12; cuda13 needs a CUDA 13 driver).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
LIMIT_S=${GPU_CHECK_LIMIT_S:-420}
MEGATRON_LIMIT_S=${MEGATRON_LIMIT_S:-150}
EXTRA=${JAX_CUDA_EXTRA:-cuda12}
WORKDIR=${1:-$(mktemp -d -t autoscout_gpu_check.XXXXXX)}
mkdir -p "${WORKDIR}"

say() { echo "gpu_check: $*"; }

if ! command -v nvidia-smi >/dev/null || ! timeout 60 nvidia-smi -L; then
  say "no NVIDIA GPU visible (nvidia-smi failed); nothing to check"
  exit 1
fi

gpu_jax() {
  JAX_PLATFORMS=cuda timeout 180 "$PY" -c \
    "import jax; d = jax.devices('gpu'); print(jax.__version__, d[0].device_kind, len(d))" 2>/dev/null
}

deps_ok() {
  timeout 120 "$PY" -c "import jax, flax, optax, gin, absl, tensorboard, numpy" 2>/dev/null
}

JAX_RC=0
if [ "${LIMIT_S}" -le 0 ]; then
  say "JAX search: skipped (GPU_CHECK_LIMIT_S=0)"
else
if ! deps_ok || ! gpu_jax >/dev/null; then
  # Pin the CUDA plugin to the JAX already installed (if any) so that pip
  # does not move the rest of the stack.
  JAX_VERSION=$(timeout 120 "$PY" -c "import jax; print(jax.__version__)" 2>/dev/null || true)
  SPEC="jax[${EXTRA}]${JAX_VERSION:+==${JAX_VERSION}}"
  say "installing the package and ${SPEC}"
  if ! timeout 600 "$PY" -m pip install -q -e . "${SPEC}"; then
    say "pip install failed (no package index reachable?); install ${SPEC} and rerun"
    exit 1
  fi
fi
if ! INFO=$(gpu_jax); then
  say "JAX still sees no GPU after the install; check the driver and JAX_CUDA_EXTRA"
  exit 1
fi
say "jax version, device kind, device count: ${INFO}"

# The search process itself stays on the CPU; the evaluators' child
# processes (cluster platform 'gpu') take the GPU.
export JAX_PLATFORMS=cpu
say "search in ${WORKDIR} (limit ${LIMIT_S}s)"
set +e
timeout --kill-after=30 "${LIMIT_S}" "$PY" -m autoscout_jax.run \
  --gin_file=experiments/quickstart/gpu_check.gin --workdir="${WORKDIR}" \
  > "${WORKDIR}/run.log" 2>&1
RC=$?
set -e
[ "${RC}" -eq 124 ] && say "search hit the ${LIMIT_S}s limit; summarizing what was stored"
[ "${RC}" -ne 0 ] && [ "${RC}" -ne 124 ] && { say "search exited with ${RC}; last lines:"; tail -n 30 "${WORKDIR}/run.log"; }

# Summary: every stored measurement, by fidelity and outcome.
set +e
"$PY" - "${WORKDIR}" <<'EOF'
import collections, json, os, sys
workdir = sys.argv[1]
path = os.path.join(workdir, "measurements.jsonl")
rows = [json.loads(l) for l in open(path)] if os.path.exists(path) else []
print(f"gpu_check: {len(rows)} measurements in {path}")
counts = collections.Counter((r["fidelity"], r["metrics"]["failure_kind"] or "ok") for r in rows)
for (fid, kind), n in sorted(counts.items()):
  print(f"  {fid:8s} {kind:14s} {n}")
prof = [r for r in rows if r["fidelity"] == "profile" and r["metrics"]["feasible"]]
for r in sorted(prof, key=lambda r: -r["metrics"]["tokens_per_s"])[:5]:
  m, p = r["metrics"], r["provenance"]
  mfu = f"{m['mfu']:.3f}" if m.get("mfu") is not None else "n/a"
  print(f"  {m['tokens_per_s']:12,.0f} tok/s  step {m['step_time_s'] * 1e3:8.2f} ms  mfu {mfu}  "
        f"mem {m['peak_mem_bytes'] / 2**20:8.1f} MiB  {p.get('device_kind')}  "
        + " ".join(f"{k}={v}" for k, v in sorted(r["candidate"].items())))
fails = [r for r in rows if r["metrics"]["failure_kind"] not in (None, "invalid")]
for r in fails[:3]:
  print(f"  failure {r['metrics']['failure_kind']}: {(r['metrics']['error'] or '')[:300]}")
report = os.path.join(workdir, "report.md")
if os.path.exists(report):
  print(open(report).read()[:3000])
sys.exit(0 if prof else 1)
EOF
JAX_RC=$?
set -e
fi

# Megatron: megatron-core's training step on the same GPU (optional).
# This process and the table's own stay off the GPU (JAX would take most of
# its memory); the table's children (torch) take it.
export JAX_PLATFORMS=cpu
if [ "${MEGATRON_LIMIT_S}" -le 0 ]; then
  say "megatron: skipped (MEGATRON_LIMIT_S=0)"
  MG_RC=1
else
  # The table first asks the child's interpreter whether it can train (torch
  # with CUDA, megatron-core) and exits 1 naming what is missing.
  say "megatron: table in ${WORKDIR}/megatron_table.csv (limit ${MEGATRON_LIMIT_S}s)"
  set +e
  timeout --kill-after=30 $((MEGATRON_LIMIT_S + 60)) "$PY" -m autoscout_jax.tools.megatron_table \
    --out="${WORKDIR}/megatron_table.csv" --max_time_s="${MEGATRON_LIMIT_S}" --chunk=8 2>&1 | grep -v -i "warn"
  MG_RC=${PIPESTATUS[0]}
  say "megatron: table exited with ${MG_RC}"
  set -e
fi
# The search decides the exit status; without it, the Megatron table does.
if [ "${LIMIT_S}" -le 0 ]; then exit "${MG_RC}"; fi
exit "${JAX_RC}"
