"""Entry point: `python -m autoscout_jax.run --gin_file=... [--gin_bindings=...] [--workdir=...] [--fresh]`.

Where it sits: the search's entry layer (with bench/__main__.py, the
bench's entry, the only modules that import gin). Parses flags and gin and calls
`experiment.run_experiment` with everything gin bound. Every input is checked before anything is written: a gin file
that does not parse, a macro that nothing reads (a typo such as
`--gin_bindings='FOO = 3'`), an unknown parameter, a workdir that is a file,
read-only or not creatable, a workdir that holds another configuration's
measurements or is in use, an empty or impossible space, a bad budget: each
ends with one line on stderr and exit status 2, and the workdir stays byte
for byte as it was. Once the workdir is locked, `config.gin` is written, and
the operative config (what actually ran) after the first round.

Gin files are code (a binding can call any Python function): run only gin
files from a source you trust.

SIGTERM / SIGINT kill the run's child processes (their whole process
groups) and end the run with one line; what was measured stays in the store
and a run started again on the workdir resumes from it.

The console gets the progress lines, warnings and the summary; the INFO log
goes to `<workdir>/run.log` once the workdir is locked (kept in memory until
then; `--alsologtostderr` shows it on the console too).
"""

from __future__ import annotations

import io
import logging as pylogging
import os
import re
import signal
import sys
import time
from typing import Any

from absl import app, flags, logging

_GIN_FILE = flags.DEFINE_multi_string("gin_file", [], "Gin files to load (in order).")
_GIN_BINDINGS = flags.DEFINE_multi_string("gin_bindings", [], "Gin bindings, e.g. 'BUDGET_S = 60'.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where measurements, logs and the report go "
                               "(default: runs/<time>). Re-using a workdir resumes the run.")
_FRESH = flags.DEFINE_bool("fresh", False, "Start a new workdir: --workdir itself if it does not exist "
                           "or is empty, else the first free <workdir>-1, <workdir>-2, ...; the "
                           "named workdir is never touched.")

def _repo_root() -> str:
  return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _one_line(msg: str) -> str:
  # gin's messages point at the offending text over several lines.
  return " ".join(part.strip() for part in str(msg).splitlines() if part.strip())


def _fail(msg: str) -> None:
  print(f"autoscout_jax: error: {_one_line(msg)}", file=sys.stderr)
  sys.exit(2)


def _parse_gin(files, bindings) -> None:
  import gin
  gin.add_config_file_search_path(os.getcwd())
  gin.add_config_file_search_path(_repo_root())
  for f in files:
    if not os.path.exists(f) and not os.path.exists(os.path.join(_repo_root(), f)):
      _fail(f"gin file {f!r} does not exist")
  try:
    gin.parse_config_files_and_bindings(files, bindings, finalize_config=False)
  except Exception as e:  # gin raises many types; all mean "the config is wrong"
    _fail(f"could not parse the gin config: {type(e).__name__}: {e}")


class _QuietExpected(pylogging.Filter):
  """Drops the log lines JAX writes for accelerator backends this machine
  does not have: expected on a CPU host, and they buried the progress."""

  _NEEDLES = ("Unable to initialize backend", "a CUDA-enabled jaxlib is not installed",
              "Platform 'tpu' is experimental")

  def filter(self, record: pylogging.LogRecord) -> bool:
    msg = record.getMessage()
    return not any(n in msg for n in self._NEEDLES)


class _LogStream:
  """Where absl's INFO log goes: a buffer until the workdir is locked, then
  `workdir/run.log`. A library that resets logging (SMAC does) closes the
  handlers' streams; this one stays open until the process ends."""

  def __init__(self):
    self.target: Any = io.StringIO()

  def write(self, text: str) -> int:
    return self.target.write(text)

  def flush(self) -> None:
    self.target.flush()

  def close(self) -> None:
    pass

  def to_file(self, path: str) -> None:
    f = open(path, "a", encoding="utf-8")
    f.write(self.target.getvalue())
    self.target = f


def _quiet_console() -> _LogStream | None:
  """absl's INFO log to a `_LogStream`; warnings and errors stay on the console."""
  if flags.FLAGS["logtostderr"].value or flags.FLAGS["alsologtostderr"].value:
    return None  # the user asked for everything on the console
  handler = logging.get_absl_handler()
  stream = _LogStream()
  handler.python_handler.stream = stream
  if not flags.FLAGS["stderrthreshold"].present:
    flags.FLAGS.stderrthreshold = "warning"
  quiet = _QuietExpected()
  handler.addFilter(quiet)
  pylogging.getLogger("jax._src.xla_bridge").addFilter(quiet)
  return stream


def unread_macros() -> list[str]:
  """Macros the config defines but nothing in it reads (e.g. a mistyped
  `--gin_bindings='BUDGETS_S = 60'`)."""
  from gin import config
  macro = config.get_configurable(config.macro)
  defined = [name for name, selector in config._CONFIG if selector == "gin.macro"]
  # `%FOO` is gin's `@FOO/gin.macro()`: the macro's name is the reference's scope.
  read = {ref.scoped_selector.rsplit("/", 1)[0]
          for ref in config.iterate_references(config._CONFIG, to=macro)}
  return [m for m in defined if m not in read]


def unset_required_macros() -> list[str]:
  """Macros still bound to `%gin.REQUIRED` (a block the experiment did not include)."""
  from gin import config
  return [name for (name, selector), params in config._CONFIG.items()
          if selector == "gin.macro" and str(params.get("value")) == "%gin.REQUIRED"]


def _on_signal(signum, frame) -> None:
  del frame
  from autoscout_jax.local.runner import kill_children
  n = kill_children()
  name = signal.Signals(signum).name
  print(f"autoscout_jax: stopped by {name}" + (f"; killed {n} child process group(s)" if n else "")
        + "; the measurements so far are stored, run again on the workdir to resume",
        file=sys.stderr)
  sys.exit(128 + signum)


def main(argv) -> None:
  if len(argv) > 1:
    _fail(f"unexpected arguments {argv[1:]}")
  if not _GIN_FILE.value:
    _fail("no --gin_file given; try --gin_file=experiments/quickstart/quickstart.gin")
  log_stream = _quiet_console()
  import gin
  from autoscout_jax import experiment, workdir as workdir_lib
  _parse_gin(_GIN_FILE.value, _GIN_BINDINGS.value)
  missing = unset_required_macros()
  if missing:
    _fail(f"macro(s) {', '.join(missing)} required but not set (include a block that provides "
          f"them, see gin/runs/search.gin)")
  unread = unread_macros()
  if unread:
    _fail(f"macro(s) {', '.join(unread)} set but read by nothing in the config (a typo?)")
  workdir = _WORKDIR.value or os.path.join("runs", time.strftime("%Y%m%d-%H%M%S"))
  if _FRESH.value:
    workdir = workdir_lib.fresh_workdir(workdir)
  for sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(sig, _on_signal)

  writers = []

  def on_start(writer) -> None:  # inputs checked, workdir locked: now we may write
    if log_stream is not None:
      log_stream.to_file(os.path.join(workdir, "run.log"))
    writers.append(writer)
    with open(os.path.join(workdir, "config.gin"), "w") as f:
      f.write(gin.config_str())
    writer.write_texts(0, {"config": "```\n" + gin.config_str() + "\n```"})

  def on_round_end(stats, result) -> None:
    del stats, result
    if len(writers) == 1:
      text = gin.operative_config_str()
      with open(os.path.join(workdir, "operative_config.gin"), "w") as f:
        f.write(text)
      writers[0].write_texts(1, {"operative_config": "```\n" + text + "\n```"})
      writers.append(None)  # written once

  fn = gin.get_configurable(experiment.run_experiment)
  try:
    fn(workdir=workdir, on_start=on_start, on_round_end=on_round_end)
  except Exception as e:  # pylint: disable=broad-except
    if not experiment.is_input_error(e) or logging.level_debug():
      raise
    # gin appends "In call to configurable 'x' (<function ...>)" for each frame it wraps
    msg = re.sub(r"\s*In call to configurable '[^']*' \(<[^>]*>\)", "", str(e))
    _fail(f"{type(e).__name__}: {msg}")


def entry() -> None:
  app.run(main)


if __name__ == "__main__":
  entry()
