"""Static configuration of the surrogate: architecture and training recipe.

Where it sits in the data flow::

    encoding.to_arrays ─► SurrogateData ─► fit(data, ModelConfig, TrainConfig)
                                                 └─► SurrogateState ─► predict

`ModelConfig` fixes every array width the network sees; it is stored in the
checkpoint's JSON sidecar and travels inside `SurrogateState` as static
(non-pytree) metadata, so it must stay frozen and hashable: jit keys its
caches on it. `TrainConfig` only steers `fit` and is never saved.
"""

from __future__ import annotations

import dataclasses
from typing import Any

_ACTIVATIONS = ("swish", "gelu", "tanh", "softplus")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Widths and architecture of the ensemble.

  Attributes:
    num_features: D, width of `x` (and of `active`).
    context_dim: C, width of the workload/cluster descriptors (may be 0).
    num_fidelities: F; fidelity indices run 0 (cheapest) .. F-1 (top).
    has_prior: whether the cheapest simulator's log step time is an input;
      when it is, the time head learns a residual on it.
    ensemble_size: K independent members (deep ensemble).
    hidden_sizes: widths of the hidden layers of each member.
    fidelity_embed_dim: width of the learned fidelity embedding.
    activation: a smooth nonlinearity; smoothness matters because the
      optimizer follows d(mean log_time)/dx through the network.
  """

  num_features: int
  context_dim: int = 0
  num_fidelities: int = 1
  has_prior: bool = False
  ensemble_size: int = 5
  hidden_sizes: tuple[int, ...] = (64, 64)
  fidelity_embed_dim: int = 4
  activation: str = "swish"

  def __post_init__(self) -> None:
    # Lists from JSON would make the config unhashable (jit needs a hash).
    object.__setattr__(self, "hidden_sizes", tuple(int(h) for h in self.hidden_sizes))
    if self.num_features < 1:
      raise ValueError(f"ModelConfig.num_features must be >= 1, got {self.num_features}")
    if self.context_dim < 0:
      raise ValueError(f"ModelConfig.context_dim must be >= 0, got {self.context_dim}")
    if self.num_fidelities < 1:
      raise ValueError(f"ModelConfig.num_fidelities must be >= 1, got {self.num_fidelities}")
    if self.ensemble_size < 1:
      raise ValueError(f"ModelConfig.ensemble_size must be >= 1, got {self.ensemble_size}")
    if not self.hidden_sizes or min(self.hidden_sizes) < 1:
      raise ValueError(f"ModelConfig.hidden_sizes must be positive widths, got {self.hidden_sizes}")
    if self.activation not in _ACTIVATIONS:
      raise ValueError(
          f"ModelConfig.activation {self.activation!r} is not one of {_ACTIVATIONS}")

  @property
  def top_fidelity(self) -> int:
    return self.num_fidelities - 1

  def to_json_dict(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    d["hidden_sizes"] = list(self.hidden_sizes)
    return d

  @classmethod
  def from_json_dict(cls, d: dict[str, Any]) -> "ModelConfig":
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
      raise ValueError(f"unknown ModelConfig fields in checkpoint config: {unknown}")
    return cls(**d)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """How `fit` trains the ensemble.

  An "epoch" is one pass over the (bucket-padded) training set; the number of
  epochs is capped both by `max_epochs` and by `max_steps` optimizer steps so
  that large data sets do not blow the time budget.

  Attributes:
    learning_rate: peak AdamW learning rate (after warmup).
    weight_decay: decoupled AdamW weight decay.
    batch_size: mini-batch rows per member per step (a power of two keeps it
      a divisor of the bucketed data size; it is clipped to the bucket).
    max_epochs: upper bound on epochs.
    max_steps: upper bound on optimizer steps.
    warmup_fraction: fraction of the planned steps spent warming up linearly.
    patience: stop once no member improved its validation loss for this many
      epochs; each member keeps its own best parameters.
    epochs_per_chunk: epochs run inside one jitted call between host checks
      (early stopping, divergence); a static shape, so changing it recompiles.
    val_fraction: fraction of the real rows held out for early stopping.
    min_val_rows: below this many held-out rows no split is made and the
      training loss selects the best parameters.
    bootstrap: give each member its own Bayesian-bootstrap row weights
      (Exponential(1)); every row keeps a positive weight, so tiny data sets
      are not emptied, yet members see differently weighted data.
    seed: makes the split, the init and the shuffles deterministic.
    max_restarts: on a non-finite loss the fit restarts with lr/10 at most
      this many times, then raises.
    time_weight, mem_weight, feas_weight: weights of the three loss terms.
    min_bucket: smallest padded size (rows).
  """

  learning_rate: float = 3e-3
  weight_decay: float = 1e-4
  batch_size: int = 256
  max_epochs: int = 400
  max_steps: int = 2000
  warmup_fraction: float = 0.05
  patience: int = 40
  epochs_per_chunk: int = 10
  val_fraction: float = 0.2
  min_val_rows: int = 8
  bootstrap: bool = True
  seed: int = 0
  max_restarts: int = 3
  time_weight: float = 1.0
  mem_weight: float = 1.0
  feas_weight: float = 1.0
  min_bucket: int = 64

  def __post_init__(self) -> None:
    if self.batch_size < 1 or self.batch_size & (self.batch_size - 1):
      raise ValueError(f"TrainConfig.batch_size must be a power of two, got {self.batch_size}")
    if self.min_bucket < 1 or self.min_bucket & (self.min_bucket - 1):
      raise ValueError(f"TrainConfig.min_bucket must be a power of two, got {self.min_bucket}")
    if not 0.0 <= self.val_fraction < 1.0:
      raise ValueError(f"TrainConfig.val_fraction must be in [0, 1), got {self.val_fraction}")
    if self.max_epochs < 1 or self.max_steps < 1 or self.epochs_per_chunk < 1:
      raise ValueError("TrainConfig.max_epochs, max_steps and epochs_per_chunk must be >= 1")
    if self.learning_rate <= 0.0:
      raise ValueError(f"TrainConfig.learning_rate must be > 0, got {self.learning_rate}")
