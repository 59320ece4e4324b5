"""Checkpoints of the whole training state, written so that the latest is always complete.

`tf.train.CheckpointManager` writes the data files under a temporary name and renames them,
then rewrites its `checkpoint` index file atomically; the index only names a checkpoint once
all of its files are in place, so a crash mid-write leaves the previous one as the latest.
"""
import os

import numpy as np
import tensorflow as tf


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


class CheckpointError(RuntimeError):
  """A checkpoint that does not fit the model being built; the message says what differs."""


class CheckpointWriteError(RuntimeError):
  """A checkpoint could not be written (disk full, unwritable folder); earlier ones are intact."""


class Checkpointer:
  """Saves and restores model, optimizer and progress under `directory`.

  `restore_directory` (default: `directory`) is where the latest checkpoint is read from: a
  non-chief worker writes to a temporary folder but resumes from the chief's checkpoints.
  `extras` ({name: trackable}) are saved beside them (the LM's carried state).
  `optional_extras` are saved too, but restored only from checkpoints that have them, so
  checkpoints written before they existed still load (they keep their initial values).
  """

  def __init__(self, directory, model, optimizer, progress, max_to_keep=5,
               restore_directory=None, extras=None, optional_extras=None):
    self.directory = directory
    self.restore_directory = restore_directory or directory
    required = dict(model=model, optimizer=optimizer, progress=progress, **(extras or {}))
    self.optional_extras = dict(optional_extras or {})
    self.checkpoint = tf.train.Checkpoint(**required, **self.optional_extras)
    self._required_only = (tf.train.Checkpoint(**required) if self.optional_extras
                           else self.checkpoint)
    self.manager = tf.train.CheckpointManager(self.checkpoint, directory, max_to_keep=max_to_keep,
                                              checkpoint_name="ckpt")
    self.progress = progress

  @property
  def latest(self):
    return self.manager.latest_checkpoint

  def save(self):
    """Writes a checkpoint numbered by the current step; returns its path.

    Raises:
      CheckpointWriteError: the write failed (OSError, or a TensorFlow I/O error such as
        ResourceExhaustedError for a full disk). The index still names the previous
        checkpoint, which stays complete.
    """
    step = int(self.progress.step.numpy())
    try:
      return self.manager.save(checkpoint_number=step)
    except (OSError, tf.errors.OpError) as e:
      reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      raise CheckpointWriteError(
          f"could not write the checkpoint of step {step} to {self.directory} "
          f"({type(e).__name__}: {reason}). The earlier checkpoints are intact (latest: "
          f"{self.latest or 'none'}); free space or fix permissions, then run the same command "
          f"to resume from the latest one.") from e

  def check_vocabulary_size(self, vocab_size, vocab_file):
    """Fails if the latest checkpoint's embedding tables do not have `vocab_size` rows.

    Raises:
      CheckpointError: naming both sizes and `vocab_file`.
    """
    path = self.latest
    if path is None:
      return
    shapes = tf.train.load_checkpoint(path).get_variable_to_shape_map()
    for key, shape in sorted(shapes.items()):
      if (key.startswith("model/") and "embedding" in key and "OPTIMIZER_SLOT" not in key
          and len(shape) == 2 and shape[0] != vocab_size):
        raise CheckpointError(
            f"{path} was trained with a vocabulary of {shape[0]} tokens, but {vocab_file} has "
            f"{vocab_size}: the vocabulary differs from the checkpoint's. Restore the "
            f"vocabulary file the checkpoint was trained with, or use a new --workdir.")

  def restore_latest(self, partial=False):
    """Restores the latest checkpoint, if any. Returns its path, or None for a fresh start.

    With `partial`, values of the checkpoint that nothing here reads (an LM's carried state,
    for inference) are expected and not warned about.

    Raises:
      CheckpointError: a variable's shape differs, or the checkpoint lacks some of them.
    """
    path = (self.latest if self.restore_directory == self.directory
            else tf.train.latest_checkpoint(self.restore_directory))
    if path is None:
      return None
    return self.restore(path, partial)

  def restore_for_inference(self, which="auto", average=1):
    """Restores the checkpoint `for_inference` picks, or with `average` > 1 the mean of the
    model's variables over the `average` newest it picks (fewer if fewer exist). Values only
    training reads (optimizer slots, an LM's carried state) are expected to stay unread.

    Returns:
      the paths restored, newest first ([] when there is none); progress is the newest's.
    """
    paths = for_inference(self.directory, which, average)
    if len(paths) > 1:
      variables = [v for v in self.checkpoint.model.variables if v.dtype.is_floating]
      total = [np.zeros(v.shape, v.dtype.as_numpy_dtype) for v in variables]
      for path in reversed(paths):  # the newest last, so that its progress stays
        self.restore(path, partial=True)
        for sum_, variable in zip(total, variables):
          sum_ += variable.numpy()
      for sum_, variable in zip(total, variables):
        variable.assign(sum_ / len(paths))
    elif paths:
      self.restore(paths[0], partial=True)
    return paths

  def restore(self, path, partial=False):
    """Restores the checkpoint at `path` (see `restore_latest`); returns `path`."""
    names = {key.split("/", 1)[0]
             for key in tf.train.load_checkpoint(path).get_variable_to_shape_map()}
    checkpoint = (self.checkpoint if all(n in names for n in self.optional_extras)
                  else self._required_only)
    try:
      status = checkpoint.restore(path)
      status.assert_existing_objects_matched()
      if partial:
        status.expect_partial()
    except (ValueError, AssertionError, tf.errors.InvalidArgumentError) as e:
      first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      raise CheckpointError(
          f"{path} does not fit the configured model ({first_line}); use the flags it was "
          f"trained with, or a new --workdir") from None
    return path


def best_directory(directory):
  """Where `BestCheckpoint` keeps the best checkpoint of the run checkpointed in `directory`."""
  return os.path.join(os.path.dirname(os.path.normpath(directory)), "best")


class BestCheckpoint:
  """The checkpoints of the best validation losses so far, in their own folder.

  Each new best is saved there; the `keep` most recent (so the `keep` lowest losses) stay, for
  inference to read the best or average several (`--average_checkpoints`). It saves the same
  objects as `checkpointer`, atomically as every checkpoint here is, so inference restores it
  the same way (`Checkpointer.restore`).
  """

  def __init__(self, checkpointer, directory=None, keep=1):
    self.directory = directory or best_directory(checkpointer.directory)
    self.checkpointer = checkpointer
    self.manager = tf.train.CheckpointManager(checkpointer.checkpoint, self.directory,
                                              max_to_keep=keep, checkpoint_name="best")

  def save(self):
    step = int(self.checkpointer.progress.step.numpy())
    try:
      return self.manager.save(checkpoint_number=step)
    except (OSError, tf.errors.OpError) as e:
      raise CheckpointWriteError(
          f"could not write the best checkpoint of step {step} to {self.directory} "
          f"({type(e).__name__}); the training checkpoints are unaffected") from e


def for_inference(directory, which="auto", count=1):
  """The checkpoints inference reads, newest first (at most `count`; none when there is none).

  `which` is latest (the training checkpoints in `directory`), best (those of the lowest
  validation losses, `best_directory`) or auto (best when the run validated, else latest).

  Raises:
    CheckpointError: `which` is best but the run never saved one (no --val_data).
  """
  def newest(folder):
    state = tf.train.get_checkpoint_state(folder)
    return list(reversed(state.all_model_checkpoint_paths))[:count] if state else []

  best = newest(best_directory(directory))
  if which == "best" and not best:
    raise CheckpointError(
        f"{best_directory(directory)}: no best checkpoint (it is written when a run trained "
        f"with --val_data validates); use --checkpoint=latest")
  if which in ("best", "auto") and best:
    return best
  return newest(directory)


def describe_restored(paths, progress):
  """A log line for what `restore_for_inference` restored."""
  step = int(progress.step.numpy())
  if len(paths) == 1:
    return f"loaded {paths[0]} (step {step})"
  return (f"loaded the mean of {len(paths)} checkpoints: {', '.join(paths)} (newest at step "
          f"{step})")
