"""Residual and variational-dropout wrappers against NumPy float64 re-derivations."""
import numpy as np
import tensorflow as tf

from seq2seq import cells
from seq2seq import unroll
from tests.test_cells import build_and_randomize, np_lstm_step

B, T, H = 4, 5, 6
LENGTHS = np.array([5, 3, 1, 4])


def np_lstm(cell, x, h, c):
  return np_lstm_step(x, h, c, cell.w_input.numpy(), cell.w_hidden.numpy(), cell.bias.numpy(),
                      cell.forget_bias)


class ResidualTest(tf.test.TestCase):

  def test_unroll_adds_inputs_with_and_without_precompute(self):
    rng = np.random.default_rng(0)
    cell = cells.LSTMCell(H, dtype=tf.float64)
    build_and_randomize(cell, rng, input_size=H)
    inputs = rng.normal(size=(B, T, H))
    h = c = np.zeros((B, H))
    want = []
    for t in range(T):
      h, c = np_lstm(cell, inputs[:, t], h, c)
      want.append(h + inputs[:, t])
    want = np.stack(want, 1)
    wrapper = cells.ResidualWrapper(cell)
    outputs, _ = unroll.static_unroll(wrapper, inputs, wrapper.initial_state(B))
    self.assertAllClose(outputs, want, atol=1e-12)
    output, _ = wrapper(tf.constant(inputs[:, 0]), wrapper.initial_state(B))
    self.assertAllClose(output, want[:, 0], atol=1e-12)

  def test_size_mismatch(self):
    wrapper = cells.ResidualWrapper(cells.LSTMCell(H))
    with self.assertRaisesRegex(ValueError, "residual connection needs input size 3"):
      wrapper(tf.zeros([1, 3]), wrapper.initial_state(1))


class VariationalDropoutTest(tf.test.TestCase):

  def _wrapper(self, keep=(0.7, 0.6, 0.5), dtype=tf.float64, seed=1):
    rng = np.random.default_rng(seed)
    cell = cells.LSTMCell(H, dtype=dtype)
    build_and_randomize(cell, rng, input_size=3)
    generator = tf.random.Generator.from_seed(seed)
    return cell, cells.VariationalDropoutWrapper(cell, generator, 3, *keep)

  def test_one_mask_per_sequence_against_numpy(self):
    cell, wrapper = self._wrapper()
    inputs = np.random.default_rng(2).normal(size=(B, T, 3))
    state = wrapper.initial_state(B)
    m_in, m_out, m_h = (state.input_mask.numpy(), state.output_mask.numpy(),
                        state.hidden_mask.numpy())
    outputs, final = unroll.static_unroll(wrapper, inputs, state, LENGTHS)
    h = c = np.zeros((B, H))
    for t in range(T):
      new_h, new_c = np_lstm(cell, inputs[:, t] * m_in, h * m_h, c)
      valid = (t < LENGTHS)[:, None]
      self.assertAllClose(outputs[:, t], np.where(valid, new_h * m_out, 0.0), atol=1e-12)
      h, c = np.where(valid, new_h, h), np.where(valid, new_c, c)
    self.assertAllClose(final.core_state.hidden, h, atol=1e-12)
    self.assertAllClose(final.input_mask, m_in)  # the masks do not change over time

  def test_masks_are_scaled_and_differ_between_sequences(self):
    _, wrapper = self._wrapper(keep=(1.0, 1.0, 0.75), dtype=tf.float32)
    state = wrapper.initial_state(2000)
    mask = state.hidden_mask.numpy()
    self.assertAllClose(np.unique(mask), [0.0, 1 / 0.75])
    self.assertAllClose((mask > 0).mean(), 0.75, atol=0.01)
    self.assertGreater(np.abs(mask[0] - mask[1:]).sum(), 0.0)
    self.assertAllEqual(state.input_mask, np.ones((2000, 3)))

  def test_keep_prob_checked(self):
    with self.assertRaisesRegex(ValueError, r"state_keep_prob must be in \(0, 1\]"):
      cells.VariationalDropoutWrapper(cells.LSTMCell(H), None, 3, state_keep_prob=0.0)


if __name__ == "__main__":
  tf.test.main()
