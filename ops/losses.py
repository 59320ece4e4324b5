"""Weighted sequence cross entropy, and perplexity."""
import math

import tensorflow as tf


def sequence_loss(logits, targets, weights, average_across_timesteps=True,
                  average_across_batch=True):
  """Weighted softmax cross entropy over a batch of sequences.

  With both flags on, this is sum(w * xent) / sum(w): the mean loss per real (non-PAD) token.
  With one flag on, the weighted sum is taken over the other axis and divided by the summed
  weights along the averaged axis; with both off it is the per-token loss times the weight
  ([B, T]). Where the weights being divided by sum to zero, the result is 0, never NaN.

  Args:
    logits: [B, T, V] unnormalised scores (any float dtype; computed in at least float32).
    targets: [B, T] integer ids.
    weights: [B, T] float, 0 at <PAD>.
    average_across_timesteps: divide the sum over T by the sum of weights over T.
    average_across_batch: divide the sum over B by the sum of weights over B.

  Returns:
    A scalar with both flags on; [B] with only `average_across_timesteps`; [T] with only
    `average_across_batch`; [B, T] with neither.
  """
  logits = tf.convert_to_tensor(logits)
  if logits.dtype in (tf.float16, tf.bfloat16):
    logits = tf.cast(logits, tf.float32)  # softmax statistics stay in full precision
  weights = tf.cast(weights, logits.dtype)
  crossent = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits)
  crossent *= weights
  if average_across_timesteps and average_across_batch:
    return tf.math.divide_no_nan(tf.reduce_sum(crossent), tf.reduce_sum(weights))
  if average_across_timesteps:
    return tf.math.divide_no_nan(tf.reduce_sum(crossent, axis=1), tf.reduce_sum(weights, axis=1))
  if average_across_batch:
    return tf.math.divide_no_nan(tf.reduce_sum(crossent, axis=0), tf.reduce_sum(weights, axis=0))
  return crossent


def perplexity(loss):
  """exp(loss) of a mean loss per token in nats, capped at exp(50) so that a diverged loss
  does not overflow."""
  return math.exp(min(loss, 50.0))
