"""Checkpoints of the whole training state, written so that the latest is always complete.

`tf.train.CheckpointManager` writes the data files under a temporary name and renames them,
then rewrites its `checkpoint` index file atomically; the index only names a checkpoint once
all of its files are in place, so a crash mid-write leaves the previous one as the latest.
"""
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
  """

  def __init__(self, directory, model, optimizer, progress, max_to_keep=5,
               restore_directory=None, extras=None):
    self.directory = directory
    self.restore_directory = restore_directory or directory
    self.checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, progress=progress,
                                          **(extras or {}))
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
    try:
      status = self.checkpoint.restore(path)
      status.assert_existing_objects_matched()
      if partial:
        status.expect_partial()
    except (ValueError, AssertionError, tf.errors.InvalidArgumentError) as e:
      first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      raise CheckpointError(
          f"{path} does not fit the configured model ({first_line}); use the flags it was "
          f"trained with, or a new --workdir") from None
    return path
