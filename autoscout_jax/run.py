"""Entry point: `python -m autoscout_jax.run --gin_file=... [--gin_bindings=...] [--workdir=...]`.

Parses flags and gin, writes `config.gin` into the workdir, calls
`experiment.run_experiment` with everything gin bound, and writes the
operative config (what actually ran) after the first round. Bad input ends
with one clear message and a non-zero exit; the workdir's measurement store
is never touched before the inputs are checked.

The console gets the progress lines, warnings and the summary; the INFO log
goes to `<workdir>/run.log` (`--alsologtostderr` shows it too).
"""

from __future__ import annotations

import logging as pylogging
import os
import sys
import time

from absl import app, flags, logging

_GIN_FILE = flags.DEFINE_multi_string("gin_file", [], "Gin files to load (in order).")
_GIN_BINDINGS = flags.DEFINE_multi_string("gin_bindings", [], "Gin bindings, e.g. 'BUDGET_S = 60'.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where measurements, logs and the report go "
                               "(default: runs/<time>). Re-using a workdir resumes the run.")

# Errors whose message is enough for the user (no traceback).
_USER_ERRORS = (ValueError, TypeError, KeyError, FileNotFoundError, IOError, ImportError)


def _repo_root() -> str:
  return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _fail(msg: str) -> None:
  # One line: gin's messages point at the offending text over several lines.
  one_line = " ".join(part.strip() for part in str(msg).splitlines() if part.strip())
  print(f"autoscout_jax: error: {one_line}", file=sys.stderr)
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


def _log_to_workdir(workdir: str) -> str:
  """INFO and up to `workdir/run.log`; warnings and errors also on the console."""
  path = os.path.join(workdir, "run.log")
  handler = logging.get_absl_handler()
  handler.python_handler.stream = open(path, "a", encoding="utf-8")
  if not flags.FLAGS["stderrthreshold"].present:
    flags.FLAGS.stderrthreshold = "warning"
  quiet = _QuietExpected()
  handler.addFilter(quiet)
  pylogging.getLogger("jax._src.xla_bridge").addFilter(quiet)
  return path


def main(argv) -> None:
  if len(argv) > 1:
    _fail(f"unexpected arguments {argv[1:]}")
  if not _GIN_FILE.value:
    _fail("no --gin_file given; try --gin_file=experiments/quickstart/quickstart.gin")
  import gin
  from autoscout_jax import experiment
  _parse_gin(_GIN_FILE.value, _GIN_BINDINGS.value)
  workdir = _WORKDIR.value or os.path.join("runs", time.strftime("%Y%m%d-%H%M%S"))
  os.makedirs(workdir, exist_ok=True)
  _log_to_workdir(workdir)
  with open(os.path.join(workdir, "config.gin"), "w") as f:
    f.write(gin.config_str())

  wrote_operative = []

  def on_round_end(stats, result):
    del stats, result
    if not wrote_operative:
      wrote_operative.append(True)
      text = gin.operative_config_str()
      with open(os.path.join(workdir, "operative_config.gin"), "w") as f:
        f.write(text)

  from autoscout_jax.writers import default_writer
  writer = default_writer(workdir)
  writer.write_texts(0, {"config": "```\n" + gin.config_str() + "\n```"})
  try:
    fn = gin.get_configurable(experiment.run_experiment)
    try:
      fn(workdir=workdir, on_round_end=on_round_end, writer=writer)
    except _USER_ERRORS as e:
      if logging.level_debug():
        raise
      _fail(f"{type(e).__name__}: {e}")
    if wrote_operative:
      writer.write_texts(1, {"operative_config": "```\n" + gin.operative_config_str() + "\n```"})
  finally:
    writer.close()


def entry() -> None:
  app.run(main)


if __name__ == "__main__":
  entry()
