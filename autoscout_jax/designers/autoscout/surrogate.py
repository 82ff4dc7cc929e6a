"""The designer's view of the learned surrogate: fit small, predict pools,
score them by expected gain.

Where it sits: `Observations.to_data` -> `FusedSurrogate.fit` (a small deep
ensemble from `surrogates`, all fidelities fused through its fidelity
index) -> `predict` on a whole candidate pool in one vectorized call ->
`expected_improvement` / `ucb` -> the designer's picks. dense.py
differentiates the same state; priority.py perturbs its inputs.

Overhead is what this module is tuned for (<= 2 s per suggestion on two
cores): few members, a small MLP, a few hundred optimizer steps, no
validation split (early stopping on a handful of top-fidelity rows would
only throw data away), and `surrogates`' bucketed padding so refits on
growing data reuse the compiled training loop.
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
import numpy as np

import surrogates

# Measurement noise floor (log units) added to the ensemble std in EI: two
# real profiles of one configuration differ by a few percent, so the model
# should never claim to know a throughput better than that.
NOISE_STD = 0.02


@dataclasses.dataclass(frozen=True)
class SurrogateSpec:
  ensemble_size: int = 8
  hidden_sizes: tuple[int, ...] = (64, 64)
  max_steps: int = 300
  max_epochs: int = 300
  learning_rate: float = 5e-3
  weight_decay: float = 1e-4


class FusedSurrogate:
  """A deep ensemble over (features, active mask, fidelity index)."""

  def __init__(self, width: int, num_fidelities: int, seed: int,
               spec: SurrogateSpec = SurrogateSpec(),
               warm_start: surrogates.SurrogateState | None = None):
    if warm_start is not None:
      cfg = warm_start.config
      if cfg.num_features != width or cfg.num_fidelities != num_fidelities or cfg.context_dim:
        raise ValueError(
            f"warm-start surrogate does not fit this space: it has D={cfg.num_features} features, "
            f"F={cfg.num_fidelities} fidelities, C={cfg.context_dim} context columns; the space "
            f"needs D={width}, F={num_fidelities}, C=0")
      self.config = cfg
    else:
      self.config = surrogates.ModelConfig(
          num_features=width, num_fidelities=num_fidelities, ensemble_size=spec.ensemble_size,
          hidden_sizes=spec.hidden_sizes)
    self.spec = spec
    self.seed = seed
    self.warm_start = warm_start
    self.state: surrogates.SurrogateState | None = warm_start
    self.fits = 0
    self.last_loss: float | None = None

  @property
  def top_index(self) -> int:
    return self.config.num_fidelities - 1

  @property
  def trained(self) -> bool:
    return self.state is not None and float(self.state.time_trained) > 0

  def fit(self, data: surrogates.SurrogateData) -> None:
    s = self.spec
    tc = surrogates.TrainConfig(
        learning_rate=s.learning_rate, weight_decay=s.weight_decay, batch_size=64,
        max_epochs=s.max_epochs, max_steps=s.max_steps, patience=s.max_epochs,
        epochs_per_chunk=50, val_fraction=0.0, seed=self.seed,
        min_bucket=64)
    self.state, hist = surrogates.fit(surrogates.pad_to_bucket(data), self.config, tc,
                                      init_state=self.warm_start)
    self.fits += 1
    self.last_loss = float(hist.train_loss[-1]) if hist.num_epochs else None

  def predict(self, x: np.ndarray, active: np.ndarray, fidelity: int | None = None):
    """numpy Prediction at `fidelity` (default: top) for every row."""
    return surrogates.predict(self.state, x, active,
                              fidelity=self.top_index if fidelity is None else fidelity)


  def member_log_throughput(self, x: np.ndarray, active: np.ndarray,
                            fidelity: int | None = None) -> np.ndarray:
    """f64[K, N]: each member's predicted log throughput (a posterior draw
    for Thompson sampling). Padded to a bucket so pool sizes reuse one
    compiled function."""
    n = x.shape[0]
    size = surrogates.bucket_size(n)
    fid = np.full((size,), self.top_index if fidelity is None else fidelity, np.int32)
    out = surrogates.member_log_time(self.state, jnp.asarray(surrogates.pad_rows(x, size)),
                                     jnp.asarray(surrogates.pad_rows(active, size)), jnp.asarray(fid))
    return -np.asarray(out, np.float64)[:, :n]


_erf = np.frompyfunc(math.erf, 1, 1)


def _norm_cdf(z: np.ndarray) -> np.ndarray:
  return 0.5 * (1.0 + _erf(z / math.sqrt(2.0)).astype(np.float64))


def expected_improvement(mu: np.ndarray, sigma: np.ndarray, best: float) -> np.ndarray:
  """EI of log throughput over `best` (all in log units, so a relative gain)."""
  sigma = np.sqrt(np.square(np.asarray(sigma, np.float64)) + NOISE_STD ** 2)
  z = (np.asarray(mu, np.float64) - best) / sigma
  pdf = np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
  return sigma * (z * _norm_cdf(z) + pdf)


def throughput_stats(pred) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(mean, std) of log throughput and P(feasible) from a Prediction."""
  mu = -np.asarray(pred.log_time_mean, np.float64)
  sd = np.asarray(pred.log_time_std, np.float64)
  p = np.clip(np.asarray(pred.feasible_prob, np.float64), 0.0, 1.0)
  return mu, sd, p
