"""Executors: where and how concurrently a batch of evaluations runs.

Where it sits: the search loop's router hands each evaluator's batch to
`Executor.evaluate(evaluator, problem, candidates, on_result)`.
The executor may split the batch into chunks and evaluate them at once;
`on_result(indices, measurements)` is called as each chunk arrives (the
router appends those to the store then), and the return value is every
measurement in candidate order, so the designer is told the round's
results in the order it asked for them and a run is reproducible whatever
order the workers finish in.

- `SerialExecutor`: in this process, one batch at a time (the default).
- `ProcessExecutor(workers)`: a bounded pool of child processes (spawned,
  kept for the run). Only for evaluators that do not contend for devices:
  simulators, compile-only analysis; an evaluator whose class sets
  `contends_for_devices = True` (the local F3 profiler, whose mesh spans
  every local device) runs serially in this process.
- `RayExecutor(num_cpus=None, address=None)`: Ray tasks (optional extra
  `[ray]`), on this machine (`ray.init(num_cpus=...)`, no dashboard, auth
  off for the local cluster) or on the cluster at `address`. Each task
  runs in a worker process of its own (`max_calls=1`), so XLA flags set
  for one trial never leak into the next.

The run's Problem goes to each worker once (cloudpickle: a space's
constraints are closures), the evaluator with each chunk; an evaluator's
private caches that cannot be pickled travel empty and are rebuilt there.
Workers that inherit no JAX_PLATFORMS use the CPU: simulators and
compile-only analysis need no accelerator runtime, and probing an absent
one prints pages of warnings.
"""

from __future__ import annotations

import abc
import concurrent.futures as cf
import copy
import multiprocessing
import os
import pickle
from typing import Any, Callable, Sequence

from autoscout_jax.evaluator import Evaluator
from autoscout_jax.measurement import Measurement
from autoscout_jax.problem import Problem
from autoscout_jax.space import Candidate

OnResult = Callable[[Sequence[int], Sequence[Measurement]], None]


def _evaluate_chunk(evaluator: Evaluator, problem: Problem,
                    candidates: Sequence[Candidate]) -> list[Measurement]:
  out = evaluator.evaluate(problem, list(candidates))
  if len(out) != len(candidates):
    raise RuntimeError(f"evaluator {evaluator.fidelity!r} returned {len(out)} measurements "
                       f"for {len(candidates)} candidates")
  return out


def portable(evaluator: Evaluator) -> Evaluator:
  """The evaluator, or a shallow copy whose unpicklable private caches
  (dict, list or set attributes named `_...`) are empty."""
  try:
    pickle.dumps(evaluator)
    return evaluator
  except Exception:  # pickling raises many types
    pass
  clone = copy.copy(evaluator)
  for k, v in list(vars(clone).items()):
    if k.startswith("_") and isinstance(v, (dict, list, set)):
      try:
        pickle.dumps(v)
      except Exception:
        setattr(clone, k, type(v)())
  return clone


_WORKER_PROBLEM: list[Problem] = []  # the run's problem, in a pool worker


def _worker_init(problem_blob: bytes) -> None:
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  import cloudpickle
  _WORKER_PROBLEM[:] = [cloudpickle.loads(problem_blob)]


def _evaluate_in_worker(evaluator_blob: bytes, candidates: Sequence[Candidate]) -> list[Measurement]:
  import cloudpickle
  return _evaluate_chunk(cloudpickle.loads(evaluator_blob), _WORKER_PROBLEM[0], candidates)


def chunks(n: int, parts: int) -> list[list[int]]:
  """Contiguous, near-equal index chunks (at most `parts`, none empty)."""
  parts = max(1, min(parts, n))
  size, extra = divmod(n, parts)
  out, start = [], 0
  for p in range(parts):
    end = start + size + (1 if p < extra else 0)
    out.append(list(range(start, end)))
    start = end
  return [c for c in out if c]


class Executor(abc.ABC):
  name = ""

  @abc.abstractmethod
  def evaluate(self, evaluator: Evaluator, problem: Problem, candidates: Sequence[Candidate],
               on_result: OnResult | None = None) -> list[Measurement]:
    """One measurement per candidate, in candidate order."""

  def close(self) -> None:
    pass

  def describe(self) -> str:
    return self.name


class SerialExecutor(Executor):
  name = "serial"

  def evaluate(self, evaluator, problem, candidates, on_result=None):
    out = _evaluate_chunk(evaluator, problem, candidates)
    if on_result is not None:
      on_result(list(range(len(out))), out)
    return out


class _Concurrent(Executor):
  """Splits a batch over `workers`; subclasses submit and wait."""

  def __init__(self, workers: int):
    if workers < 1:
      raise ValueError(f"an executor needs at least one worker, got {workers}")
    self.workers = int(workers)

  def describe(self) -> str:
    return f"{self.name} ({self.workers} workers)"

  def evaluate(self, evaluator, problem, candidates, on_result=None):
    if getattr(evaluator, "contends_for_devices", False) or len(candidates) <= 1:
      return SerialExecutor().evaluate(evaluator, problem, candidates, on_result)
    parts = chunks(len(candidates), self.workers)
    evaluator = portable(evaluator)
    results: dict[int, Measurement] = {}
    for idx, ms in self._run(evaluator, problem, [[candidates[i] for i in c] for c in parts], parts):
      if len(ms) != len(idx):
        raise RuntimeError(f"evaluator {evaluator.fidelity!r} returned {len(ms)} measurements "
                           f"for {len(idx)} candidates")
      for i, m in zip(idx, ms):
        results[i] = m
      if on_result is not None:
        on_result(idx, ms)
    return [results[i] for i in range(len(candidates))]

  @abc.abstractmethod
  def _run(self, evaluator, problem, batches, parts):
    """Yields (indices, measurements) per chunk as each completes."""


class ProcessExecutor(_Concurrent):
  name = "process"

  def __init__(self, workers: int | None = None):
    super().__init__(workers or max(1, (os.cpu_count() or 2) - 1))
    self._pool: cf.ProcessPoolExecutor | None = None
    self._problem: Problem | None = None

  def _run(self, evaluator, problem, batches, parts):
    import cloudpickle
    if self._pool is None or self._problem is not problem:
      self.close()
      # spawn, not fork: the parent has started JAX's threads.
      self._pool = cf.ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                          initializer=_worker_init,
                                          initargs=(cloudpickle.dumps(problem),))
      self._problem = problem
    blob = cloudpickle.dumps(evaluator)
    futures = {self._pool.submit(_evaluate_in_worker, blob, b): idx for b, idx in zip(batches, parts)}
    for fut in cf.as_completed(futures):
      yield futures[fut], fut.result()

  def close(self) -> None:
    if self._pool is not None:
      self._pool.shutdown(wait=True, cancel_futures=True)
      self._pool = None
      self._problem = None


class RayExecutor(_Concurrent):
  name = "ray"

  def __init__(self, num_cpus: int | None = None, address: str | None = None, workers: int | None = None):
    try:
      import ray  # noqa: F401
    except ImportError as e:
      raise ImportError("the ray executor needs the optional extra: pip install -e '.[ray]'") from e
    self.num_cpus = num_cpus
    self.address = address
    super().__init__(workers or num_cpus or max(1, (os.cpu_count() or 2) - 1))
    self._remote = None
    self._started = False
    self._problem: tuple[Problem, Any] | None = None  # (problem, its object ref)

  def _init(self):
    import ray
    if not ray.is_initialized():
      if self.address:
        ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
      else:
        # A private local cluster: no token needed, no dashboard to serve.
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(num_cpus=self.num_cpus or self.workers, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}})
      self._started = True
    self._remote = ray.remote(max_calls=1)(_evaluate_chunk)

  def _run(self, evaluator, problem, batches, parts):
    import ray
    if self._remote is None:
      self._init()
    if self._problem is None or self._problem[0] is not problem:
      self._problem = (problem, ray.put(problem))  # stored once, passed by reference
    ref = self._problem[1]
    refs = {self._remote.remote(evaluator, ref, list(b)): idx for b, idx in zip(batches, parts)}
    pending = list(refs)
    while pending:
      done, pending = ray.wait(pending, num_returns=1)
      for ref in done:
        yield refs[ref], ray.get(ref)

  def close(self) -> None:
    if self._started:
      import ray
      ray.shutdown()
      self._started = False
    self._remote = None
    self._problem = None
