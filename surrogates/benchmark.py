"""Speed check of the surrogate: `python3 -m surrogates.benchmark`.

Where it sits in the data flow: outside it. It builds a synthetic data set
shaped like encoded measurements (masked features, context, three
fidelities, a noisy prior, an infeasible region), times `fit` (first call,
which compiles, and a refit in the same bucket) and the throughput of
`predict` on a large candidate pool, and prints wall and process CPU times.
A program, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import surrogates as S


def synthetic(n: int, d: int, c: int, f: int, seed: int = 0) -> S.SurrogateData:
  rng = np.random.default_rng(seed)
  active = (rng.uniform(size=(n, d)) < 0.8).astype(np.float32)
  x = rng.uniform(size=(n, d)).astype(np.float32) * active
  ctx = rng.uniform(size=(n, c)).astype(np.float32)
  fid = rng.integers(0, f, n)
  w = rng.normal(size=d) / np.sqrt(d)
  true = np.tanh(x @ w) + 0.3 * np.sin(4 * x[:, 0]) + 0.2 * fid
  feas = (x[:, 1] < 0.85).astype(np.float32)
  log_time = np.where(feas > 0, true + 0.03 * rng.normal(size=n), np.nan)
  return S.make_data(x, active, fid, log_time, feas, log_mem=x[:, 2] + x[:, 3], context=ctx,
                     prior=true + 0.1 * rng.normal(size=n))


def _timed(fn):
  t, c = time.perf_counter(), time.process_time()
  out = fn()
  return out, time.perf_counter() - t, time.process_time() - c


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rows", type=int, default=5000)
  parser.add_argument("--features", type=int, default=32)
  parser.add_argument("--members", type=int, default=5)
  parser.add_argument("--pool", type=int, default=100_000)
  args = parser.parse_args()

  d, c, f = args.features, 4, 3
  data = synthetic(args.rows, d, c, f)
  cfg = S.ModelConfig(num_features=d, context_dim=c, num_fidelities=f, has_prior=True,
                      ensemble_size=args.members)
  (state, hist), wall, cpu = _timed(lambda: S.fit(data, cfg))
  print(f"fit {args.members} members x {args.rows} rows, first call (compiles): "
        f"wall {wall:.1f}s, cpu {cpu:.1f}s, {hist.num_epochs} epochs")
  (state, hist), wall, cpu = _timed(lambda: S.fit(data, cfg, S.TrainConfig(seed=1)))
  print(f"fit again (compiled): wall {wall:.1f}s, cpu {cpu:.1f}s, {hist.num_epochs} epochs")
  metrics = S.evaluate(state, data.take(hist.val_rows))
  print("validation:", ", ".join(f"{k}={v:.3f}" for k, v in metrics.items()))

  pool = synthetic(args.pool, d, c, f, seed=1)
  run = lambda: S.predict(state, pool.x, pool.active, pool.context, pool.prior)  # noqa: E731
  run()  # compile
  _, wall, cpu = _timed(lambda: [run() for _ in range(3)])
  print(f"predict {args.pool} candidates: {3 * args.pool / wall:,.0f} candidates/s "
        f"(wall {wall / 3:.3f}s, cpu {cpu / 3:.3f}s per call)")


if __name__ == "__main__":
  main()
