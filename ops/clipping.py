"""Gradient clipping by global norm."""
import tensorflow as tf


def clip_gradients(gradients, max_norm):
  """Rescales `gradients` so that their global L2 norm is at most `max_norm`.

  Gradients are scaled by max_norm / max(global_norm, max_norm): untouched when the norm is
  within the limit. `None` entries pass through.

  Args:
    gradients: list of tensors or `tf.IndexedSlices` (or None).
    max_norm: a positive float, or 0 / None for no clipping.

  Returns:
    (clipped_gradients, global_norm), where global_norm is the norm BEFORE clipping (a float32
    scalar), so that it can be logged.
  """
  if max_norm:
    return tf.clip_by_global_norm(gradients, max_norm)
  return list(gradients), tf.linalg.global_norm(gradients)
