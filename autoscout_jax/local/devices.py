"""This machine's devices as the simulators see them: measured once by
micro-benchmarks, cached, re-used (the parent side: it starts no JAX backend).

Where it sits: the F0/F1 evaluators (sim/analytic.py, sim/event.py), given
a `LocalCluster`, call `sim_model`; it returns the measured devices as a
simulated cluster and the simulators' constants (sim/measured.py). The
measurement runs `python -m autoscout_jax.local.microbench` in a child
process with the environment the F3 profiler's child gets (the same
virtual device count on a CPU), once per machine key; the reply is stored
as `<cache_dir>/measured_devices/<key>.json` (the run's workdir, see
experiment.py) and read back by every later run that uses that directory.
A committed file (`devices_file`) replaces the measurement: a measured
benchmark table is replayed with the devices it was measured on.

The key names what the numbers depend on and can be known without starting
a JAX backend (which on a GPU would claim its memory in this process):
platform asked for, device count, jax/jaxlib versions, the host's CPU model
and core count, CUDA_VISIBLE_DEVICES. The device kind JAX reports is in the
file's provenance.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform as host
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from autoscout_jax.child_protocol import PARENT_ENV
from autoscout_jax.local.xla_flags import child_env
from autoscout_jax.sim import hardware
from autoscout_jax.sim.costs import SimConstants
from autoscout_jax.sim.measured import MeasuredDevices, sim_cluster, sim_constants
from autoscout_jax.workload import LocalCluster

SUBDIR = "measured_devices"


class DeviceBenchError(ValueError):
  """The micro-benchmarks could not run on this machine (one clear line)."""


def default_cache_dir() -> str:
  """$AUTOSCOUT_DEVICES_CACHE, else the user's cache directory."""
  if os.environ.get("AUTOSCOUT_DEVICES_CACHE"):
    return os.environ["AUTOSCOUT_DEVICES_CACHE"]
  base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
  return str(Path(base) / "autoscout_jax")


def _version(pkg: str) -> str:
  try:
    return importlib.metadata.version(pkg)
  except importlib.metadata.PackageNotFoundError:
    return ""


def _cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return host.processor() or host.machine()


def machine_key(cluster: LocalCluster) -> str:
  """'<platform><count>-<digest>' of what the measured numbers depend on."""
  ident = dict(platform=cluster.platform, num_devices=cluster.num_devices, jax=_version("jax"),
               jaxlib=_version("jaxlib"), cpu=_cpu_model(), cpus=os.cpu_count(), arch=host.machine(),
               cuda_visible=os.environ.get("CUDA_VISIBLE_DEVICES", ""))
  digest = hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]
  return f"{cluster.platform}{cluster.num_devices}-{digest}"


def measure(cluster: LocalCluster, key: str | None = None, timeout_s: float = 300.0, quick: bool = False,
            python: str | None = None) -> MeasuredDevices:
  """Run the micro-benchmarks in a child process; DeviceBenchError if they
  cannot run (too few devices, a crash, past `timeout_s`)."""
  env = child_env(cluster.platform, cluster.num_devices, {})
  env[PARENT_ENV] = str(os.getpid())
  request = json.dumps({"platform": cluster.platform, "num_devices": cluster.num_devices, "quick": quick})
  proc = subprocess.Popen([python or sys.executable, "-m", "autoscout_jax.local.microbench"],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                          start_new_session=True)
  try:
    out, err = proc.communicate(request.encode(), timeout=timeout_s)
  except subprocess.TimeoutExpired:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    raise DeviceBenchError(f"the device micro-benchmarks did not finish within {timeout_s:g} s") from None
  finally:
    if proc.poll() is None:
      os.killpg(proc.pid, signal.SIGKILL)
      proc.wait()
  try:
    reply = json.loads(out.decode().strip().splitlines()[-1])
  except (ValueError, IndexError):
    tail = err.decode(errors="replace")[-2000:]
    raise DeviceBenchError(f"the device micro-benchmarks died (exit {proc.returncode}): {tail}") from None
  if not reply.get("ok"):
    raise DeviceBenchError(f"the device micro-benchmarks failed: {reply.get('error')}")
  try:
    return MeasuredDevices.from_reply(key or machine_key(cluster), reply)
  except (KeyError, TypeError, ValueError) as e:
    raise DeviceBenchError(f"the device micro-benchmarks returned unusable numbers: {e}") from None


def cache_path(cache_dir: str, key: str) -> Path:
  return Path(cache_dir) / SUBDIR / f"{key}.json"


def load(path: str | os.PathLike) -> MeasuredDevices:
  """A measured-devices file (a cache entry or a committed one; a relative
  path not found here is taken from the repository root, as the committed
  benchmark tables are)."""
  root = Path(__file__).resolve().parents[2]
  if not os.path.isabs(path) and not os.path.exists(path) and (root / path).exists():
    path = root / path
  try:
    with open(path) as f:
      return MeasuredDevices.from_json(json.load(f))
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise DeviceBenchError(f"cannot read measured devices from {path}: {e}") from None


def save(md: MeasuredDevices, path: str | os.PathLike) -> None:
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(f".tmp{os.getpid()}")
  with open(tmp, "w") as f:
    json.dump(md.to_json(), f, indent=1, sort_keys=True)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def load_or_measure(cluster: LocalCluster, cache_dir: str | None = None, timeout_s: float = 300.0,
                    python: str | None = None) -> MeasuredDevices:
  """The cached measurement of this machine's devices for `cluster`, or a
  fresh one (then cached). A cached file of an older format (without the
  dispatch and transcendental timings) is measured again."""
  key = machine_key(cluster)
  path = cache_path(cache_dir or default_cache_dir(), key)
  if path.exists():
    md = load(path)
    if md.key == key and md.num_devices == cluster.num_devices and md.dispatch and md.transcendental:
      return md
  t0 = time.monotonic()
  md = measure(cluster, key, timeout_s=timeout_s, python=python)
  md = MeasuredDevices.from_reply(key, {**md.to_json(), "provenance": {
      **md.provenance, "measure_s": round(time.monotonic() - t0, 3)}})
  save(md, path)
  return md


def sim_model(cluster: LocalCluster, precision: str, cache_dir: str | None = None,
              devices_file: str | None = None,
              base: SimConstants | None = None) -> tuple[hardware.Cluster, SimConstants, MeasuredDevices]:
  """(simulated cluster, constants, the measurement) of `cluster`'s devices
  for a workload of `precision`: from `devices_file` when given, else the
  cached or fresh measurement."""
  if devices_file:
    md = load(devices_file)
    if md.num_devices != cluster.num_devices:
      raise DeviceBenchError(f"{devices_file} measured {md.num_devices} devices, the cluster has "
                             f"{cluster.num_devices}")
  else:
    md = load_or_measure(cluster, cache_dir)
  kw: dict[str, Any] = {} if base is None else {"base": base}
  sim = sim_cluster(md, cluster.memory_bytes_per_device, precision, name=cluster.name)
  return sim, sim_constants(md, precision, **kw), md


def main(argv: list[str] | None = None) -> int:
  """`python -m autoscout_jax.local.devices --out=FILE`: measure this
  machine's devices and write the file a run or a benchmark task can score
  on (`devices_file`); prints the numbers the simulators use."""
  import argparse
  from autoscout_jax.sim.measured import fit_summary
  ap = argparse.ArgumentParser(description=main.__doc__)
  ap.add_argument("--out", required=True, help="the measured-devices JSON to write")
  ap.add_argument("--num_devices", type=int, default=8)
  ap.add_argument("--platform", default="auto", choices=("auto", "cpu", "gpu", "tpu"))
  ap.add_argument("--precision", default="bf16", help="the compute precision the summary line reports")
  args = ap.parse_args(argv)
  cluster = LocalCluster(num_devices=args.num_devices, platform=args.platform)
  try:
    md = measure(cluster)
  except DeviceBenchError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  save(md, args.out)
  print(f"{args.out}: {fit_summary(md, args.precision)}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
