"""A tiny Chrome DevTools Protocol client over --remote-debugging-pipe.

Loads a page in headless Chromium and reports what a user's browser would:
console errors, uncaught exceptions, failed loads (the Log domain), and
the value of a JavaScript expression after the load event. No websocket
library: Chromium reads commands from fd 3 and writes replies to fd 4,
each a JSON message ended by a NUL byte.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from typing import Any


def find_chromium() -> str | None:
  for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
    path = shutil.which(name)
    if path:
      return path
  return None


class _Pipe:

  def __init__(self, binary: str):
    to_r, self._to_w = os.pipe()  # we write commands, chromium reads fd 3
    self._from_r, from_w = os.pipe()  # chromium writes fd 4, we read
    self._profile = tempfile.mkdtemp(prefix="cdp-profile-")
    self._log = open(os.path.join(self._profile, "stderr.txt"), "wb")

    def child_fds():
      # Through fresh descriptors first: a pipe end may already be 3 or 4.
      r, w = os.dup(to_r), os.dup(from_w)
      os.dup2(r, 3)
      os.dup2(w, 4)
      os.set_inheritable(3, True)
      os.set_inheritable(4, True)

    self.proc = subprocess.Popen(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
         "--no-first-run", "--no-default-browser-check", f"--user-data-dir={self._profile}",
         "about:blank"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._log,
        preexec_fn=child_fds, close_fds=False)  # fds 3 and 4 must survive
    os.close(to_r)
    os.close(from_w)
    self._buf = b""
    self._id = 0
    self.events: list[dict[str, Any]] = []

  def send(self, method: str, params: dict | None = None, session: str | None = None,
           timeout: float = 30.0) -> dict[str, Any]:
    self._id += 1
    msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
    if session:
      msg["sessionId"] = session
    os.write(self._to_w, json.dumps(msg).encode() + b"\0")
    want = self._id
    deadline = time.time() + timeout
    while time.time() < deadline:
      m = self._read(deadline)
      if m.get("id") == want:
        if "error" in m:
          raise RuntimeError(f"{method}: {m['error']}")
        return m.get("result", {})
      self.events.append(m)
    raise TimeoutError(method)

  def wait_event(self, method: str, timeout: float = 30.0) -> dict[str, Any]:
    for m in self.events:
      if m.get("method") == method:
        return m
    deadline = time.time() + timeout
    while time.time() < deadline:
      m = self._read(deadline)
      self.events.append(m)
      if m.get("method") == method:
        return m
    raise TimeoutError(method)

  def _read(self, deadline: float) -> dict[str, Any]:
    import select
    while b"\0" not in self._buf:
      left = deadline - time.time()
      if left <= 0:
        raise TimeoutError("no message from chromium")
      ready, _, _ = select.select([self._from_r], [], [], left)
      if ready:
        chunk = os.read(self._from_r, 1 << 16)
        if not chunk:
          raise RuntimeError("chromium closed the pipe")
        self._buf += chunk
    raw, self._buf = self._buf.split(b"\0", 1)
    return json.loads(raw)

  def close(self) -> None:
    try:
      self.send("Browser.close", timeout=5)
    except Exception:  # already gone
      pass
    try:
      self.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
      self.proc.kill()
      self.proc.wait()
    os.close(self._to_w)
    os.close(self._from_r)
    shutil.rmtree(self._profile, ignore_errors=True)


def load(url: str, expression: str, binary: str | None = None, settle_s: float = 0.5) -> dict[str, Any]:
  """{'errors': [str], 'value': <expression's value>} for the page at `url`."""
  binary = binary or find_chromium()
  if binary is None:
    raise FileNotFoundError("no chromium binary")
  pipe = _Pipe(binary)
  try:
    target = pipe.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = pipe.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for domain in ("Runtime", "Log", "Page"):
      pipe.send(f"{domain}.enable", session=session)
    pipe.send("Page.navigate", {"url": url}, session=session)
    pipe.wait_event("Page.loadEventFired")
    time.sleep(settle_s)
    value = pipe.send("Runtime.evaluate", {"expression": expression, "returnByValue": True},
                      session=session)["result"].get("value")
    errors = []
    for m in pipe.events:
      p = m.get("params", {})
      if m.get("method") == "Runtime.exceptionThrown":
        d = p["exceptionDetails"]
        errors.append(d.get("exception", {}).get("description") or d.get("text", "exception"))
      elif m.get("method") == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
        errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
      elif m.get("method") == "Log.entryAdded" and p["entry"].get("level") == "error":
        errors.append(p["entry"].get("text", ""))
    return {"errors": errors, "value": value}
  finally:
    pipe.close()
