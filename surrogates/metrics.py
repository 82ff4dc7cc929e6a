"""How good is a surrogate? Ranking, calibration and decision metrics (numpy).

Where it sits in the data flow::

    SurrogateState + held-out SurrogateData ──► evaluate ──► {name: float}
        ──► the caller's writer (TensorBoard scalars, JSONL)

The search only needs the surrogate to *rank* candidates and to know when it
does not know, so the headline metrics are rank correlations (Spearman,
Kendall), ±2σ coverage, feasibility AUC and top-k regret rather than RMSE.
All functions return NaN when a metric is undefined (too few rows, one class).
"""

from __future__ import annotations

import numpy as np

from surrogates.data import SurrogateData
from surrogates.model import SurrogateState
from surrogates.predict import predict


def rankdata(a: np.ndarray) -> np.ndarray:
  """Ranks 1..n, ties get their average rank."""
  a = np.asarray(a, np.float64).ravel()
  order = np.argsort(a, kind="mergesort")
  sorted_a = a[order]
  # Boundaries of runs of equal values; each run gets the mean of its ranks.
  starts = np.flatnonzero(np.r_[True, sorted_a[1:] != sorted_a[:-1]])
  ends = np.r_[starts[1:], a.size]
  avg = (starts + ends + 1) / 2.0
  ranks = np.empty(a.size)
  ranks[order] = np.repeat(avg, ends - starts)
  return ranks


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
  a = a - a.mean()
  b = b - b.mean()
  den = np.sqrt((a * a).sum() * (b * b).sum())
  return float((a * b).sum() / den) if den > 0 else float("nan")


def spearman(y_true: np.ndarray, y_pred: np.ndarray) -> float:
  """Spearman rank correlation."""
  y_true, y_pred = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
  if y_true.size < 2:
    return float("nan")
  return _pearson(rankdata(y_true), rankdata(y_pred))


def kendall_tau(y_true: np.ndarray, y_pred: np.ndarray, block: int = 1024) -> float:
  """Kendall's tau-b (tie-corrected), exact, O(n^2) in row blocks."""
  a = np.asarray(y_true, np.float64).ravel()
  b = np.asarray(y_pred, np.float64).ravel()
  n = a.size
  if n < 2:
    return float("nan")
  s = 0.0
  ties_a = ties_b = 0.0  # pairs not tied in a (resp. b), counted over ordered pairs
  for i in range(0, n, block):
    da = np.sign(a[i:i + block, None] - a[None, :])
    db = np.sign(b[i:i + block, None] - b[None, :])
    s += (da * db).sum()
    ties_a += np.abs(da).sum()
    ties_b += np.abs(db).sum()
  den = np.sqrt(ties_a * ties_b)
  return float(s / den) if den > 0 else float("nan")


def coverage(y_true: np.ndarray, mean: np.ndarray, std: np.ndarray, k: float = 2.0) -> float:
  """Fraction of rows with |y - mean| <= k * std (≈0.95 if calibrated, k=2)."""
  y_true = np.asarray(y_true).ravel()
  if y_true.size == 0:
    return float("nan")
  return float(np.mean(np.abs(y_true - np.asarray(mean).ravel()) <= k * np.asarray(std).ravel()))


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
  """ROC AUC of `scores` for binary `labels` (Mann-Whitney; ties count 1/2)."""
  labels = np.asarray(labels).ravel() > 0.5
  n_pos, n_neg = int(labels.sum()), int((~labels).sum())
  if n_pos == 0 or n_neg == 0:
    return float("nan")
  ranks = rankdata(np.asarray(scores).ravel())
  return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def top_k_regret(true_values: np.ndarray, predicted_scores: np.ndarray, k: int,
                 lower_is_better: bool = True) -> float:
  """Relative regret of trusting the model's top-k.

  Takes the k rows the model ranks best by `predicted_scores`, finds the best
  true value among them, and returns how far it is from the true best of all
  rows, as a fraction of the true best: (chosen - best) / |best| when lower is
  better. Non-finite true values (infeasible candidates) count as worst; if
  all k picks are infeasible the regret is inf.
  """
  t = np.asarray(true_values, np.float64).ravel()
  s = np.asarray(predicted_scores, np.float64).ravel()
  if t.size == 0 or k < 1:
    return float("nan")
  if not lower_is_better:
    t, s = -t, -s
  t = np.where(np.isfinite(t), t, np.inf)
  best = t.min()
  if not np.isfinite(best):
    return float("nan")
  picks = np.argsort(np.where(np.isfinite(s), s, np.inf), kind="mergesort")[:k]
  chosen = t[picks].min()
  if not np.isfinite(chosen):
    return float("inf")
  return float((chosen - best) / max(abs(best), 1e-12))


def evaluate(state: SurrogateState, data: SurrogateData, fidelity: int | None = None,
             top_k: int = 5) -> dict[str, float]:
  """Validation metrics of `state` on the real rows of `data`.

  Each row is predicted at its own fidelity unless `fidelity` is given.
  Time metrics use feasible rows; memory metrics rows with known memory;
  AUC all rows. `top{k}_regret` ranks rows by predicted log time with
  predicted-infeasible rows (P < 0.5) last, against true step times
  (infeasible = worst).
  """
  real = np.asarray(data.weight) > 0
  d = data.take(np.flatnonzero(real))
  p = predict(state, d.x, d.active, d.context, d.prior,
              d.fidelity if fidelity is None else fidelity)
  feas = np.asarray(d.feasible) > 0
  t_true, t_mean, t_std = d.log_time[feas], p.log_time_mean[feas], p.log_time_std[feas]
  mem_ok = np.isfinite(d.log_mem)
  out = {
      "num_rows": float(d.num_rows),
      "spearman": spearman(t_true, t_mean),
      "kendall": kendall_tau(t_true, t_mean),
      "coverage_2sigma": coverage(t_true, t_mean, t_std, 2.0),
      "rmse": float(np.sqrt(np.mean((t_true - t_mean) ** 2))) if feas.any() else float("nan"),
      "feasibility_auc": auc(feas, p.feasible_prob),
      "mem_spearman": spearman(d.log_mem[mem_ok], p.log_mem_mean[mem_ok]),
      "mem_coverage_2sigma": coverage(d.log_mem[mem_ok], p.log_mem_mean[mem_ok],
                                      p.log_mem_std[mem_ok], 2.0),
  }
  true_time = np.where(feas, np.exp(np.nan_to_num(d.log_time)), np.inf)
  score = np.where(p.feasible_prob >= 0.5, p.log_time_mean, np.inf)
  out[f"top{top_k}_regret"] = top_k_regret(true_time, score, top_k)
  return out
