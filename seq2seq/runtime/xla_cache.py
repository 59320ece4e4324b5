"""TensorFlow's persistent XLA compilation cache: compiled steps kept on disk across runs.

XLA writes each executable it compiles to the folder, keyed by the program (the traced
step, its shapes) and the device, and a later process that compiles the same program loads
it instead: a resumed run, the same configuration run again, or a benchmark run again skip
the compilation (minutes for an unrolled step on a GPU). A changed model, batch shape or
TensorFlow version makes a new key, and so a new compilation.
No TensorFlow import here: the flag must be set before TensorFlow reads TF_XLA_FLAGS.
"""
import glob
import os

from seq2seq.runtime import xla_flags

FLAG = "--tf_xla_persistent_cache_directory"


def enable(directory):
  """Points TensorFlow's XLA cache at `directory` (created if missing); returns its absolute
  path. Call before the process compiles anything with XLA: TensorFlow reads TF_XLA_FLAGS at
  its first use. Other flags already in TF_XLA_FLAGS are kept; an earlier cache folder is
  replaced.

  Raises:
    OSError: the folder cannot be created (e.g. a file has its name).
  """
  directory = os.path.abspath(directory)
  os.makedirs(directory, exist_ok=True)
  xla_flags.add("TF_XLA_FLAGS", [f"{FLAG}={directory}"], replace=True)
  return directory


def cached_executables(directory):
  """The executables XLA has saved in `directory` (file paths, sorted)."""
  return sorted(glob.glob(os.path.join(directory, "xla_compile_cache__*")))
