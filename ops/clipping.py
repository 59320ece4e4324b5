"""Gradient clipping by global norm."""
import tensorflow as tf


def merge_duplicate_rows(slices):
  """An IndexedSlices with each index once, its rows summed: the same dense gradient."""
  unique, positions = tf.unique(slices.indices)
  values = tf.math.unsorted_segment_sum(slices.values, positions, tf.shape(unique)[0])
  return tf.IndexedSlices(values, unique, slices.dense_shape)


def clip_gradients(gradients, max_norm):
  """Rescales `gradients` so that their global L2 norm is at most `max_norm`.

  Gradients are scaled by max_norm / max(global_norm, max_norm): untouched when the norm is
  within the limit. `None` entries pass through. Rows of an IndexedSlices that share an index
  (a word seen twice in a batch) are summed first, so the norm is that of the dense gradient.

  Args:
    gradients: list of tensors or `tf.IndexedSlices` (or None).
    max_norm: a positive float, or 0 / None for no clipping.

  Returns:
    (clipped_gradients, global_norm), where global_norm is the norm BEFORE clipping (a float32
    scalar), so that it can be logged.
  """
  gradients = [merge_duplicate_rows(g) if isinstance(g, tf.IndexedSlices) else g
               for g in gradients]
  if max_norm:
    return tf.clip_by_global_norm(gradients, max_norm)
  return list(gradients), tf.linalg.global_norm(gradients)


def clip_scale(global_norm, max_norm):
  """The factor `clip_gradients` multiplies by: max_norm / max(norm, max_norm), or 1 if off."""
  if not max_norm:
    return tf.ones_like(global_norm)
  return max_norm / tf.maximum(global_norm, max_norm)


def global_norm_with_rows(dense_gradients, row_gradients):
  """Global L2 norm of dense gradients and embedding-row gradients together.

  Args:
    dense_gradients: list of tensors.
    row_gradients: list of (values [N, E], indices [N], num_rows) for tables of num_rows rows;
      rows that share an index are summed first (see `rows_squared_norm`).

  Returns:
    A scalar, the norm of all of them as one vector.
  """
  squared_norm = tf.square(tf.linalg.global_norm(dense_gradients))
  for values, indices, num_rows in row_gradients:
    squared_norm += rows_squared_norm(values, indices, num_rows)
  return tf.sqrt(squared_norm)


def rows_squared_norm(values, indices, num_rows):
  """||dense gradient||^2 of rows `values` [N, E] scattered to `indices` [N] of a [num_rows, E]
  table, duplicates summed. Uses a dense scatter (no tf.unique), so it compiles with XLA."""
  dense = tf.math.unsorted_segment_sum(values, indices, num_rows)
  return tf.reduce_sum(tf.square(dense))
