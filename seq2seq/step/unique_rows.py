"""Embedding lookups that read and move each distinct row once, for the split train step.

With a table pinned to the host (--embedding_device=cpu), the compiled part of the step runs
on the accelerator and the table's rows travel each way on every step. A batch looks a word
up many times (every occurrence, and a table shared by source and target twice over), so
here each table's ids are made distinct on the table's device first: its U distinct rows
are gathered there, cast to the compute dtype (bfloat16 under --precision=bf16 halves the
bytes), and copied once; the step reads them through `positions`, and its gradient comes
back as one summed row per distinct id (`pipeline.UniqueRows`), for
`optimizers.Optimizer.update_rows` to apply to those U rows only.

The rows are padded with zero rows to C, the table's number of lookups in the batch, on the
accelerator, so that the compiled part sees one shape per bucket (XLA compiles a program per
input shape, and U changes from batch to batch); only the U rows cross the bus.
"""
import contextlib
import typing

import tensorflow as tf


class Lookup(typing.NamedTuple):
  """One table's distinct rows of a batch.

  ids: [U] int32, the distinct ids, on the table's device (in order of first occurrence).
  rows: [C, E] in the rows dtype, where the step runs: the ids' rows, then C - U zero rows.
  """
  ids: tf.Tensor
  rows: tf.Tensor


def distinct_tables(lookups):
  """The distinct tables of `lookups` ([(embeddings.Embedding, ids_fn)]), in order."""
  tables = []
  for embedding, _ in lookups:
    if all(embedding.table is not table for table in tables):
      tables.append(embedding.table)
  return tables


def look_up(lookups, inputs, rows_dtype, device=None):
  """The distinct rows of each table that `lookups` read for `inputs`.

  Args:
    lookups: [(embeddings.Embedding, ids_fn)], ids_fn(inputs) -> int32 ids [...] (a table
      named twice is shared: its lookups' ids are made distinct together).
    rows_dtype: the dtype the rows are moved in (the model's compute dtype).
    device: where the step runs (the rows are moved there); None: the enclosing scope's.

  Returns:
    (one `Lookup` per table of `distinct_tables(lookups)`, one `positions` per lookup: int32
    of its ids' shape, the place of each id among its table's `Lookup.ids`, so that
    `tf.gather(rows, positions)` is the lookup).
  """
  looked_up, positions = look_up_in_place(lookups, inputs, rows_dtype)
  return moved(lookups, looked_up, positions, device), positions


def look_up_in_place(lookups, inputs, rows_dtype):
  """`look_up` with each table's rows [U, E] left where the table is, not padded."""
  ids = [tf.convert_to_tensor(ids_fn(inputs)) for _, ids_fn in lookups]
  tables, positions = [], [None] * len(lookups)
  for table in distinct_tables(lookups):
    mine = [i for i, (embedding, _) in enumerate(lookups) if embedding.table is table]
    flat = [tf.reshape(ids[i], [-1]) for i in mine]
    with tf.device(table.device):
      distinct, where = tf.unique(tf.concat(flat, 0))
      rows = tf.cast(tf.gather(table, distinct), rows_dtype)
      parts = tf.split(where, [tf.size(f) for f in flat])
    for i, part in zip(mine, parts):
      positions[i] = tf.reshape(part, _shape(ids[i]))
    tables.append(Lookup(distinct, rows))
  return tables, positions


def moved(lookups, looked_up, positions, device=None):
  """`looked_up` (of `look_up_in_place`) with each table's rows moved to `device` and padded
  there with zero rows to C, the table's lookups in the batch (from `positions`)."""
  moved_rows = []
  for table, lookup in zip(distinct_tables(lookups), looked_up):
    mine = [where for (embedding, _), where in zip(lookups, positions)
            if embedding.table is table]
    static = [where.shape.num_elements() for where in mine]
    capacity = sum(static) if None not in static else tf.add_n([tf.size(w) for w in mine])
    with on(device):
      moved_rows.append(lookup._replace(rows=_padded(tf.identity(lookup.rows), capacity)))
  return moved_rows


def on(device):
  """A context placing ops on `device`; None: where the enclosing scope places them."""
  return tf.device(device) if device else contextlib.nullcontext()


def distinct_rows(gradient, ids, device=None):
  """The U rows of the distinct `ids` [U] (a `Lookup`'s) out of `gradient` [C, E], a
  gradient of its padded rows, cut on `device` (where the step ran) before they are moved
  back."""
  with on(device):
    return gradient[:tf.shape(ids)[0]]


def _padded(rows, capacity):
  """`rows` [U, E] with zero rows appended up to `capacity` (an int, static where the batch's
  shape is, or a scalar tensor)."""
  padded = tf.pad(rows, [[0, capacity - tf.shape(rows)[0]], [0, 0]])
  return tf.reshape(padded, [capacity if isinstance(capacity, int) else -1, rows.shape[-1]])


def _shape(ids):
  """The shape of `ids`: a list where it is static (the compiled step's shapes stay known)."""
  return ids.shape.as_list() if ids.shape.is_fully_defined() else tf.shape(ids)


def embedded(lookups, tables, rows, positions):
  """The looked-up vectors, one [..., E] per lookup, read from each table's distinct `rows`.

  Args:
    lookups: as for `look_up`; tables: `distinct_tables(lookups)`.
    rows: one [C, E] per table (the rows `look_up` gave, or a cast of them); positions: as
      `look_up` returns them.
  """
  index = {table.ref(): i for i, table in enumerate(tables)}
  return [tf.gather(rows[index[embedding.table.ref()]], where)
          for (embedding, _), where in zip(lookups, positions)]
