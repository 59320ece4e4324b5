"""The base of the errors a user's mistake raises."""


class UserError(Exception):
  """A mistake in a flag, a file or a workdir, which the message names along with what to do.

  `train.py` prints the message alone (no traceback) and exits 1; nothing done before is lost.
  Each layer raises its own subclass (`corpus.DataError`, `workdir.WorkdirError`, ...).
  """
