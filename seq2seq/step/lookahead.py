"""The split train step with the next batch looked up while the accelerator runs this one.

A table pinned to the host costs every step a lookup there (distinct ids, a gather, a cast,
a copy to the accelerator) before the dense part and a row update after it
(`split_step.SplitStep`); run in that order, the accelerator idles through both.
`LookaheadStep` is given the next batch along with this one. Between queueing this batch's
dense part (the accelerator runs it asynchronously) and applying this batch's row update,
it looks the next batch up, reading its rows before the update writes them. After the
update it reads again the rows that both batches use (`SplitStep.refresh`), so the next step
starts from exactly the rows a lookup made then would read: the trained parameters are
those of the parts run one after the other.

    call k:   dense(k)  ->  look_up(k + 1)  ->  update_rows(k)  ->  refresh(k + 1)
              (queued)      (host, while the     (waits for the     (rows of both
                            accelerator runs)    gradients)         batches re-read)
"""
import typing

import tensorflow as tf

from seq2seq.step import unique_rows


class _Ahead(typing.NamedTuple):
  """A batch looked up ahead: the batch as given, its padded tensors, its `Lookup`s and
  positions (`SplitStep.look_up`)."""
  batch: typing.Any
  inputs: typing.Any
  looked_up: list
  positions: list


class LookaheadStep:
  """step(batch, next_batch=None) -> (loss, grad_norm, finite) of a `SplitStep`.

  With `next_batch`, the batch of the following call, that call finds its lookup done. A
  call whose batch is not the one looked up ahead (the first, or after a call without
  `next_batch`) looks its batch up first, as the plain split step does.

  Args:
    split: a `split_step.SplitStep`.
    pad: batch -> the batch the step is traced for (rows padded to the batch size); None
      for none.
  """

  def __init__(self, split, pad=None):
    self._split = split
    self._pad = pad or (lambda batch: batch)
    self._look_up = tf.function(split.look_up, autograph=False)
    self._dense = split.dense
    if not isinstance(self._dense, tf.types.experimental.PolymorphicFunction):
      self._dense = tf.function(self._dense, autograph=False)
    # The distinct ids change from batch to batch: one trace with their length left free.
    self._update_rows = tf.function(split.update_rows, autograph=False, reduce_retracing=True)
    self._refresh = tf.function(split.refresh, autograph=False, reduce_retracing=True)
    self._ahead = None

  def __call__(self, batch, next_batch=None):
    current = self._ahead
    if current is None or current.batch is not batch:
      current = self._looked_up(batch)
    self._ahead = None
    with unique_rows.on(self._split.device):
      loss, grad_norm, finite, gradients, _ = self._dense(
          current.inputs, [lookup.rows for lookup in current.looked_up], current.positions)
    ids = [lookup.ids for lookup in current.looked_up]
    ahead = None if next_batch is None else self._looked_up(next_batch)
    self._update_rows(gradients, ids, finite)
    if ahead is not None:
      self._ahead = ahead._replace(looked_up=self._refresh(ahead.looked_up, ids))
    return loss, grad_norm, finite

  def _looked_up(self, batch):
    """`_Ahead` of `batch`, its rows read now."""
    inputs = tf.nest.map_structure(tf.convert_to_tensor, self._pad(batch))
    looked_up, positions = self._look_up(inputs)
    return _Ahead(batch, inputs, looked_up, positions)
