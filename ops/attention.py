"""Attention scores and the masked softmax over source positions, as plain functions.

`seq2seq.nn.attention` owns the variables and calls these; they are the whole of the math.

Shapes: B = batch, Ts = source (memory) length, U = attention units, M = memory depth.
"""
import tensorflow as tf


def dot_score(query, keys, scale=None):
  """Luong's multiplicative score (Luong et al. 2015).

      score[b, s] = g * <query[b], keys[b, s]>

  "dot" passes the memory itself as `keys`; "general" passes memory @ W_a, so that
  <h, m W_a> = h^T W_a^T m is the bilinear score with one matmul per source, not per step.

  Args:
    query: [B, U], the decoder output h_t.
    keys: [B, Ts, U].
    scale: optional scalar g (a learned scalar in the scaled variant); None means 1.

  Returns:
    scores [B, Ts].
  """
  scores = tf.einsum("bu,bsu->bs", query, keys)
  return scores if scale is None else scale * scores


def additive_score(processed_query, keys, v, bias=None, gain=None):
  """Bahdanau's additive score (Bahdanau et al. 2015).

      score[b, s] = v . tanh(keys[b, s] + q[b] + bias)                 plain
      score[b, s] = (gain * v / |v|) . tanh(keys[b, s] + q[b] + bias)  normalised (weight
                                                                         normalisation, Salimans
                                                                         & Kingma 2016)

  Args:
    processed_query: [B, U], the query already projected (q = h W_q).
    keys: [B, Ts, U], the memory already projected (m W_m).
    v: [U].
    bias: optional [U], added inside the tanh.
    gain: optional scalar; when given, `v` is normalised to unit length and scaled by it.

  Returns:
    scores [B, Ts].
  """
  hidden = keys + processed_query[:, None, :]
  if bias is not None:
    hidden += bias
  if gain is not None:
    v = gain * v * tf.math.rsqrt(tf.reduce_sum(tf.square(v)))
  return tf.einsum("bsu,u->bs", tf.tanh(hidden), v)


def source_mask(lengths, num_steps):
  """[B] lengths -> [B, Ts] bool, True at the valid (not padded) source positions."""
  return tf.sequence_mask(lengths, num_steps)


def masked_softmax(scores, lengths):
  """Softmax over each row's first `lengths[b]` positions; padded positions get exactly 0.

  The masked scores are set to the dtype's lowest value before the softmax (so they do not
  take part in the max or the sum), and the weights are zeroed after it, so a row of length 0
  is all zeros rather than uniform.

  Args:
    scores: [B, Ts].
    lengths: [B] int, 0 <= lengths <= Ts.

  Returns:
    alignments [B, Ts], each row summing to 1 over its valid positions.
  """
  mask = source_mask(lengths, tf.shape(scores)[1])
  lowest = tf.constant(scores.dtype.min, scores.dtype)
  weights = tf.nn.softmax(tf.where(mask, scores, lowest), axis=-1)
  return tf.where(mask, weights, tf.zeros_like(weights))


def context(alignments, memory):
  """The alignment-weighted sum of the memory: [B, Ts], [B, Ts, M] -> [B, M]."""
  return tf.einsum("bs,bsm->bm", alignments, memory)
