"""The split train step with the next batch looked up while the accelerator runs this one.

A table pinned to the host costs every step a lookup there (distinct ids, a gather, a cast,
a copy to the accelerator) before the dense part and a row update after it
(`split_step.SplitStep`); run in that order, the accelerator idles through both.
`LookaheadStep` is given the next batch along with this one, and does on the host, while
the accelerator runs this batch's dense part (queued, it runs asynchronously):

  - the update of the rows the step before held back (none of them is this batch's);
  - the next batch's lookup, which reads its rows before this batch's update writes them.

Then, when this batch's gradients are back, it updates only the rows the next batch reads
(`SplitStep.partition`), and reads those again for the next batch (`SplitStep.refresh`);
the update of the other rows waits for the next call's device time:

    call k:  dense(k)  ->  update held back   ->  look_up(k + 1)  ->  update the rows
             (queued)      from k - 1 (host)      (host)              k + 1 reads; re-read
                                                                      them (waits for k)

So each step starts from exactly the rows a lookup made then would read, and the trained
parameters are those of the parts run one after the other. Whatever else reads the tables
or their slots (a checkpoint, validation) must first `flush` the update held back.
"""
import functools
import typing

import tensorflow as tf

from seq2seq.step import compile_ahead
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
    self._look_up_in_place = tf.function(
        lambda inputs: unique_rows.look_up_in_place(split.lookups, inputs, split.rows_dtype),
        autograph=False)
    self._dense = split.dense
    if not isinstance(self._dense, tf.types.experimental.PolymorphicFunction):
      self._dense = tf.function(self._dense, autograph=False)
    # The distinct ids change from batch to batch: one trace with their length left free.
    functions = lambda fn: tf.function(fn, autograph=False, reduce_retracing=True)
    self._update_rows = functions(split.update_rows)
    self._update_read_next = functions(self._update_read_next_fn)
    self._ahead = None  # `_Ahead`: the next batch, looked up
    self._held = None  # (rows `partition` put off, schedule, finite) of the step before

  def __call__(self, batch, next_batch=None):
    current = self._ahead
    if current is None or current.batch is not batch:
      self.flush()
      current = self._looked_up(batch, self._look_up)
    self._ahead = None
    loss, grad_norm, finite, gradients, _ = self._dense_on_device(
        current.inputs, [lookup.rows for lookup in current.looked_up], current.positions)
    self.flush()  # rows this batch does not read, while the device runs it
    ids = [lookup.ids for lookup in current.looked_up]
    if next_batch is None:
      self._update_rows(gradients, ids, finite)
      return loss, grad_norm, finite
    ahead = self._looked_up(next_batch, self._look_up_in_place)
    looked_up, later, schedule, finite_on_host = self._update_read_next(
        gradients, ids, ahead.looked_up, ahead.positions, finite)
    self._held = later, schedule, finite_on_host
    self._ahead = ahead._replace(looked_up=looked_up)
    return loss, grad_norm, finite

  def flush(self):
    """Applies the row updates held back for the next call: call it before anything else
    reads the tables or their slots (a checkpoint, validation, the end of training)."""
    if self._held is not None:
      (gradients, ids), schedule, finite = self._held
      self._held = None
      self._update_rows(gradients, ids, finite, schedule, False)

  def warm_up_calls(self, lengths, rows):
    """For `compile_ahead.compile_buckets`: one call per padded length, the compiled part
    of the step on an unapplied batch of `rows` rows, looked up here. The compiled part is
    traced once for all the lengths first (`SplitStep.trace_for`), so that the programs
    (and what an XLA cache holds) do not depend on which length compiles first."""
    self.flush()
    ahead = [self._looked_up(compile_ahead.unapplied_batch(rows, length), self._look_up)
             for length in lengths]
    arguments = [(a.inputs, [lookup.rows for lookup in a.looked_up], a.positions)
                 for a in ahead]
    self._split.trace_for(arguments)
    return [functools.partial(self._dense_on_device, *a) for a in arguments]

  def _dense_on_device(self, inputs, rows, positions):
    """The compiled part, placed as `__call__` places it."""
    with unique_rows.on(self._split.device):
      return self._dense(inputs, rows, positions)

  def _update_read_next_fn(self, gradients, ids, next_looked_up, next_positions, finite):
    """Updates the rows the next batch reads (`next_looked_up`, its `Lookup`s with rows on
    the host), advances the step counter, moves the next batch's rows to the device and
    reads those updated again there. -> (the next batch's `Lookup`s, the rest of the rows
    (`SplitStep.partition`), the schedule applied and `finite`, on the host).

    The rows are moved here, not when they are looked up: a copy to the device waits for
    the work queued there, this batch's step, and would hold the host up meanwhile."""
    split = self._split
    now, later = split.partition(gradients, ids, [lookup.ids for lookup in next_looked_up])
    schedule, finite = split.update_rows(*now, finite)
    next_looked_up = unique_rows.moved(split.lookups, next_looked_up, next_positions,
                                       split.device)
    return split.refresh(next_looked_up, now[1]), later, schedule, finite

  def _looked_up(self, batch, look_up):
    """`_Ahead` of `batch`, its rows read now by `look_up`."""
    inputs = tf.nest.map_structure(tf.convert_to_tensor, self._pad(batch))
    looked_up, positions = look_up(inputs)
    return _Ahead(batch, inputs, looked_up, positions)
