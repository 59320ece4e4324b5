"""One time step of the LSTM and GRU recurrences, as plain functions.

The cells in `seq2seq.nn.cells` own the variables and call these functions. The fast layer
(`seq2seq.fast`) reuses them unchanged, passing its own spellings of the activations (or of
the LSTM's elementwise half) where the defaults are `tf.sigmoid` and `tf.tanh`.

Shapes: B = batch, I = input size, H = hidden size.
"""
import tensorflow as tf


def lstm_step(inputs, hidden, cell, w_input, w_hidden, bias, forget_bias=1.0,
              gates_to_state=None):
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
    gates_to_state: the elementwise half, (gates, cell, forget_bias) -> (h', c'); default
      `lstm_gates_to_state`.

  Returns:
    (new_hidden [B, H], new_cell [B, H]).
  """
  gates = tf.matmul(inputs, w_input) + tf.matmul(hidden, w_hidden) + bias
  return (gates_to_state or lstm_gates_to_state)(gates, cell, forget_bias)


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


def lstm_activations(gates, forget_bias, sigmoid=tf.sigmoid, tanh=tf.tanh):
  """Gate pre-activations [B, 4H] -> the activated gates (i, g, f, o), each [B, H]."""
  # i = input, g = candidate, f = forget, o = output.
  i, g, f, o = tf.split(gates, 4, axis=-1)
  return sigmoid(i), tanh(g), sigmoid(f + forget_bias), sigmoid(o)


def lstm_gates_to_state(gates, cell, forget_bias=1.0, sigmoid=tf.sigmoid, tanh=tf.tanh):
  """The elementwise half of `lstm_step`: gate pre-activations [B, 4H] and c [B, H] to
  (h' [B, H], c' [B, H])."""
  i, g, f, o = lstm_activations(gates, forget_bias, sigmoid, tanh)
  new_cell = f * cell + i * g
  return o * tanh(new_cell), new_cell


def gru_step(inputs, hidden, w_input, w_hidden, bias_input, bias_hidden, sigmoid=tf.sigmoid,
             tanh=tf.tanh):
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
    sigmoid, tanh: the activations (elementwise, shape-preserving).

  Returns:
    new_hidden [B, H].
  """
  return gru_gates_to_state(tf.matmul(inputs, w_input) + bias_input,
                            tf.matmul(hidden, w_hidden) + bias_hidden, hidden, sigmoid, tanh)


def gru_gates_to_state(projected_input, projected_hidden, hidden, sigmoid=tf.sigmoid,
                       tanh=tf.tanh):
  """`gru_step` given both projections, x W_x + b_x and h W_h + b_h, each [B, 3H]."""
  z_x, r_x, n_x = tf.split(projected_input, 3, axis=-1)
  z_h, r_h, n_h = tf.split(projected_hidden, 3, axis=-1)
  z = sigmoid(z_x + z_h)
  r = sigmoid(r_x + r_h)
  n = tanh(n_x + r * n_h)
  return z * hidden + (1.0 - z) * n
