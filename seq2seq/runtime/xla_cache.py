"""TensorFlow's persistent XLA compilation cache: compiled steps kept on disk across runs.

XLA writes each executable it compiles to the folder, keyed by the program (the traced
step, its shapes, the traced function's name) and the device, and a later process that
compiles the same program loads it instead: the same configuration run again, or a benchmark
run again skip the compilation (minutes for an unrolled step on a GPU). A changed model,
batch shape or TensorFlow version makes a new key, and so a new compilation; so does a
resumed run, whose restore traces functions before the step and so shifts the number
TensorFlow puts in the step's name.
No TensorFlow import here: the flag must be set before TensorFlow reads TF_XLA_FLAGS.
"""
import glob
import os

from seq2seq import config as config_lib
from seq2seq.runtime import workdir as workdir_lib
from seq2seq.runtime import xla_flags

FLAG = "--tf_xla_persistent_cache_directory"


def enable(directory, create=True):
  """Points TensorFlow's XLA cache at `directory` (created if missing, or with `create` off
  left to XLA to create at its first write); returns its absolute path. Call before
  TensorFlow lists the devices or compiles anything with XLA: it reads TF_XLA_FLAGS once.
  Other flags already in TF_XLA_FLAGS are kept; an earlier cache folder is replaced.

  Raises:
    OSError: the folder cannot be created (e.g. a file has its name).
  """
  directory = os.path.abspath(directory)
  if create:
    os.makedirs(directory, exist_ok=True)
  elif os.path.exists(directory) and not os.path.isdir(directory):
    raise NotADirectoryError(f"{directory} is a file, not a folder")
  xla_flags.add("TF_XLA_FLAGS", [f"{FLAG}={directory}"], replace=True)
  return directory


def active_folder():
  """The folder this process's XLA cache is in (TF_XLA_FLAGS), or None."""
  return xla_flags.value("TF_XLA_FLAGS", FLAG) or None


def folder_before_start(train_config):
  """The XLA cache folder train.py sets up before TensorFlow starts: `--xla_cache_dir`, or
  WORKDIR/xla_cache for `auto`; None where the step is not compiled (`--jit_compile=false`)
  or the cache is off (`--xla_cache_dir=`)."""
  folder = train_config.xla_cache_dir
  if train_config.jit_compile is False or not folder:
    return None
  return (workdir_lib.xla_cache_dir(train_config.workdir) if folder == config_lib.AUTO
          else folder)


def cached_executables(directory):
  """The executables XLA has saved in `directory` (file paths, sorted)."""
  return sorted(glob.glob(os.path.join(directory, "xla_compile_cache__*")))
