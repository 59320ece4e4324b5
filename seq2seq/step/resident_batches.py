"""The training pairs kept on the GPU; each compiled step gathers its own batch there.

On a GPU, XLA runs the compiled step as a recorded CUDA graph (command buffer), which it
must update whenever the buffers the step uses move. Any tensor the loop makes or frees on
the GPU between two steps (a batch copied in, or dropped after its step) can make the
allocator place the step's working memory elsewhere, and the step then pays for that update.
At `seed_b256`, with steps issued back to back, a fresh batch copied in ahead of each step
(`device_prefetch`) made the step 30-60% slower than one fixed batch did, and so did a
single 40 KB tensor made and dropped between steps; with the batches gathered here, inside
the step's own program, the step is as fast as with the fixed batch (benchmarks/README.md).

So the pairs of each bucket are copied to the GPU once, padded to the bucket's length, with
one filler row (`train_step.pad_rows`'s: one <PAD> source token, zero target weight). Each
epoch, the order of its batches is copied once per bucket: [batches of the bucket, B] rows
of that table. The step of a bucket reads the next row block of its order from a position
variable it advances itself, gathers those rows and runs the train step on them, all in one
XLA program. A step's batch equals `pad_rows(pad_batch(...))` of `batches.BatchSchedule`, as
`train_step.device_batch` gives it (int64 ids), so training is the same as with host batches.
Each pair takes 8 (Ts + 2 Tt + 1) + 4 Tt bytes on the GPU in a bucket of source length Ts
(Tt = Ts + 1; int64 ids and length, float32 weights): 200,000 pairs in one bucket of 20 take
about 118 MB.
"""
import collections
import functools
import math

import numpy as np
import tensorflow as tf

from seq2seq.data import batches
from seq2seq.step import train_step as train_step_lib

# One epoch's work for the loop: the padded length of each of its batches and its target
# tokens, in the order the schedule trains them.
Planned = collections.namedtuple("Planned", ["length", "tokens"])


class ResidentBatches:
  """The batches of a `batches.BatchSchedule` on `device`, and the compiled steps that read them.

  Use: `for planned in resident.epoch(epoch, start): outputs = resident.step(planned)`.
  """

  def __init__(self, schedule, step_fn, device, rows):
    """
    Args:
      schedule: a `batches.BatchSchedule` (its `seed` may change until the first `epoch`).
      step_fn: batch -> outputs, the train step's Python function (`BucketedFunction.fn`),
        traced here inside one XLA-compiled function per bucket.
      device: the GPU the step runs on.
      rows: the batch size every step is traced for (smaller batches get filler rows).
    """
    self._schedule = schedule
    self._step_fn = step_fn
    self._device = device
    self._rows = int(rows)
    if schedule.batch_size > self._rows:
      raise ValueError(f"batches of {schedule.batch_size} rows, more than the {self._rows} "
                       "the step is built for")
    members = collections.defaultdict(list)
    for index, length in enumerate(schedule.bucket_of):
      members[length].append(index)
    self._row_of = np.zeros(len(schedule.examples), np.int64)  # example -> row in its table
    self._filler_row = {}
    self._tables = {}
    self._batches = {}  # length -> the bucket's batches an epoch (the rows of its order)
    for length, indices in sorted(members.items()):
      self._row_of[indices] = np.arange(len(indices))
      self._filler_row[length] = len(indices)
      self._batches[length] = math.ceil(len(indices) / schedule.batch_size)
      padded = batches.pad_batch([schedule.examples[i] for i in indices], length)
      table = train_step_lib.pad_rows(padded, len(indices) + 1)  # + the filler row
      self._tables[length] = train_step_lib.device_batch(table, device)
    self._tokens = np.array([len(target) + 1 for _, target in schedule.examples])
    with tf.device(device):
      self._positions = {length: tf.Variable(tf.constant(0, tf.int64), trainable=False,
                                             name=f"position_{length}")
                         for length in self._tables}
    self._orders = {}
    self._functions = {}

  @property
  def lengths(self):
    """The padded lengths of the buckets, ascending."""
    return tuple(sorted(self._tables))

  def epoch(self, epoch, start=0):
    """Copies `epoch`'s batch order to the device and returns the `Planned` batches from
    `start` on (the first `start` are skipped, as `BatchSchedule.batches` skips them)."""
    plan = self._schedule.epoch_plan(epoch)
    blocks = collections.defaultdict(list)
    skipped = collections.Counter(length for length, _ in plan[:start])
    for length, indices in plan:
      block = np.full(self._rows, self._filler_row[length], np.int64)
      block[:len(indices)] = self._row_of[indices]
      blocks[length].append(block)
    with tf.device(self._device):
      for length, order in blocks.items():
        # The full epoch's order every time, so that its shape (and the step's trace) stays.
        self._orders[length] = tf.identity(tf.constant(np.stack(order)))
        self._positions[length].assign(skipped[length])
    return [Planned(length, float(self._tokens[indices].sum()))
            for length, indices in plan[start:]]

  def step(self, planned):
    """Runs the step on the next batch of `planned.length`'s bucket; returns its outputs."""
    return self._function(planned.length)(self._tables[planned.length],
                                          self._orders[planned.length])

  def warm_up_calls(self, lengths, rows):
    """For `compile_ahead.compile_buckets`: one call per padded length, the step of that
    bucket on its own pairs with NaN target weights (an unapplied step) and an order of the
    shape an epoch's has; the bucket's position is put back after it. `rows` is the rows
    the steps were built for."""
    if rows != self._rows:
      raise ValueError(f"the steps are built for {self._rows} rows, not {rows}")
    calls = []
    for length in lengths:
      table = self._tables[length]
      with tf.device(self._device):
        unapplied = table._replace(target_weight=tf.fill(tf.shape(table.target_weight),
                                                         float("nan")))
        order = tf.zeros([self._batches[length], self._rows], tf.int64)
      calls.append(functools.partial(self._unapplied_step, length, unapplied, order))
    return calls

  def _unapplied_step(self, length, table, order):
    """The step of `length` on `table` in `order`, its bucket's position left as it was."""
    position = self._positions[length]
    before = position.read_value()
    outputs = self._function(length)(table, order)
    position.assign(before)
    return outputs

  def _function(self, length):
    """The compiled step of the bucket of `length`, made at its first use."""
    function = self._functions.get(length)
    if function is None:
      function = self._functions[length] = self._make_function(length)
    return function

  def _make_function(self, length):
    position = self._positions[length]

    @tf.function(jit_compile=True, autograph=False)
    def gathered_step(table, order):
      """table: a `batches.Batch` of [rows of the bucket + 1, ...]; order: [batches, B] int64."""
      rows = tf.gather(order, position)
      position.assign_add(1)
      return self._step_fn(batches.Batch(*[tf.gather(field, rows) for field in table]))

    return gathered_step
