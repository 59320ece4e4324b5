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


class Checkpointer:
  """Saves and restores model, optimizer and progress under `directory`.

  `restore_directory` (default: `directory`) is where the latest checkpoint is read from: a
  non-chief worker writes to a temporary folder but resumes from the chief's checkpoints.
  """

  def __init__(self, directory, model, optimizer, progress, max_to_keep=5,
               restore_directory=None):
    self.directory = directory
    self.restore_directory = restore_directory or directory
    self.checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, progress=progress)
    self.manager = tf.train.CheckpointManager(self.checkpoint, directory, max_to_keep=max_to_keep,
                                              checkpoint_name="ckpt")
    self.progress = progress

  @property
  def latest(self):
    return self.manager.latest_checkpoint

  def save(self):
    """Writes a checkpoint numbered by the current step; returns its path."""
    return self.manager.save(checkpoint_number=int(self.progress.step.numpy()))

  def restore_latest(self):
    """Restores the latest checkpoint, if any. Returns its path, or None for a fresh start.

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
    except (ValueError, AssertionError, tf.errors.InvalidArgumentError) as e:
      first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      raise CheckpointError(
          f"{path} does not fit the configured model ({first_line}); use the flags it was "
          f"trained with, or a new --workdir") from None
    return path
