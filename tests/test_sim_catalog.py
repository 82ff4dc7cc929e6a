"""Hardware and model catalogs of the simulators: numbers, lookups, recipes,
and the errors bad input gets."""

import math

import pytest

from autoscout_jax.sim import catalog, hardware
from autoscout_jax.targets import jax_mesh, megatron
from autoscout_jax.workload import ModelConfig


def test_parameter_counts_match_published_sizes():
  count = lambda n: catalog.param_count(catalog.find_model(n)[0]) / 1e9
  assert count("gpt3_175b") == pytest.approx(174.6, abs=0.1)
  assert count("llama3_70b") == pytest.approx(70.6, abs=0.1)
  assert count("llama3_8b") == pytest.approx(8.03, abs=0.05)
  assert count("llama2_7b") == pytest.approx(6.74, abs=0.05)
  assert count("mixtral_8x7b") == pytest.approx(46.7, abs=0.2)
  assert count("qwen3_30b_a3b") == pytest.approx(30.5, abs=0.2)
  assert count("deepseek_v3") == pytest.approx(671, rel=0.02)
  assert count("mpt_7b") == pytest.approx(6.7, abs=0.1)
  assert count("mpt_30b") == pytest.approx(30.0, abs=0.2)
  assert count("mistral_7b") == pytest.approx(7.24, abs=0.05)
  assert count("gpt_neox_20b") == pytest.approx(20.6, abs=0.2)
  assert count("qwen2.5_72b") == pytest.approx(72.7, abs=0.2)
  assert count("kimi_k2") == pytest.approx(1040, rel=0.02)  # latent attention approximated
  # released configs: Qwen3 dense, GPT-OSS-20B, Nemotron-4 15B, Llama 4 Scout (text: 109B with vision)
  assert count("Qwen3-8B") == pytest.approx(8.19, abs=0.02)
  assert count("qwen3_14b") == pytest.approx(14.77, abs=0.03)
  assert count("Qwen3-32B") == pytest.approx(32.76, abs=0.05)
  assert count("gpt-oss-20b") == pytest.approx(20.91, abs=0.05)
  assert count("Nemotron-4-15B") == pytest.approx(15.6, abs=0.1)
  assert count("Llama-4-Scout-17B-16E") == pytest.approx(109, rel=0.02)
  assert count("LLAMA4_E128") == pytest.approx(400, rel=0.01)  # Maverick: MoE on every other layer
  assert catalog.find_model("llama4_maverick")[0].layer_counts()["moe"] == 24


@pytest.mark.parametrize("name,published,h", [
    ("mpt_125m", 125311488, 768), ("mpt_350m", 355985408, 1024), ("mpt_760m", 760470528, 1536),
    ("mpt_1b", 1315950592, 2048), ("mpt_3b", 2651837440, 2560), ("mpt_13b", 12853954560, 5120),
    ("mpt_70b", 64862437376, 8192)])
def test_mpt_family_matches_llm_foundry_parameter_counts(name, published, h):
  # LLM Foundry's benchmark tables count a learned position embedding of
  # 2048 x d_model besides the weights the catalog models
  assert catalog.param_count(catalog.find_model(name)[0]) == pytest.approx(published - 2048 * h, rel=2e-3)


def test_gqa_has_fewer_attention_parameters_than_mha():
  gqa, _ = catalog.find_model("llama3_70b")
  mha = ModelConfig(**{**gqa.__dict__, "num_kv_heads": None})
  assert catalog.param_count(mha) - catalog.param_count(gqa) == 80 * 2 * 8192 * (8192 - 1024)


@pytest.mark.parametrize("name,expected", [
    ("LLAMA3.1_405B", "llama3_405b"), ("GPT-3 175B (174.6B)", "gpt3_175b"), ("Qwen3_30B_a3B", "qwen3_30b_a3b"),
    ("LLAMA2-70B", "llama2_70b"), ("DeepSeekV3", "deepseek_v3"), ("GPT OSS 120B", "gpt_oss_120b"),
    ("Llama 3.1 8B", "llama3_8b"), ("Meta-Llama-3.1-70B", "llama3_70b"), ("MPT-7B", "mpt_7b"),
    ("mpt-30b", "mpt_30b"), ("Mistral 7B", "mistral_7b"), ("GPT-NeoX-20B", "gpt_neox_20b"),
    ("OPT-175B", "gpt3_175b"), ("Nemotron-4 340B", "nemotron_340b"), ("Qwen2.5-72B", "qwen2.5_72b"),
    ("MPT-125M", "mpt_125m"), ("mpt-760m", "mpt_760m"), ("MPT 70B", "mpt_70b"), ("Kimi_K2", "kimi_k2")])
def test_published_model_names_resolve(name, expected):
  assert catalog.find_model(name)[0].name == expected


def test_unknown_model_names_the_known_ones():
  with pytest.raises(ValueError, match=r"unknown model 'gpt-5'.*llama3_70b"):
    catalog.find_model("gpt-5")


@pytest.mark.parametrize("name,system", [
    ("A100-SXM4-80GB (Selene DGX A100)", "dgx_a100_80gb"), ("H100 80GB (DGX-H100)", "dgx_h100"),
    ("H100 80GB (GCP A3, 8 GPUs/VM)", "gcp_a3_h100"), ("B200 (DGX-B200)", "dgx_b200"),
    ("TPU v5p (2x v5p-128)", "tpu_v5p"), ("TPU v5e (4x v5e-256)", "tpu_v5e"), ("TPU v4 (2x v4-384)", "tpu_v4")])
def test_hardware_names_of_the_published_table_resolve(name, system):
  assert hardware.system_for_hardware_name(name).name == system


def test_unknown_hardware_lists_known_names():
  with pytest.raises(ValueError, match=r"unknown hardware name 'MI300X'.*selene"):
    hardware.system_for_hardware_name("MI300X")


def test_tpu_slice_names_count_chips():
  assert hardware.tpu_chips_from_name("v5p-128") == 64
  assert hardware.tpu_chips_from_name("v4-384") == 192
  assert hardware.tpu_chips_from_name("v5e-256") == 256


def test_inter_node_bandwidth_is_a_property_of_the_cluster():
  selene = hardware.make_cluster("dgx_a100_80gb", 64)
  dgx_h100 = hardware.make_cluster("dgx_h100", 64)
  slow = hardware.make_cluster("dgx_h100", 64, inter_bw=5e9)
  assert selene.inter.bw < dgx_h100.inter.bw
  assert slow.inter.bw == 5e9 and slow.key != dgx_h100.key
  assert hardware.cluster_scalars(slow)["inter_bw"] == 5e9


def test_cluster_geometry():
  c = hardware.make_cluster("tpu_v5p", 128, devices_per_node=64)
  assert (c.num_nodes, c.node_size, c.platform) == (2, 64, "tpu")
  assert c.torus == (4, 4, 4)  # v5p slices are 3-D tori
  assert hardware.make_cluster("tpu_v5e", 256).torus == (16, 16)
  with pytest.raises(ValueError, match=r"torus \(4, 4, 2\) does not hold the 64 chips"):
    hardware.make_cluster("tpu_v5p", 64, torus=(4, 4, 2))
  assert hardware.make_cluster("gb200_nvl72", 144).node_size == 72


@pytest.mark.parametrize("build,message", [
    (lambda: hardware.DeviceSpec("bad", -1.0, None, 1e9, 1e9, "gpu"), "peak_bf16 must be positive"),
    (lambda: hardware.DeviceSpec("bad", 1e12, None, 1e9, 1e9, "fpga"), "platform must be gpu, tpu or cpu"),
    (lambda: hardware.Link("bad", 0.0, 1e-6), "bandwidth must be positive"),
    (lambda: hardware.make_cluster("dgx_z100", 8), "unknown system 'dgx_z100'"),
    (lambda: hardware.make_cluster("dgx_h100", 12), "not a whole number of 8-device nodes"),
    (lambda: hardware.make_cluster("dgx_h100", 0), "num_devices must be a positive integer"),
    (lambda: catalog.make_workload("llama3_70b", 12), "does not divide 12 devices"),
    (lambda: catalog.make_workload("llama3_8b", 8, precision="int3"), "precision must be"),
    (lambda: ModelConfig("m", 4, 64, 4, 256, 100, 128, num_kv_heads=3), "num_kv_heads 3 must divide"),
    (lambda: ModelConfig("m", 4, 64, 4, 256, 100, 128, kv_channels=0), "kv_channels must be a positive"),
])
def test_bad_input_gets_one_clear_message(build, message):
  with pytest.raises(ValueError, match=message):
    build()


def _first_valid_default(name):
  """The recipe on the smallest data-parallel degree (>= 2) where its
  micro-batch arithmetic works out, as in the published runs."""
  model, recipe = catalog.find_model(name)
  for dp in range(max(2, math.ceil(recipe.ep / (recipe.tp * recipe.cp))), 65):
    n = recipe.tp * recipe.pp * recipe.cp * dp
    if n > 8 and n % 8:
      continue
    wl = catalog.make_workload(name, n)
    space = megatron.space(wl, hardware.make_cluster("dgx_h100", n))
    cand = space.make(wl.default_values)
    if not space.validate(cand):
      return model, recipe, cand
  raise AssertionError(f"{name}: recipe invalid for every dp up to 64: {space.validate(cand)}")


@pytest.mark.parametrize("name", catalog.MODELS)
def test_every_recipe_is_a_valid_megatron_default(name):
  model, recipe, cand = _first_valid_default(name)
  assert cand["tensor_model_parallel_size"] == recipe.tp
  assert cand["pipeline_model_parallel_size"] == recipe.pp
  assert ("expert_model_parallel_size" in cand) == model.is_moe


def test_an_impossible_default_is_reported_by_constraint_name():
  wl = catalog.make_workload("gpt_310.1b", 16 * 8 * 2)  # 1080 micro-batches cannot interleave over 16 stages
  space = megatron.space(wl, hardware.make_cluster("dgx_h100", 256))
  names = [v.constraint for v in space.validate(space.make(wl.default_values))]
  assert names == ["micro_batches_fill_pipeline"]


@pytest.mark.parametrize("name", ["gpt_22b", "llama3_8b", "gpt3_175b"])
def test_recipes_map_onto_the_jax_mesh_space(name):
  wl = catalog.make_workload(name, 128, space="jax_mesh", devices_per_slice=64)
  cluster = hardware.make_cluster("tpu_v5p", 128, devices_per_node=64)
  space = jax_mesh.space(wl, cluster)
  cand = space.make(wl.default_values)
  assert space.validate(cand) == []
  assert (cand["ici_fsdp"], cand["dcn_data"]) == (64, 2)
