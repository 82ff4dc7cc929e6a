"""One writer interface, fanned out to TensorBoard, JSONL and absl logging.

Where it sits: the search loop and the experiment report through a
`Writer`; the store (measurements.jsonl) is the record, TensorBoard the view.

- scalars: `write_scalars(step, {tag: value})`
- texts: `write_texts(step, {tag: markdown})`
- hparams: `write_hparams(session, hparams, metrics)` — one HParams session
  per measured candidate, so TensorBoard's HParams view shows the landscape;
  `write_hparams_config(hparams_domains, metric_tags)` declares the columns.

TensorBoard events are written with the tensorboard package alone (no
TensorFlow): event protos through its EventFileWriter.
"""

from __future__ import annotations

import json
import os
import re
import time
from typing import Any, Mapping, Sequence

import numpy as np
from absl import logging


class Writer:
  """Base: every method is a no-op, so a writer implements what it shows."""

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    pass

  def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
    pass

  def write_hparams_config(self, domains: Mapping[str, Sequence[Any]], metric_tags: Sequence[str]) -> None:
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

  def write_scalars(self, step, scalars):
    for w in self.writers:
      w.write_scalars(step, scalars)

  def write_texts(self, step, texts):
    for w in self.writers:
      w.write_texts(step, texts)

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

  def write_scalars(self, step, scalars):
    logging.info("[%d] %s", step, ", ".join(f"{k}={v:.6g}" for k, v in scalars.items()))

  def write_texts(self, step, texts):
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

  def write_scalars(self, step, scalars):
    self._write({"kind": "scalars", "step": step, "time": time.time(),
                 "values": {k: float(v) for k, v in scalars.items()}})

  def write_texts(self, step, texts):
    self._write({"kind": "texts", "step": step, "time": time.time(), "values": dict(texts)})

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
  """Event files under `logdir`; HParams sessions in `logdir/hparams/<session>`."""

  def __init__(self, logdir: str):
    # Imported here so that modules which never write TensorBoard don't pay for it.
    from tensorboard.summary.writer.event_file_writer import EventFileWriter
    self._EventFileWriter = EventFileWriter
    self.logdir = logdir
    os.makedirs(logdir, exist_ok=True)
    self._main = EventFileWriter(logdir)
    self._hp_root = os.path.join(logdir, "hparams")

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

  def write_scalars(self, step, scalars):
    vals = self._scalar_values(scalars)
    if vals:
      self._main.add_event(self._event(step, vals))

  def write_texts(self, step, texts):
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.plugins.text import metadata as text_metadata
    from tensorboard.util import tensor_util
    vals = []
    for tag, text in texts.items():
      meta = text_metadata.create_summary_metadata(display_name=None, description=None)
      tensor = tensor_util.make_tensor_proto(np.array(text, dtype=object))
      vals.append(summary_pb2.Summary.Value(tag=tag, tensor=tensor, metadata=meta))
    self._main.add_event(self._event(step, vals))

  def write_hparams_config(self, domains, metric_tags):
    from tensorboard.plugins.hparams import summary_v2 as hp
    hparams = []
    for name, values in domains.items():
      values = [_hparam_value(v) for v in values]
      if values and all(isinstance(v, type(values[0])) for v in values):
        hparams.append(hp.HParam(name, hp.Discrete(sorted(set(values)))))
      else:
        hparams.append(hp.HParam(name))
    summary = hp.hparams_config_pb(hparams=hparams, metrics=[hp.Metric(t) for t in metric_tags])
    os.makedirs(self._hp_root, exist_ok=True)
    w = self._EventFileWriter(self._hp_root)
    from tensorboard.compat.proto import event_pb2
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
    self._main.flush()

  def close(self):
    self._main.close()


def default_writer(workdir: str) -> MultiWriter:
  return MultiWriter([TensorBoardWriter(os.path.join(workdir, "tb")), JsonlWriter(workdir),
                      LoggingWriter()])
