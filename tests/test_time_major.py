"""The static unroll's time-major path (`RNNCore.precompute_time_major`): the same results as
the batch-major one, masks included, with the time axis sliced where the tensors are
contiguous."""
from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from seq2seq import cells
from seq2seq import unroll
from tests.test_cells import RecordingCore

B, T, I, H = 3, 4, 5, 6


class BatchMajorOnly(RecordingCore):
  """Delegates `precompute` and `step` to `core` too, but offers no time-major precompute: the
  unroll takes the batch-major path."""

  def precompute(self, inputs):
    return self.core.precompute(inputs)

  def step(self, precomputed, state):
    return self.core.step(precomputed, state)


def _stack(kind, keep_prob, residual, generator):
  """Two layers: dropout around each, the second one residual (input size H) if asked."""
  layers = []
  for i, size in enumerate((I, H)):
    cell = (cells.LSTMCell if kind == "lstm" else cells.GRUCell)(H, seed=7 + i)
    cell.build(size)
    core = cells.DropoutWrapper(cell, generator, input_keep_prob=keep_prob,
                                output_keep_prob=keep_prob)
    layers.append(cells.ResidualWrapper(core) if residual and i else core)
  return layers


class TimeMajorUnrollTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.product(kind=["lstm", "gru"], keep_prob=[1.0, 0.7], residual=[False, True])
  def test_same_outputs_states_and_gradients_as_batch_major(self, kind, keep_prob, residual):
    rng = np.random.RandomState(2)
    inputs = tf.constant(rng.uniform(-1, 1, (B, T, I)), tf.float32)
    lengths = tf.constant([T, 1, 0])
    target = tf.constant(rng.uniform(-1, 1, (B, T, H)), tf.float32)

    def run(layers):

      @tf.function
      def loss_and_gradients():
        with tf.GradientTape() as tape:
          outputs, finals = unroll.layerwise_unroll(
              layers, inputs, tuple(c.initial_state(B) for c in layers), lengths)
          loss = tf.reduce_sum(outputs * target) + sum(
              tf.reduce_sum(tf.nest.flatten(f)[0]) for f in finals)
        variables = [v for c in layers for v in c.trainable_variables]
        return outputs, finals, tape.gradient(loss, variables)
      return loss_and_gradients()

    time_major_layers = _stack(kind, keep_prob, residual, tf.random.Generator.from_seed(5))
    self.assertTrue(all(c.time_major_precompute for c in time_major_layers))
    batch_major_layers = [BatchMajorOnly(c) for c in
                          _stack(kind, keep_prob, residual, tf.random.Generator.from_seed(5))]
    want = run(batch_major_layers)
    got = run(time_major_layers)
    self.assertGreater(np.abs(want[0].numpy()).max(), 1e-2)
    for w, g in zip(tf.nest.flatten(want), tf.nest.flatten(got)):
      self.assertAllClose(w, g, rtol=1e-5, atol=1e-6)

  @parameterized.parameters(True, False)
  def test_slices_the_contiguous_axis(self, time_major):
    """Time-major: the precomputed [T, B, 4H] is unstacked on axis 0 (XLA slices it, and
    stacks its gradient, without transposes); batch-major: axis 1."""
    cell = cells.LSTMCell(H, seed=1)
    cell.build(I)
    core = cell if time_major else BatchMajorOnly(cell)
    inputs = tf.random.stateless_uniform([B, T, I], seed=[1, 2])

    @tf.function
    def gradient():
      with tf.GradientTape() as tape:
        outputs, _ = unroll.static_unroll(core, inputs, cell.initial_state(B))
      return tape.gradient(outputs, cell.w_input)
    graph = gradient.get_concrete_function().graph
    unpacks = [op for op in graph.get_operations()
               if op.type == "Unpack" and op.inputs[0].shape[-1] == 4 * H]
    self.assertLen(unpacks, 1)
    self.assertEqual(0 if time_major else 1, unpacks[0].get_attr("axis"))
    self.assertEqual([T, B, 4 * H] if time_major else [B, T, 4 * H],
                     unpacks[0].inputs[0].shape.as_list())


if __name__ == "__main__":
  tf.test.main()
