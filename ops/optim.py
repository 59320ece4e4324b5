"""Optimizer update rules as pure functions: (parameter, gradient, slots) -> new values.

`seq2seq.step.optimizers` owns the slot variables and assigns what these return. Keeping the
rules here lets a test compare them with NumPy and lets a fused variant reuse them.
"""
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
