"""Metric helpers of `surrogates.metrics` on hand-checked cases, and
`evaluate` on a fitted surrogate."""

import numpy as np
import pytest

import surrogates as S


def test_rank_correlations_on_known_cases():
  a = np.arange(10.0)
  assert S.spearman(a, a ** 3) == pytest.approx(1.0)
  assert S.spearman(a, -a) == pytest.approx(-1.0)
  assert S.kendall_tau(a, np.exp(a)) == pytest.approx(1.0)
  assert S.kendall_tau(a, -a) == pytest.approx(-1.0)
  # One swapped adjacent pair out of C(4, 2) = 6: tau = (5 - 1) / 6.
  assert S.kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
  assert np.isnan(S.spearman([1.0], [2.0]))
  assert np.isnan(S.kendall_tau([1, 1, 1], [1, 2, 3]))


def test_rank_correlations_match_scipy_with_ties():
  stats = pytest.importorskip("scipy.stats")
  rng = np.random.default_rng(0)
  a = rng.integers(0, 6, 300).astype(float)
  b = a + rng.integers(0, 4, 300)
  assert S.spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-9)
  assert S.kendall_tau(a, b) == pytest.approx(stats.kendalltau(a, b).statistic, abs=1e-9)


def test_coverage_auc_and_regret_on_known_cases():
  assert S.coverage([0.0, 1.0, 5.0, -3.0], np.zeros(4), np.ones(4), 2.0) == 0.5
  assert S.auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
  assert S.auc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 0.0
  assert S.auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5
  assert S.auc([0, 1, 1], [0.1, 0.2, 0.1]) == pytest.approx(0.75)
  assert np.isnan(S.auc([1, 1], [0.1, 0.2]))

  true = np.array([10.0, 12.0, 8.0, np.inf, 20.0])  # row 3 is infeasible
  # Top-1 pick is row 0 (10 vs best 8): regret 25 %; top-3 includes row 2.
  scores = np.array([1.0, 3.0, 2.5, 5.0, 4.0])
  assert S.top_k_regret(true, scores, 1) == pytest.approx(0.25)
  assert S.top_k_regret(true, scores, 3) == pytest.approx(0.0)
  assert S.top_k_regret(true, np.array([5.0, 4.0, 3.0, 0.0, 1.0]), 1) == np.inf
  assert S.top_k_regret(-true, -scores, 1, lower_is_better=False) == pytest.approx(0.25)


def test_evaluate_reports_validation_metrics_of_a_fitted_surrogate():
  rng = np.random.default_rng(1)
  x = rng.uniform(size=(200, 3)).astype(np.float32)
  feas = (x[:, 2] < 0.7).astype(np.float32)
  y = np.where(feas > 0, np.sin(3 * x[:, 0]) + x[:, 1], np.nan)
  data = S.make_data(x, None, None, y, feas, log_mem=x[:, 0])
  state, history = S.fit(data, S.ModelConfig(num_features=3, hidden_sizes=(32, 32),
                                             ensemble_size=3),
                         S.TrainConfig(max_epochs=60, batch_size=64, learning_rate=5e-3))
  m = S.evaluate(state, data.take(history.val_rows))
  assert m["num_rows"] == 40
  assert m["spearman"] > 0.9 and m["kendall"] > 0.7
  assert m["feasibility_auc"] > 0.9 and m["mem_spearman"] > 0.9
  assert 0.0 <= m["coverage_2sigma"] <= 1.0 and m["top5_regret"] >= 0.0
  assert m["rmse"] < 0.3
