"""What each epoch's validation decides: the best checkpoint, learning-rate cuts, early stopping.

    --plateau_patience=P  --plateau_factor=F   after every P epochs without a new best
                                               validation loss, the learning rate is scaled by F
    --early_stopping=N                         training ends after N epochs without a new best

The record is a `tf.Module` saved in every checkpoint (under "validation"), so a resumed run
keeps its best loss, its count of epochs without improvement and its learning-rate scale.
The best parameters themselves are saved to WORKDIR/best/ by the training loop (see
`seq2seq.runtime.checkpoints.BestCheckpoint`).
"""
import dataclasses

import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class Verdict:
  """The outcome of one validation.

  improved: a new best loss (the training loop saves the best checkpoint).
  stale_epochs: epochs since the last new best (0 when improved).
  learning_rate_cut: the learning-rate scale was just multiplied by the plateau factor.
  stop: early stopping's patience has run out.
  """
  improved: bool
  stale_epochs: int
  learning_rate_cut: bool
  stop: bool


def judge(loss, best_loss, stale_epochs, plateau_patience, early_stopping):
  """The pure decision behind `ValidationRecord.observe` (NaN never improves).

  Returns:
    a `Verdict`.
  """
  improved = loss < best_loss  # False for NaN
  stale = 0 if improved else stale_epochs + 1
  cut = bool(plateau_patience) and stale > 0 and stale % plateau_patience == 0
  stop = bool(early_stopping) and stale >= early_stopping
  return Verdict(improved=bool(improved), stale_epochs=stale, learning_rate_cut=cut, stop=stop)


class ValidationRecord(tf.Module):
  """The best validation loss so far, and the learning-rate scale that plateaus lower.

  Variables: best_loss (inf before the first validation), best_step (-1), stale_epochs,
  learning_rate_scale (1.0; the optimizer multiplies its schedule by it).
  """

  def __init__(self):
    super().__init__(name="validation")
    self.best_loss = tf.Variable(float("inf"), trainable=False, name="best_loss")
    self.best_step = tf.Variable(-1, dtype=tf.int64, trainable=False, name="best_step")
    self.stale_epochs = tf.Variable(0, dtype=tf.int64, trainable=False, name="stale_epochs")
    self.learning_rate_scale = tf.Variable(1.0, trainable=False, name="learning_rate_scale")

  def observe(self, loss, step, plateau_patience=0, plateau_factor=0.5, early_stopping=0):
    """Records the validation `loss` measured after `step`; returns the `Verdict`."""
    verdict = judge(loss, float(self.best_loss.numpy()), int(self.stale_epochs.numpy()),
                    plateau_patience, early_stopping)
    if verdict.improved:
      self.best_loss.assign(loss)
      self.best_step.assign(step)
    self.stale_epochs.assign(verdict.stale_epochs)
    if verdict.learning_rate_cut:
      self.learning_rate_scale.assign(self.learning_rate_scale * plateau_factor)
    return verdict
