"""Residual and dropout wrappers against NumPy float64 re-derivations."""
import functools

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from seq2seq.fast import cores as fast_cores
from seq2seq.fast import unroll as fast_unroll
from seq2seq.nn import cells
from seq2seq.nn import unroll
from tests.test_cells import IdentityCore, build_and_randomize, np_lstm_step
from tests import test_fast_cores

B, T, H = 4, 5, 6
LENGTHS = np.array([5, 3, 1, 4], np.int32)


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


UNROLLS = {"static": fast_unroll.static_unroll, "dynamic": fast_unroll.dynamic_unroll,
           "dynamic_k2": functools.partial(fast_unroll.dynamic_unroll, steps_per_iteration=2)}


class DropoutUnrollTest(tf.test.TestCase, parameterized.TestCase):
  """Unrolled fast, a `DropoutWrapper` draws the masks of all steps at once; step t applies
  slice t."""

  def _stack(self, seed=0):
    """(cells, stack(generator)): a dropout stack as the model builds it, over shared cells."""
    rng = np.random.default_rng(seed)
    bottom = cells.LSTMCell(H, dtype=tf.float64)
    top = cells.LSTMCell(H, dtype=tf.float64, seed=1)
    build_and_randomize(bottom, rng, input_size=3)
    build_and_randomize(top, rng, input_size=H)

    def stack(generator):
      return cells.StackedCells([
          cells.DropoutWrapper(bottom, generator, input_keep_prob=0.7, output_keep_prob=0.6),
          cells.ResidualWrapper(cells.DropoutWrapper(top, generator, output_keep_prob=0.5))])
    return (bottom, top), stack

  def _np_stack(self, layer_cells, inputs, masks):
    """Step by step in NumPy: dropout with the given masks, residual, padding."""
    (bottom, top), (first, second) = layer_cells, masks
    states = [(np.zeros((B, H)), np.zeros((B, H))) for _ in range(2)]
    outputs = np.zeros((B, T, H))
    for t in range(T):
      valid = (t < LENGTHS)[:, None]
      h0, c0 = np_lstm(bottom, inputs[:, t] * first.input[:, t], *states[0])
      x1 = h0 * first.output[:, t]
      h1, c1 = np_lstm(top, x1, *states[1])
      outputs[:, t] = np.where(valid, h1 * second.output[:, t] + x1, 0.0)
      states = [tuple(np.where(valid, new, old) for new, old in zip(news, olds))
                for news, olds in zip(((h0, c0), (h1, c1)), states)]
    return outputs, states

  @parameterized.product(how=list(UNROLLS), layerwise=[False, True], use_function=[False, True])
  def test_unroll_applies_the_presampled_masks_step_by_step(self, how, layerwise, use_function):
    layer_cells, stack = self._stack()
    inputs = np.random.default_rng(1).normal(size=(B, T, 3))
    # The same generator state draws the same masks, by precompute or by presample.
    masks = tf.nest.map_structure(
        lambda m: m.numpy(), fast_cores.adapt(stack(tf.random.Generator.from_seed(5))).presample(
            B, T, 3, tf.float64))
    want, want_states = self._np_stack(layer_cells, inputs, masks)
    fn, core = UNROLLS[how], stack(tf.random.Generator.from_seed(5))
    if layerwise:  # as the encoder: each layer precomputes its masks
      run = lambda x: unroll.layerwise_unroll(core.cores, x, core.initial_state(B), LENGTHS,
                                              unroll=fn)
    else:  # step-major: the first layer precomputes, the one above presamples
      run = lambda x: fn(core, x, core.initial_state(B), LENGTHS)
    if use_function:
      run = tf.function(run)
    outputs, states = run(tf.constant(inputs))
    self.assertAllClose(outputs, want, atol=1e-12)
    for b, length in enumerate(LENGTHS):  # exactly zero past the length
      self.assertAllEqual(outputs.numpy()[b, length:], np.zeros((T - length, H)))
    for got, (h, c) in zip(states, want_states):
      self.assertAllClose(got.hidden, h, atol=1e-12)
      self.assertAllClose(got.cell, c, atol=1e-12)

  @parameterized.parameters("static", "dynamic")
  def test_compiled_masks_are_the_compiled_presample_behind_a_barrier(self, how):
    """Compiled with XLA, the unroll applies the masks that `presample`, compiled too, draws
    from the same generator state (XLA's Philox bits are not TensorFlow's kernels'). Each mask
    is the generator's own draw (no seed hashing, StatelessRandomGetKeyCounter) and goes
    behind an optimization barrier, once; a plain graph has no barrier."""
    layer_cells, stack = self._stack()
    inputs = np.random.default_rng(1).normal(size=(B, T, 3))
    drawing = fast_cores.adapt(stack(tf.random.Generator.from_seed(5)))
    masks = tf.nest.map_structure(lambda m: m.numpy(), tf.function(
        lambda: drawing.presample(B, T, 3, tf.float64), jit_compile=True)())
    want, _ = self._np_stack(layer_cells, inputs, masks)
    core = stack(tf.random.Generator.from_seed(5))
    run = lambda x: UNROLLS[how](core, x, core.initial_state(B), LENGTHS)[0]
    compiled = tf.function(run, jit_compile=True, autograph=False)
    plain = tf.function(run, autograph=False)
    spec = tf.TensorSpec([B, T, 3], tf.float64)
    compiled_ops, plain_ops = (sum(test_fast_cores.LSTMElementwiseGradientTest._op_types(  # pylint: disable=protected-access
        fn.get_concrete_function(spec).graph), []) for fn in (compiled, plain))
    self.assertEqual(3, compiled_ops.count("XlaOptimizationBarrier"))  # three masks
    self.assertNotIn("XlaOptimizationBarrier", plain_ops)
    self.assertEqual(3, compiled_ops.count("RngReadAndSkip"))
    self.assertNotIn("StatelessRandomGetKeyCounter", compiled_ops)
    self.assertAllClose(want, compiled(tf.constant(inputs)), atol=1e-12)

  @parameterized.product(how=["precompute", "presample"], dtype=[tf.float32, tf.bfloat16])
  def test_dropout_law_independent_per_step_and_row(self, how, dtype):
    batch, steps, size, keep = 400, 6, 8, (0.75, 0.6)
    reference = cells.DropoutWrapper(IdentityCore(size), tf.random.Generator.from_seed(7), *keep)
    wrapper = fast_cores.FastDropout(reference, fast_cores.FastCore(reference.core))
    if how == "precompute":  # the identity core's precomputation is its dropped-out input
      input_mask, output_mask = wrapper.precompute(tf.ones([batch, steps, size], dtype))
    else:
      input_mask, output_mask, _ = wrapper.presample(batch, steps, size, dtype)
    for mask, keep_prob in zip((input_mask, output_mask), keep):
      self.assertEqual(mask.dtype, dtype)
      mask = tf.cast(mask, tf.float64).numpy()
      self.assertEqual(mask.shape, (batch, steps, size))
      scale = tf.cast(tf.cast(1 / keep_prob, dtype), tf.float64).numpy()
      self.assertAllClose(np.unique(mask), [0.0, scale])
      kept = mask > 0
      self.assertAllClose(kept.mean(), keep_prob, atol=0.015)
      # Independent draws disagree with probability 2p(1 - p): a mask reused for every step
      # (variational dropout) or every row would disagree nowhere. Neighbouring steps and rows
      # are compared, so that each estimate averages many independent pairs (against one
      # reference row, it would move with that row's own kept fraction).
      disagree = 2 * keep_prob * (1 - keep_prob)
      self.assertAllClose((kept[:, 1:] != kept[:, :-1]).mean(), disagree, atol=0.02)
      self.assertAllClose((kept[1:] != kept[:-1]).mean(), disagree, atol=0.02)

  @parameterized.parameters(*UNROLLS)
  def test_one_draw_per_mask_and_sequence(self, how):
    _, stack = self._stack()
    unrolled, drawn = tf.random.Generator.from_seed(2), tf.random.Generator.from_seed(2)
    core = stack(unrolled)
    UNROLLS[how](core, tf.zeros([B, T, 3], tf.float64), core.initial_state(B), LENGTHS)
    fast_cores.adapt(stack(drawn)).presample(B, T, 3, tf.float64)  # three masks
    self.assertAllEqual(unrolled.state, drawn.state)

  def test_call_draws_fresh_masks_each_step(self):
    wrapper = cells.DropoutWrapper(IdentityCore(H), tf.random.Generator.from_seed(3),
                                   output_keep_prob=0.5)
    state = wrapper.initial_state(64)
    first, _ = wrapper(tf.ones([64, H]), state)
    second, _ = wrapper(tf.ones([64, H]), state)
    self.assertAllClose(np.unique(first), [0.0, 2.0])
    self.assertNotAllEqual(first, second)


if __name__ == "__main__":
  tf.test.main()
