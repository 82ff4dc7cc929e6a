"""Validation, padding and splitting of `surrogates.SurrogateData`, and the
clear errors a caller gets for bad input."""

import numpy as np
import pytest

import surrogates as S


def arrays(n: int = 10, d: int = 4, seed: int = 0):
  rng = np.random.default_rng(seed)
  x = rng.uniform(size=(n, d)).astype(np.float32)
  return x, np.ones_like(x), np.zeros(n, np.int32), x.sum(1), np.ones(n, np.float32)


def test_empty_data_is_rejected():
  with pytest.raises(ValueError, match="empty"):
    S.make_data(np.zeros((0, 3)), None, None, np.zeros(0), np.zeros(0))
  x, a, f, t, feas = arrays()
  with pytest.raises(ValueError, match="empty.*weight 0"):
    S.make_data(x, a, f, t, feas, weight=np.zeros(len(t)))


def test_nan_time_on_feasible_row_names_the_column_and_rows():
  x, a, f, t, feas = arrays()
  t[[3, 7]] = np.nan
  with pytest.raises(ValueError, match=r"log_time .*feasible rows \[3, 7\]"):
    S.make_data(x, a, f, t, feas)
  # The same NaN on infeasible rows is fine: failed runs have no step time.
  feas[[3, 7]] = 0
  data = S.make_data(x, a, f, t, feas)
  assert np.isnan(data.log_time[3]) and data.feasible[3] == 0


def test_nan_features_context_and_prior_name_their_column():
  x, a, f, t, feas = arrays()
  x[5, 2] = np.nan
  with pytest.raises(ValueError, match=r"x\[:, 2\] \('mbs'\) has NaN/inf at rows \[5\]"):
    S.make_data(x, a, f, t, feas, feature_names=["tp", "pp", "mbs", "remat"])
  x, a, f, t, feas = arrays()
  ctx = np.ones((len(t), 2), np.float32)
  ctx[1, 1] = np.inf
  with pytest.raises(ValueError, match=r"context\[:, 1\]"):
    S.make_data(x, a, f, t, feas, context=ctx)
  prior = np.zeros(len(t), np.float32)
  prior[0] = np.nan
  with pytest.raises(ValueError, match="prior has NaN"):
    S.make_data(x, a, f, t, feas, prior=prior)


def test_other_malformed_columns_are_rejected():
  x, a, f, t, feas = arrays()
  with pytest.raises(ValueError, match="feasible must be 0 or 1"):
    S.make_data(x, a, f, t, np.full(len(t), 0.5))
  with pytest.raises(ValueError, match=r"active\[:, 0\] must be 0 or 1"):
    S.make_data(x, np.full_like(x, 0.5), f, t, feas)
  with pytest.raises(ValueError, match="shape"):
    S.make_data(x, a, f, t[:-1], feas)
  with pytest.raises(ValueError, match="log_mem is"):
    S.make_data(x, a, f, t, feas, log_mem=np.full(len(t), -np.inf))


def test_inactive_features_are_zeroed():
  x, a, f, t, feas = arrays()
  a[:, 1] = 0
  data = S.make_data(x, a, f, t, feas)
  assert np.all(data.x[:, 1] == 0) and np.all(data.x[:, 0] == x[:, 0])


def test_bucket_size_and_padding():
  assert [S.bucket_size(n) for n in (1, 64, 65, 100, 128, 129)] == [64, 64, 128, 128, 128, 256]
  assert S.bucket_size(3, min_size=4) == 4
  x, a, f, t, feas = arrays(n=70)
  padded = S.pad_to_bucket(S.make_data(x, a, f, t, feas))
  assert padded.num_rows == 128 and padded.num_real == 70
  assert np.all(padded.weight[70:] == 0) and np.all(padded.feasible[70:] == 0)
  np.testing.assert_array_equal(padded.x[:70], x)


def test_validation_split_is_deterministic_disjoint_and_skips_padding():
  x, a, f, t, feas = arrays(n=50)
  data = S.pad_to_bucket(S.make_data(x, a, f, t, feas))
  tr, va = S.validation_split(data, 0.2, seed=3)
  tr2, va2 = S.validation_split(data, 0.2, seed=3)
  np.testing.assert_array_equal(tr, tr2)
  np.testing.assert_array_equal(va, va2)
  assert len(va) == 10 and not set(tr) & set(va)
  assert sorted(np.r_[tr, va].tolist()) == list(range(50))
  _, va3 = S.validation_split(data, 0.2, seed=4)
  assert set(va3) != set(va)
  # Too small to hold anything out.
  _, none = S.validation_split(data, 0.05, seed=3, min_val_rows=8)
  assert none.size == 0


def test_fit_rejects_padding_only_and_out_of_range_fidelity():
  x, a, f, t, feas = arrays()
  data = S.make_data(x, a, f, t, feas)
  with pytest.raises(ValueError, match="empty"):
    S.fit(data.replace(weight=np.zeros_like(data.weight)))
  bad = data.replace(fidelity=np.full_like(data.fidelity, 2))
  with pytest.raises(ValueError, match="fidelity index 2.*num_fidelities=2"):
    S.fit(bad, S.ModelConfig(num_features=4, num_fidelities=2))


def test_width_mismatch_with_a_loaded_checkpoint_names_both_widths(tmp_path):
  x, a, f, t, feas = arrays(n=40, d=4)
  cfg = S.ModelConfig(num_features=4, hidden_sizes=(8,), ensemble_size=2)
  state, _ = S.fit(S.make_data(x, a, f, t, feas), cfg,
                   S.TrainConfig(max_epochs=2, epochs_per_chunk=2))
  S.save(state, str(tmp_path))
  loaded = S.load(str(tmp_path))
  x6, a6, f6, t6, feas6 = arrays(n=40, d=6)
  with pytest.raises(ValueError, match=r"data has D=6 features .* expects D=4"):
    S.fit(S.make_data(x6, a6, f6, t6, feas6), init_state=loaded)
  with pytest.raises(ValueError, match=r"pool has D=6 features .* expects D=4"):
    S.predict(loaded, x6)
  with pytest.raises(ValueError, match=r"C=3 context columns .* expects C=0"):
    S.predict(loaded, x, context=np.zeros((40, 3)))
