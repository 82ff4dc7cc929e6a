"""One compile per candidate per search: the local F2 and F3 children share
a persistent compilation cache, so F3 loads the programs F2 compiled for
the same candidate (real child processes on 8 virtual CPU devices)."""

import os

import pytest

from autoscout_jax.local import CompileEvaluator, ProfileEvaluator, xla_flags
from autoscout_jax.problem import Problem
from autoscout_jax.targets import serving
from autoscout_jax.workload import LocalCluster, ModelConfig, ServingSpec, Workload

MODEL = ModelConfig("tiny", num_layers=2, hidden_size=64, num_heads=8, num_kv_heads=4,
                    ffn_hidden_size=128, vocab_size=256, seq_len=32, gated_mlp=True)
WORKLOAD = Workload("tiny_serve", MODEL, global_batch=4, task="serve", precision="fp32",
                    serving=ServingSpec(input_lens=(11, 5), output_lens=(3, 4)))
CLUSTER = LocalCluster(num_devices=8, memory_bytes_per_device=2**22, platform="cpu")
# the serving engine's own programs (prefill, decode and route are lambdas, insert is _insert)
PROGRAMS = ("jit__lambda", "jit__insert")


def test_child_env_names_the_cache_and_keeps_the_users():
  env = xla_flags.child_env("cpu", 8, {}, base={}, compile_cache="/c")
  assert env["JAX_COMPILATION_CACHE_DIR"] == "/c" and env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] == "0"
  mine = xla_flags.child_env("cpu", 8, {}, base={"JAX_COMPILATION_CACHE_DIR": "/mine"}, compile_cache="/c")
  assert mine["JAX_COMPILATION_CACHE_DIR"] == "/mine"
  assert "JAX_COMPILATION_CACHE_DIR" not in xla_flags.child_env("cpu", 8, {}, base={})
  assert xla_flags.compile_cache_dir() == xla_flags.compile_cache_dir()  # one per search process


def test_profile_loads_what_compile_compiled(tmp_path, monkeypatch):
  monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
  monkeypatch.setattr(xla_flags, "_CACHE_DIR", [str(tmp_path)])
  space = serving.space(WORKLOAD, CLUSTER, max_num_seqs=(2,), kv_cache_memory_fractions=(0.1,),
                        chunked_prefill_sizes=(8,), disaggregation=False)
  cand = space.make(dict(tensor_parallel_size=2, data_parallel_size=4, max_num_seqs=2,
                         kv_cache_dtype="auto", kv_cache_memory_fraction=0.1, chunked_prefill_size=8))
  problem = Problem(WORKLOAD, CLUSTER, space, ("compile", "profile"))
  (f2,) = CompileEvaluator(timeout_s=240).evaluate(problem, [cand])
  assert f2.feasible, f2.metrics.error
  compiled = {n for n in os.listdir(tmp_path) if n.startswith(PROGRAMS)}
  assert len(compiled) == 4  # prefill, decode, route, insert
  stamps = {n: os.stat(tmp_path / n).st_mtime_ns for n in compiled}
  (f3,) = ProfileEvaluator(timeout_s=240).evaluate(problem, [cand])
  assert f3.feasible, f3.metrics.error
  # F3 wrote no program of its own (no new key, no entry rewritten): all four came from F2's
  assert {n for n in os.listdir(tmp_path) if n.startswith(PROGRAMS)} == compiled
  assert {n: os.stat(tmp_path / n).st_mtime_ns for n in compiled} == stamps
  # a new candidate does compile (the cache is keyed by the program)
  other = space.make(dict(cand.values, tensor_parallel_size=4, data_parallel_size=2))
  (f2b,) = CompileEvaluator(timeout_s=240).evaluate(problem, [other])
  assert f2b.feasible and len({n for n in os.listdir(tmp_path) if n.startswith(PROGRAMS)}) == 8
