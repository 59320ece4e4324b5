"""Optimizer update rules as pure functions: (parameter, gradient, slots) -> new values.

`seq2seq.step.optimizers` owns the slot variables and assigns what these return. Keeping the
rules here lets a test compare them with NumPy and lets a fused variant reuse them.
"""
import math

import tensorflow as tf


def sgd_update(param, grad, learning_rate):
  """Plain gradient descent. Returns the new parameter."""
  return param - learning_rate * grad


def adam_update(param, grad, m, v, learning_rate, step, beta1=0.9, beta2=0.999, epsilon=1e-8):
  """Adam (Kingma & Ba 2015, Algorithm 1).

      m' = b1 m + (1 - b1) g
      v' = b2 v + (1 - b2) g^2
      param' = param - lr * (m' / (1 - b1^t)) / (sqrt(v' / (1 - b2^t)) + eps)

  Args:
    step: t, the 1-based number of this update (a float scalar tensor).

  Returns:
    (new_param, new_m, new_v).
  """
  new_m = beta1 * m + (1.0 - beta1) * grad
  new_v = beta2 * v + (1.0 - beta2) * tf.square(grad)
  m_hat = new_m / (1.0 - tf.pow(tf.constant(beta1, param.dtype), step))
  v_hat = new_v / (1.0 - tf.pow(tf.constant(beta2, param.dtype), step))
  return param - learning_rate * m_hat / (tf.sqrt(v_hat) + epsilon), new_m, new_v


def rmsprop_update(param, grad, mean_square, learning_rate, rho=0.9, epsilon=1e-7):
  """RMSProp (Tieleman & Hinton 2012), no momentum.

      ms' = rho ms + (1 - rho) g^2
      param' = param - lr * g / (sqrt(ms') + eps)

  Returns:
    (new_param, new_mean_square).
  """
  new_ms = rho * mean_square + (1.0 - rho) * tf.square(grad)
  return param - learning_rate * grad / (tf.sqrt(new_ms) + epsilon), new_ms


def exponential_decay(learning_rate, step, decay_steps, decay_rate, staircase=False):
  """lr * decay_rate ^ (step / decay_steps); the exponent is floored when `staircase`."""
  exponent = tf.cast(step, tf.float32) / float(decay_steps)
  if staircase:
    exponent = tf.floor(exponent)
  return learning_rate * tf.pow(float(decay_rate), exponent)


def warmup_factor(step, warmup_steps):
  """min(1, (step + 1) / warmup_steps): a linear rise from 0 over the first `warmup_steps`
  updates (1 when `warmup_steps` is 0). `step` counts the updates done before this one, so
  update n (1-based) gets n / warmup_steps and none gets a learning rate of 0."""
  if not warmup_steps:
    return tf.constant(1.0, tf.float32)
  return tf.minimum(1.0, (tf.cast(step, tf.float32) + 1.0) / float(warmup_steps))


def decay_factor(kind, step, decay_steps, decay_rate=1.0, staircase=False):
  """The learning rate's decay at `step` (updates done), a float32 scalar in (0, 1]:

    exponential   decay_rate ^ (step / decay_steps)   (exponent floored when `staircase`)
    constant      1
    inverse_sqrt  sqrt(decay_steps / max(step, decay_steps)): 1, then 1/sqrt(step) from
                  `decay_steps` on (with warmup_steps = decay_steps: the Transformer's shape)
    cosine        (1 + cos(pi * min(step, decay_steps) / decay_steps)) / 2: from 1 to 0 at
                  `decay_steps`, the run's planned length, and 0 after it
  """
  step = tf.cast(step, tf.float32)
  if kind == "exponential":
    return exponential_decay(1.0, step, decay_steps, decay_rate, staircase)
  if kind == "constant":
    return tf.constant(1.0, tf.float32)
  if kind == "inverse_sqrt":
    return tf.sqrt(float(decay_steps) / tf.maximum(step, float(decay_steps)))
  if kind == "cosine":
    progress = tf.minimum(step, float(decay_steps)) / float(decay_steps)
    return 0.5 * (1.0 + tf.cos(math.pi * progress))
  raise ValueError(f"unknown learning-rate schedule {kind!r}")


def scheduled_learning_rate(learning_rate, step, kind="exponential", decay_steps=100000,
                            decay_rate=0.95, staircase=False, warmup_steps=0):
  """learning_rate * warmup_factor(step) * decay_factor(kind, step): the learning rate of the
  update that follows `step` (int) updates. Warmup multiplies every schedule."""
  return (learning_rate * warmup_factor(step, warmup_steps)
          * decay_factor(kind, step, decay_steps, decay_rate, staircase))
