"""Layer-normalised LSTM (Ba, Kiros & Hinton 2016), a plain tf.Module: --cell=layer_norm_lstm

Written against the cell contract only (`__call__`, `initial_state`, `output_size`), like
`mgu.py`; the engine runs it on the reference unroll.
"""
import collections

import tensorflow as tf

from ops import cell_math

LayerNormLSTMState = collections.namedtuple("LayerNormLSTMState", ["hidden", "cell"])

EPSILON = 1e-5  # added to the variance, as in Ba et al.


def layer_norm(x, gain, groups=1):
  """x [B, groups * N] normalised over each group of N features (mean 0, variance 1), then
  scaled by `gain` [groups * N]. Statistics in float32 whatever x's dtype (bf16 has too few
  mantissa bits for a variance); the result in x's dtype."""
  shape = tf.shape(x)
  grouped = tf.reshape(tf.cast(x, tf.float32), [shape[0], groups, -1])
  mean, variance = tf.nn.moments(grouped, axes=[-1], keepdims=True)
  normal = tf.reshape((grouped - mean) * tf.math.rsqrt(variance + EPSILON), shape)
  return tf.cast(normal, x.dtype) * tf.cast(gain, x.dtype)


class LayerNormLSTMCell(tf.Module):
  """x [B, I], LayerNormLSTMState(h, c [B, H]) -> (h' [B, H], state(h', c')), in x's dtype:

    [i, g, f, o] = LN_4(x W_x; a_x) + LN_4(h W_h; a_h) + b     LN_4: per gate block of H
    c' = sigmoid(f + forget_bias) * c + sigmoid(i) * tanh(g)
    h' = sigmoid(o) * tanh(LN(c'; a_c) + b_c)

  The gains a start at 1 and the biases b, b_c at 0. The two normalised sums share one bias
  b: their own shifts would only add to it. Gate blocks in the order i, g, f, o, as `LSTMCell`.
  """

  def __init__(self, num_units, forget_bias=1.0, dtype=tf.float32, seed=0, name=None):
    super().__init__(name=name)
    self.output_size, self.forget_bias = int(num_units), float(forget_bias)
    self.dtype, self.seed, self.w_input = tf.as_dtype(dtype), int(seed), None

  def initial_state(self, batch_size, dtype=None):
    zeros = tf.zeros([batch_size, self.output_size], dtype or self.dtype)
    return LayerNormLSTMState(hidden=zeros, cell=zeros)

  def _build(self, input_size):
    units, width = self.output_size, 4 * self.output_size

    def glorot(rows, index):  # Glorot uniform, as the built-in cells
      limit = (6.0 / (rows + width)) ** 0.5
      return tf.random.stateless_uniform([rows, width], [self.seed, index], -limit, limit,
                                         self.dtype)
    with self.name_scope, tf.init_scope():  # variables outlive the traced step that makes them
      self.w_input = tf.Variable(glorot(input_size, 1), name="w_input")
      self.w_hidden = tf.Variable(glorot(units, 2), name="w_hidden")
      self.gain_input = tf.Variable(tf.ones([width], self.dtype), name="gain_input")
      self.gain_hidden = tf.Variable(tf.ones([width], self.dtype), name="gain_hidden")
      self.bias = tf.Variable(tf.zeros([width], self.dtype), name="bias")
      self.gain_cell = tf.Variable(tf.ones([units], self.dtype), name="gain_cell")
      self.bias_cell = tf.Variable(tf.zeros([units], self.dtype), name="bias_cell")

  def __call__(self, inputs, state):
    if self.w_input is None:
      self._build(int(inputs.shape[-1]))
    w_x, w_h, b, b_c = (tf.cast(v, inputs.dtype) for v in
                        (self.w_input, self.w_hidden, self.bias, self.bias_cell))
    gates = (layer_norm(tf.matmul(inputs, w_x), self.gain_input, groups=4)
             + layer_norm(tf.matmul(state.hidden, w_h), self.gain_hidden, groups=4) + b)
    i, g, f, o = cell_math.lstm_activations(gates, self.forget_bias)
    cell = f * state.cell + i * g
    hidden = o * tf.tanh(layer_norm(cell, self.gain_cell) + b_c)
    return hidden, LayerNormLSTMState(hidden=hidden, cell=cell)
