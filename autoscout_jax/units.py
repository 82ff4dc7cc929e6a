"""Numbers for people: durations and byte counts in a unit that fits.

Where it sits: a leaf module (standard library only) of the text a user
reads -- the console progress line (progress.py), the report's summary,
report.md and its TensorBoard text (report.py), report.html
(report_html.py), the fine-tuning memory paragraph (finetune.py) and the
memory verdicts of evaluators. A device budget of a few hundred MiB (a
small local device) and one of 141 GiB both print readably: bytes go to
the largest binary unit in which they are at least 1.
"""

from __future__ import annotations

_BYTE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def fmt_duration(s: float) -> str:
  """'3.2 s', '42 s', '1m15s', '3h02m'."""
  s = max(0.0, float(s))
  if s < 60:
    return f"{s:.1f} s" if s < 10 else f"{s:.0f} s"
  m, s = divmod(int(round(s)), 60)
  if m < 60:
    return f"{m}m{s:02d}s"
  h, m = divmod(m, 60)
  return f"{h}h{m:02d}m"


def fmt_bytes(n: float) -> str:
  """'512 B', '3.5 MiB', '53.4 GiB', '141 GiB': the largest binary unit in
  which the value is at least 1; one decimal below 100, none above."""
  v = float(n)
  sign = "-" if v < 0 else ""
  v = abs(v)
  unit = _BYTE_UNITS[0]
  for unit in _BYTE_UNITS:
    if v < 1023.5 or unit == _BYTE_UNITS[-1]:  # what would print as '1024' goes up a unit
      break
    v /= 1024
  if unit == "B":
    return f"{sign}{v:.0f} B"
  return f"{sign}{v:.1f} {unit}" if round(v, 1) < 100 else f"{sign}{v:.0f} {unit}"
