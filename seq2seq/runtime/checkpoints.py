"""Checkpoints of the whole training state, written so that the latest is always complete.

`tf.train.CheckpointManager` writes the data files under a temporary name and renames them,
then rewrites its `checkpoint` index file atomically; the index only names a checkpoint once
all of its files are in place, so a crash mid-write leaves the previous one as the latest.
What a damaged folder gets (a lost state file, an unreadable checkpoint) is in
`checkpoint_folder`.
"""
import os

import numpy as np
import tensorflow as tf

from seq2seq import errors
from seq2seq.runtime import checkpoint_folder


class Progress(tf.Module):
  """Where training stands: saved with the model so a resumed run continues exactly.

  step: updates done. epoch: the epoch in progress (0-based). position: batches of that epoch
  already trained on. data_seed: the seed of the data order of this run.
  """

  def __init__(self, data_seed=0):
    super().__init__(name="progress")
    int64 = lambda value, name: tf.Variable(value, dtype=tf.int64, trainable=False, name=name)
    self.step = int64(0, "step")
    self.epoch = int64(0, "epoch")
    self.position = int64(0, "position")
    self.data_seed = int64(data_seed, "data_seed")


class CheckpointError(errors.UserError, RuntimeError):
  """A checkpoint that does not fit the model being built; the message says what differs."""


class CheckpointWriteError(errors.UserError, RuntimeError):
  """A checkpoint could not be written (disk full, unwritable folder); earlier ones are intact."""


class Checkpointer:
  """Saves and restores model, optimizer and progress under `directory`.

  `restore_directory` (default: `directory`) is where the latest checkpoint is read from: a
  non-chief worker writes to a temporary folder but resumes from the chief's checkpoints
  (which it reads only: it neither repairs nor moves anything there).
  `extras` ({name: trackable}) are saved beside them (the LM's carried state). `optimizer`
  may be None where only inference reads the checkpoints (its slots stay unread).
  `optional_extras` are saved too, but restored only from checkpoints that have them, so
  checkpoints written before they existed still load (they keep their initial values).

  Restoring reads the newest checkpoint that loads: a missing or unreadable state file is
  rebuilt from the checkpoint files first, and a checkpoint that cannot be read (truncated or
  corrupted data, a missing index or shard) is moved to `damaged/` and the next older one is
  used, each said in a line to `log` (see `checkpoint_folder`).
  """

  def __init__(self, directory, model, optimizer, progress, max_to_keep=5,
               restore_directory=None, extras=None, optional_extras=None, log=print):
    self.directory = directory
    self.restore_directory = restore_directory or directory
    self.log = log
    self.folder = checkpoint_folder.Folder(directory, "ckpt")
    required = dict(model=model, progress=progress, **(extras or {}))
    if optimizer is not None:
      required["optimizer"] = optimizer
    self.optional_extras = dict(optional_extras or {})
    self.checkpoint = tf.train.Checkpoint(**required, **self.optional_extras)
    self._required_only = (tf.train.Checkpoint(**required) if self.optional_extras
                           else self.checkpoint)
    self.max_to_keep = max_to_keep
    self._manager = None
    self.progress = progress

  @property
  def manager(self):
    """The `tf.train.CheckpointManager`, made after the state file was checked (it reads it)."""
    if self._manager is None:
      self._manager = tf.train.CheckpointManager(
          self.checkpoint, self.folder.tf_directory, max_to_keep=self.max_to_keep,
          checkpoint_name="ckpt")
    return self._manager

  @property
  def latest(self):
    return self.folder.real(self.manager.latest_checkpoint)

  def save(self):
    """Writes a checkpoint numbered by the current step; returns its path.

    Raises:
      CheckpointWriteError: the write failed (OSError, or a TensorFlow I/O error such as
        ResourceExhaustedError for a full disk). The index still names the previous
        checkpoint, which stays complete.
    """
    return _write(self.folder, self.manager, self.progress, "checkpoint",
                  f"The earlier checkpoints are intact (latest: {self.latest or 'none'}); free "
                  "space or fix permissions, then run the same command to resume from the "
                  "latest one.")

  def restore_latest(self, partial=False, vocabulary=None):
    """Restores the newest checkpoint that loads, if any. Returns its path, or None for a
    fresh start.

    With `partial`, values of the checkpoint that nothing here reads (an LM's carried state,
    for inference) are expected and not warned about. `vocabulary` (size, file) checks the
    embedding tables' rows first (`_check_vocabulary_size`).

    Raises:
      CheckpointError: a variable's shape differs, the checkpoint lacks some of them, or
        checkpoints exist and none of them can be read.
    """
    folder = self.folder
    if self.restore_directory != self.directory:
      folder = checkpoint_folder.Folder(self.restore_directory, "ckpt", writable=False)
    folder.repair(self.log)
    self._manager = None
    restored = self._restore_newest(folder, 1, partial, vocabulary)
    return restored[0] if restored else None

  def restore_for_inference(self, which="auto", average=1, writable=True):
    """Restores the checkpoint `inference_folders` picks, or with `average` > 1 the mean of the
    model's variables over the `average` newest there (fewer if fewer exist); checkpoints
    that cannot be read are passed over (and, when `writable`, moved aside). Values only
    training reads (optimizer slots, an LM's carried state) are expected to stay unread.

    Returns:
      the paths restored, newest first ([] when there is none); progress is the newest's.

    Raises:
      CheckpointError: as `restore_latest`; or `which` is best and there is none.
    """
    folders = inference_folders(self.directory, which, writable)
    for number, folder in enumerate(folders, start=1):
      folder.repair(self.log)
      restored = self._restore_newest(folder, average, True, required=number == len(folders))
      if restored:
        return restored
    return []

  def restore(self, path, partial=False):
    """Restores the checkpoint at `path` (see `restore_latest`); returns `path`.

    Raises:
      CheckpointError: it does not fit the model, or cannot be read.
    """
    directory, name = os.path.split(path)
    folder = checkpoint_folder.Folder(directory, name.rsplit("-", 1)[0], writable=False)
    problem = self._load(folder, os.path.join(folder.tf_directory, name), partial, None)
    if problem:
      raise CheckpointError(f"{path} cannot be read ({problem})")
    return path

  def _restore_newest(self, folder, count, partial, vocabulary=None, required=True):
    """Restores the `count` newest checkpoints of `folder` that can be read (the mean of the
    model's variables when several; the newest's progress). Returns their paths, newest
    first. Unreadable ones are reported (`_report_unreadable`)."""
    restored, unreadable = [], []
    variables = [v for v in self.checkpoint.model.variables if v.dtype.is_floating]
    sums = [np.zeros(v.shape, v.dtype.as_numpy_dtype) for v in variables] if count > 1 else []
    newest_progress = None
    for tf_path in folder.newest_first():
      if len(restored) == count:
        break
      problem = self._load(folder, tf_path, partial, vocabulary)
      if problem:
        unreadable.append((tf_path, problem))
        continue
      restored.append(folder.real(tf_path))
      if newest_progress is None:
        newest_progress = [v.numpy() for v in self.progress.variables]
      for sum_, variable in zip(sums, variables):
        sum_ += variable.numpy()
    if unreadable:
      self._report_unreadable(folder, unreadable, restored, required)
    if len(restored) > 1:
      for sum_, variable in zip(sums, variables):
        variable.assign(sum_ / len(restored))
      for value, variable in zip(newest_progress, self.progress.variables):
        variable.assign(value)
    return restored

  def _load(self, folder, tf_path, partial, vocabulary):
    """Restores the checkpoint at `tf_path`; returns None, or why it cannot be read.

    Raises:
      CheckpointError: it reads, but does not fit the model (shapes, variables, vocabulary).
    """
    try:
      shapes = tf.train.load_checkpoint(tf_path).get_variable_to_shape_map()
      if vocabulary:
        _check_vocabulary_size(shapes, folder.real(tf_path), *vocabulary)
      names = {key.split("/", 1)[0] for key in shapes}
      checkpoint = (self.checkpoint if all(n in names for n in self.optional_extras)
                    else self._required_only)
      status = checkpoint.restore(tf_path)
      status.assert_existing_objects_matched()
      if partial:
        status.expect_partial()
      return None
    except CheckpointError:
      raise
    except Exception as e:  # pylint: disable=broad-except  (reads raise many kinds of error)
      problem = checkpoint_folder.read_problem(tf_path)
      if problem is not None:
        return problem.replace(folder.tf_directory, folder.directory)
      raise CheckpointError(
          f"{folder.real(tf_path)} does not fit the configured model "
          f"({checkpoint_folder.first_line(e)}); use the flags it was trained with, or a new "
          f"--workdir") from None

  def _report_unreadable(self, folder, unreadable, restored, required):
    """Says which checkpoints could not be read; moves them aside once one was restored.

    Raises:
      CheckpointError: none could be read and `required` (nothing is moved then).
    """
    listed = "; ".join(f"{folder.real(p)} ({why})" for p, why in unreadable)
    if not restored and required:
      raise CheckpointError(
          f"no checkpoint in {folder.directory} can be read: {listed}. Nothing was moved or "
          f"deleted. Restore the folder from a backup, or train again with a new --workdir.")
    if not restored:
      self.log(f"could not read {listed}; trying the other checkpoints")
      return
    if folder.writable:
      kept = f"its files are kept in {folder.set_aside([p for p, _ in unreadable])}"
      self._manager = None
    else:
      kept = "left in place (another process writes that folder)"
    self.log(f"could not read {listed}; {kept}; using {restored[0]}")


def _check_vocabulary_size(shapes, path, vocab_size, vocab_file):
  """Fails if the embedding tables in `shapes` ({key: shape} of the checkpoint at `path`) do
  not have `vocab_size` rows.

  Raises:
    CheckpointError: naming both sizes and `vocab_file`.
  """
  for key, shape in sorted(shapes.items()):
    if (key.startswith("model/") and "embedding" in key and "OPTIMIZER_SLOT" not in key
        and len(shape) == 2 and shape[0] != vocab_size):
      raise CheckpointError(
          f"{path} was trained with a vocabulary of {shape[0]} tokens, but {vocab_file} has "
          f"{vocab_size}: the vocabulary differs from the checkpoint's. Restore the "
          f"vocabulary file the checkpoint was trained with, or use a new --workdir.")


def best_directory(directory):
  """Where `BestCheckpoint` keeps the best checkpoint of the run checkpointed in `directory`."""
  return os.path.join(os.path.dirname(os.path.normpath(directory)), "best")


class BestCheckpoint:
  """The checkpoints of the best validation losses so far, in their own folder.

  Each new best is saved there; the `keep` most recent (so the `keep` lowest losses) stay, for
  inference to read the best or average several (`--average_checkpoints`). It saves the same
  objects as `checkpointer`, atomically as every checkpoint here is, so inference restores it
  the same way. Its state file is checked (and rebuilt if need be) first.
  """

  def __init__(self, checkpointer, directory=None, keep=1):
    self.folder = checkpoint_folder.Folder(
        directory or best_directory(checkpointer.directory), "best")
    self.directory = self.folder.directory
    self.checkpointer = checkpointer
    self.folder.repair(checkpointer.log)
    self.manager = tf.train.CheckpointManager(checkpointer.checkpoint, self.folder.tf_directory,
                                              max_to_keep=keep, checkpoint_name="best")

  def save(self):
    return _write(self.folder, self.manager, self.checkpointer.progress, "best checkpoint",
                  "The training checkpoints are unaffected.")


def _write(folder, manager, progress, what, advice):
  """Saves `manager`'s checkpoint numbered by the current step into `folder`; -> its path.

  Raises:
    CheckpointWriteError: naming `what`, the step, the folder and the error, then `advice`.
  """
  step = int(progress.step.numpy())
  try:
    os.makedirs(folder.directory, exist_ok=True)
    return folder.real(manager.save(checkpoint_number=step))
  except (OSError, tf.errors.OpError) as e:
    raise CheckpointWriteError(
        f"could not write the {what} of step {step} to {folder.directory} "
        f"({type(e).__name__}: {checkpoint_folder.first_line(e)}). {advice}") from e


def inference_folders(directory, which="auto", writable=True):
  """The folders inference reads from, in order of preference (`checkpoint_folder.Folder`s).

  `which` is latest (the training checkpoints in `directory`), best (those of the lowest
  validation losses, `best_directory`) or auto (best when the run validated, else, or when
  none of them can be read, latest). `writable`: whether damaged checkpoints may be moved
  aside (not while a training run writes the workdir).

  Raises:
    CheckpointError: `which` is best but the run never saved one (no --val_data).
  """
  best = checkpoint_folder.Folder(best_directory(directory), "best", writable)
  latest = checkpoint_folder.Folder(directory, "ckpt", writable)
  if which == "best" and not (best.steps_on_disk() or best.state_steps()):
    raise CheckpointError(
        f"{best.directory}: no best checkpoint (it is written when a run trained "
        f"with --val_data validates); use --checkpoint=latest")
  return {"best": [best], "auto": [best, latest], "latest": [latest]}[which]


def describe_restored(paths, progress):
  """A log line for what `restore_for_inference` restored."""
  step = int(progress.step.numpy())
  if len(paths) == 1:
    return f"loaded {paths[0]} (step {step})"
  return (f"loaded the mean of {len(paths)} checkpoints: {', '.join(paths)} (newest at step "
          f"{step})")
