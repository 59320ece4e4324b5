"""The bidirectional unroll under padding, and the bridge, against NumPy float64."""
import numpy as np
import tensorflow as tf

from seq2seq.nn import bridge
from seq2seq.nn import cells
from seq2seq.nn import unroll
from tests.test_cells import build_and_randomize, np_lstm_step

B, T, I, H = 3, 5, 2, 4
LENGTHS = np.array([5, 2, 0])


def np_run(cell, xs):
  """An LSTM over the rows of xs [n, I] from zeros: (outputs [n, H], final hidden, cell)."""
  h, c = np.zeros((1, H)), np.zeros((1, H))
  outputs = []
  for x in xs:
    h, c = np_lstm_step(x[None], h, c, cell.w_input.numpy(), cell.w_hidden.numpy(),
                        cell.bias.numpy(), cell.forget_bias)
    outputs.append(h[0])
  return np.array(outputs).reshape(len(xs), H), h[0], c[0]


class BidirectionalUnrollTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    rng = np.random.default_rng(0)
    self.forward = cells.LSTMCell(H, dtype=tf.float64, seed=1)
    self.backward = cells.LSTMCell(H, dtype=tf.float64, seed=2)
    build_and_randomize(self.forward, rng, input_size=I)
    build_and_randomize(self.backward, rng, input_size=I)
    self.inputs = rng.normal(size=(B, T, I))

  def _unroll(self, inputs):
    zeros = self.forward.initial_state(B)
    return unroll.bidirectional_unroll(self.forward, self.backward, tf.constant(inputs),
                                       zeros, zeros, tf.constant(LENGTHS))

  def test_against_numpy(self):
    outputs, (forward_final, backward_final) = self._unroll(self.inputs)
    for b, n in enumerate(LENGTHS):
      fw_out, fw_h, fw_c = np_run(self.forward, self.inputs[b, :n])
      # The backward cell reads the valid tokens only, last first.
      bw_out, bw_h, bw_c = np_run(self.backward, self.inputs[b, :n][::-1])
      want = np.zeros((T, 2 * H))
      want[:n, :H] = fw_out
      want[:n, H:] = bw_out[::-1]
      self.assertAllClose(outputs[b], want, atol=1e-12)
      self.assertAllClose(forward_final.hidden[b], fw_h, atol=1e-12)
      self.assertAllClose(forward_final.cell[b], fw_c, atol=1e-12)
      self.assertAllClose(backward_final.hidden[b], bw_h, atol=1e-12)
      self.assertAllClose(backward_final.cell[b], bw_c, atol=1e-12)

  def test_padding_content_is_never_read(self):
    changed = self.inputs.copy()
    for b, n in enumerate(LENGTHS):
      changed[b, n:] = 1e3
    first, first_state = self._unroll(self.inputs)
    second, second_state = self._unroll(changed)
    self.assertAllEqual(first, second)
    tf.nest.map_structure(self.assertAllEqual, first_state, second_state)


class BridgeTest(tf.test.TestCase):

  def test_dense_per_layer_and_field(self):
    rng = np.random.default_rng(1)
    module = bridge.Bridge(2, 2, 2 * H, 3, dtype=tf.float64)
    for var in module.trainable_variables:
      var.assign(rng.normal(size=var.shape))
    state = lambda: cells.LSTMState(*(tf.constant(rng.normal(size=(B, H))) for _ in range(2)))
    forward, backward = (state(), state()), (state(), state())
    got = module(forward, backward)
    self.assertIsInstance(got[1], cells.LSTMState)
    for layer in range(2):
      for field in range(2):
        joined = np.concatenate([forward[layer][field], backward[layer][field]], -1)
        want = joined @ module.kernels[layer][field].numpy() + module.biases[layer][field].numpy()
        self.assertAllClose(got[layer][field], want, atol=1e-12)


if __name__ == "__main__":
  tf.test.main()
