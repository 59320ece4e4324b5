"""An LSTM written as a user writes a cell for --cell: a plain tf.Module on the contract only
(BUILD.md, "Adding a cell"), with no engine import. Its math is the built-in LSTM's, so the
two train the same model at equal FLOPs, and `benchmarks.train_step`'s `_usercell` variants
time the reference unroll that runs it against the fast unroll of the built-in cell.

    python train.py --cell=benchmarks.user_cells:PlainLSTMCell
"""
import collections

import tensorflow as tf

PlainLSTMState = collections.namedtuple("PlainLSTMState", ["hidden", "cell"])


class PlainLSTMCell(tf.Module):
  """x [B, I], PlainLSTMState(h, c [B, H]) -> (h' [B, H], the new state), in x's dtype:

    [i, g, f, o] = [x; h] W + b,  c' = sigmoid(f + forget_bias) c + sigmoid(i) tanh(g),
    h' = sigmoid(o) tanh(c')
  """

  def __init__(self, num_units, forget_bias=1.0, dtype=tf.float32, seed=0, name=None):
    super().__init__(name=name)
    self.output_size, self.forget_bias = int(num_units), float(forget_bias)
    self.dtype, self.seed, self.kernel = dtype, seed, None

  def initial_state(self, batch_size, dtype=None):
    zeros = tf.zeros([batch_size, self.output_size], dtype or self.dtype)
    return PlainLSTMState(hidden=zeros, cell=zeros)

  def _build(self, input_size):
    shape = [input_size + self.output_size, 4 * self.output_size]
    limit = (6.0 / sum(shape)) ** 0.5  # Glorot uniform
    with self.name_scope, tf.init_scope():  # variables outlive the traced step that makes them
      self.kernel = tf.Variable(tf.random.stateless_uniform(
          shape, [self.seed, 1], -limit, limit, self.dtype), name="kernel")
      self.bias = tf.Variable(tf.zeros(shape[1:], self.dtype), name="bias")

  def __call__(self, inputs, state):
    if self.kernel is None:
      self._build(inputs.shape[-1])
    kernel, bias = (tf.cast(v, inputs.dtype) for v in (self.kernel, self.bias))
    gates = tf.matmul(tf.concat([inputs, state.hidden], -1), kernel) + bias
    i, g, f, o = tf.split(gates, 4, axis=-1)
    cell = tf.sigmoid(f + self.forget_bias) * state.cell + tf.sigmoid(i) * tf.tanh(g)
    hidden = tf.sigmoid(o) * tf.tanh(cell)
    return hidden, PlainLSTMState(hidden=hidden, cell=cell)
