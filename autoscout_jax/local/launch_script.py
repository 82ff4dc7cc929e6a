"""launch.py for a local-space recommendation: the profiled layout, runnable.

Where it sits: the local family's launch artifact writes `script(...)` into
the workdir as `launch.py`. The script holds the workload, the device set
and the candidate's values as data, and runs them with the code the
profiler ran: `local.xla_flags.child_env` sets the environment the
profiling child had (XLA flags of the flag knobs, device count, platform),
`local.train_step.build_train_setup` builds the mesh, the shardings and
the jitted step. It prints the layout (`layout`, the same description the
profiler records in each measurement's `extra['layout']`) and then times
`--steps` steps on synthetic tokens.
"""

from __future__ import annotations

import dataclasses
import pprint
from typing import Any, Mapping


def layout(setup: Any) -> dict[str, Any]:
  """Mesh axis sizes and every parameter's PartitionSpec, as plain JSON."""
  import jax
  leaves = jax.tree_util.tree_flatten_with_path(setup.param_shardings)[0]
  return {"mesh": {str(k): int(v) for k, v in setup.mesh.shape.items()},
          "params": {jax.tree_util.keystr(path): str(s.spec) for path, s in leaves}}


_TEMPLATE = '''#!/usr/bin/env python3
"""Runs the configuration autoscout_jax recommended for {workload} on
{num_devices} {platform} device(s): {summary}.

Written by autoscout_jax beside report.html. The mesh, the shardings and
the train step come from autoscout_jax's own train step, the code its
profiler timed; the environment (XLA flags, device count) is the one the
profiling child ran under.

  python launch.py --steps=3
"""

import argparse
import json
import os
import sys
import time

WORKLOAD = {workload_json}
PLATFORM = {platform!r}
NUM_DEVICES = {num_devices}
VALUES = {values_json}


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--steps", type=int, default=10, help="training steps to run")
  ap.add_argument("--seed", type=int, default=0, help="parameter and synthetic-data seed")
  args = ap.parse_args()
  if args.steps < 1:
    sys.exit("launch.py: --steps must be at least 1")
  try:
    from autoscout_jax.local.xla_flags import child_env
  except ImportError:
    sys.exit("launch.py: autoscout_jax is not importable; pip install -e <its checkout> first")
  os.environ.update(child_env(PLATFORM, NUM_DEVICES, VALUES))  # before JAX starts
  import jax
  from autoscout_jax.local.launch_script import layout, workload_from_json
  from autoscout_jax.local.train_step import build_train_setup

  workload = workload_from_json(WORKLOAD)
  devices = jax.devices()[:NUM_DEVICES]
  if len(devices) < NUM_DEVICES:
    sys.exit(f"launch.py: needs {{NUM_DEVICES}} devices, JAX sees {{len(jax.devices())}}")
  setup = build_train_setup(workload, VALUES, devices)
  lay = layout(setup)
  print("mesh", lay["mesh"], "on", devices[0].platform, flush=True)
  params, opt_state = setup.init(args.seed)
  tokens = setup.batch(args.seed)
  losses, times = [], []
  for i in range(args.steps):
    t0 = time.perf_counter()
    params, opt_state, loss = setup.step(params, opt_state, tokens)
    jax.block_until_ready((params, opt_state, loss))
    times.append(time.perf_counter() - t0)
    losses.append(float(loss))
    print(f"step {{i}}: loss {{losses[-1]:.4f}}, {{times[-1]:.3f}} s", flush=True)
  tokens_per_step = setup.useful_tokens  # trained tokens (a fine-tuning batch's padding excluded)
  steady = sorted(times[1:] or times)[len(times[1:] or times) // 2]
  print(f"{{tokens_per_step / steady:,.1f}} tokens/s (median step after the first: {{steady:.4f}} s)")
  print(json.dumps({{"layout": lay, "losses": losses, "step_times_s": times}}))


if __name__ == "__main__":
  main()
'''


def workload_from_json(d: Mapping[str, Any]):
  from autoscout_jax.workload import ModelConfig, Workload
  w = dict(d)
  w["model"] = ModelConfig(**w["model"])
  w["default"] = tuple((k, v) for k, v in w.get("default", ()))
  return Workload(**w)


def script(workload, platform: str, num_devices: int, values: Mapping[str, Any], summary: str = "") -> str:
  """The text of launch.py (the data as Python literals)."""
  w = dataclasses.asdict(workload)
  w["default"] = [list(kv) for kv in w.get("default", ())]
  as_py = lambda obj: pprint.pformat(obj, indent=1, width=100, sort_dicts=True)
  return _TEMPLATE.format(workload=workload.name, platform=platform, num_devices=int(num_devices),
                          summary=summary or "see report.md", workload_json=as_py(w),
                          values_json=as_py(dict(values)))
