"""One time step of the LSTM and GRU recurrences, as plain functions.

The cells in `seq2seq.cells` own the variables and call these functions; a fused or
device-specific variant can reuse them unchanged.

Shapes: B = batch, I = input size, H = hidden size.
"""
import tensorflow as tf


def lstm_step(inputs, hidden, cell, w_input, w_hidden, bias, forget_bias=1.0):
  """One LSTM step (Hochreiter & Schmidhuber 1997, with a forget gate; no peepholes).

      [i, g, f, o] = x W_x + h W_h + b          gates, each [B, H]
      c' = sigmoid(f + forget_bias) * c + sigmoid(i) * tanh(g)
      h' = sigmoid(o) * tanh(c')

  Args:
    inputs: [B, I].
    hidden: [B, H], the previous output h.
    cell: [B, H], the previous cell state c.
    w_input: [I, 4H], input-to-hidden kernel, gate blocks in the order i, g, f, o.
    w_hidden: [H, 4H], hidden-to-hidden kernel, same block order.
    bias: [4H].
    forget_bias: added to the forget gate pre-activation, so a new cell remembers by default.

  Returns:
    (new_hidden [B, H], new_cell [B, H]).
  """
  gates = tf.matmul(inputs, w_input) + tf.matmul(hidden, w_hidden) + bias
  return lstm_gates_to_state(gates, cell, forget_bias)


def input_projection(inputs, kernel, bias):
  """inputs [B, T, I] @ kernel [I, G] + bias [G] -> [B, T, G], as ONE [B*T, I] matmul.

  The input half of every gate does not depend on the recurrent state, so an unroll can
  compute it for all steps before the time loop and keep only h W_h inside it.
  """
  shape = tf.shape(inputs)
  flat = tf.reshape(inputs, [-1, inputs.shape[-1]])
  projected = tf.matmul(flat, kernel) + bias
  projected = tf.reshape(projected, tf.concat([shape[:-1], [kernel.shape[-1]]], 0))
  projected.set_shape(inputs.shape[:-1].concatenate([kernel.shape[-1]]))  # keep static B, T
  return projected


def lstm_gates_to_state(gates, cell, forget_bias=1.0):
  """The elementwise half of `lstm_step`: gate pre-activations [B, 4H] to (h', c')."""
  # i = input, g = candidate, f = forget, o = output.
  i, g, f, o = tf.split(gates, 4, axis=-1)
  new_cell = tf.sigmoid(f + forget_bias) * cell + tf.sigmoid(i) * tf.tanh(g)
  new_hidden = tf.sigmoid(o) * tf.tanh(new_cell)
  return new_hidden, new_cell


def gru_step(inputs, hidden, w_input, w_hidden, bias_input, bias_hidden):
  """One GRU step (Cho et al. 2014), with the reset gate applied after the matmul.

      [z_x, r_x, n_x] = x W_x + b_x             each [B, H]
      [z_h, r_h, n_h] = h W_h + b_h
      z = sigmoid(z_x + z_h)                    update gate
      r = sigmoid(r_x + r_h)                    reset gate
      n = tanh(n_x + r * n_h)                   candidate
      h' = z * h + (1 - z) * n

  This is the cuDNN / PyTorch formulation: both matmuls can be issued before the gates are
  known, which keeps the step to two GEMMs.

  Args:
    inputs: [B, I].
    hidden: [B, H].
    w_input: [I, 3H], blocks z, r, n.
    w_hidden: [H, 3H], blocks z, r, n.
    bias_input: [3H].
    bias_hidden: [3H].

  Returns:
    new_hidden [B, H].
  """
  return gru_step_projected(tf.matmul(inputs, w_input) + bias_input, hidden, w_hidden,
                            bias_hidden)


def gru_step_projected(projected_input, hidden, w_hidden, bias_hidden):
  """`gru_step` given projected_input = x W_x + b_x [B, 3H] (see `input_projection`)."""
  z_x, r_x, n_x = tf.split(projected_input, 3, axis=-1)
  z_h, r_h, n_h = tf.split(tf.matmul(hidden, w_hidden) + bias_hidden, 3, axis=-1)
  z = tf.sigmoid(z_x + z_h)
  r = tf.sigmoid(r_x + r_h)
  n = tf.tanh(n_x + r * n_h)
  return z * hidden + (1.0 - z) * n
