"""The serving family: the space and its SLO check, the local prefill +
decode engine with a KV cache (8 virtual CPU devices from conftest) against
the un-cached decoder, the F2 memory screen with the KV cache in it, an SLO
miss as an infeasible measurement, and a tiny serving search end to end."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autoscout_jax.local.model import Decoder
from autoscout_jax.local.serve_probe import Engine, compile_figures, measure
from autoscout_jax.local.serve_step import build_serve_setup
from autoscout_jax.space import SpaceError
from autoscout_jax.targets import launch_artifact, serving
from autoscout_jax.workload import LocalCluster, ModelConfig, ServingSpec, Workload

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# GQA (8 query heads over 4 kv heads) so that tensor_parallel_size=4 is legal.
MODEL = ModelConfig("tiny", num_layers=2, hidden_size=64, num_heads=8, num_kv_heads=4,
                    ffn_hidden_size=128, vocab_size=256, seq_len=32, gated_mlp=True)
SPEC = ServingSpec(input_lens=(11, 5, 8), output_lens=(6, 3, 4))
WORKLOAD = Workload("tiny_serve", MODEL, global_batch=6, task="serve", precision="fp32", serving=SPEC)
CLUSTER = LocalCluster(num_devices=8, memory_bytes_per_device=2**22)
BASE = dict(kv_cache_dtype="auto", kv_cache_memory_fraction=0.1, disaggregated=False)


def test_space_fills_the_devices_and_names_its_constraints():
  sp = serving.space(WORKLOAD, CLUSTER)
  cands = sp.enumerate()
  assert cands and all(serving.devices_used(c.values) == 8 for c in cands)
  disagg = [c for c in cands if c["disaggregated"]]
  assert disagg and all(1 <= c["prefill_workers"] < c["data_parallel_size"] for c in disagg)
  assert not sp.validate(sp.make(dict(BASE, tensor_parallel_size=4, data_parallel_size=2, max_num_seqs=2,
                                       chunked_prefill_size=0)))
  # 8 query heads over 4 kv heads: tensor 8 cannot shard the kv heads of the local model.
  bad = sp.validate(sp.make(dict(BASE, tensor_parallel_size=8, data_parallel_size=1, max_num_seqs=2,
                                 chunked_prefill_size=0)))
  assert any("kv_heads" in str(v) for v in bad)
  with pytest.raises(SpaceError, match="task='serve'"):
    serving.space(Workload("train", MODEL, global_batch=8), CLUSTER)


def test_kv_capacity_bounds_the_batch_and_fp8_halves_the_cache():
  f = serving.facts(WORKLOAD, CLUSTER)
  vals = dict(BASE, tensor_parallel_size=1, data_parallel_size=8, max_num_seqs=16,
              kv_cache_memory_fraction=0.005)
  cap = serving.kv_capacity_from_facts(vals, f)
  # 2 layers x (k, v) x 4 kv heads x head dim 8 x 4 bytes (fp32)
  assert cap.bytes_per_token == 2 * 2 * 4 * 8 * 4
  assert cap.slots == cap.tokens // SPEC.max_len < 16
  fp8 = serving.kv_capacity_from_facts(dict(vals, kv_cache_dtype="fp8"), f)
  assert fp8.bytes_per_token * 4 == cap.bytes_per_token and fp8.slots > cap.slots


def test_slo_verdict_at_the_stated_percentile():
  spec = ServingSpec(input_lens=(8,), output_lens=(4,), ttft_slo_ms=100.0, tpot_slo_ms=10.0, slo_percentile=50)
  ok = {"ttft_ms_p50": 90.0, "tpot_ms_p50": 9.0, "ttft_ms_p90": 500.0, "tpot_ms_p90": 50.0}
  assert serving.slo_verdict(spec, ok) is None  # p90 misses do not count at p50
  miss = serving.slo_verdict(spec, dict(ok, tpot_ms_p50=12.5))
  assert miss and "TPOT p50 12.5 ms > SLO 10 ms" in miss
  assert serving.slo_verdict(ServingSpec(input_lens=(8,), output_lens=(4,)), {}) is None


def _reference_tokens(params, prompt, n):
  """Greedy continuation by the un-cached decoder: the whole sequence each
  step, padded to one length (causal: padding never changes earlier logits)."""
  dec = Decoder(MODEL, dtype=jnp.float32)
  length = SPEC.max_len
  apply = jax.jit(lambda p, t: dec.apply({"params": p}, t))
  seq, out = list(prompt), []
  for _ in range(n):
    logits = apply(params, jnp.asarray([seq + [0] * (length - len(seq))], jnp.int32))
    out.append(int(jnp.argmax(logits[0, len(seq) - 1])))
    seq.append(out[-1])
  return out


@pytest.mark.parametrize("values", [
    dict(BASE, tensor_parallel_size=2, data_parallel_size=2, max_num_seqs=2, chunked_prefill_size=4),
    dict(BASE, tensor_parallel_size=1, data_parallel_size=1, max_num_seqs=2, chunked_prefill_size=0),
    dict(BASE, tensor_parallel_size=2, data_parallel_size=3, disaggregated=True, prefill_workers=2,
         max_num_seqs=4, chunked_prefill_size=0),
], ids=["tp2_dp2_chunked", "one_device", "disaggregated_2p1d"])
def test_cached_decode_matches_the_uncached_forward(values):
  setup = build_serve_setup(WORKLOAD, CLUSTER, values, jax.devices()[:8])
  programs, fig = compile_figures(setup)
  assert fig["peak_mem_bytes"] > fig["kv_cache_bytes"] > 0
  params = setup.init_params(0)
  engine = Engine(setup, programs, params, num_requests=6, keep_tokens=True)
  run = engine.run()
  # Continuous batching reused slots (6 requests, fewer slots) and every request finished.
  assert run["passes"]["decode"] > max(o for _, o in engine.shapes) - 1
  assert np.isfinite(run["ttft_s"]).all() and (run["ttft_s"] > 0).all()
  for i, prompt in enumerate(engine.prompts):
    want = _reference_tokens(params, [int(t) for t in prompt], engine.shapes[i][1])
    assert run["tokens"][i] == want, f"request {i} ({values})"


def test_compile_counts_the_kv_cache_and_screens_memory():
  devs = jax.devices()[:8]
  small, big = (dict(BASE, tensor_parallel_size=1, data_parallel_size=8, max_num_seqs=16, chunked_prefill_size=0,
                     kv_cache_memory_fraction=f) for f in (0.005, 0.05))
  m_small = measure("compile", WORKLOAD, CLUSTER, small, devs, {})
  m_big = measure("compile", WORKLOAD, CLUSTER, big, devs, {})
  assert m_small.feasible and m_big.feasible
  grew = m_big.peak_mem_bytes - m_small.peak_mem_bytes
  cache_grew = m_big.extra["kv_cache_bytes"] - m_small.extra["kv_cache_bytes"]
  assert cache_grew > 0 and grew >= cache_grew
  # 256 KiB a device: the KV cache still holds a request, the fp32 weights (~420 KiB) do not fit.
  tight = LocalCluster(num_devices=8, memory_bytes_per_device=2**18)
  oom = measure("compile", WORKLOAD, tight, dict(small, kv_cache_memory_fraction=0.1), devs, {})
  assert not oom.feasible and oom.failure_kind == "oom" and "KV cache included" in oom.error


def test_an_slo_miss_is_measured_and_infeasible():
  devs = jax.devices()[:8]
  vals = dict(BASE, tensor_parallel_size=2, data_parallel_size=4, max_num_seqs=2, chunked_prefill_size=0)
  strict = Workload("tiny_serve", MODEL, global_batch=6, task="serve", precision="fp32",
                    serving=ServingSpec(SPEC.input_lens, SPEC.output_lens, tpot_slo_ms=1e-3))
  m = measure("profile", strict, CLUSTER, vals, devs, {})
  assert not m.feasible and m.failure_kind == "slo" and "TPOT p90" in m.error
  assert m.tokens_per_s is None  # infeasible: no objective
  assert m.extra["tokens_per_s_per_device"] > 0 and m.extra["tpot_ms_p90"] > 1e-3  # kept for the report
  lax = Workload("tiny_serve", MODEL, global_batch=6, task="serve", precision="fp32",
                 serving=ServingSpec(SPEC.input_lens, SPEC.output_lens, tpot_slo_ms=1e6, ttft_slo_ms=1e6))
  ok = measure("profile", lax, CLUSTER, vals, devs, {})
  assert ok.feasible and ok.tokens_per_s == pytest.approx(ok.extra["throughput_tok_s"] / 8)


def test_artifact_is_a_vllm_flag_set():
  sp = serving.space(WORKLOAD, CLUSTER)
  cand = sp.make(dict(BASE, tensor_parallel_size=2, data_parallel_size=4, max_num_seqs=4, chunked_prefill_size=32))
  art = launch_artifact(sp, cand, WORKLOAD, CLUSTER)
  flags = art["flags"]
  assert flags[flags.index("--tensor-parallel-size") + 1] == "2"
  assert flags[flags.index("--data-parallel-size") + 1] == "4"
  assert flags[flags.index("--max-num-batched-tokens") + 1] == "32"
  dis = launch_artifact(sp, cand.replace(disaggregated=True, prefill_workers=1), WORKLOAD, CLUSTER)
  assert dis["roles"]["prefill"]["instances"] == 1 and dis["roles"]["decode"]["instances"] == 3


@pytest.mark.slow
def test_tiny_serving_search_end_to_end(tmp_path):
  workdir = str(tmp_path / "run")
  cmd = [sys.executable, "-m", "autoscout_jax.run", "--gin_file=experiments/serve_quickstart/tiny.gin",
         "--gin_bindings=TTFT_SLO_MS = 1e6", "--gin_bindings=TPOT_SLO_MS = 1e6", f"--workdir={workdir}"]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  with open(os.path.join(workdir, "measurements.jsonl")) as f:
    rows = [json.loads(l) for l in f]
  served = [r for r in rows if r["fidelity"] == "profile" and r["metrics"]["feasible"]]
  assert len(served) >= 2
  for r in served:
    e = r["metrics"]["extra"]
    assert e["ttft_ms_p90"] > 0 and e["tpot_ms_p90"] > 0 and e["devices_used"] == 8
  with open(os.path.join(workdir, "report.md")) as f:
    md = f.read()
  assert "## Serving: latency against the SLOs" in md and "Throughput-latency frontier" in md
  assert "vllm serve" in md
  with open(os.path.join(workdir, "report.json")) as f:
    rep = json.load(f)
  assert rep["serving"]["best"]["tpot_ms"] <= 1e6 and rep["serving"]["frontier"]


def test_frontier_keeps_only_unbeaten_points():
  from autoscout_jax.report_serving import frontier
  row = lambda t, p, ok=True: {"tokens_per_s_per_device": t, "tpot_ms": p, "feasible": ok}
  rows = [row(100, 10), row(200, 30), row(150, 40), row(90, 5), row(250, 80, ok=False), row(None, 1)]
  front = frontier(rows)
  assert [(r["tokens_per_s_per_device"], r["tpot_ms"]) for r in front] == [(90, 5), (100, 10), (200, 30), (250, 80)]


def test_plan_is_the_serving_models_plan():
  from autoscout_jax.sim.serving_plan import ServingPlan
  sp = serving.space(WORKLOAD, CLUSTER)
  agg = serving.plan(sp, sp.make(dict(BASE, tensor_parallel_size=2, data_parallel_size=4, max_num_seqs=8,
                                      chunked_prefill_size=32, kv_cache_dtype="fp8")))
  assert isinstance(agg, ServingPlan) and not agg.disaggregated and agg.devices == 8
  assert (agg.layout.tp, agg.layout.batch, agg.replicas, agg.kv_dtype, agg.chunk_tokens) == (2, 8, 4, "fp8", 32)
  dis = serving.plan(sp, sp.make(dict(BASE, tensor_parallel_size=2, data_parallel_size=4, disaggregated=True,
                                      prefill_workers=1, max_num_seqs=8, chunked_prefill_size=0)))
  assert dis.disaggregated and (dis.replicas, dis.decode_replicas, dis.devices) == (1, 3, 8)
