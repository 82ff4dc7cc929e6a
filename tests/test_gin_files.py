"""Every .gin file in the repo parses (imports resolve, bound parameters exist)."""

import glob
import os

import gin
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIN_FILES = sorted(glob.glob(os.path.join(ROOT, "gin", "**", "*.gin"), recursive=True) +
                   glob.glob(os.path.join(ROOT, "experiments", "**", "*.gin"), recursive=True))


def test_there_are_gin_files():
  assert len(GIN_FILES) >= 5


@pytest.mark.parametrize("path", GIN_FILES, ids=[os.path.relpath(p, ROOT) for p in GIN_FILES])
def test_gin_file_parses(path):
  gin.clear_config()
  gin.add_config_file_search_path(ROOT)
  try:
    gin.parse_config_file(path)
  finally:
    gin.clear_config()


def test_unknown_binding_is_rejected():
  gin.clear_config()
  with pytest.raises(Exception, match="no_such_parameter"):
    gin.parse_config("from __gin__ import dynamic_registration\n"
                     "from autoscout_jax import experiment\n"
                     "experiment.run_experiment.no_such_parameter = 1\n")
  gin.clear_config()
