"""Parts of the compile-at-scale evaluator that need no TPU compiler: the
flash-style attention, the sharding rules, the step on CPU devices, the HLO
collective counter and the flop extrapolation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autoscout_jax.compile import analysis
from autoscout_jax.compile.flash import flash_attention, reference_attention
from autoscout_jax.compile.model import mesh_spec
from autoscout_jax.compile.step import LayoutError, build_program
from autoscout_jax.workload import ModelConfig, Workload


def test_flash_attention_matches_the_naive_formula_and_its_gradient():
  kq, kk, kv = jax.random.split(jax.random.key(0), 3)
  q = jax.random.normal(kq, (2, 64, 2, 3, 8))
  k = jax.random.normal(kk, (2, 64, 2, 8))
  v = jax.random.normal(kv, (2, 64, 2, 8))
  np.testing.assert_allclose(flash_attention(q, k, v, block=16), reference_attention(q, k, v),
                             rtol=2e-5, atol=2e-5)
  loss = lambda f: lambda q, k, v: jnp.sum(jnp.sin(f(q, k, v)))
  got = jax.grad(loss(lambda q, k, v: flash_attention(q, k, v, block=16)), argnums=(0, 1, 2))(q, k, v)
  want = jax.grad(loss(reference_attention), argnums=(0, 1, 2))(q, k, v)
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


def test_mesh_spec_leaves_out_axes_that_do_not_divide():
  mesh = {"fsdp": 4, "sequence": 2, "tensor": 8, "expert": 1}
  assert mesh_spec(("vocab", "embed"), (32000, 4096), mesh) == jax.sharding.PartitionSpec(
      "tensor", ("fsdp", "sequence"))
  # 2880 = 2^6 * 45: fsdp 4 divides it, then sequence 2 too; tensor 8 does not divide 12 heads
  assert mesh_spec(("embed", "heads", None), (2880, 12, 64), mesh) == jax.sharding.PartitionSpec(
      ("fsdp", "sequence"), None, None)
  # the residual stream's width follows MaxText's activation_embed rule: over 'tensor'
  assert mesh_spec(("batch", "seq", "act_embed"), (8, 1024, 4096), dict(mesh, data=2)) == (
      jax.sharding.PartitionSpec(("data", "fsdp"), "sequence", "tensor"))


TINY = ModelConfig("tiny", num_layers=2, hidden_size=64, num_heads=4, ffn_hidden_size=128, vocab_size=256,
                   seq_len=32, num_kv_heads=2, gated_mlp=True)
TINY_MOE = ModelConfig("tiny_moe", num_layers=3, hidden_size=64, num_heads=4, ffn_hidden_size=128,
                       vocab_size=256, seq_len=32, num_kv_heads=2, gated_mlp=True, num_experts=4,
                       moe_top_k=2, num_shared_experts=1, num_dense_layers=1)


@pytest.mark.slow
@pytest.mark.parametrize("model,values", [
    (TINY, dict(ici_data=2, ici_fsdp=2, ici_tensor=2, per_device_batch_size=1, remat_policy="minimal")),
    (TINY, dict(ici_fsdp=2, ici_sequence=2, ici_stage=2, per_device_batch_size=1, remat_policy="full")),
    (TINY_MOE, dict(ici_fsdp=2, ici_expert=2, ici_tensor=2, per_device_batch_size=2, remat_policy="none")),
])
def test_every_mesh_axis_runs_on_cpu_devices(model, values):
  """Lower + compile + one step on 8 CPU devices: the loss is finite and
  near log(vocab) (random init)."""
  w = Workload("w", model, global_batch=8)
  prog = build_program(w, values, jax.devices()[:8])
  params, opt, tokens = prog.args
  init = lambda a: jax.device_put(0.02 * jax.random.normal(jax.random.key(1), a.shape, a.dtype), a.sharding)
  params = jax.tree.map(init, params)
  opt = jax.tree.map(lambda a: jax.device_put(jnp.zeros(a.shape, a.dtype), a.sharding), opt)
  toks = jax.device_put(jax.random.randint(jax.random.key(2), tokens.shape, 0, model.vocab_size), tokens.sharding)
  _, _, loss = prog.step(params, opt, toks)
  assert abs(float(loss) - np.log(model.vocab_size)) < 0.5


def test_layout_errors_name_the_problem():
  w = Workload("w", TINY, global_batch=8)
  with pytest.raises(LayoutError, match="kv heads"):
    build_program(w, dict(ici_tensor=4, ici_data=2), jax.devices()[:8])
  with pytest.raises(LayoutError, match="micro-batches cannot fill"):
    build_program(w, dict(ici_stage=2, ici_data=4, per_device_batch_size=2), jax.devices()[:8])


HLO = """HloModule m

%cond (p: (s32[], f32[8])) -> pred[] {
  %p = (s32[], f32[8]) parameter(0)
  %i = s32[] get-tuple-element(%p), index=0
  %n = s32[] constant(12)
  ROOT %lt = pred[] compare(%i, %n), direction=LT
}

%body (p: (s32[], f32[8])) -> (s32[], f32[8]) {
  %p = (s32[], f32[8]) parameter(0)
  %x = f32[8]{0} get-tuple-element(%p), index=1
  %ag = bf16[4,1024]{1,0} all-gather(%x), dimensions={0}
  %ar = f32[8]{0} all-reduce(%x), to_apply=%add
  ROOT %t = (s32[], f32[8]) tuple(%i, %ar)
}

ENTRY %main (a: f32[8]) -> f32[8] {
  %a = f32[8]{0} parameter(0)
  %w = (s32[], f32[8]) while(%t0), condition=%cond, body=%body
  %rs = (f32[2]{0}, f32[2]{0}) reduce-scatter(%a, %a), dimensions={0}
  ROOT %r = f32[8]{0} get-tuple-element(%w), index=1
}
"""


def test_collectives_are_counted_per_loop_iteration():
  c = analysis.collectives(HLO)
  assert c["all-gather"] == {"count": 12.0, "bytes": 12 * 4 * 1024 * 2, "static_count": 1}
  assert c["all-reduce"]["count"] == 12.0 and c["all-reduce"]["bytes"] == 12 * 32
  assert c["reduce-scatter"] == {"count": 1.0, "bytes": 16.0, "static_count": 1}


def test_flops_extrapolate_linearly_in_layers():
  # base: 1 dense + 1 moe layer = 100; +1 dense = 130; +1 moe = 150
  assert analysis.extrapolate_flops(100.0, {"dense": (130.0, 3), "moe": (150.0, 10)},
                                    {"dense": 1, "moe": 1}) == 100 + 2 * 30 + 9 * 50


def test_compile_report_samples_evenly_and_summarizes():
  from autoscout_jax.tools import compile_report as cr
  w, c = cr.TARGETS[0].build()
  from autoscout_jax.targets.jax_mesh import space as jax_mesh_training_space
  space = jax_mesh_training_space(w, c)
  default = space.make(w.default_values)
  picked = cr.sample(space, default, 7, seed=0)
  assert picked[0] == default and len(set(picked)) == 7 and all(space.is_valid(p) for p in picked)
  assert {p.values["remat_policy"] for p in picked[1:]} == {"none", "minimal", "full"}
  rows = [dict(feasible=True, failure_kind=None, xla_peak_bytes=100.0, f0_peak_bytes=80.0, compile_s=10.0,
               compile_cpu_s=9.0, cache_hit=False, f0_feasible=True),
          dict(feasible=True, failure_kind=None, xla_peak_bytes=200.0, f0_peak_bytes=220.0, compile_s=30.0,
               compile_cpu_s=20.0, cache_hit=False, f0_feasible=True),
          dict(feasible=False, failure_kind="oom", xla_peak_bytes=300.0, f0_peak_bytes=90.0, compile_s=5.0,
               compile_cpu_s=5.0, cache_hit=False, f0_feasible=True)]
  s = cr.summarize(rows)
  assert (s["candidates_compiled"], s["oom_count"], s["compile_s_median"]) == (3, 1, 10.0)
  assert s["f0_memory_mape"] == pytest.approx((0.2 + 0.1) / 2)
  assert s["f0_memory_mape_with_ooms"] == pytest.approx((0.2 + 0.1 + 0.7) / 3)
  assert s["f0_says_fits_xla_oom"] == 1


def test_report_shows_xla_memory_beside_f0_and_cost_units():
  from autoscout_jax import report as report_lib
  from autoscout_jax.measurement import Measurement, Metrics
  from autoscout_jax.search import SearchResult
  from autoscout_jax.targets.jax_mesh import space as jax_mesh_training_space
  from autoscout_jax.tools import compile_report as cr
  workload, cluster = cr.TARGETS[0].build()
  space = jax_mesh_training_space(workload, cluster)
  cand = space.make(workload.default_values)
  f0 = Measurement(cand, "analytic", Metrics(True, step_time_s=2.0, tokens_per_s=10.0, peak_mem_bytes=16 * 2**30),
                   1.0)
  xla = Measurement(cand, "compile", Metrics(True, step_time_s=2.1, tokens_per_s=9.5, peak_mem_bytes=18 * 2**30,
                                             extra={"argument_bytes": 2**30, "temp_bytes": 17 * 2**30,
                                                    "usable_bytes": 95 * 2**30}),
                    300.0, provenance={"cost_unit": "host_s"})
  result = SearchResult(xla, None, "compile", 301.0, [], [f0, xla], [], "max_rounds")
  rep = report_lib.build_report(workload, cluster, space, result, "wd")
  assert rep["best_memory"]["compile"]["peak_mem_bytes"] == 18 * 2**30
  assert rep["best_memory"]["analytic"]["peak_mem_bytes"] == 16 * 2**30
  md = report_lib.render_markdown(rep)
  assert "| compile | 18.00 | 1.00 | 17.00 |" in md and "| analytic | 16.00 |" in md
  assert "compile 300.0 host-s" in md and "added 1:1" in md
