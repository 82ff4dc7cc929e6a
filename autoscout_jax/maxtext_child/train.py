"""MaxText's own trainer for a job of several processes mapped as slices:
`python -m autoscout_jax.maxtext_child.train key=value ...`.

Where it sits: the launch.sh a maxtext-family report writes for a local
cluster of several processes (targets/maxtext.launch_files) starts one of
these per process, with MaxText's own CPU variables for joining them
(JAX_COORDINATOR_ADDRESS, JOB_INDEX, JOB_COMPLETION_INDEX, PROCESSES_IN_JOB,
JAX_PROCESS_COUNT) and `skip_jax_distributed_system=false`, so MaxText's own
`maybe_initialize_jax_distributed_system` joins them. It runs in MaxText's
Python (3.12) and imports only the standard library at import time.

Why not `python -m maxtext.trainers.pre_train.train` itself: MaxText 0.2.5
builds a multi-slice mesh with `mesh_utils.create_hybrid_device_mesh(ici,
dcn, devices)`, which groups devices by `slice_index`; CPU devices report
slice 0 in every process, so with `num_slices=2` MaxText stops with "Number
of slices 1 must equal the product of dcn_mesh_shape" (measured: both
processes had joined). This module applies JAX's documented fallback for
devices without slice ids -- each process is one DCN granule
(`process_is_granule`), as the F3 child does (steps.py) -- and then hands
the same command line to MaxText's trainer, unchanged. On TPU slices the
devices carry their slice ids and the fallback does nothing.
"""

from __future__ import annotations

from autoscout_jax.maxtext_child import steps


def main() -> None:
  steps._slices_by_process()  # a no-op where devices carry slice ids
  from absl import app
  from maxtext.trainers.pre_train import train
  app.run(train.main)  # MaxText's own entry point, on this process's command line


if __name__ == "__main__":
  main()
