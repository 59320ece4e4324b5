"""Headless Chromium driven through the DevTools protocol over a pipe (no driver, no package).

`--remote-debugging-pipe` makes Chromium read commands from its fd 3 and write replies and
events to its fd 4, each a JSON object ended by a NUL byte; a page is reached by attaching to
its target (`Target.attachToTarget`, flat sessions) and sending commands with its sessionId.
"""
import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# Flags for a browser run by root in a container, with no network of its own to use.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1000,760", "--remote-debugging-pipe")


def find():
  """The Chromium executable ($CHROMIUM, else the first of NAMES on PATH), or None."""
  named = os.environ.get("CHROMIUM")
  if named:
    return named
  for name in NAMES:
    path = shutil.which(name)
    if path:
      return path
  return None


class ProtocolError(RuntimeError):
  """Chromium answered a command with an error, or did not answer in time."""


class Browser:
  """One headless Chromium with a fresh profile, and one page (`send` talks to the page)."""

  def __init__(self, executable, timeout=60):
    self.timeout = timeout
    self._profile = tempfile.mkdtemp(prefix="chromium-profile-")
    to_browser, self._write = os.pipe()
    self._read, from_browser = os.pipe()
    # Above 4, so that placing them at 3 and 4 in the child cannot overwrite one another;
    # bash places them (a preexec_fn is unsafe in a process with threads).
    child_in = fcntl.fcntl(to_browser, fcntl.F_DUPFD, 10)
    child_out = fcntl.fcntl(from_browser, fcntl.F_DUPFD, 10)
    for fd in (to_browser, from_browser):
      os.close(fd)
    place = f'exec "$0" "$@" 3<&{child_in} 4>&{child_out} {child_in}<&- {child_out}>&-'
    self.process = subprocess.Popen(
        ["bash", "-c", place, executable, *FLAGS, f"--user-data-dir={self._profile}",
         "about:blank"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        pass_fds=(child_in, child_out))
    os.close(child_in)
    os.close(child_out)
    self._buffer, self._next_id, self._session = b"", 0, None
    target = self._command("Target.createTarget", {"url": "about:blank"})["targetId"]
    self._session = self._command("Target.attachToTarget",
                                  {"targetId": target, "flatten": True})["sessionId"]
    self.send("Page.enable")
    self.send("Runtime.enable")

  def _message(self, deadline):
    while b"\0" not in self._buffer:
      left = deadline - time.monotonic()
      if left <= 0 or not select.select([self._read], [], [], left)[0]:
        raise ProtocolError("Chromium did not answer in time")
      chunk = os.read(self._read, 1 << 16)
      if not chunk:
        raise ProtocolError(f"Chromium closed its pipe: {self._stderr()}")
      self._buffer += chunk
    message, self._buffer = self._buffer.split(b"\0", 1)
    return json.loads(message)

  def _stderr(self):
    if self.process.poll() is None:
      return "(still running)"
    return self.process.stderr.read().decode("utf-8", "replace")[-2000:]

  def _command(self, method, params=None, session=None):
    self._next_id += 1
    request = {"id": self._next_id, "method": method, "params": params or {}}
    if session:
      request["sessionId"] = session
    os.write(self._write, json.dumps(request).encode() + b"\0")
    deadline = time.monotonic() + self.timeout
    while True:
      message = self._message(deadline)
      if message.get("id") == self._next_id:
        if "error" in message:
          raise ProtocolError(f"{method}: {message['error']}")
        return message.get("result", {})

  def send(self, method, params=None):
    """A DevTools command to the page; its result."""
    return self._command(method, params, self._session)

  def evaluate(self, expression):
    """The value of a JavaScript expression in the page (promises awaited)."""
    result = self.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                            "returnByValue": True})
    if "exceptionDetails" in result:
      raise ProtocolError(f"{expression}: {result['exceptionDetails']}")
    return result["result"].get("value")

  def wait_for(self, expression, timeout=60):
    """Polls a JavaScript expression until it is truthy; returns its value."""
    deadline = time.monotonic() + timeout
    while True:
      value = self.evaluate(expression)
      if value:
        return value
      if time.monotonic() > deadline:
        raise ProtocolError(f"waited {timeout} s for {expression}")
      time.sleep(0.1)

  def open(self, url):
    self.send("Page.navigate", {"url": url})
    self.wait_for("document.readyState === 'complete'")

  def type_text(self, text):
    """Types `text` into the focused element, as keyboard input."""
    self.send("Input.insertText", {"text": text})

  def press_enter(self):
    for kind in ("keyDown", "keyUp"):
      self.send("Input.dispatchKeyEvent", {"type": kind, "key": "Enter", "code": "Enter",
                                           "windowsVirtualKeyCode": 13, "text": "\r"})

  def screenshot(self):
    """The page as PNG bytes."""
    return base64.b64decode(self.send("Page.captureScreenshot", {"format": "png"})["data"])

  def close(self):
    try:
      self._command("Browser.close")
    except (ProtocolError, OSError):
      pass
    try:
      self.process.wait(10)
    except subprocess.TimeoutExpired:
      self.process.kill()
      self.process.wait()
    for fd in (self._read, self._write):
      os.close(fd)
    self.process.stderr.close()
    shutil.rmtree(self._profile, ignore_errors=True)
