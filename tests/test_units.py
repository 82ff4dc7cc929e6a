"""Sizes and durations for people (autoscout_jax/units.py): the unit fits
the number, so a small local device's budget never prints as '0 GiB'."""

import pytest

from autoscout_jax import report
from autoscout_jax.units import fmt_bytes, fmt_duration


@pytest.mark.parametrize("n,text", [
    (0, "0 B"), (512, "512 B"), (1024, "1.0 KiB"), (4096, "4.0 KiB"), (1.5 * 2**20, "1.5 MiB"),
    (256 * 2**20, "256 MiB"), (2**30 - 1, "1.0 GiB"), (2 * 2**30, "2.0 GiB"), (53.4 * 2**30, "53.4 GiB"),
    (141 * 2**30, "141 GiB"), (99.96 * 2**30, "100 GiB"), (3 * 2**40, "3.0 TiB"), (-2 * 2**20, "-2.0 MiB")])
def test_bytes_in_the_unit_that_fits(n, text):
  assert fmt_bytes(n) == text


def test_durations():
  assert fmt_duration(3.21) == "3.2 s" and fmt_duration(42) == "42 s" and fmt_duration(75) == "1m15s"


def test_report_memory_phrase_on_small_and_large_devices():
  small = report._mem_mfu({"peak_mem_bytes": 1.6 * 2**20}, {"device_memory_bytes": 256 * 2**20})
  assert small == ", peak memory 1.6 MiB of 256 MiB per device"
  big = report._mem_mfu({"peak_mem_bytes": 53.4 * 2**30, "mfu": 0.581}, {"device_memory_bytes": 95 * 2**30})
  assert big == ", peak memory 53.4 GiB of 95.0 GiB per device, MFU 58.1 %"
  # a simulator's uncertain memory verdict is said, with the optimistic bound
  doubt = report._mem_mfu({"peak_mem_bytes": 89.6 * 2**30, "memory_verdict": "uncertain",
                           "peak_mem_bytes_lo": 70.5 * 2**30}, {"device_memory_bytes": 80 * 2**30})
  assert doubt.startswith(", peak memory 89.6 GiB of 80.0 GiB per device (memory uncertain")
  assert "70.5 GiB" in doubt and "compile or profile" in doubt
  sure = report._mem_mfu({"peak_mem_bytes": 53.4 * 2**30, "memory_verdict": "yes"}, {})
  assert "uncertain" not in sure
