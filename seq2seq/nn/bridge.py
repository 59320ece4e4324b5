"""Maps encoder final states to the decoder's initial states: one dense layer per state."""
import tensorflow as tf


class Bridge(tf.Module):
  """For each layer and each state field (LSTM: hidden, cell; any cell: each leaf of its state
  nest): s' = [s_fw; s_bw] W + b.

  Linear, so that an LSTM cell state is not squashed.

  Args:
    num_layers: L.
    num_fields: fields of one layer state (2 for `LSTMState`, 1 for `GRUState`).
    input_size: size of the concatenated encoder states (2H for a bidirectional encoder).
    output_size: the decoder's hidden size.
  """

  def __init__(self, num_layers, num_fields, input_size, output_size, dtype=tf.float32, seed=0,
               name=None):
    super().__init__(name=name)
    limit = (6.0 / (input_size + output_size)) ** 0.5
    with self.name_scope:
      self.kernels = [[tf.Variable(tf.random.stateless_uniform(
          [input_size, output_size], seed=[seed, 10 * layer + field], minval=-limit,
          maxval=limit, dtype=dtype), name=f"kernel_{layer}_{field}")
                       for field in range(num_fields)] for layer in range(num_layers)]
      self.biases = [[tf.Variable(tf.zeros([output_size], dtype), name=f"bias_{layer}_{field}")
                      for field in range(num_fields)] for layer in range(num_layers)]

  def __call__(self, *directions):
    """Per-layer state tuples of each direction -> one tuple of per-layer states.

    Args:
      *directions: one or more tuples (one per direction) of L states, each a nest
        (namedtuple) of [B, H] leaves.

    Returns:
      a tuple of L states of the same structure, each leaf [B, output_size].
    """
    bridged = []
    for layer, states in enumerate(zip(*directions)):
      fields = []
      for field, parts in enumerate(zip(*(tf.nest.flatten(s) for s in states))):
        joined = tf.concat(parts, -1)
        kernel, bias = self.kernels[layer][field], self.biases[layer][field]
        fields.append(tf.matmul(joined, tf.cast(kernel, joined.dtype)) + tf.cast(bias, joined.dtype))
      bridged.append(tf.nest.pack_sequence_as(states[0], fields))
    return tuple(bridged)
