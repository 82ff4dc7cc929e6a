"""The simulators' calibrated constants: what F0 and F1 use by default.

Where it sits: sim/analytic.py and sim/event.py import `CALIBRATED` from
here (one way); sim/calibration.py, the tool on top that fits these values
on published runs, imports it as its starting point and never the other
way round.
"""

from __future__ import annotations

from autoscout_jax.sim.costs import SimConstants

# Fitted on shared/calibration/published_points.csv (see sim/calibration.py);
# the lower bound of attn_eff is active (the data would push flash attention
# slower still).
CALIBRATED = SimConstants(gemm_eff=0.7943, gemm_knee=190.1, attn_eff=0.35, comm_eff=0.6613, fp8_eff=0.646,
                          moe_eff=0.383, launch_s=3.323e-4, tput_spread=0.1405)
