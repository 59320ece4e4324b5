"""Minimal gated unit (Zhou et al. 2016), a plain tf.Module: --cell=seq2seq.contrib.mgu:MGUCell"""
import collections

import tensorflow as tf

MGUState = collections.namedtuple("MGUState", ["hidden"])


class MGUCell(tf.Module):
  """x [B, I], MGUState(h [B, H]) -> (h' [B, H], MGUState(h')), in x's dtype (bf16 or float32):

    f = sigmoid([x; h] W_f + b_f),  c = tanh([x; f * h] W_c + b_c),  h' = (1 - f) * h + f * c
  """

  def __init__(self, num_units, dtype=tf.float32, seed=0, name=None):
    super().__init__(name=name)
    self.output_size, self.dtype, self.seed, self.w_f = int(num_units), dtype, seed, None

  def initial_state(self, batch_size, dtype=None):
    return MGUState(hidden=tf.zeros([batch_size, self.output_size], dtype or self.dtype))

  def _build(self, input_size):
    shape = [input_size + self.output_size, self.output_size]
    limit = (6.0 / sum(shape)) ** 0.5  # Glorot uniform
    glorot = lambda i: tf.random.stateless_uniform(shape, [self.seed, i], -limit, limit, self.dtype)
    with self.name_scope, tf.init_scope():  # variables outlive the traced step that makes them
      self.w_f, self.w_c = tf.Variable(glorot(1), name="w_f"), tf.Variable(glorot(2), name="w_c")
      zeros = tf.zeros(shape[1:], self.dtype)
      self.b_f, self.b_c = tf.Variable(zeros, name="b_f"), tf.Variable(zeros, name="b_c")

  def __call__(self, inputs, state):
    if self.w_f is None:
      self._build(inputs.shape[-1])
    w_f, w_c, b_f, b_c, h = (tf.cast(v, inputs.dtype) for v in
                             (self.w_f, self.w_c, self.b_f, self.b_c, state.hidden))
    f = tf.sigmoid(tf.matmul(tf.concat([inputs, h], -1), w_f) + b_f)
    c = tf.tanh(tf.matmul(tf.concat([inputs, f * h], -1), w_c) + b_c)
    h = (1 - f) * h + f * c
    return h, MGUState(hidden=h)
