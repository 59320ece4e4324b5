"""`seq2seq.fast.recurrent_matmul`: the recurrent weight's gradient as one matmul over the
steps."""
from unittest import mock

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from seq2seq.fast import cores as fast_cores
from seq2seq.fast import recurrent_matmul
from seq2seq.fast import unroll
from seq2seq.nn import cells

B, T, I, H = 3, 5, 4, 6


def _chain(product, hidden, inputs, weights_in):
  """h_{t+1} = tanh(x_t W_x + product(h_t)); returns sum_t <h_{t+1}, t + 1>, a scalar."""
  loss = 0.0
  for t in range(inputs.shape[1]):
    hidden = tf.tanh(tf.matmul(inputs[:, t], weights_in) + product(hidden))
    loss += tf.reduce_sum(hidden * float(t + 1))
  return loss


def _matmul_ops(graph):
  return sum(op.type == "MatMul" for op in graph.get_operations())


class RecurrentMatmulTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    rng = np.random.RandomState(3)
    self.hidden = tf.constant(rng.uniform(-1, 1, (B, H)))
    self.inputs = tf.constant(rng.uniform(-1, 1, (B, T, I)))
    self.w_in = tf.constant(rng.uniform(-0.5, 0.5, (I, H)))
    self.w = tf.constant(rng.uniform(-0.5, 0.5, (H, H)))

  def _loss(self, w, h0):
    return _chain(recurrent_matmul.RecurrentMatmul(w), h0, self.inputs, self.w_in)

  def test_gradients_match_finite_differences(self):
    """The weight's and the initial state's gradients, through T steps, in a graph."""
    loss = tf.function(self._loss)
    theoretical, numerical = tf.test.compute_gradient(loss, [self.w, self.hidden], delta=1e-6)
    for got, want in zip(theoretical, numerical):
      self.assertGreater(np.abs(want).max(), 1e-2)
      self.assertAllClose(want, got, rtol=1e-6, atol=1e-8)

  def test_eager_matches_the_plain_product(self):
    def gradients(product_of):
      with tf.GradientTape() as tape:
        tape.watch(self.w)
        loss = _chain(product_of(self.w), self.hidden, self.inputs, self.w_in)
      return tape.gradient(loss, self.w)
    plain = gradients(lambda w: lambda h: tf.matmul(h, w))
    self.assertAllClose(plain, gradients(recurrent_matmul.RecurrentMatmul), rtol=1e-12)

  def test_one_weight_gradient_matmul_for_all_steps(self):
    """Forward T products, backward T hidden-state gradients and ONE weight gradient (the
    plain product's gradient has T weight-gradient matmuls)."""
    def gradient(product_of):
      with tf.GradientTape() as tape:
        tape.watch(self.w)
        loss = _chain(product_of(self.w), self.hidden, self.inputs, self.w_in)
      return tape.gradient(loss, self.w)
    as_graph = lambda fn: tf.function(fn).get_concrete_function().graph
    plain = as_graph(lambda: gradient(lambda w: lambda h: tf.matmul(h, w)))
    stacked = as_graph(lambda: gradient(recurrent_matmul.RecurrentMatmul))
    # Per step: x_t W_x and h_t W forward; d(h_t) = d_t W^T backward (the plain gradient
    # skips it for the constant h_0); the weight's: one per step (plain) or one in all.
    self.assertEqual(_matmul_ops(plain), 2 * T + (T - 1) + T)
    self.assertEqual(_matmul_ops(stacked), 2 * T + T + 1)

  def test_a_second_gradient_in_the_same_graph_is_the_same(self):
    """Records of one backward pass do not leak into the next."""
    @tf.function
    def twice():
      with tf.GradientTape(persistent=True) as tape:
        tape.watch(self.w)
        loss = self._loss(self.w, self.hidden)
        doubled = 2.0 * loss
      return tape.gradient(loss, self.w), tape.gradient(doubled, self.w)
    once, doubled = twice()
    self.assertGreater(np.abs(once.numpy()).max(), 1e-2)
    self.assertAllClose(2.0 * once, doubled, rtol=1e-12)

  def test_the_gradient_of_an_unused_last_step(self):
    """Steps whose products do not reach the loss add nothing."""
    @tf.function
    def gradient():
      with tf.GradientTape() as tape:
        tape.watch(self.w)
        product = recurrent_matmul.RecurrentMatmul(self.w)
        kept = product(self.hidden)
        loss = tf.reduce_sum(tf.tanh(product(tf.tanh(kept))))
        product(tf.tanh(kept) * 2.0)  # a third step, unused
      return tape.gradient(loss, self.w)
    with tf.GradientTape() as tape:
      tape.watch(self.w)
      kept = tf.matmul(self.hidden, self.w)
      loss = tf.reduce_sum(tf.tanh(tf.matmul(tf.tanh(kept), self.w)))
    self.assertAllClose(tape.gradient(loss, self.w), gradient(), rtol=1e-12)


class GateBlocksTest(tf.test.TestCase, parameterized.TestCase):
  """d(h) as one matmul per column block of W (`gate_blocks`), summed."""

  def setUp(self):
    super().setUp()
    rng = np.random.RandomState(5)
    self.hidden = tf.constant(rng.uniform(-1, 1, (B, H)))
    self.inputs = tf.constant(rng.uniform(-1, 1, (B, T, I)))
    self.w_in = tf.constant(rng.uniform(-0.5, 0.5, (I, 3 * H)))
    self.w = tf.constant(rng.uniform(-0.5, 0.5, (H, 3 * H)))  # 3 "gates" of H columns

  def _gradients(self, gate_blocks):
    @tf.function
    def gradients():
      with tf.GradientTape() as tape:
        tape.watch([self.w, self.hidden])
        product = recurrent_matmul.RecurrentMatmul(self.w, gate_blocks=gate_blocks)
        # h_{t+1} = tanh of the sum of the 3 blocks of x_t W_x + h_t W: every block matters.
        loss = _chain(lambda h: tf.add_n(tf.split(product(h), 3, axis=-1)), self.hidden,
                      self.inputs, tf.add_n(tf.split(self.w_in, 3, axis=-1)))
      return tape.gradient(loss, [self.w, self.hidden])
    return gradients()

  @parameterized.parameters(3, 9, 18)
  def test_same_gradients_as_one_matmul(self, gate_blocks):
    for want, got in zip(self._gradients(1), self._gradients(gate_blocks)):
      self.assertGreater(np.abs(want.numpy()).max(), 1e-2)
      self.assertAllClose(want, got, rtol=1e-12, atol=1e-12)

  def test_the_steps_use_one_batched_matmul(self):
    def op_types(gate_blocks):
      graph = tf.function(lambda: self._gradients(gate_blocks)).get_concrete_function().graph
      function_ops = [op for f in graph.as_graph_def().library.function for op in f.node_def]
      return [op.op for op in function_ops]
    self.assertNotIn("BatchMatMulV2", op_types(1))
    self.assertEqual(T, op_types(3).count("BatchMatMulV2"))  # d(h_t) of each step

  @parameterized.parameters(0, 4, 5)
  def test_blocks_must_divide_the_columns(self, gate_blocks):
    with self.assertRaisesRegex(ValueError, "gate_blocks must be >= 1 and divide the "
                                            "weight's 18 columns"):
      recurrent_matmul.RecurrentMatmul(self.w, gate_blocks=gate_blocks)

  @parameterized.parameters("float64", "bfloat16")
  def test_blockwise_product_against_numpy(self, dtype):
    rng = np.random.RandomState(6)
    left, right = rng.uniform(-1, 1, (5, 32)), rng.uniform(-1, 1, (7, 32))
    got = recurrent_matmul.blockwise_product(
        tf.constant(left, dtype), recurrent_matmul.transposed_blocks(tf.constant(right, dtype), 4))
    self.assertEqual(tf.as_dtype(dtype), got.dtype)
    # bf16: inputs rounded to 8 bits of mantissa, products of 32 terms
    tolerance = 1e-12 if dtype == "float64" else 0.1
    self.assertAllClose(left @ right.T, tf.cast(got, tf.float64), rtol=tolerance,
                        atol=tolerance)


def _recording_adapt(adapted):
  """A patch of `fast_cores.adapt` that appends each fast view it makes to `adapted`."""
  original = fast_cores.adapt

  def adapt(core):
    fast = original(core)
    adapted.append(fast)
    return fast
  return mock.patch.object(fast_cores, "adapt", adapt)


class CellsUseItTest(tf.test.TestCase, parameterized.TestCase):
  """The fast LSTM and GRU steps of a static unroll in a graph go through `RecurrentMatmul`."""

  def _gradients(self, kind, dtype, compiled, how, per_gate=False):
    cell = (cells.LSTMCell if kind == "lstm" else cells.GRUCell)(
        H, dtype=tf.float32, seed=5, per_gate_hidden_gradient=per_gate)
    cell.build(I)
    rng = np.random.RandomState(4)
    inputs = tf.cast(rng.uniform(-1, 1, (B, T, I)), dtype)
    lengths = tf.constant([T, 2, 0])
    target = tf.constant(rng.uniform(-1, 1, (B, T, H)), tf.float32)
    initial_state = tf.nest.map_structure(  # not zero: step 0's weight gradient counts
        lambda zeros: tf.cast(rng.uniform(-1, 1, zeros.shape), dtype),
        cell.initial_state(B, dtype))

    def gradients():
      with tf.GradientTape() as tape:
        outputs, final = unroll.static_unroll(cell, inputs, initial_state, lengths)
        loss = (tf.reduce_sum(tf.cast(outputs, tf.float32) * target)
                + tf.reduce_sum(tf.cast(final.hidden, tf.float32)))
      return tape.gradient(loss, cell.trainable_variables)
    if how == "graph":
      gradients = tf.function(gradients, jit_compile=compiled)
    names = [v.name for v in cell.trainable_variables]
    adapted = []
    with _recording_adapt(adapted):
      result = dict(zip(names, gradients()))
    return result, adapted[0]

  @parameterized.product(kind=["lstm", "gru"], dtype=["float32", "bfloat16"],
                         compiled=[False, True], per_gate=[False, True])
  def test_graph_gradients_match_the_eager_ones(self, kind, dtype, compiled, per_gate):
    """Eagerly the steps multiply plainly, each with its own weight gradient; in a graph
    through `RecurrentMatmul`, with d(h) one matmul or one per gate."""
    eager, fast = self._gradients(kind, dtype, False, "eager")
    self.assertIsNone(fast._recurrent)  # pylint: disable=protected-access
    graph, fast = self._gradients(kind, dtype, compiled, "graph", per_gate)
    _, matmul, _ = fast._recurrent  # pylint: disable=protected-access
    self.assertEqual(T, matmul.num_steps)
    self.assertEqual(fast.reference._num_gates if per_gate else 1,  # pylint: disable=protected-access
                     matmul.gate_blocks)
    tolerance = 1e-5 if dtype == "float32" else 2e-2
    for name, want in eager.items():
      self.assertGreater(np.abs(want.numpy()).max(), 1e-3, name)
      self.assertAllClose(want, graph[name], rtol=tolerance, atol=tolerance, msg=name)

  def test_steps_past_the_precompute_multiply_plainly(self):
    """A step called after the T steps of the latest `precompute` (here: a T + 1st) does not
    go through its `RecurrentMatmul`."""
    fast = fast_cores.adapt(cells.LSTMCell(H, seed=2))
    inputs = tf.random.stateless_uniform([B, T, I], seed=[1, 1])

    @tf.function
    def run():
      precomputed = fast.precompute(inputs)
      state = fast.initial_state(B)
      for t in range(T + 1):
        _, state = fast.step(precomputed[:, min(t, T - 1)], state)
      return fast._recurrent[1].num_steps  # pylint: disable=protected-access
    self.assertEqual(T, int(run()))

  def test_a_while_loop_unroll_multiplies_plainly(self):
    cell = cells.LSTMCell(H, seed=2)
    inputs = tf.random.stateless_uniform([B, T, I], seed=[1, 1])

    adapted = []

    @tf.function
    def run():
      unroll.dynamic_unroll(cell, inputs, cell.initial_state(B))
    with _recording_adapt(adapted):
      run()
    self.assertEqual(0, adapted[0]._recurrent[1].num_steps)  # pylint: disable=protected-access


if __name__ == "__main__":
  tf.test.main()
