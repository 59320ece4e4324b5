"""The engine's own C++ kernels (`ops/kernels/*.cc`), compiled on first use and cached.

TensorFlow loads a kernel from a shared library built against its own headers and version,
so the library is built on the machine that uses it, once: with the C++ compiler (`$CXX`,
else `g++`) and `tf.sysconfig`'s flags, into a cache folder (`$SEQ2SEQ_KERNEL_CACHE`, else
`$XDG_CACHE_HOME/seq2seq` or `~/.cache/seq2seq`), under a name made of the TensorFlow
version and a hash of the source and flags, so a changed source or a new TensorFlow builds
anew. Concurrent builds each write a file of their own and rename it into place.

Each kernel has a reference in TensorFlow ops that its caller keeps: where no compiler is
present or the build fails, `load` returns None and the caller runs the reference; the
reason is logged once.
"""
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
import time

from absl import logging
import tensorflow as tf

_SOURCES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels")
_FLAGS = ["-shared", "-fPIC", "-O3", "-fno-math-errno", "-w"]
_TIMEOUT_S = 600  # a build takes about 10 s on 2 cores
_lock = threading.Lock()
_loaded = {}  # kernel name -> the loaded module, or None where it could not be built


class BuildError(Exception):
  """A kernel could not be built; the message says why and what to install."""


def cache_folder():
  """Where the built kernels are kept."""
  folder = os.environ.get("SEQ2SEQ_KERNEL_CACHE")
  if not folder:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    folder = os.path.join(base, "seq2seq")
  return folder


def compiler():
  """The C++ compiler's command: `$CXX`, else `g++`."""
  return os.environ.get("CXX") or "g++"


def load(name):
  """The module of kernel `name` (`ops/kernels/<name>.cc`), its ops as functions (snake
  case), built here if it is not in the cache; None where it cannot be built or loaded
  (logged once)."""
  with _lock:
    if name not in _loaded:
      _loaded[name] = _built_and_loaded(name)
    return _loaded[name]


def _built_and_loaded(name):
  try:
    path = build(name)
  except BuildError as error:
    logging.warning("%s; running its TensorFlow reference instead", error)
    return None
  try:
    return tf.load_op_library(path)
  except tf.errors.OpError as error:
    logging.warning("kernel %s: TensorFlow could not load %s (%s); running its TensorFlow "
                    "reference instead (delete the file to build it again)", name, path,
                    error.message)
    return None


def library_path(name):
  """(where kernel `name`'s library is cached, the command that builds it, less `-o`)."""
  source = os.path.join(_SOURCES, name + ".cc")
  command = [compiler(), source, *_FLAGS, *tf.sysconfig.get_compile_flags(),
             *tf.sysconfig.get_link_flags()]
  with open(source, "rb") as f:
    digest = hashlib.sha256(f.read() + " ".join(command).encode()).hexdigest()[:16]
  return os.path.join(cache_folder(), f"{name}-tf{tf.__version__}-{digest}.so"), command


def build(name):
  """The path of kernel `name`'s library, compiled into `cache_folder()` if absent."""
  path, command = library_path(name)
  if os.path.exists(path):
    return path
  if shutil.which(command[0]) is None:
    raise BuildError(f"kernel {name}: no C++ compiler {command[0]!r} to build it (install "
                     f"g++, or set CXX to one)")
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    _compile(name, command, path)
  except OSError as error:
    raise BuildError(f"kernel {name}: cannot write to {os.path.dirname(path)} ({error}); set "
                     f"SEQ2SEQ_KERNEL_CACHE to a writable folder") from error
  return path


def _compile(name, command, path):
  """Runs `command` into a file of this process's own, then renames it to `path`."""
  handle, scratch = tempfile.mkstemp(suffix=".so", dir=os.path.dirname(path))
  os.close(handle)
  start = time.perf_counter()
  try:
    _run_compiler(name, [*command, "-o", scratch])
    os.replace(scratch, path)
  finally:
    if os.path.exists(scratch):
      os.remove(scratch)
  logging.info("built kernel %s in %.1f s: %s", name, time.perf_counter() - start, path)


def _run_compiler(name, command):
  """Runs `command`; a BuildError with the compiler's last words where it fails."""
  try:
    done = subprocess.run(command, capture_output=True, text=True, check=False,
                          timeout=_TIMEOUT_S)
  except subprocess.TimeoutExpired as error:
    raise BuildError(f"kernel {name}: `{command[0]}` ran past {_TIMEOUT_S} s") from error
  if done.returncode:
    raise BuildError(f"kernel {name}: `{' '.join(command[:2])} ...` failed:\n"
                     f"{done.stderr[-2000:]}")
