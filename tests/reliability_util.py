"""Helpers of the reliability tests: run the entry point, hash a workdir,
find a run's processes by an environment marker."""

import hashlib
import os
import subprocess
import sys
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARKER = "AUTOSCOUT_TEST_RUN"

# A simulated run that takes seconds: Llama 3 8B on 8 H100s, F0 only, no
# screen, random designer (a later --gin_file swaps it).
SIM = ["--gin_file=gin/runs/search.gin", "--gin_file=gin/bench/smoke_llama3_8b_h100_8.gin",
       "--gin_file=gin/spaces/megatron.gin", "--gin_file=gin/evaluators/analytic.gin",
       "--gin_file=gin/designers/random.gin", "--gin_bindings=SCREEN = []"]
TINY = ["--gin_file=experiments/quickstart/tiny.gin"]


def command(args, workdir):
  return [sys.executable, "-m", "autoscout_jax.run", *args, f"--workdir={workdir}"]


def env_with_marker():
  tag = uuid.uuid4().hex
  return {**os.environ, MARKER: tag}, tag


def run(args, workdir, env=None, timeout=600):
  return subprocess.run(command(args, workdir), cwd=ROOT, capture_output=True, text=True,
                        timeout=timeout, env=env)


def start(args, workdir, env):
  """The run in its own session and process group (as a shell job would be)."""
  return subprocess.Popen(command(args, workdir), cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, env=env, start_new_session=True)


def tree_hash(path):
  """Digest of every name, type and byte under `path` ('absent' if none)."""
  if not os.path.lexists(path):
    return "absent"
  h = hashlib.sha256()
  if not os.path.isdir(path):
    h.update(b"file:" + open(path, "rb").read())
    return h.hexdigest()
  for dirpath, dirnames, filenames in os.walk(path):
    dirnames.sort()
    h.update(b"dir:" + os.path.relpath(dirpath, path).encode())
    for name in sorted(filenames):
      p = os.path.join(dirpath, name)
      h.update(b"file:" + os.path.relpath(p, path).encode() + b"\0")
      with open(p, "rb") as f:
        h.update(f.read())
  return h.hexdigest()


def settled_tree_hash(path, quiet_s=1.0, timeout_s=120.0):
  """`tree_hash` of a workdir a live run writes into, once it has stopped
  changing for `quiet_s` (the run reached its steady state: a hung child's
  parent may still log the child's start for a moment after the child
  exists); the last hash at `timeout_s`."""
  deadline = time.time() + timeout_s
  last = tree_hash(path)
  while time.time() < deadline:
    time.sleep(quiet_s)
    now = tree_hash(path)
    if now == last:
      return now
    last = now
  return last


def processes_with(tag):
  """(pid, cmdline) of live processes whose environment carries the marker."""
  needle = f"{MARKER}={tag}".encode()
  found = []
  for pid in os.listdir("/proc"):
    if not pid.isdigit():
      continue
    try:
      with open(f"/proc/{pid}/environ", "rb") as f:
        env = f.read().split(b"\0")
      with open(f"/proc/{pid}/stat") as f:
        state = f.read().rsplit(")", 1)[1].split()[0]
      with open(f"/proc/{pid}/cmdline", "rb") as f:
        cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
      continue
    if needle in env and state != "Z":  # a zombie is already dead, waiting to be reaped
      found.append((int(pid), cmd))
  return found


def one_error_line(proc):
  """The single stderr line of a refused run (asserts there is exactly one)."""
  lines = [l for l in proc.stderr.splitlines() if l.strip()]
  assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  assert len(lines) == 1, proc.stderr[-3000:]
  assert lines[0].startswith("autoscout_jax: error: "), lines[0]
  return lines[0]
