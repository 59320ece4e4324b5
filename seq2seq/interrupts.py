"""Turning SIGINT / SIGTERM into a request to save and stop at the next step boundary."""
import signal

# Exit status of a run stopped by a signal after saving: the shell convention 128 + signal.
EXIT_SIGINT = 128 + signal.SIGINT  # 130
EXIT_SIGTERM = 128 + signal.SIGTERM  # 143


class StopOnSignal:
  """Context manager; `requested` is the signal number received, or None.

  The first signal only sets `requested` (the loop saves and returns); a second SIGINT
  raises KeyboardInterrupt at once. Handlers are restored on exit.
  """

  def __init__(self, signals=(signal.SIGINT, signal.SIGTERM)):
    self.signals = signals
    self.requested = None
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    if self.requested is not None and signum == signal.SIGINT:
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

  @property
  def exit_code(self):
    return 128 + self.requested if self.requested is not None else 0
