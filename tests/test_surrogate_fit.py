"""Behaviour of `surrogates.fit`: accuracy, uncertainty, fidelities, robustness."""

import dataclasses
import logging

import numpy as np
import pytest

import surrogates as S

SMALL = dict(hidden_sizes=(32, 32), ensemble_size=4)
FAST = S.TrainConfig(max_epochs=60, max_steps=600, batch_size=64, patience=20,
                     learning_rate=5e-3)


def smooth(x: np.ndarray) -> np.ndarray:
  return np.sin(3.0 * x[:, 0]) + x[:, 1] ** 2 + 0.5 * x[:, 2]


def smooth_data(n: int, seed: int = 0, d: int = 3) -> S.SurrogateData:
  x = np.random.default_rng(seed).uniform(size=(n, d)).astype(np.float32)
  return S.make_data(x, None, None, smooth(x), np.ones(n), log_mem=x[:, 0] + x[:, 1])


@pytest.fixture(scope="module")
def smooth_fit():
  data = smooth_data(300)
  state, history = S.fit(data, S.ModelConfig(num_features=3, **SMALL), FAST)
  return data, state, history


def test_fits_smooth_function_to_high_spearman_on_held_out_points(smooth_fit):
  _, state, _ = smooth_fit
  x = np.random.default_rng(1).uniform(size=(400, 3)).astype(np.float32)
  pred = S.predict(state, x)
  assert S.spearman(smooth(x), pred.log_time_mean) > 0.97
  assert np.sqrt(np.mean((pred.log_time_mean - smooth(x)) ** 2)) < 0.1
  assert S.spearman(x[:, 0] + x[:, 1], pred.log_mem_mean) > 0.97
  # Every row is feasible, so the feasibility head must say so.
  assert np.all(pred.feasible_prob > 0.9)


def test_history_records_epochs_and_best_params(smooth_fit):
  data, _, history = smooth_fit
  e = history.num_epochs
  assert e >= 10 and history.val_loss.shape == (e,)
  assert np.all(np.isfinite(history.train_loss)) and np.all(np.isfinite(history.val_loss))
  assert history.train_loss[-1] < history.train_loss[0]
  assert history.member_val_loss.shape == (e, 4)
  assert np.all(history.best_epoch < e) and history.restarts == 0
  # The split is a partition of the real rows.
  rows = np.concatenate([history.train_rows, history.val_rows])
  assert sorted(rows.tolist()) == list(range(data.num_rows))
  assert len(history.val_rows) == 60
  assert history.scalars()[0][1].keys() == {"surrogate/train_loss", "surrogate/val_loss"}


def test_fit_is_deterministic_for_a_seed(smooth_fit):
  data, state, _ = smooth_fit
  again, _ = S.fit(data, S.ModelConfig(num_features=3, **SMALL), FAST)
  other, _ = S.fit(data, S.ModelConfig(num_features=3, **SMALL),
                   dataclasses.replace(FAST, seed=7))
  x = np.random.default_rng(2).uniform(size=(50, 3)).astype(np.float32)
  a, b, c = (S.predict(s, x).log_time_mean for s in (state, again, other))
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)


def test_epistemic_std_grows_away_from_training_data(smooth_fit):
  _, state, _ = smooth_fit
  rng = np.random.default_rng(3)
  near = rng.uniform(size=(200, 3)).astype(np.float32)
  far = rng.uniform(3.0, 4.0, size=(200, 3)).astype(np.float32)
  std_near = S.predict(state, near).log_time_std
  std_far = S.predict(state, far).log_time_std
  assert np.median(std_far) > 3.0 * np.median(std_near)


def test_fidelity_embedding_recovers_offset_between_fidelities():
  rng = np.random.default_rng(4)
  offset = 1.0
  x_cheap = rng.uniform(size=(400, 3)).astype(np.float32)
  x_top = rng.uniform(size=(24, 3)).astype(np.float32)
  x = np.concatenate([x_cheap, x_top])
  fid = np.r_[np.zeros(400), np.ones(24)].astype(np.int32)
  y = smooth(x) + offset * (fid == 0)
  data = S.make_data(x, None, fid, y, np.ones(len(y)))
  cfg = S.ModelConfig(num_features=3, num_fidelities=2, **SMALL)
  state, _ = S.fit(data, cfg, FAST)

  grid = rng.uniform(size=(300, 3)).astype(np.float32)
  top = S.predict(state, grid).log_time_mean  # default = top fidelity
  cheap = S.predict(state, grid, fidelity=0).log_time_mean
  assert np.mean(np.abs(top - smooth(grid))) < 0.15
  assert abs(np.mean(cheap - top) - offset) < 0.15
  assert S.spearman(smooth(grid), top) > 0.95


def test_all_failed_data_predicts_infeasible_with_untrained_heads():
  x = np.random.default_rng(5).uniform(size=(40, 3)).astype(np.float32)
  data = S.make_data(x, None, None, np.full(40, np.nan), np.zeros(40))
  state, history = S.fit(data, S.ModelConfig(num_features=3, **SMALL), FAST)
  pred = S.predict(state, x)
  assert np.all(pred.feasible_prob < 1e-3)
  assert np.all(pred.log_time_std >= S.UNTRAINED_STD)
  assert np.all(pred.log_mem_std >= S.UNTRAINED_STD)
  assert history.num_epochs == 0


def test_unknown_memory_is_masked_and_memory_head_untrained_without_any():
  data = smooth_data(120, seed=6)
  no_mem = data.replace(log_mem=np.full(data.num_rows, np.nan, np.float32))
  state, history = S.fit(no_mem, S.ModelConfig(num_features=3, **SMALL), FAST)
  pred = S.predict(state, np.asarray(data.x))
  assert np.all(np.isfinite(history.train_loss))
  assert np.all(pred.log_mem_std >= S.UNTRAINED_STD)
  assert np.all(pred.log_time_std < 1.0)


def test_infeasible_rows_train_feasibility_but_not_time():
  rng = np.random.default_rng(8)
  x = rng.uniform(size=(300, 3)).astype(np.float32)
  feas = (x[:, 2] < 0.6).astype(np.float32)
  # Infeasible rows carry garbage times that must be ignored.
  y = np.where(feas > 0, smooth(x), 1e4).astype(np.float32)
  data = S.make_data(x, None, None, y, feas)
  state, _ = S.fit(data, S.ModelConfig(num_features=3, **SMALL), FAST)
  grid = rng.uniform(size=(300, 3)).astype(np.float32)
  pred = S.predict(state, grid)
  assert S.auc(grid[:, 2] < 0.6, pred.feasible_prob) > 0.95
  ok = grid[:, 2] < 0.6
  assert np.max(np.abs(pred.log_time_mean[ok] - smooth(grid)[ok])) < 1.0


def test_divergence_restarts_with_smaller_lr_and_is_logged(caplog):
  data = smooth_data(100, seed=9)
  tc = S.TrainConfig(learning_rate=1e12, max_restarts=12, max_epochs=10, batch_size=64,
                     warmup_fraction=0.0)
  with caplog.at_level(logging.WARNING):
    state, history = S.fit(data, S.ModelConfig(num_features=3, **SMALL), tc)
  assert history.restarts >= 1
  assert history.learning_rate == pytest.approx(1e12 / 10 ** history.restarts)
  assert "restarting with learning rate" in caplog.text
  assert np.all(np.isfinite(S.predict(state, np.asarray(data.x)).log_time_mean))


def test_persistent_divergence_raises_clear_error():
  data = smooth_data(100, seed=9)
  tc = S.TrainConfig(learning_rate=1e12, max_restarts=1, max_epochs=10, batch_size=64,
                     warmup_fraction=0.0)
  with pytest.raises(FloatingPointError, match="diverged.*non-finite"):
    S.fit(data, S.ModelConfig(num_features=3, **SMALL), tc)


def test_warm_start_begins_from_the_given_parameters(smooth_fit):
  _, state, _ = smooth_fit
  new = smooth_data(50, seed=10)
  frozen = S.TrainConfig(learning_rate=1e-12, max_epochs=1, epochs_per_chunk=1, batch_size=64)
  warm, _ = S.fit(new, train_config=frozen, init_state=state)
  cold, _ = S.fit(new, S.ModelConfig(num_features=3, **SMALL), frozen)
  x = np.random.default_rng(11).uniform(size=(64, 3)).astype(np.float32)
  ref = S.predict(state, x).log_time_mean
  np.testing.assert_allclose(S.predict(warm, x).log_time_mean, ref, atol=1e-4)
  assert np.max(np.abs(S.predict(cold, x).log_time_mean - ref)) > 0.1


def test_warm_start_with_different_widths_is_a_clear_error(smooth_fit):
  _, state, _ = smooth_fit
  wide = smooth_data(50, seed=12, d=5)
  with pytest.raises(ValueError, match=r"D=5.*D=3"):
    S.fit(wide, init_state=state)
  with pytest.raises(ValueError, match="same architecture"):
    S.fit(smooth_data(50), S.ModelConfig(num_features=3, hidden_sizes=(8,)), init_state=state)


def test_tiny_data_without_validation_split_still_fits():
  data = smooth_data(12, seed=13)
  # 12 rows are one step per epoch: give it more epochs.
  tc = dataclasses.replace(FAST, max_epochs=200)
  state, history = S.fit(data, S.ModelConfig(num_features=3, **SMALL), tc)
  assert history.val_rows.size == 0 and np.all(np.isnan(history.val_loss))
  assert np.all(np.isfinite(history.train_loss))
  pred = S.predict(state, np.asarray(data.x))
  assert np.max(np.abs(pred.log_time_mean - np.asarray(data.log_time))) < 0.3


def test_padding_rows_change_nothing(smooth_fit):
  data, state, _ = smooth_fit
  padded, _ = S.fit(S.pad_to_bucket(data, 512), S.ModelConfig(num_features=3, **SMALL), FAST)
  x = np.random.default_rng(14).uniform(size=(64, 3)).astype(np.float32)
  np.testing.assert_array_equal(S.predict(padded, x).log_time_mean,
                                S.predict(state, x).log_time_mean)
