"""The MaxText side of autoscout_jax: code that runs inside MaxText's
Python (3.12, `pip install "maxtext[tpu]"`), in child processes the search
(Python 3.11) starts.

Where it sits: imports nothing else of autoscout_jax (whose dependencies pin an
older JAX; the package's __init__ loads its exports lazily, so importing this
subpackage loads none of them); the parent (autoscout_jax/maxtext_env.py) starts
`python -m autoscout_jax.maxtext_child.<module>` with the repository root on
PYTHONPATH and the chosen interpreter. Modules import only the standard
library at import time; MaxText and JAX are imported inside functions,
after the parent's environment (XLA_FLAGS, JAX_PLATFORMS) is in place.

- config.py: an overrides dict -> MaxText's config (its own validation) and
  MaxText's device mesh;
- protocol.py: the JSON-lines protocol of autoscout_jax/local/runner.py;
- child.py: `validate` and `compile` (F2: MaxText's train step compiled for
  this machine's devices or ahead of time for a TPU topology);
- steps.py: F3, MaxText's train step compiled, warmed up and timed in blocks
  of steps with block_until_ready (failures as data);
- profile_child.py: the F3 child, a long-lived worker over a batch;
- multiproc.py: N profile children joined by `jax.distributed` on
  localhost as N slices (DCN axes for real), started and torn down together;
- train.py: MaxText's own trainer for a launch of several processes mapped
  as slices (the report's launch.sh), with JAX's process-as-granule mesh
  fallback.
"""
