"""Every peer designer is seed-reproducible: the same problem and seed give
the same suggestions in a fresh process, whatever Python's string-hash seed
(SMAC 2.4 ordered its local-search start points by a `set` of
configurations, so each process proposed differently)."""

import json
import os
import subprocess
import sys

import pytest

from autoscout_jax.bench import peers

PEER_NAMES = ("random", "cheap_topk", "optuna_tpe", "optuna_tpe_warm", "optuna_gp", "smac")

# Drives each available peer on the conditional space of test_bench_designers
# (with a biased cheap fidelity beside the profile) and prints what it asked.
DRIVER = r"""
import json, math, sys
sys.path.insert(0, sys.argv[1])
from test_bench_designers import conditional_space, outcome
from autoscout_jax.bench import peers
from autoscout_jax.measurement import Measurement, Metrics
from autoscout_jax.problem import Problem
from autoscout_jax.workload import LocalCluster, ModelConfig, Workload

def cheap(c):  # F0-like: right about the mesh, wrong about micro-batches and memory
  if c["tp"] == 1 and c["mbs"] == 4:
    return Metrics.failed("oom", "predicted out of memory")
  t = 1.0 + 0.2 * math.log2(c["pp"]) + 0.1 * math.log2(c["tp"]) + 0.05 * c["mbs"]
  return Metrics(True, step_time_s=t, tokens_per_s=1000 / t)

space = conditional_space()
problem = Problem(Workload("w", ModelConfig("m", 2, 64, 4, 256, 256, 32), 16), LocalCluster(), space,
                  ("analytic", "profile"), default=space.make(dp=8))
out = {}
for name in sys.argv[2].split(","):
  d = peers.make_designer(name, problem, seed=3)
  asked = []
  for _ in range(14):
    cands = d.suggest(2)
    if not cands:
      break
    ms = []
    for c in cands:
      fid = c.fidelity or "profile"
      asked.append([fid, sorted(c.values.items())])
      ms.append(Measurement(c, fid, (cheap if fid == "analytic" else outcome)(c), 1.0))
    d.update(ms)
  getattr(d, "close", lambda: None)()
  out[name] = asked
print(json.dumps(out))
"""


def _run(names, hash_seed):
  env = dict(os.environ, PYTHONHASHSEED=str(hash_seed))
  here = os.path.dirname(os.path.abspath(__file__))
  proc = subprocess.run([sys.executable, "-c", DRIVER, here, ",".join(names)], env=env, capture_output=True,
                        text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def test_same_seed_same_suggestions_across_processes():
  names = [n for n in PEER_NAMES if not peers.missing_requirements(n)]
  if "smac" not in names:
    pytest.skip("the bench extra is not installed: pip install -e '.[bench]'")
  first, second = _run(names, 1), _run(names, 2)
  for n in names:
    profiled = [a for a in first[n] if a[0] == "profile"]
    assert len(profiled) >= 6, (n, len(profiled))  # it got past its initial design
    assert first[n] == second[n], f"{n}: the same seed proposed differently in two processes"
