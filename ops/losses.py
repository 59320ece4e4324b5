"""Weighted sequence cross entropy (the full softmax, and a sampled softmax for training), and
perplexity."""
import math

import tensorflow as tf


def _average(crossent, weights, average_across_timesteps, average_across_batch):
  """Weighted per-token losses [B, T] -> the average `sequence_loss` documents."""
  if average_across_timesteps and average_across_batch:
    return tf.math.divide_no_nan(tf.reduce_sum(crossent), tf.reduce_sum(weights))
  if average_across_timesteps:
    return tf.math.divide_no_nan(tf.reduce_sum(crossent, axis=1), tf.reduce_sum(weights, axis=1))
  if average_across_batch:
    return tf.math.divide_no_nan(tf.reduce_sum(crossent, axis=0), tf.reduce_sum(weights, axis=0))
  return crossent


def sequence_loss(logits, targets, weights, average_across_timesteps=True,
                  average_across_batch=True, label_smoothing=0.0):
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
    label_smoothing: eps in [0, 1): the cross entropy against (1 - eps) one-hot + eps / V
      uniform, i.e. (1 - eps) * xent - eps * mean_v log p_v (Szegedy et al. 2016).

  Returns:
    A scalar with both flags on; [B] with only `average_across_timesteps`; [T] with only
    `average_across_batch`; [B, T] with neither.
  """
  logits = tf.convert_to_tensor(logits)
  if logits.dtype in (tf.float16, tf.bfloat16):
    crossent = low_precision_cross_entropy(logits, targets, label_smoothing)
  else:
    crossent = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits)
    if label_smoothing:
      uniform_xent = -tf.reduce_mean(tf.nn.log_softmax(logits), axis=-1)
      crossent = (1.0 - label_smoothing) * crossent + label_smoothing * uniform_xent
  weights = tf.cast(weights, crossent.dtype)
  return _average(crossent * weights, weights, average_across_timesteps, average_across_batch)


def low_precision_cross_entropy(logits, labels, label_smoothing=0.0):
  """Softmax cross entropy of bfloat16 / float16 logits, in float32, with a gradient in their
  dtype: the big [..., V] tensors stay in the low precision.

  The values and the gradient are those of casting the logits to float32 and taking
  `tf.nn.sparse_softmax_cross_entropy_with_logits` (with `sequence_loss`'s label smoothing),
  but no float32 copy of the logits, their softmax or their gradient is kept between the
  forward and the backward pass. Forward: the row max and the sum of exponentials (float32
  statistics, [...] each). Backward: (softmax - target distribution) * upstream, recomputed
  per element from the logits and the saved log-sum-exp, stored in the logits' dtype. Under
  XLA each is one fused pass over the [..., V] logits.

  Args:
    logits: [..., V] bfloat16 or float16.
    labels: [...] integer ids in [0, V).
    label_smoothing: eps in [0, 1): the target is (1 - eps) one-hot + eps / V uniform.

  Returns:
    [...] float32 per-position cross entropy.
  """
  vocab_size = tf.shape(logits)[-1]
  eps = float(label_smoothing)

  @tf.custom_gradient
  def cross_entropy(logits):
    scores = tf.cast(logits, tf.float32)
    log_sum_exp = tf.reduce_logsumexp(scores, axis=-1)  # [...]
    target_score = tf.gather(scores, labels, axis=-1, batch_dims=labels.shape.rank)
    loss = log_sum_exp - target_score
    if eps:  # -mean_v log p_v = log_sum_exp - mean_v score_v
      loss = (1.0 - eps) * loss + eps * (log_sum_exp - tf.reduce_mean(scores, axis=-1))

    def gradient(upstream):
      softmax = tf.exp(tf.cast(logits, tf.float32) - log_sum_exp[..., tf.newaxis])
      target = tf.one_hot(labels, vocab_size, on_value=1.0 - eps, off_value=0.0)
      if eps:
        target += eps / tf.cast(vocab_size, tf.float32)
      return tf.cast((softmax - target) * upstream[..., tf.newaxis], logits.dtype)

    return loss, gradient

  return cross_entropy(logits)


def log_uniform_sample(num_sampled, vocab_size, seed):
  """`num_sampled` ids drawn with replacement from the log-uniform (Zipfian) distribution.

  P(k) = log((k + 2) / (k + 1)) / log(V + 1) for k in [0, V): the frequency law of a
  vocabulary whose ids are sorted by decreasing frequency. Drawn by inverting the CDF,
  k = floor(exp(u log(V + 1))) - 1 with u ~ U[0, 1), from a stateless generator: the same
  `seed` gives the same ids (on one kind of device), under XLA too.

  Args:
    num_sampled: S, a Python int.
    vocab_size: V, a Python int.
    seed: [2] int32 or int64 tensor.

  Returns:
    [S] int32 ids in [0, V).
  """
  u = tf.random.stateless_uniform([num_sampled], seed, dtype=tf.float32)
  ids = tf.cast(tf.floor(tf.exp(u * math.log(vocab_size + 1.0))), tf.int32) - 1
  return tf.clip_by_value(ids, 0, vocab_size - 1)  # float rounding at the ends


def log_uniform_log_expected_count(ids, num_sampled, vocab_size):
  """log(S P(k)) of each id: the log of how often S draws of `log_uniform_sample` give k."""
  k = tf.cast(ids, tf.float32)
  return (tf.math.log(tf.math.log1p(1.0 / (k + 1.0)))
          + math.log(num_sampled) - math.log(math.log(vocab_size + 1.0)))


def sampled_softmax_cross_entropy(inputs, labels, kernel, bias, sampled, log_expected_true,
                                  log_expected_sampled):
  """Per-row sampled softmax cross entropy, given the sampled candidates.

  Row n scores its label y and the S shared candidates s_j with corrected logits
  o_y = h w_y + b_y - log Q(y) and o_j = h w_{s_j} + b_{s_j} - log Q(s_j), where Q is the
  expected count of a class among the samples; a candidate equal to y (an accidental hit)
  is removed (its logit set to the float32 minimum). The loss is
  -o_y + log(exp(o_y) + sum_j exp(o_j)), an estimate of the full softmax cross entropy whose
  gradient touches only the S + 1 columns of the projection that were scored.

  Only the [N, S] candidate logits are formed, never the [N, V] full ones.

  Args:
    inputs: [N, H] hidden states, in the compute dtype (float32 or bfloat16).
    labels: [N] int target ids.
    kernel: [H, V] projection kernel; bias: [V] (any float dtype; cast to `inputs.dtype`).
    sampled: [S] int candidate ids (duplicates allowed).
    log_expected_true: [N] log Q(y) of the labels.
    log_expected_sampled: [S] log Q(s_j) of the candidates.

  Returns:
    [N] losses, float32 (float64 for float64 inputs).
  """
  inputs = tf.convert_to_tensor(inputs)
  labels = tf.cast(labels, tf.int32)
  sampled = tf.cast(sampled, tf.int32)
  num_rows = tf.shape(labels)[0]
  ids = tf.concat([labels, sampled], 0)
  # One gather of the S + N scored columns; the kernel is [H, V], so columns, not rows.
  columns = tf.cast(tf.gather(kernel, ids, axis=1), inputs.dtype)  # [H, N + S]
  biases = tf.gather(bias, ids)
  true_columns, sampled_columns = columns[:, :num_rows], columns[:, num_rows:]
  loss_dtype = tf.float64 if inputs.dtype == tf.float64 else tf.float32
  true_logits = tf.cast(tf.reduce_sum(inputs * tf.transpose(true_columns), axis=1), loss_dtype)
  sampled_logits = tf.cast(tf.matmul(inputs, sampled_columns), loss_dtype)  # [N, S]
  true_logits += tf.cast(biases[:num_rows], loss_dtype) - tf.cast(log_expected_true, loss_dtype)
  sampled_logits += (tf.cast(biases[num_rows:], loss_dtype)
                     - tf.cast(log_expected_sampled, loss_dtype))[None, :]
  hits = tf.equal(labels[:, None], sampled[None, :])
  sampled_logits = tf.where(hits, tf.constant(tf.float32.min, loss_dtype), sampled_logits)
  logits = tf.concat([true_logits[:, None], sampled_logits], 1)  # the label is class 0
  return tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=tf.zeros([num_rows], tf.int32), logits=logits)


def sampled_sequence_loss(outputs, targets, weights, kernel, bias, num_sampled, seed,
                          average_across_timesteps=True, average_across_batch=True):
  """`sequence_loss` with a sampled softmax over the projection of `outputs`, for training.

  One set of `num_sampled` log-uniform candidates (`log_uniform_sample`, with replacement)
  is shared by every token of the batch; see `sampled_softmax_cross_entropy` for the
  per-token loss. Weights and averaging are those of `sequence_loss`, so PAD (weight 0)
  contributes nothing. The log-uniform sampler suits vocabularies whose ids are sorted by
  decreasing frequency. Evaluation should use the exact `sequence_loss`.

  Args:
    outputs: [B, T, H] decoder outputs, before the projection (float32 or bfloat16).
    targets: [B, T] integer ids; weights: [B, T] float, 0 at <PAD>.
    kernel: [H, V] projection kernel; bias: [V].
    num_sampled: S, a Python int, 0 < S < V.
    seed: [2] int tensor for the stateless sampler (e.g. (run seed, step)).
    average_across_timesteps, average_across_batch: as in `sequence_loss`.

  Returns:
    As `sequence_loss`, in float32 (float64 for float64 outputs).
  """
  vocab_size = int(kernel.shape[-1])
  if not 0 < num_sampled < vocab_size:
    raise ValueError(f"num_sampled must be in (0, {vocab_size}), got {num_sampled}")
  outputs = tf.convert_to_tensor(outputs)
  flat = tf.reshape(outputs, [-1, outputs.shape[-1]])  # [B*T, H]
  labels = tf.reshape(targets, [-1])
  sampled = log_uniform_sample(num_sampled, vocab_size, seed)
  crossent = sampled_softmax_cross_entropy(
      flat, labels, kernel, bias, sampled,
      log_uniform_log_expected_count(labels, num_sampled, vocab_size),
      log_uniform_log_expected_count(sampled, num_sampled, vocab_size))
  crossent = tf.reshape(crossent, tf.shape(targets))
  weights = tf.cast(weights, crossent.dtype)
  return _average(crossent * weights, weights, average_across_timesteps, average_across_batch)


def perplexity(loss):
  """exp(loss) of a mean loss per token in nats, capped at exp(50) so that a diverged loss
  does not overflow."""
  return math.exp(min(loss, 50.0))
