"""The fast layer's cores (`seq2seq.fast.cores`, `seq2seq.fast.activations`): the LSTM's
recomputing gradient, the activations spelled for XLA's bridge, and the weights read once
before a loop over time."""
import functools

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from seq2seq.fast import activations
from seq2seq.fast import cores as fast_cores
from seq2seq.fast import unroll as fast_unroll
from tests.test_cells import I, H, build_and_randomize, make_cell, np_sigmoid, np_step_fn
from tests.test_cells import random_state


class LSTMElementwiseGradientTest(tf.test.TestCase, parameterized.TestCase):
  """`activations.lstm_gates_to_state(recompute=True)` has a written-out gradient: it must equal
  the gradient TensorFlow derives op by op from the same equations."""

  @staticmethod
  def _derived(gates, cell, forget_bias):
    i, g, f, o = tf.split(gates, 4, axis=-1)
    new_cell = tf.sigmoid(f + forget_bias) * cell + tf.sigmoid(i) * tf.tanh(g)
    return tf.sigmoid(o) * tf.tanh(new_cell), new_cell

  def _gradients(self, fn, gates, cell, d_hidden, d_cell, forget_bias):
    with tf.GradientTape() as tape:
      tape.watch([gates, cell])
      hidden, new_cell = fn(gates, cell, forget_bias)
      loss = tf.reduce_sum(hidden * d_hidden) + tf.reduce_sum(new_cell * d_cell)
    return (hidden, new_cell), tape.gradient(loss, [gates, cell])

  @parameterized.product(dtype=["float64", "bfloat16"], compiled=[False, True],
                         forget_bias=[1.0, 0.3])
  def test_matches_the_derived_gradient(self, dtype, compiled, forget_bias):
    rng = np.random.RandomState(7)
    as_tensor = lambda shape, scale: tf.cast(rng.uniform(-scale, scale, shape), dtype)
    gates, cell = as_tensor((3, 4 * H), 3.0), as_tensor((3, H), 2.0)
    d_hidden, d_cell = as_tensor((3, H), 1.0), as_tensor((3, H), 1.0)
    run = lambda fn: self._gradients(fn, gates, cell, d_hidden, d_cell, forget_bias)
    if compiled:
      run = tf.function(run, jit_compile=True)
    recomputing = functools.partial(activations.lstm_gates_to_state, recompute=True)
    (hidden, new_cell), (d_gates, d_prev_cell) = run(recomputing)
    (want_hidden, want_cell), (want_d_gates, want_d_prev_cell) = run(self._derived)
    tolerance = 1e-12 if dtype == "float64" else 2e-2
    for got, want in ((hidden, want_hidden), (new_cell, want_cell), (d_gates, want_d_gates),
                      (d_prev_cell, want_d_prev_cell)):
      self.assertEqual(got.dtype, want.dtype)
      self.assertAllClose(tf.cast(want, tf.float64), tf.cast(got, tf.float64),
                          rtol=tolerance, atol=tolerance)
    self.assertGreater(np.abs(d_gates.numpy().astype(np.float64)).min(), 0.0)  # every gate

  def test_gradient_matches_finite_differences(self):
    rng = np.random.RandomState(8)
    gates = tf.constant(rng.uniform(-2, 2, (2, 4 * H)))
    cell = tf.constant(rng.uniform(-1, 1, (2, H)))
    f = lambda gates, cell: tf.concat(
        activations.lstm_gates_to_state(gates, cell, 0.5, recompute=True), -1)
    theoretical, numerical = tf.test.compute_gradient(f, [gates, cell], delta=1e-6)
    for t, n in zip(theoretical, numerical):
      self.assertGreater(np.abs(t).max(), 1e-2)
      self.assertAllClose(n, t, rtol=1e-6, atol=1e-8)


  @staticmethod
  def _op_types(graph):
    """(op types of `graph` itself, op types of the functions it calls, nested ones too)."""
    graph_def = graph.as_graph_def()
    return ([node.op for node in graph_def.node],
            [node.op for function in graph_def.library.function for node in function.node_def])

  @parameterized.parameters("static", "dynamic")
  def test_recomputing_gradient_only_inside_a_loop(self, how):
    """Without XLA, the written-out gradient (a custom-gradient `IdentityN`) is used in the
    body of a `tf.while_loop`, and only there. (Outside, each static step's recurrent product
    has its own `IdentityN`, of a MatMul: `seq2seq.fast.recurrent_matmul`.) The elementwise
    step is one function, traced once and called at every step."""
    core = make_cell("lstm", dtype=tf.float32)
    core(tf.zeros([2, I]), core.initial_state(2))
    run_unroll = fast_unroll.static_unroll if how == "static" else fast_unroll.dynamic_unroll

    @tf.function(autograph=False)
    def run(x):
      return run_unroll(core, x, core.initial_state(2))[0]

    graph = run.get_concrete_function(tf.TensorSpec([2, 3, I])).graph
    outside = [op.inputs[0].op.type for op in graph.get_operations() if op.type == "IdentityN"]
    self.assertEqual(["MatMul"] * (3 if how == "static" else 0), outside)
    top, called = self._op_types(graph)
    self.assertEqual(how == "dynamic", "While" in top or "StatelessWhile" in top)
    self.assertEqual(0 if how == "static" else 1, called.count("IdentityN"))
    self.assertEqual(3 if how == "static" else 0, top.count("PartitionedCall"))

  @parameterized.parameters("static", "dynamic")
  def test_compiled_steps_recompute_behind_a_barrier(self, how):
    """Compiled with XLA, each step's gradient recomputes the activations, behind an
    optimization barrier outside loop bodies (`activations.recompute_behind_barrier`); the
    loss and the gradients are those TensorFlow derives without XLA."""
    core = make_cell("lstm")
    inputs = tf.constant(np.random.RandomState(3).uniform(-1, 1, (2, 3, I)))
    lengths = tf.constant([3, 2])
    core(inputs[:, 0], core.initial_state(2))
    run_unroll = fast_unroll.static_unroll if how == "static" else fast_unroll.dynamic_unroll

    def loss_and_gradients(x):
      with tf.GradientTape() as tape:
        tape.watch(x)
        outputs, state = run_unroll(core, x, core.initial_state(2), lengths)
        loss = tf.reduce_sum(outputs * outputs) + tf.reduce_sum(tf.sin(state.cell))
      return loss, tape.gradient(loss, [x] + list(core.trainable_variables))

    compiled = tf.function(loss_and_gradients, jit_compile=True, autograph=False)
    top, called = self._op_types(compiled.get_concrete_function(inputs).graph)
    # The steps call one elementwise function, whose gradient function has the barrier, on
    # the forward values (gates, c) only: the incoming gradients' producers may fuse with it.
    self.assertEqual(1 if how == "static" else 0, (top + called).count("XlaOptimizationBarrier"))
    library = compiled.get_concrete_function(inputs).graph.as_graph_def().library
    barrier_inputs = [[name for name in node.input if not name.startswith("^")]
                      for function in library.function for node in function.node_def
                      if node.op == "XlaOptimizationBarrier"]
    self.assertEqual([2] if how == "static" else [], [len(names) for names in barrier_inputs])
    plain = tf.function(loss_and_gradients, autograph=False)
    self.assertNotIn("XlaOptimizationBarrier",
                     sum(self._op_types(plain.get_concrete_function(inputs).graph), []))
    want_loss, want_gradients = loss_and_gradients(inputs)  # eagerly: TensorFlow's derivation
    loss, gradients = compiled(inputs)
    self.assertAllClose(want_loss, loss, rtol=1e-12)
    for want, got in zip(want_gradients, gradients):
      self.assertGreater(np.abs(want.numpy()).max(), 1e-3)
      self.assertAllClose(want, got, rtol=1e-10, atol=1e-12)


class BridgeFriendlyActivationTest(tf.test.TestCase, parameterized.TestCase):
  """`activations.sigmoid` and `activations.tanh`: tf.sigmoid and tf.tanh eagerly and in plain
  graphs; in an XLA-compiled graph ops that XLA's TensorFlow bridge lowers without an MLIR
  pipeline of their own (Sigmoid and Tanh take 6-8 ms an op there): SoftplusGrad(1, x), and
  _UnaryOpsComposition(x, ["Tanh"]). Same values and gradients either way."""

  @parameterized.product(activation=["sigmoid", "tanh"],
                         dtype=["float64", "float32", "bfloat16"], compiled=[False, True])
  def test_value_and_gradient_match_numpy(self, activation, dtype, compiled):
    rng = np.random.RandomState(5)
    x = tf.cast(np.concatenate([np.linspace(-40, 40, 801), rng.normal(0, 3, 200),
                                [1e-30, -1e-20, 3e-8, 0.0]]), dtype)
    cotangent = tf.cast(rng.uniform(-1, 1, x.shape), dtype)
    function = getattr(activations, activation)

    def value_and_gradient(x):
      with tf.GradientTape() as tape:
        tape.watch(x)
        y = function(x)
        loss = tf.reduce_sum(y * cotangent)
      return y, tape.gradient(loss, x)

    run = tf.function(value_and_gradient, jit_compile=True) if compiled else value_and_gradient
    y, d_x = (tf.cast(t, tf.float64).numpy() for t in run(x))
    x64, cotangent64 = (tf.cast(t, tf.float64).numpy() for t in (x, cotangent))
    tolerance = {"float64": 1e-14, "float32": 1e-6, "bfloat16": 1e-2}[dtype]
    if activation == "sigmoid":
      want = np_sigmoid(x64)  # of x as rounded to dtype
      self.assertAllClose(want, y, rtol=tolerance, atol=tolerance * 1e-3)
      # y * (1 - y), as tf.sigmoid's gradient computes it, is exact to one ulp of 1.
      want_gradient = cotangent64 * want * np_sigmoid(-x64)
    else:
      want = np.tanh(x64)
      # Relative accuracy near 0 too: tanh(x) = x there, and 1e-30 must not come out as 0.
      self.assertAllClose(want, y, rtol=tolerance, atol=0)
      want_gradient = cotangent64 * (1 - want * want)
    self.assertAllClose(want_gradient, d_x, rtol=4 * tolerance, atol=tolerance)

  @parameterized.product(kind=["lstm", "gru"], how=["static", "dynamic"])
  def test_compiled_graph_has_no_sigmoid_or_tanh_op(self, kind, how):
    core = make_cell(kind)
    run_unroll = fast_unroll.static_unroll if how == "static" else fast_unroll.dynamic_unroll
    inputs = tf.constant(np.random.RandomState(4).uniform(-1, 1, (2, 3, I)))
    core(inputs[:, 0], core.initial_state(2))

    def loss_and_gradients(x):
      with tf.GradientTape() as tape:
        tape.watch(x)
        outputs, _ = run_unroll(core, x, core.initial_state(2), tf.constant([3, 2]))
        loss = tf.reduce_sum(outputs * outputs)
      return loss, tape.gradient(loss, [x] + list(core.trainable_variables))

    op_types = lambda fn: sum(LSTMElementwiseGradientTest._op_types(  # pylint: disable=protected-access
        fn.get_concrete_function(inputs).graph), [])
    compiled = tf.function(loss_and_gradients, jit_compile=True, autograph=False)
    plain = tf.function(loss_and_gradients, autograph=False)
    # Plain first: the cells' elementwise function traced for it must not serve XLA.
    plain_ops, compiled_ops = op_types(plain), op_types(compiled)
    for slow, quick in (("Sigmoid", "SoftplusGrad"), ("Tanh", "_UnaryOpsComposition")):
      self.assertIn(slow, plain_ops)
      self.assertNotIn(quick, plain_ops)
      self.assertNotIn(slow, compiled_ops)
      self.assertIn(quick, compiled_ops)
    want_loss, want_gradients = loss_and_gradients(inputs)  # eagerly, with tf.sigmoid, tf.tanh
    loss, gradients = compiled(inputs)
    self.assertAllClose(want_loss, loss, rtol=1e-12)
    for want, got in zip(want_gradients, gradients):
      self.assertGreater(np.abs(want.numpy()).max(), 1e-3)
      self.assertAllClose(want, got, rtol=1e-10, atol=1e-12)


class StepWeightsTest(tf.test.TestCase, parameterized.TestCase):
  """A fast cell's `precompute` reads the weights of the steps once, before a loop over time
  (when no cast is needed)."""

  @parameterized.product(kind=["lstm", "gru"], dtype=["float32", "bfloat16"])
  def test_loop_body_reads_no_variable(self, kind, dtype):
    core = make_cell(kind, dtype=tf.float32)
    core(tf.zeros([2, I]), core.initial_state(2))

    @tf.function(autograph=False)
    def run(x):
      x = tf.cast(x, dtype)
      outputs, _ = fast_unroll.dynamic_unroll(core, x, core.initial_state(2, x.dtype))
      return outputs

    graph = run.get_concrete_function(tf.TensorSpec([2, 5, I])).graph
    bodies = [graph._get_function(op.get_attr("body").name).graph  # pylint: disable=protected-access
              for op in graph.get_operations() if op.type in ("While", "StatelessWhile")]
    self.assertLen(bodies, 1)
    body_ops = [op.type for op in bodies[0].get_operations()]
    self.assertIn("MatMul", body_ops)  # the recurrent matmul is in the loop...
    if dtype == "float32":
      self.assertNotIn("ReadVariableOp", body_ops)  # ...its kernel read before it
    else:  # ...its kernel cast in each step: the steps' gradients are summed in float32
      self.assertIn("Cast", body_ops)

  @parameterized.parameters("lstm", "gru")
  def test_a_step_in_another_graph_sees_the_current_weights(self, kind):
    rng = np.random.RandomState(4)
    core = make_cell(kind)
    build_and_randomize(core, rng)
    fast = fast_cores.adapt(core)
    x = rng.uniform(-1, 1, (2, I))
    state = random_state(kind, rng, batch=2)

    @tf.function(autograph=False)
    def precompute_only(x):
      return fast.precompute(x)

    @tf.function(autograph=False)
    def step(precomputed):
      return fast.step(precomputed, state)[0]

    precompute_only(tf.constant(x[:, None]))  # its reads stay in precompute_only's graph
    for var in core.trainable_variables:
      var.assign(var * 0.5)
    bias = core.bias if kind == "lstm" else core.bias_input
    projected = tf.constant(x @ core.w_input.numpy() + bias.numpy())
    want, _ = np_step_fn(kind, core)(x, tuple(s.numpy() for s in state))
    self.assertAllClose(want, step(projected), rtol=1e-10, atol=1e-12)
    self.assertAllClose(want, fast.step(projected, state)[0], rtol=1e-10, atol=1e-12)

  def test_kept_reads_are_not_checkpoint_dependencies(self):
    """The fast view keeps its reads; the reference cell (the checkpointed tree) does not."""
    core = make_cell("lstm", dtype=tf.float32)
    core(tf.zeros([2, I]), core.initial_state(2))
    run = tf.function(lambda x: fast_unroll.dynamic_unroll(core, x, core.initial_state(2))[0],
                      autograph=False)
    run(tf.zeros([2, 3, I]))
    self.assertCountEqual(["w_input", "w_hidden", "bias"],
                          core._trackable_children())  # pylint: disable=protected-access


if __name__ == "__main__":
  tf.test.main()
