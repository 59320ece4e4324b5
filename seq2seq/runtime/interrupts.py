"""Turning SIGINT / SIGTERM into a request to save and stop at the next step boundary.

Under a strategy the workers must stop at the same step (a worker that left early would
leave the others waiting in a collective), so each step's all-reduce also sums every
worker's `vote`, and all of them stop for the `agreed` signal after that step.
"""
import contextlib
import signal

import numpy as np

# Exit status of a run stopped by a signal after saving: the shell convention 128 + signal.
EXIT_SIGINT = 128 + signal.SIGINT  # 130
EXIT_SIGTERM = 128 + signal.SIGTERM  # 143
# The signals that stop a run, in rising priority: workers stopped by both exit for SIGTERM.
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Terminated(BaseException):
  """SIGTERM arrived inside `sigterm_raises` (a BaseException, like KeyboardInterrupt)."""


@contextlib.contextmanager
def sigterm_raises():
  """Within the block, SIGTERM raises `Terminated` as SIGINT raises KeyboardInterrupt, so the
  block's cleanup runs (e.g. keeping a partial output) instead of the process just ending."""

  def handle(signum, frame):
    del signum, frame
    raise Terminated

  previous = signal.signal(signal.SIGTERM, handle)
  try:
    yield
  finally:
    signal.signal(signal.SIGTERM, previous)


class StopOnSignal:
  """Context manager; `requested` is the signal number received, or None.

  The first signal only sets `requested` (the loop saves and returns); a second SIGINT
  raises KeyboardInterrupt at once, unless `second_sigint_interrupts` is False (a supervisor
  that must outlive its workers only records the latest signal). Handlers are restored on
  exit.
  """

  def __init__(self, signals=SIGNALS, second_sigint_interrupts=True):
    self.signals = signals
    self.second_sigint_interrupts = second_sigint_interrupts
    self.requested = None
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    if (self.second_sigint_interrupts and self.requested is not None
        and signum == signal.SIGINT):
      raise KeyboardInterrupt
    self.requested = signum

  def __enter__(self):
    for signum in self.signals:
      self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    return False

  def vote(self):
    """[len(signals)] float32: one-hot of the signal this process received; zeros if none."""
    return np.array([float(self.requested == s) for s in self.signals], np.float32)

  def agreed(self, votes):
    """The signal a group stops for, given its summed `vote`s; None to go on.

    The last of `signals` that any worker received: every worker gets the same answer.
    """
    received = [s for s, count in zip(self.signals, votes) if count > 0]
    return int(received[-1]) if received else None

  @property
  def exit_code(self):
    return 128 + self.requested if self.requested is not None else 0
