"""The files and folders a run writes: never over one of its own inputs, never half-written.

Checks run before any model or data is loaded: `check_file` and `check_folder` refuse an
output that is, holds or lies in one of the run's inputs (compared through symlinks and
hard links), a folder that is not the program's own output, and a folder that does not
exist; `check_text` refuses an input that is not UTF-8 text. Writers put the content in a
hidden file or folder beside the target and rename it into place when it is complete
(`write_atomic`, `lines_into`, `folder_into`, `replace_folder`), so an error, Ctrl-C or SIGTERM
leaves the earlier output as it was.

No TensorFlow here: train.py checks paths with it before the heavy imports.
"""
import contextlib
import errno
import os
import shutil
import tempfile

from seq2seq import errors

PARTIAL_SUFFIX = ".partial"
# This program's own folder (the repository or the installed package's parent): the folder
# above the `seq2seq` package this module is in.
SOURCE_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir))


class OutputError(errors.UserError, ValueError):
  """An output that would destroy data or cannot be written; the message names the flag."""


class NotText(errors.UserError, ValueError):
  """An input file that is not UTF-8 text; the message names the flag, file and line."""


def _real(path):
  return os.path.realpath(os.path.abspath(path))


def same_file(a, b):
  """True if `a` and `b` name one file or folder (also through symlinks and hard links)."""
  try:
    return os.path.samefile(a, b)
  except OSError:  # one of them does not exist (yet)
    return _real(a) == _real(b)


def inside(path, folder):
  """True if `path` is `folder` or lies under it, symlinks resolved."""
  path, folder = _real(path), _real(folder)
  return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def protected_folders():
  """(what, path) of folders that no output may replace, nor any folder above them."""
  return [("the root folder", os.sep), ("your home folder", os.path.expanduser("~")),
          ("the current folder", os.getcwd()), ("this program's source folder", SOURCE_ROOT)]


def _clashing_input(path, inputs):
  """The first (what, input path) of `inputs` that writing `path` would replace, or None."""
  for what, other in inputs:
    if other and (same_file(path, other) or (os.path.isdir(other) and inside(path, other))):
      return what, other
  return None


def _existing_ancestor(path):
  folder = os.path.dirname(os.path.abspath(path))
  while not os.path.lexists(folder):
    folder = os.path.dirname(folder)
  return folder


def check_file(flag, path, inputs=()):
  """Raises OutputError unless a file can be written at `path` without touching an input.

  Args:
    flag: the flag that names `path`, for the message.
    path: the output file.
    inputs: (what, path) pairs the run reads, e.g. ("--decode_input", "in.txt"); a folder
      among them protects everything under it.
  """
  if path.endswith(("/", os.sep)) or os.path.isdir(path):
    raise OutputError(f"--{flag}={path} is a folder; name a file (e.g. "
                      f"--{flag}={os.path.join(path, 'out.txt')})")
  folder = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(folder):
    what = "is a file, not a folder" if os.path.exists(folder) else "does not exist"
    raise OutputError(f"--{flag}={path}: the folder {folder} {what}; create the folder first "
                      "or name a file in an existing folder")
  if not os.access(folder, os.W_OK):
    raise OutputError(f"--{flag}={path}: the folder {folder} cannot be written (no permission, "
                      "or a read-only file system); name a file in a folder you can write")
  clash = _clashing_input(path, inputs)
  if clash:
    raise OutputError(f"--{flag}={path} is {clash[0]} ({clash[1]}), which this run reads: "
                      f"writing --{flag} would destroy it; name another file")


def check_folder(flag, path, inputs=(), foreign=lambda path: None):
  """Raises OutputError unless the folder `path` may be replaced by a new one.

  Allowed: a folder that does not exist, an empty one, or one that `foreign(path)` accepts
  (returns None for; else the reason, e.g. "is not a SavedModel"). Never a file, one
  of `protected_folders` or a folder above one, nor a folder that is or holds one of `inputs`
  ((what, path) pairs).
  """
  if os.path.lexists(path) and not os.path.isdir(path):
    raise OutputError(f"--{flag}={path} is a file, not a folder; name a new folder")
  ancestor = _existing_ancestor(path)
  if not os.path.isdir(ancestor):
    raise OutputError(f"--{flag}={path}: {ancestor} is a file, so no folder can be made there; "
                      "name a folder elsewhere")
  for what, folder in protected_folders():
    if inside(folder, path):
      raise OutputError(f"--{flag}={path} is {what} ({_real(folder)}) or a folder above it, "
                        f"which this run would replace; name a new folder, e.g. "
                        f"--{flag}={os.path.join(path, 'out') if path != os.sep else 'out'}")
  for what, other in inputs:
    if other and os.path.lexists(other) and inside(other, path):
      raise OutputError(f"--{flag}={path} holds {what} ({other}), which this run reads; "
                        "the folder is replaced as a whole: name a new folder")
  if os.path.isdir(path) and os.listdir(path):
    reason = foreign(path)
    if reason:
      raise OutputError(f"--{flag}={path} is not empty and {reason}; only an empty folder or "
                        "one this program wrote is replaced: move its files away or name a new "
                        "folder")


_BINARY_PROBE = 8192  # bytes read for a NUL, as git and grep tell binary files from text


def _binary(flag, path, number):
  return NotText(f"--{flag}={path}: line {number} holds NUL bytes: this is a binary file, not "
                 "UTF-8 text with one sentence a line; name the text file to read")


def check_text(flag, path):
  """Raises NotText unless `path` is a file of UTF-8 text lines (no NUL bytes)."""
  if os.path.isdir(path):
    raise NotText(f"--{flag}={path} is a folder; name a text file, one sentence a line")
  with open(path, "rb") as f:
    head = f.read(_BINARY_PROBE)
    if b"\0" in head:  # before the UTF-8 check: a binary file's first bytes are rarely UTF-8
      raise _binary(flag, path, head.count(b"\n", 0, head.index(b"\0")) + 1)
    f.seek(0)
    for number, line in enumerate(f, start=1):
      if b"\0" in line:
        raise _binary(flag, path, number)
      try:
        line.decode("utf-8")
      except UnicodeDecodeError as e:
        raise NotText(f"--{flag}={path}: line {number} is not UTF-8 text (byte "
                      f"{line[e.start:e.start + 1]!r} at column {e.start + 1}); convert the file "
                      "to UTF-8, e.g. iconv -f latin1 -t utf-8") from None


def _temporary_beside(target, mode):
  """(file object, path) of a new hidden file in `target`'s folder."""
  folder, name = os.path.split(target)
  fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder or ".")
  return os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})), tmp


@contextlib.contextmanager
def file_into(path, mode="w"):
  """Yields a file open on a hidden file beside `path` (mode "w": UTF-8 text, or "wb"); it
  replaces `path` (through a symlink, as open() would) only when the block completes, and
  is deleted otherwise."""
  f, tmp = _temporary_beside(os.path.realpath(path), mode)
  try:
    with f:
      yield f
    os.replace(tmp, os.path.realpath(path))
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise


def write_atomic(path, text):
  """Writes `text` (UTF-8) to `path` whole or not at all; no temporary file stays behind."""
  with file_into(path) as f:
    f.write(text)


@contextlib.contextmanager
def lines_into(path, log=print):
  """Yields `write(line)`; the lines reach `path` only if the block completes.

  They go to a hidden file beside `path`, renamed onto it at the end. On an error, Ctrl-C or
  any other exception, `path` keeps its earlier content, the lines written so far are kept in
  PATH.partial (none: no file), `log` says so, and the exception goes on.
  """
  target = os.path.realpath(path)
  f, tmp = _temporary_beside(target, "w")
  count = 0

  def write(line):
    nonlocal count
    f.write(line + "\n")
    count += 1

  try:
    yield write
    f.close()
    os.replace(tmp, target)
  except BaseException:
    with contextlib.suppress(OSError):
      f.close()
    _keep_partial(tmp, path, count, log)
    raise


def _keep_partial(tmp, path, count, log):
  unchanged = f"{path} is unchanged" if os.path.exists(path) else f"{path} was not written"
  partial = path + PARTIAL_SUFFIX
  try:
    if not count:
      raise OSError(errno.ENODATA, "nothing to keep")
    os.replace(tmp, partial)
  except OSError:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    log(f"stopped before the end: {unchanged}; no line was kept")
    return
  log(f"stopped before the end: {unchanged}; the {count} lines written so far are in "
      f"{partial} (partial output)")


def replace_folder(new, target, aside):
  """Renames the complete folder `new` onto `target`; returns True if it replaced one.

  An earlier `target` is first renamed to `aside` (a path on the same disk), put back if
  the rename of `new` fails, and deleted once `new` is in place.
  """
  replaced = os.path.lexists(target)
  if replaced:
    os.rename(target, aside)
  try:
    os.rename(new, target)
  except BaseException:
    if replaced:
      os.rename(aside, target)
    raise
  if replaced:
    shutil.rmtree(aside, ignore_errors=True)
  return replaced


@contextlib.contextmanager
def folder_into(target):
  """Yields a new hidden folder beside `target`, renamed onto it when the block completes
  (`replace_folder`); if the block fails, the folder is deleted and `target` is unchanged."""
  parent, name = os.path.split(os.path.abspath(target))
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent)
  try:
    yield staging
    replace_folder(staging, target, staging + ".old")
  finally:
    shutil.rmtree(staging, ignore_errors=True)  # gone already if it was renamed


def os_error_message(error):
  """One paragraph for an OSError met while reading or writing a run's files."""
  where = error.filename or "a file"
  if error.filename2:
    where += f" -> {error.filename2}"
  advice = {errno.ENOSPC: "the disk is full: free some space (or use a folder on another "
                          "disk) and run again",
            errno.EDQUOT: "the disk quota is used up: free some space and run again",
            errno.EACCES: "no permission: use a path you can write, or change its permissions",
            errno.EPERM: "not permitted: use a path you can write, or change its permissions",
            errno.EROFS: "the file system is read-only: use a path on a writable disk",
            errno.ENOTDIR: "a part of the path is a file, not a folder: use another path",
            errno.EISDIR: "that is a folder, not a file: name a file"}.get(
                error.errno, "check the path and run again")
  return f"{where}: {error.strerror or error}; {advice}"
