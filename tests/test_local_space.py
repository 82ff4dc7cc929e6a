"""The local space's fit check agrees with the real model's parameters."""

import jax
import pytest

from autoscout_jax.local.model import init_params
from autoscout_jax.targets.local import param_count
from autoscout_jax.targets.local import space as local_training_space
from autoscout_jax.space import SpaceError
from autoscout_jax.workload import LocalCluster, ModelConfig, Workload


@pytest.mark.parametrize("kv,gated,tied", [(None, False, False), (2, True, False), (4, False, True)])
def test_param_count_matches_flax_init(kv, gated, tied):
  m = ModelConfig("t", 2, 64, 4, 128, 256, 32, num_kv_heads=kv, gated_mlp=gated, tie_embeddings=tied)
  params = jax.eval_shape(lambda k: init_params(m, k), jax.random.PRNGKey(0))
  assert param_count(Workload("t", m, 16)) == sum(x.size for x in jax.tree.leaves(params))


def test_model_that_cannot_fit_is_refused_with_numbers():
  w = Workload("t", ModelConfig("t", 2, 64, 4, 128, 256, 32), 16)
  with pytest.raises(SpaceError, match=r"cannot fit.*197,248 bytes per device"):
    local_training_space(w, LocalCluster(num_devices=8, memory_bytes_per_device=10_000))
  assert local_training_space(w, LocalCluster(num_devices=8, memory_bytes_per_device=10**9)).enumerate()
