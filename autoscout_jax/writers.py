"""One writer interface, fanned out to TensorBoard, JSONL and absl logging.

Where it sits: the search loop and the experiment report through a
`Writer`; the store (measurements.jsonl) is the record, TensorBoard the view.

- scalars: `write_scalars(step, {tag: value}, run="search")`
- texts: `write_texts(step, {tag: markdown}, run="search")`
- hparams: `write_hparams(session, hparams, metrics)` — one HParams session
  per trial, so TensorBoard's HParams view shows the landscape;
  `write_hparams_config(hparams_domains, metric_tags)` declares the columns,
  in the order given (the search passes knobs by learned importance).

A TensorBoard "run" is one directory of event files, and TensorBoard
selects no run by default once a logdir holds more than a few hundred. So
`tb/` holds a handful of runs (`search`, one per fidelity), and the HParams
plugin, which reads every session as its own run, gets its own logdir
(`hparams/` beside `tb/`).

TensorBoard events are written with the tensorboard package alone (no
TensorFlow): event protos through its EventFileWriter.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from typing import Any, Mapping, Sequence

import numpy as np
from absl import logging


class Writer:
  """Base: every method is a no-op, so a writer implements what it shows."""

  def write_scalars(self, step: int, scalars: Mapping[str, float], run: str = "search") -> None:
    pass

  def write_texts(self, step: int, texts: Mapping[str, str], run: str = "search") -> None:
    pass

  def write_hparams_config(self, domains: Mapping[str, Sequence[Any]],
                           metric_tags: Sequence[str] | Mapping[str, str]) -> None:
    """`metric_tags`: tags, or tag -> description (shown in TensorBoard)."""
    pass

  def write_hparams(self, session: str, hparams: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
    pass

  def flush(self) -> None:
    pass

  def close(self) -> None:
    pass


class MultiWriter(Writer):

  def __init__(self, writers: Sequence[Writer]):
    self.writers = list(writers)

  def write_scalars(self, step, scalars, run="search"):
    for w in self.writers:
      w.write_scalars(step, scalars, run)

  def write_texts(self, step, texts, run="search"):
    for w in self.writers:
      w.write_texts(step, texts, run)

  def write_hparams_config(self, domains, metric_tags):
    for w in self.writers:
      w.write_hparams_config(domains, metric_tags)

  def write_hparams(self, session, hparams, metrics):
    for w in self.writers:
      w.write_hparams(session, hparams, metrics)

  def flush(self):
    for w in self.writers:
      w.flush()

  def close(self):
    for w in self.writers:
      w.close()


class LoggingWriter(Writer):
  """Round-level scalars and texts to the log (the run's log file); per-trial
  scalars (runs other than `search`) are left to TensorBoard and JSONL."""

  def write_scalars(self, step, scalars, run="search"):
    if run == "search":
      logging.info("[%d] %s", step, ", ".join(f"{k}={v:.6g}" for k, v in scalars.items()))

  def write_texts(self, step, texts, run="search"):
    # Long texts (configs, reports) go to TensorBoard and files; the log
    # names them and shows them only at verbosity 1.
    for k, v in texts.items():
      logging.info("[%d] wrote text %r (%d lines)", step, k, v.count("\n") + 1)
      logging.vlog(1, "%s:\n%s", k, v)


class JsonlWriter(Writer):
  """Scalars, texts and hparams sessions as JSON lines (`metrics.jsonl`)."""

  def __init__(self, workdir: str, filename: str = "metrics.jsonl"):
    os.makedirs(workdir, exist_ok=True)
    self._f = open(os.path.join(workdir, filename), "a", encoding="utf-8")

  def _write(self, obj):
    self._f.write(json.dumps(obj, sort_keys=True, default=str) + "\n")
    self._f.flush()

  def write_scalars(self, step, scalars, run="search"):
    self._write({"kind": "scalars", "run": run, "step": step, "time": time.time(),
                 "values": {k: float(v) for k, v in scalars.items()}})

  def write_texts(self, step, texts, run="search"):
    self._write({"kind": "texts", "run": run, "step": step, "time": time.time(),
                 "values": dict(texts)})

  def write_hparams(self, session, hparams, metrics):
    self._write({"kind": "hparams", "session": session, "hparams": dict(hparams),
                 "metrics": {k: float(v) for k, v in metrics.items()}})

  def flush(self):
    self._f.flush()

  def close(self):
    self._f.close()


def _hparam_value(v: Any) -> Any:
  # The HParams plugin takes bool, number or string.
  if isinstance(v, (bool, int, float, str)):
    return v
  return str(v)


class TensorBoardWriter(Writer):
  """Event files: run `r` in `logdir/r` (or everything in `logdir` itself
  when `flat`); HParams sessions in `hparams_logdir/<session>` (default
  `logdir/hparams`)."""

  def __init__(self, logdir: str, hparams_logdir: str | None = None, flat: bool = False):
    # Imported here so that modules which never write TensorBoard don't pay for it.
    from tensorboard.summary.writer.event_file_writer import EventFileWriter
    self._EventFileWriter = EventFileWriter
    self.logdir = logdir
    self.flat = flat
    os.makedirs(logdir, exist_ok=True)
    self._runs: dict[str, Any] = {}
    self._hp_root = hparams_logdir or os.path.join(logdir, "hparams")

  def _writer(self, run: str):
    key = "" if self.flat else re.sub(r"[^A-Za-z0-9_.-]", "_", run)
    if key not in self._runs:
      self._runs[key] = self._EventFileWriter(os.path.join(self.logdir, key) if key else self.logdir)
    return self._runs[key]

  @staticmethod
  def _event(step: int, values) -> Any:
    from tensorboard.compat.proto import event_pb2, summary_pb2
    return event_pb2.Event(wall_time=time.time(), step=int(step),
                           summary=summary_pb2.Summary(value=values))

  @staticmethod
  def _scalar_values(scalars):
    from tensorboard.compat.proto import summary_pb2
    return [summary_pb2.Summary.Value(tag=k, simple_value=float(v)) for k, v in scalars.items()
            if v is not None and np.isfinite(v)]

  def write_scalars(self, step, scalars, run="search"):
    vals = self._scalar_values(scalars)
    if vals:
      self._writer(run).add_event(self._event(step, vals))

  def write_texts(self, step, texts, run="search"):
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.plugins.text import metadata as text_metadata
    from tensorboard.util import tensor_util
    vals = []
    for tag, text in texts.items():
      meta = text_metadata.create_summary_metadata(display_name=None, description=None)
      tensor = tensor_util.make_tensor_proto(np.array(text, dtype=object))
      vals.append(summary_pb2.Summary.Value(tag=tag, tensor=tensor, metadata=meta))
    self._writer(run).add_event(self._event(step, vals))

  def write_hparams_config(self, domains, metric_tags):
    """Declares the columns and starts the HParams logdir afresh (it is
    written once per run, at the end, so a resumed run replaces it)."""
    from tensorboard.compat.proto import event_pb2
    from tensorboard.plugins.hparams import summary_v2 as hp
    hparams = []
    for name, values in domains.items():
      values = list(dict.fromkeys(_hparam_value(v) for v in values))
      if values and all(isinstance(v, type(values[0])) for v in values):
        hparams.append(hp.HParam(name, hp.Discrete(values)))
      else:
        hparams.append(hp.HParam(name))
    descs = metric_tags if isinstance(metric_tags, Mapping) else {t: None for t in metric_tags}
    summary = hp.hparams_config_pb(hparams=hparams,
                                   metrics=[hp.Metric(t, description=d) for t, d in descs.items()])
    if os.path.isdir(self._hp_root):
      shutil.rmtree(self._hp_root)
    os.makedirs(self._hp_root)
    w = self._EventFileWriter(self._hp_root)
    w.add_event(event_pb2.Event(wall_time=time.time(), step=0, summary=summary))
    w.close()

  def write_hparams(self, session, hparams, metrics):
    from tensorboard.compat.proto import event_pb2
    from tensorboard.plugins.hparams import summary_v2 as hp
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", session)
    w = self._EventFileWriter(os.path.join(self._hp_root, name))
    start = hp.hparams_pb({k: _hparam_value(v) for k, v in hparams.items()}, trial_id=session,
                          start_time_secs=time.time())
    w.add_event(event_pb2.Event(wall_time=time.time(), step=0, summary=start))
    vals = self._scalar_values(metrics)
    if vals:
      w.add_event(self._event(0, vals))
    w.close()

  def flush(self):
    for w in self._runs.values():
      w.flush()

  def close(self):
    for w in self._runs.values():
      w.close()


def default_writer(workdir: str) -> MultiWriter:
  """`workdir/tb` (a handful of runs), `workdir/hparams` (one run per trial),
  `workdir/metrics.jsonl` and the log."""
  return MultiWriter([TensorBoardWriter(os.path.join(workdir, "tb"),
                                        hparams_logdir=os.path.join(workdir, HPARAMS_DIR)),
                      JsonlWriter(workdir), LoggingWriter()])


HPARAMS_DIR = "hparams"
