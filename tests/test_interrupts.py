"""StopOnSignal: the first signal asks to stop; a second SIGINT interrupts unless told not to."""
import os
import signal

import pytest

from seq2seq.runtime import interrupts


def _send(signum):
  os.kill(os.getpid(), signum)  # delivered to the main thread before os.kill returns


def test_first_signal_is_recorded_and_handlers_are_restored():
  before = signal.getsignal(signal.SIGTERM)
  with interrupts.StopOnSignal() as stop:
    assert stop.requested is None
    _send(signal.SIGTERM)
    assert stop.requested == signal.SIGTERM
    assert list(stop.vote()) == [0.0, 1.0]
  assert signal.getsignal(signal.SIGTERM) is before


def test_second_sigint_interrupts_a_training_run():
  with interrupts.StopOnSignal() as stop:
    _send(signal.SIGINT)
    assert stop.requested == signal.SIGINT
    with pytest.raises(KeyboardInterrupt):
      _send(signal.SIGINT)


def test_a_supervisor_only_records_the_latest_signal():
  with interrupts.StopOnSignal(second_sigint_interrupts=False) as stop:
    _send(signal.SIGINT)
    _send(signal.SIGINT)
    _send(signal.SIGTERM)
    assert stop.requested == signal.SIGTERM
