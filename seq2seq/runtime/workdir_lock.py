"""One run per workdir: an exclusive lock file naming its holder (pid, host, start time).

    WORKDIR/lock    {"pid": 1234, "host": "box", "started": "2026-11-28 20:41:07 UTC"}

The file is created with O_CREAT | O_EXCL, so of two runs racing for a workdir exactly one
creates it. A lock whose process is gone (same host, pid no longer running) is stale and is
taken over; a lock held from another host cannot be checked and is never taken over. A lock
naming this very process's pid that this process does not hold is stale too: a restarted
container (Kubernetes restarts the same pod, same hostname) often runs as the same pid, 1.
"""
import json
import os
import socket
import time

from seq2seq import errors

LOCK_NAME = "lock"
# An unreadable (empty) lock file younger than this may be one that is being written.
_UNREADABLE_GRACE_S = 10.0
# The lock files this process holds (real paths).
_held_here = set()


class WorkdirLocked(errors.UserError, RuntimeError):
  """Another live run holds the workdir; the message names it."""


def lock_path(workdir):
  return os.path.join(workdir, LOCK_NAME)


def _pid_running(pid):
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # it exists, under another user
    return True
  return True


def _read_holder(path):
  """The lock's {"pid", "host", "started"}, or None when it is missing or not (yet) valid."""
  try:
    with open(path, encoding="utf-8") as f:
      holder = json.load(f)
    return holder if isinstance(holder, dict) and isinstance(holder.get("pid"), int) else None
  except (OSError, ValueError):
    return None


def _is_stale(path, holder):
  if holder is None:  # a crash between create and write, or a file being written right now
    try:
      return time.time() - os.path.getmtime(path) > _UNREADABLE_GRACE_S
    except FileNotFoundError:
      return True
  if holder.get("host") != socket.gethostname():
    return False
  if holder["pid"] == os.getpid():  # a previous process with our pid, unless we hold it
    return os.path.realpath(path) not in _held_here
  return not _pid_running(holder["pid"])


class WorkdirLock:
  """Context manager holding WORKDIR/lock for the duration of a run.

  Raises (on enter):
    WorkdirLocked: a live process (or one on another host) holds the workdir.
  """

  def __init__(self, workdir, log=print):
    self.path = lock_path(workdir)
    self.log = log
    self.holder = None

  def acquire(self):
    os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
    me = {"pid": os.getpid(), "host": socket.gethostname(),
          "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    for _ in range(3):
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        holder = _read_holder(self.path)
        if not _is_stale(self.path, holder):
          raise WorkdirLocked(self._held_message(holder)) from None
        self.log(f"taking over the stale lock {self.path} of "
                 f"{_describe(holder) if holder else 'an unfinished run'} (no longer running)")
        try:
          os.remove(self.path)
        except FileNotFoundError:
          pass
        continue
      try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
          json.dump(me, f)
          f.flush()
          os.fsync(f.fileno())
      except BaseException:  # a full disk: an empty lock would keep the next run out for a while
        os.remove(self.path)
        raise
      self.holder = me
      _held_here.add(os.path.realpath(self.path))
      return self
    raise WorkdirLocked(f"{self.path}: could not take the lock (another run keeps taking it)")

  def release(self):
    """Removes the lock file if it is still ours."""
    if self.holder is None:
      return
    current = _read_holder(self.path)
    if current is not None and current.get("pid") == self.holder["pid"] and \
        current.get("host") == self.holder["host"]:
      os.remove(self.path)
    _held_here.discard(os.path.realpath(self.path))
    self.holder = None

  def _held_message(self, holder):
    who = _describe(holder) if holder else "a run that is starting (the lock is being written)"
    return (f"{os.path.dirname(self.path)} is in use by {who}; wait for it to finish, stop it, "
            f"or use another --workdir. If that run is gone, delete {self.path}.")

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()
    return False


def _describe(holder):
  return (f"pid {holder.get('pid')} on host {holder.get('host')} "
          f"(started {holder.get('started')})")
