"""The one-device train step with its tables pinned to the host, in parts.

With --embedding_device=cpu (the default) the lookups and the tables' row updates run where
the tables live, on the CPU, one distinct row at a time (`unique_rows`), and the rest of the
step (forward from those rows, loss, backward, global norm, clipping, the dense update) runs
where the dense variables live, XLA-compiled with `jit_compile`:

    look_up (host)  ->  dense (accelerator)  ->  update_rows (host)

`SplitStep.__call__` runs the three in that order. Each part is also callable on its own, so
that `lookahead.LookaheadStep` can look the next batch up while the accelerator runs this
one's dense part, and then `refresh` the rows that this batch's update rewrote.
"""
import tensorflow as tf

from seq2seq.step import pipeline
from seq2seq.step import unique_rows


def int32_ids(batch):
  """`batch` (a nest of tensors) with its int64 tensors cast to int32. Call it inside the
  compiled program, where the cast is free and its result stays on the device."""
  return tf.nest.map_structure(
      lambda t: tf.cast(t, tf.int32) if getattr(t, "dtype", None) == tf.int64 else t, batch)


class SplitStep:
  """The train step of `train_step.make_update_step` with tables on the host.

  Args:
    loss_fn, lookups, optimizer, max_grad_norm, jit_compile, rows_dtype: as for
      `train_step.make_update_step`.
    dense_variables: the trainable variables other than the tables.
    gradients_fn: (inputs, rows, positions) -> (loss, `pipeline.Gradients`, extra), the
      tables' gradients as `pipeline.UniqueRows` (`train_step`'s `_unique_row_gradients`).
    any_length: the compiled `dense` is traced again for a new length only once, then for
      any length (the dynamic unroll; XLA still compiles each length).
  """

  def __init__(self, lookups, dense_variables, optimizer, max_grad_norm, jit_compile,
               rows_dtype, gradients_fn, any_length=False):
    self.lookups = lookups
    self.tables = unique_rows.distinct_tables(lookups)
    self._trained = [(table, index) for index, table in enumerate(self.tables)
                     if table.trainable]
    self._pinned = {embedding.table.ref() for embedding, _ in lookups
                    if embedding.pinned_to_host}
    self._dense_variables = dense_variables
    self._optimizer = optimizer
    self._max_grad_norm = max_grad_norm
    self._gradients_fn = gradients_fn
    self.rows_dtype = rows_dtype or (self.tables[0].dtype if self.tables else tf.float32)
    # The dense part runs where the dense variables live: the rows are moved there.
    self.device = dense_variables[0].device if dense_variables else None
    self._any_length = jit_compile and any_length
    self.dense = self._dense
    if jit_compile:
      self.dense = tf.function(self._dense, jit_compile=True, autograph=False,
                               reduce_retracing=self._any_length)

  @property
  def pinned(self):
    """Whether a table is pinned to the host."""
    return bool(self._pinned)

  def __call__(self, inputs):
    """One step: -> (loss, grad_norm, finite, extra), as `make_update_step`'s step."""
    looked_up, positions = self.look_up(inputs)
    loss, grad_norm, finite, gradients, extra = self.dense(
        inputs, [lookup.rows for lookup in looked_up], positions)
    self.update_rows(gradients, [lookup.ids for lookup in looked_up], finite)
    return loss, grad_norm, finite, extra

  def trace_for(self, arguments):
    """With `any_length`, traces the compiled `dense` once for all of `arguments` (one
    (inputs, rows, positions) per padded length): the dimensions that differ among them are
    left free, so every one of those lengths runs that trace, whichever comes first."""
    if self._any_length:
      self.dense.get_concrete_function(*tf.nest.map_structure(_common_spec, *arguments))

  def look_up(self, inputs):
    """-> (one `unique_rows.Lookup` per table, its rows on the dense part's device; the
    positions of each lookup's ids among its table's), as `unique_rows.look_up`."""
    return unique_rows.look_up(self.lookups, int32_ids(inputs), self.rows_dtype, self.device)

  def _dense(self, inputs, rows, positions):
    """Forward, backward, global norm, clipping and the dense update from the looked-up
    `rows` (one [C, E] per table): -> (loss, grad_norm, finite, the tables' clipped row
    gradients [C, E] in the rows dtype, extra)."""
    inputs = int32_ids(inputs)

    def update_dense(clipped, finite):
      self._optimizer.update(clipped.dense, self._dense_variables, condition=finite)
      return [tf.cast(rows.gradient, self.rows_dtype) for rows in clipped.tables]

    outputs = pipeline.run(
        lambda: self._gradients_fn(inputs, rows, positions), pipeline.identity,
        lambda loss, gradients: pipeline.clipped_update(self._max_grad_norm, update_dense,
                                                        loss, gradients))
    return outputs.loss, outputs.grad_norm, outputs.finite, outputs.kept, outputs.extra

  def update_rows(self, gradients, ids, finite, schedule=None, finish=True):
    """The rest of the gated update: each trained table's distinct rows `ids` (one [U] per
    table) with their `gradients` (one [C, E] per trained table, from `dense`, or [U, E]),
    on the table's device; then, with `finish`, the optimizer's step counter.

    `schedule`: (learning rate, step) to apply, as `Optimizer.update_rows` takes it; None:
    the current ones. Returns the (learning rate, step) applied, and `finite`, on the host."""
    if self._trained:  # read where the tables are, once
      with tf.device(self._trained[0][0].device):
        schedule = [tf.identity(value) for value in schedule or self._optimizer.schedule()]
        finite = tf.identity(finite)
    for (table, index), gradient in zip(self._trained, gradients):
      gradient = unique_rows.distinct_rows(gradient, ids[index], self.device)
      with tf.device(table.device):
        self._optimizer.update_rows(gradient, ids[index], table, condition=finite,
                                    read_condition=table.ref() in self._pinned,
                                    schedule=schedule)
    if finish:
      self._optimizer.finish_step(condition=finite)
    return schedule, finite

  def partition(self, gradients, ids, next_ids):
    """The trained tables' rows split into those that `next_ids` (one [U'] per table) reads,
    whose update the next step needs, and the rest, whose update can wait.

    Args:
      gradients: one [C, E] per trained table, from `dense` (the rows of `ids`, then padding).
      ids: one [U] per table: the distinct ids of the rows.

    Returns:
      (now, later), each (gradients: one [K, E] per trained table, on its table's device;
      ids: one [K] per table, for frozen tables `ids`' own), to pass to `update_rows`.
    """
    now = ([], list(ids))
    later = ([], list(ids))
    for (table, index), gradient in zip(self._trained, gradients):
      with tf.device(table.device):
        read_next = tf.gather(_marked(next_ids[index], table.shape[0]), ids[index]) > 0
        places = [tf.where(read_next)[:, 0], tf.where(~read_next)[:, 0]]
      for half, where in zip((now, later), places):
        with unique_rows.on(self.device):  # cut where the gradient is, then moved
          rows = tf.gather(gradient, where)
        with tf.device(table.device):
          half[0].append(tf.identity(rows))
          half[1][index] = tf.gather(ids[index], where)
    return now, later

  def refresh(self, looked_up, updated_ids):
    """`looked_up` (Lookups read before an update of the rows `updated_ids`, one [U'] per
    table) with the rows of the ids in both read again: -> Lookups whose rows equal a lookup
    made now. Frozen tables are returned as they are."""
    refreshed = list(looked_up)
    for table, index in self._trained:
      lookup = looked_up[index]
      with tf.device(table.device):
        both = tf.where(tf.gather(_marked(updated_ids[index], table.shape[0]), lookup.ids) > 0)
        rows = tf.cast(tf.gather(table, tf.gather_nd(lookup.ids, both)), self.rows_dtype)
      with unique_rows.on(self.device):
        refreshed[index] = lookup._replace(
            rows=tf.tensor_scatter_nd_update(lookup.rows, both, tf.identity(rows)))
    return refreshed


def _common_spec(*tensors):
  """The `tf.TensorSpec` of all of `tensors` (one rank and dtype): None where sizes differ."""
  shapes = [tensor.shape.as_list() for tensor in tensors]
  return tf.TensorSpec([size if all(s[axis] == size for s in shapes) else None
                        for axis, size in enumerate(shapes[0])], tensors[0].dtype)


def _marked(ids, size):
  """[size] int32: 1 at `ids` (distinct), 0 elsewhere."""
  return tf.scatter_nd(ids[:, tf.newaxis], tf.ones_like(ids), [size])
