"""The fast static unroll's time-major path (`FastCore.precompute_time_major`): the same
results as the batch-major one, masks included, with the time axis sliced where the tensors
are contiguous."""
import contextlib
import types
from unittest import mock

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from seq2seq.fast import cores as fast_cores
from seq2seq.fast import unroll as fast_unroll
from seq2seq.nn import cells
from seq2seq.nn import unroll

B, T, I, H = 3, 4, 5, 6


class BatchMajorOnly(fast_cores.FastCore):
  """Delegates `precompute` and `step` to the fast view `fast`, but offers no time-major
  precompute: the unroll takes the batch-major path."""

  def __init__(self, fast):
    super().__init__(fast.reference)
    self.fast = fast

  def precompute(self, inputs):
    return self.fast.precompute(inputs)

  def step(self, precomputed, state):
    return self.fast.step(precomputed, state)


def batch_major_only(enabled=True):
  """A context in which the fast unroll runs its cores' views wrapped in `BatchMajorOnly`."""
  if not enabled:
    return contextlib.nullcontext()
  adapt = lambda core: BatchMajorOnly(fast_cores.adapt(core))
  return mock.patch.object(fast_unroll, "cores", types.SimpleNamespace(adapt=adapt))


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

    def run(layers, batch_major):

      @tf.function
      def loss_and_gradients():
        with tf.GradientTape() as tape:
          outputs, finals = unroll.layerwise_unroll(
              layers, inputs, tuple(c.initial_state(B) for c in layers), lengths,
              unroll=fast_unroll.static_unroll)
          loss = tf.reduce_sum(outputs * target) + sum(
              tf.reduce_sum(tf.nest.flatten(f)[0]) for f in finals)
        variables = [v for c in layers for v in c.trainable_variables]
        return outputs, finals, tape.gradient(loss, variables)
      with batch_major_only(batch_major):
        return loss_and_gradients()

    time_major_layers = _stack(kind, keep_prob, residual, tf.random.Generator.from_seed(5))
    self.assertTrue(all(fast_cores.adapt(c).time_major_precompute for c in time_major_layers))
    batch_major_layers = _stack(kind, keep_prob, residual, tf.random.Generator.from_seed(5))
    want = run(batch_major_layers, batch_major=True)
    got = run(time_major_layers, batch_major=False)
    self.assertGreater(np.abs(want[0].numpy()).max(), 1e-2)
    for w, g in zip(tf.nest.flatten(want), tf.nest.flatten(got)):
      self.assertAllClose(w, g, rtol=1e-5, atol=1e-6)

  @parameterized.parameters(True, False)
  def test_slices_the_contiguous_axis(self, time_major):
    """Time-major: the precomputed [T, B, 4H] is unstacked on axis 0 (XLA slices it, and
    stacks its gradient, without transposes); batch-major: axis 1."""
    cell = cells.LSTMCell(H, seed=1)
    cell.build(I)
    inputs = tf.random.stateless_uniform([B, T, I], seed=[1, 2])

    @tf.function
    def gradient():
      with tf.GradientTape() as tape:
        outputs, _ = fast_unroll.static_unroll(cell, inputs, cell.initial_state(B))
      return tape.gradient(outputs, cell.w_input)
    with batch_major_only(not time_major):
      graph = gradient.get_concrete_function().graph
    unpacks = [op for op in graph.get_operations()
               if op.type == "Unpack" and op.inputs[0].shape[-1] == 4 * H]
    self.assertLen(unpacks, 1)
    self.assertEqual(0 if time_major else 1, unpacks[0].get_attr("axis"))
    self.assertEqual([T, B, 4 * H] if time_major else [B, T, 4 * H],
                     unpacks[0].inputs[0].shape.as_list())


if __name__ == "__main__":
  tf.test.main()
