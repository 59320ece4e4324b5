"""Tests of the recurrent cores, wrappers and unroll against NumPy float64 re-derivations."""

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from seq2seq.nn import cells
from seq2seq.nn import unroll

B, I, H = 3, 5, 4  # batch, input size, hidden size (small: keeps finite differences fast)


# --- NumPy float64 references, written from the equations in ops/cell_math.py ---

def np_sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def np_lstm_step(x, h, c, w_input, w_hidden, bias, forget_bias):
  gates = x @ w_input + h @ w_hidden + bias
  n = h.shape[-1]
  i, g, f, o = (gates[:, k * n:(k + 1) * n] for k in range(4))  # i, g, f, o
  new_c = np_sigmoid(f + forget_bias) * c + np_sigmoid(i) * np.tanh(g)
  new_h = np_sigmoid(o) * np.tanh(new_c)
  return new_h, new_c


def np_gru_step(x, h, w_input, w_hidden, bias_input, bias_hidden):
  n = h.shape[-1]
  xg = x @ w_input + bias_input
  hg = h @ w_hidden + bias_hidden
  z = np_sigmoid(xg[:, :n] + hg[:, :n])
  r = np_sigmoid(xg[:, n:2 * n] + hg[:, n:2 * n])
  cand = np.tanh(xg[:, 2 * n:] + r * hg[:, 2 * n:])
  return z * h + (1.0 - z) * cand


def make_cell(kind, dtype=tf.float64, forget_bias=1.0, seed=0, num_units=H):
  if kind == "lstm":
    return cells.LSTMCell(num_units, forget_bias=forget_bias, dtype=dtype, seed=seed)
  return cells.GRUCell(num_units, dtype=dtype, seed=seed)


def random_state(kind, rng, batch=B, num_units=H, dtype=np.float64):
  if kind == "lstm":
    return cells.LSTMState(
        hidden=tf.constant(rng.uniform(-1, 1, (batch, num_units)).astype(dtype)),
        cell=tf.constant(rng.uniform(-1, 1, (batch, num_units)).astype(dtype)))
  return cells.GRUState(hidden=tf.constant(rng.uniform(-1, 1, (batch, num_units)).astype(dtype)))


def build_and_randomize(cell, rng, input_size=I, scale=0.7):
  """Builds `cell` with a first call, then assigns random values (non-zero biases) to it."""
  cell(tf.zeros([1, input_size], cell.dtype), cell.initial_state(1))
  for var in cell.trainable_variables:
    var.assign(rng.uniform(-scale, scale, var.shape).astype(var.dtype.as_numpy_dtype))


def np_step_fn(kind, cell):
  """A NumPy step (x, state tuple) -> (output, state tuple), fed with the cell's variables."""
  if kind == "lstm":
    w_input, w_hidden, bias = cell.w_input.numpy(), cell.w_hidden.numpy(), cell.bias.numpy()

    def step(x, state):
      h, c = np_lstm_step(x, state[0], state[1], w_input, w_hidden, bias, cell.forget_bias)
      return h, (h, c)
  else:
    w_input, w_hidden = cell.w_input.numpy(), cell.w_hidden.numpy()
    bias_input, bias_hidden = cell.bias_input.numpy(), cell.bias_hidden.numpy()

    def step(x, state):
      h = np_gru_step(x, state[0], w_input, w_hidden, bias_input, bias_hidden)
      return h, (h,)
  return step


def to_np(state):
  return tuple(np.asarray(s) for s in state)


class IdentityCore(cells.RNNCore):
  """Returns its inputs as output and carries the state unchanged: exposes input dropout."""

  def __init__(self, size):
    super().__init__()
    self.size = size

  @property
  def output_size(self):
    return self.size

  def initial_state(self, batch_size, dtype=None):
    return cells.GRUState(hidden=tf.zeros([batch_size, self.size], dtype or tf.float32))

  def __call__(self, inputs, state):
    return inputs, state


class RecordingCore(cells.RNNCore):
  """Delegates to `core` and remembers the last inputs it was given."""

  def __init__(self, core):
    super().__init__()
    self.core = core
    self.last_inputs = None

  @property
  def output_size(self):
    return self.core.output_size

  def initial_state(self, batch_size, dtype=None):
    return self.core.initial_state(batch_size, dtype)

  def __call__(self, inputs, state):
    self.last_inputs = inputs
    return self.core(inputs, state)


class CellForwardTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(
      [("lstm", f, n, b) for f in (False, True) for n in (1, 4) for b in (1.0, 0.3)] +
      [("gru", f, n, 1.0) for f in (False, True) for n in (1, 4)])
  def test_matches_numpy(self, kind, use_function, num_steps, forget_bias):
    rng = np.random.RandomState(0)
    cell = make_cell(kind, forget_bias=forget_bias, seed=7)
    build_and_randomize(cell, rng)
    xs = rng.uniform(-1, 1, (num_steps, B, I))
    state = random_state(kind, rng)

    def run(xs, state):
      outputs = []
      for t in range(num_steps):
        output, state = cell(xs[t], state)
        outputs.append(output)
      return tf.stack(outputs), state

    if use_function:
      run = tf.function(run)
    outputs, final_state = run(tf.constant(xs), state)

    np_step = np_step_fn(kind, cell)
    np_state = to_np(state)
    expected = []
    for t in range(num_steps):
      out, np_state = np_step(xs[t], np_state)
      expected.append(out)
    self.assertEqual(outputs.dtype, tf.float64)
    self.assertAllClose(np.stack(expected), outputs, rtol=1e-12, atol=1e-12)
    self.assertIsInstance(final_state, cells.LSTMState if kind == "lstm" else cells.GRUState)
    self.assertAllClose(np_state, to_np(final_state), rtol=1e-12, atol=1e-12)
    # The output is the new hidden state.
    self.assertAllClose(outputs[-1], final_state.hidden, rtol=0, atol=0)

  def test_forget_bias_is_used(self):
    rng = np.random.RandomState(1)
    x = tf.constant(rng.uniform(-1, 1, (B, I)))
    state = random_state("lstm", rng)
    results = []
    for forget_bias in (0.0, 2.0):
      cell = make_cell("lstm", forget_bias=forget_bias, seed=3)
      results.append(cell(x, state)[1].cell)
    self.assertNotAllClose(results[0], results[1])


class CellGradientTest(tf.test.TestCase, parameterized.TestCase):

  def _max_error(self, theoretical, numerical):
    return max(np.max(np.abs(t - n)) for t, n in zip(theoretical, numerical))

  @parameterized.parameters("lstm", "gru")
  def test_gradient_wrt_inputs_and_state(self, kind):
    rng = np.random.RandomState(2)
    cell = make_cell(kind, seed=1)
    build_and_randomize(cell, rng)
    x = tf.constant(rng.uniform(-1, 1, (2, I)))
    state = random_state(kind, rng, batch=2)

    def f(x, *state_parts):
      output, new_state = cell(x, type(state)(*state_parts))
      return tf.concat([output] + list(new_state), axis=-1)

    theoretical, numerical = tf.test.compute_gradient(f, [x] + list(state), delta=1e-6)
    self.assertLen(theoretical, 1 + len(state))
    for t in theoretical:
      self.assertGreater(np.max(np.abs(t)), 1e-3)  # not trivially zero
    self.assertLess(self._max_error(theoretical, numerical), 1e-7)

  @parameterized.parameters("lstm", "gru")
  def test_gradient_wrt_variables(self, kind):
    rng = np.random.RandomState(3)
    cell = make_cell(kind, seed=2)
    build_and_randomize(cell, rng)
    names = ["w_input", "w_hidden"] + (["bias"] if kind == "lstm"
                                       else ["bias_input", "bias_hidden"])
    variables = [getattr(cell, name) for name in names]
    x = tf.constant(rng.uniform(-1, 1, (2, I)))
    state = random_state(kind, rng, batch=2)

    def f(*weights):
      # The closure swaps the weights in for the (already built) variables for one call.
      saved = [getattr(cell, name) for name in names]
      try:
        for name, weight in zip(names, weights):
          setattr(cell, name, weight)
        output, new_state = cell(x, state)
      finally:
        for name, var in zip(names, saved):
          setattr(cell, name, var)
      return tf.concat([output] + list(new_state), axis=-1)

    values = [tf.constant(v.numpy()) for v in variables]
    theoretical, numerical = tf.test.compute_gradient(f, values, delta=1e-6)
    self.assertLess(self._max_error(theoretical, numerical), 1e-7)
    self.assertEqual([v.ref() for v in variables],
                     [getattr(cell, name).ref() for name in names])  # restored

    # The tape through the real tf.Variables agrees with the numerical Jacobians.
    cotangent = rng.normal(size=f(*values).shape)
    with tf.GradientTape() as tape:
      output, new_state = cell(x, state)
      y = tf.concat([output] + list(new_state), axis=-1)
      loss = tf.reduce_sum(y * cotangent)
    grads = tape.gradient(loss, variables)
    for grad, jacobian, var in zip(grads, numerical, variables):
      expected = (cotangent.reshape(1, -1) @ jacobian).reshape(var.shape)
      self.assertAllClose(expected, grad, rtol=1e-6, atol=1e-7)


class CellStructureTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(tf.float32, tf.float64)
  def test_lstm_initial_state(self, dtype):
    cell = cells.LSTMCell(6, dtype=dtype)
    state = cell.initial_state(3)
    self.assertIsInstance(state, cells.LSTMState)
    self.assertEqual(state._fields, ("hidden", "cell"))
    for part in state:
      self.assertEqual(part.shape, (3, 6))
      self.assertEqual(part.dtype, dtype)
      self.assertAllEqual(part, np.zeros((3, 6)))
    self.assertEqual(cell.initial_state(2, tf.float16).hidden.dtype, tf.float16)

  @parameterized.parameters(tf.float32, tf.float64)
  def test_gru_initial_state(self, dtype):
    cell = cells.GRUCell(6, dtype=dtype)
    state = cell.initial_state(3)
    self.assertIsInstance(state, cells.GRUState)
    self.assertEqual(state._fields, ("hidden",))
    self.assertEqual(state.hidden.shape, (3, 6))
    self.assertEqual(state.hidden.dtype, dtype)
    self.assertAllEqual(state.hidden, np.zeros((3, 6)))

  @parameterized.parameters(("lstm", 4, ["bias"]), ("gru", 3, ["bias_input", "bias_hidden"]))
  def test_variables_created_on_first_call(self, kind, num_gates, bias_names):
    cell = make_cell(kind, dtype=tf.float32, num_units=H)
    self.assertFalse(cell.built)
    self.assertEmpty(cell.trainable_variables)
    output, _ = cell(tf.ones([2, I]), cell.initial_state(2))
    self.assertTrue(cell.built)
    self.assertEqual(output.shape, (2, H))
    self.assertEqual(cell.output_size, H)
    expected = {"w_input": (I, num_gates * H), "w_hidden": (H, num_gates * H)}
    expected.update({name: (num_gates * H,) for name in bias_names})
    found = {v.name.split("/")[-1].split(":")[0]: tuple(v.shape) for v in cell.trainable_variables}
    self.assertEqual(expected, found)
    for var in cell.trainable_variables:
      self.assertTrue(var.trainable)
    # A second call reuses the variables.
    cell(tf.ones([2, I]), cell.initial_state(2))
    self.assertLen(cell.trainable_variables, len(expected))

  @parameterized.parameters("lstm", "gru")
  def test_built_inside_tf_function(self, kind):
    cell = make_cell(kind, dtype=tf.float32)
    step = tf.function(lambda x, state: cell(x, state))
    output, _ = step(tf.ones([2, I]), cell.initial_state(2))
    self.assertEqual(output.shape, (2, H))
    self.assertNotEmpty(cell.trainable_variables)
    eager_output, _ = cell(tf.ones([2, I]), cell.initial_state(2))
    self.assertAllClose(eager_output, output)

  @parameterized.parameters("lstm", "gru")
  def test_float64_cell(self, kind):
    cell = make_cell(kind, dtype=tf.float64)
    output, state = cell(tf.ones([2, I], tf.float64), cell.initial_state(2))
    self.assertEqual(output.dtype, tf.float64)
    for part in state:
      self.assertEqual(part.dtype, tf.float64)
    for var in cell.trainable_variables:
      self.assertEqual(var.dtype, tf.float64)

  def test_invalid_num_units(self):
    with self.assertRaisesRegex(ValueError, "num_units must be positive"):
      cells.LSTMCell(0)
    with self.assertRaisesRegex(ValueError, "num_units must be positive"):
      cells.GRUCell(-1)

  def test_initial_biases_zero_kernels_seeded(self):
    # Biases start at zero and kernels are deterministic in the seed.
    a, b = make_cell("lstm", seed=5), make_cell("lstm", seed=5)
    for cell in (a, b):
      cell(tf.ones([1, I], tf.float64), cell.initial_state(1))
    self.assertAllEqual(a.w_input, b.w_input)
    self.assertAllEqual(a.bias, np.zeros(4 * H))


class StackedCellsTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(False, True)
  def test_matches_cores_run_by_hand(self, use_function):
    rng = np.random.RandomState(4)
    cores = [make_cell("lstm", seed=1), make_cell("gru", seed=2, num_units=3),
             make_cell("lstm", seed=3, num_units=2)]
    stack = cells.StackedCells(cores)
    self.assertEqual(stack.output_size, 2)
    state = stack.initial_state(B)
    self.assertIsInstance(state, tuple)
    self.assertLen(state, 3)
    self.assertIsInstance(state[0], cells.LSTMState)
    self.assertIsInstance(state[1], cells.GRUState)
    self.assertIsInstance(state[2], cells.LSTMState)
    self.assertEqual(state[1].hidden.shape, (B, 3))

    x = tf.constant(rng.uniform(-1, 1, (B, I)))
    stack(x, state)  # builds
    for core, size in zip(cores, (I, H, 3)):
      build_and_randomize(core, rng, input_size=size)
    state = (random_state("lstm", rng), random_state("gru", rng, num_units=3),
             random_state("lstm", rng, num_units=2))

    call = tf.function(stack.__call__) if use_function else stack
    output, new_state = call(x, state)

    # By hand, in NumPy.
    inputs = x.numpy()
    expected_states = []
    for kind, core, layer_state in zip(("lstm", "gru", "lstm"), cores, state):
      inputs, layer_new = np_step_fn(kind, core)(inputs, to_np(layer_state))
      expected_states.append(layer_new)
    self.assertAllClose(inputs, output, rtol=1e-12, atol=1e-12)
    self.assertIsInstance(new_state, tuple)
    self.assertLen(new_state, 3)
    for expected, got, state_type in zip(expected_states, new_state,
                                         (cells.LSTMState, cells.GRUState, cells.LSTMState)):
      self.assertIsInstance(got, state_type)
      self.assertAllClose(expected, to_np(got), rtol=1e-12, atol=1e-12)
    self.assertLen(stack.trainable_variables, 3 + 4 + 3)

  def test_empty_raises(self):
    with self.assertRaisesRegex(ValueError, "at least one core"):
      cells.StackedCells([])


class DropoutWrapperTest(tf.test.TestCase, parameterized.TestCase):

  def _setup(self, seed=0):
    rng = np.random.RandomState(seed)
    core = make_cell("lstm", dtype=tf.float32, seed=seed)
    x = tf.constant(rng.uniform(-1, 1, (8, I)).astype(np.float32))
    state = random_state("lstm", rng, batch=8, dtype=np.float32)
    return core, x, state

  def test_keep_prob_one_is_identity(self):
    core, x, state = self._setup()
    wrapper = cells.DropoutWrapper(core, tf.random.Generator.from_seed(1))
    self.assertEqual(wrapper.output_size, core.output_size)
    output, new_state = wrapper(x, state)
    core_output, core_state = core(x, state)
    self.assertAllEqual(core_output, output)
    self.assertAllEqual(to_np(core_state), to_np(new_state))
    init = wrapper.initial_state(2)
    self.assertIsInstance(init, cells.LSTMState)
    self.assertEqual(init.hidden.shape, (2, H))

  @parameterized.parameters(False, True)
  def test_output_dropout_zero_or_scaled(self, use_function):
    core, x, state = self._setup()
    wrapper = cells.DropoutWrapper(core, tf.random.Generator.from_seed(3), output_keep_prob=0.5)
    call = tf.function(wrapper.__call__) if use_function else wrapper
    output, new_state = call(x, state)
    core_output, core_state = core(x, state)
    output, core_output = output.numpy(), core_output.numpy()
    dropped = output == 0
    self.assertTrue(dropped.any())
    self.assertTrue((~dropped).any())
    self.assertAllClose(2.0 * core_output[~dropped], output[~dropped], rtol=1e-6, atol=0)
    # The state is never dropped.
    self.assertAllClose(to_np(core_state), to_np(new_state), rtol=1e-6, atol=0)

  def test_input_dropout_zero_or_scaled(self):
    rng = np.random.RandomState(5)
    x = tf.constant(rng.uniform(0.5, 1.5, (16, 8)).astype(np.float32))
    identity = IdentityCore(8)
    wrapper = cells.DropoutWrapper(identity, tf.random.Generator.from_seed(4),
                                   input_keep_prob=0.5)
    output, _ = wrapper(x, identity.initial_state(16))
    output = output.numpy()
    dropped = output == 0
    self.assertTrue(dropped.any())
    self.assertTrue((~dropped).any())
    self.assertAllClose(2.0 * x.numpy()[~dropped], output[~dropped], rtol=1e-6, atol=0)

  def test_input_dropout_feeds_core(self):
    core, x, state = self._setup(seed=6)
    recorder = RecordingCore(core)
    wrapper = cells.DropoutWrapper(recorder, tf.random.Generator.from_seed(5),
                                   input_keep_prob=0.5)
    output, new_state = wrapper(x, state)
    seen = recorder.last_inputs.numpy()
    dropped = seen == 0
    self.assertTrue(dropped.any())
    self.assertTrue((~dropped).any())
    self.assertAllClose(2.0 * x.numpy()[~dropped], seen[~dropped], rtol=1e-6, atol=0)
    # The output is the bare core's output on the dropped-out inputs (no output dropout).
    expected_output, expected_state = core(tf.constant(seen), state)
    self.assertAllClose(expected_output, output, rtol=1e-6, atol=1e-7)
    self.assertAllClose(to_np(expected_state), to_np(new_state), rtol=1e-6, atol=1e-7)

  def test_masks_differ_across_calls(self):
    core, x, state = self._setup()
    wrapper = cells.DropoutWrapper(core, tf.random.Generator.from_seed(7), output_keep_prob=0.5)
    first, _ = wrapper(x, state)
    second, _ = wrapper(x, state)
    self.assertNotAllEqual(first.numpy() == 0, second.numpy() == 0)

  def test_same_generator_state_gives_same_masks(self):
    core, x, state = self._setup()
    outputs = []
    for _ in range(2):
      wrapper = cells.DropoutWrapper(core, tf.random.Generator.from_seed(9),
                                     output_keep_prob=0.5)
      outputs.append(wrapper(x, state)[0])
    self.assertAllEqual(outputs[0], outputs[1])

  @parameterized.parameters(
      dict(input_keep_prob=0.0, output_keep_prob=1.0, label="input_keep_prob"),
      dict(input_keep_prob=1.5, output_keep_prob=1.0, label="input_keep_prob"),
      dict(input_keep_prob=1.0, output_keep_prob=0.0, label="output_keep_prob"),
      dict(input_keep_prob=1.0, output_keep_prob=-0.2, label="output_keep_prob"))
  def test_invalid_keep_prob(self, input_keep_prob, output_keep_prob, label):
    core = make_cell("gru", dtype=tf.float32)
    with self.assertRaisesRegex(ValueError, label + r" must be in \(0, 1\]"):
      cells.DropoutWrapper(core, tf.random.Generator.from_seed(0),
                           input_keep_prob=input_keep_prob, output_keep_prob=output_keep_prob)


class StaticUnrollTest(tf.test.TestCase, parameterized.TestCase):

  def _setup(self, kind, seed=0, batch=4, num_steps=5):
    rng = np.random.RandomState(seed)
    core = make_cell(kind, seed=seed)
    build_and_randomize(core, rng)
    inputs = tf.constant(rng.uniform(-1, 1, (batch, num_steps, I)))
    state = random_state(kind, rng, batch=batch)
    return core, inputs, state

  @parameterized.product(kind=["lstm", "gru"], use_function=[False, True])
  def test_matches_manual_loop(self, kind, use_function):
    core, inputs, state = self._setup(kind)
    fn = unroll.static_unroll
    if use_function:
      fn = tf.function(fn)
    outputs, final_state = fn(core, inputs, state)
    self.assertEqual(outputs.shape, (4, 5, H))

    np_step = np_step_fn(kind, core)
    np_state = to_np(state)
    expected = []
    for t in range(5):
      out, np_state = np_step(inputs.numpy()[:, t], np_state)
      expected.append(out)
    self.assertAllClose(np.stack(expected, axis=1), outputs, rtol=1e-12, atol=1e-12)
    self.assertIsInstance(final_state, type(state))
    self.assertAllClose(np_state, to_np(final_state), rtol=1e-12, atol=1e-12)

  @parameterized.product(kind=["lstm", "gru"], use_function=[False, True])
  def test_sequence_length(self, kind, use_function):
    core, inputs, state = self._setup(kind, seed=1, batch=5)
    lengths = np.array([5, 2, 0, 4, 1], np.int32)
    fn = unroll.static_unroll
    if use_function:
      fn = tf.function(fn)
    outputs, final_state = fn(core, inputs, state, tf.constant(lengths))
    outputs = outputs.numpy()
    final_state = to_np(final_state)
    for b, length in enumerate(lengths):
      # Past the length: exactly zero.
      self.assertTrue(np.all(outputs[b, length:] == 0.0), msg=f"sequence {b}")
      single_state = tf.nest.map_structure(lambda s, b=b: s[b:b + 1], state)
      if length == 0:
        expected_state = to_np(single_state)
      else:
        # Run this sequence alone for exactly its own length.
        alone_outputs, alone_state = unroll.static_unroll(
            core, inputs[b:b + 1, :length], single_state)
        self.assertAllClose(alone_outputs[0], outputs[b, :length], rtol=1e-12, atol=1e-12)
        self.assertTrue(np.all(outputs[b, :length] != 0.0))
        expected_state = to_np(alone_state)
      for expected, got in zip(expected_state, final_state):
        self.assertAllClose(expected[0], got[b], rtol=1e-12, atol=1e-12, msg=f"sequence {b}")

  def test_padded_steps_get_no_gradient(self):
    """Inputs past a row's length reach neither its outputs nor its final state."""
    core, inputs, state = self._setup("lstm", seed=4, batch=3)
    lengths = tf.constant([5, 2, 0])
    with tf.GradientTape() as tape:
      tape.watch(inputs)
      outputs, final_state = unroll.static_unroll(core, inputs, state, lengths)
      total = tf.reduce_sum(outputs) + sum(tf.reduce_sum(s) for s in tf.nest.flatten(final_state))
    gradient = tape.gradient(total, inputs).numpy()
    for b, length in enumerate(lengths.numpy()):
      self.assertTrue(np.all(gradient[b, length:] == 0.0), msg=f"sequence {b}")
      self.assertTrue(np.all(gradient[b, :length] != 0.0), msg=f"sequence {b}")

  def test_masking_is_not_repeated_step_by_step(self):
    """The padding is handled once for all T steps, not by ops in every step: each op of the
    unrolled graph is a host dispatch when a step runs without XLA."""
    def masking_ops(num_steps):
      core, inputs, state = self._setup("lstm", seed=5, num_steps=num_steps)
      graph = tf.function(unroll.static_unroll).get_concrete_function(
          core, inputs, state, tf.TensorSpec([4], tf.int32)).graph
      types = [op.type for op in graph.get_operations()]
      return {name: types.count(name) for name in ("Less", "SelectV2")}

    self.assertEqual(masking_ops(3), masking_ops(8))
    self.assertEqual(masking_ops(8)["SelectV2"], 3)  # the outputs, and the state's two fields

  def test_all_lengths_zero_gives_initial_state(self):
    core, inputs, state = self._setup("lstm", seed=2, batch=3)
    outputs, final_state = unroll.static_unroll(core, inputs, state, tf.zeros([3], tf.int32))
    self.assertAllEqual(np.zeros((3, 5, H)), outputs)
    self.assertAllEqual(to_np(state), to_np(final_state))

  def test_full_lengths_equal_no_lengths(self):
    core, inputs, state = self._setup("gru", seed=3)
    with_lengths = unroll.static_unroll(core, inputs, state, tf.fill([4], 5))
    without = unroll.static_unroll(core, inputs, state)
    self.assertAllClose(without[0], with_lengths[0], rtol=0, atol=0)
    self.assertAllClose(to_np(without[1]), to_np(with_lengths[1]), rtol=0, atol=0)

  def test_stacked_core(self):
    rng = np.random.RandomState(8)
    stack = cells.StackedCells([make_cell("lstm", seed=1), make_cell("gru", seed=2)])
    inputs = tf.constant(rng.uniform(-1, 1, (2, 3, I)))
    state = stack.initial_state(2)
    outputs, final_state = unroll.static_unroll(stack, inputs, state, tf.constant([3, 1]))
    self.assertEqual(outputs.shape, (2, 3, H))
    self.assertAllEqual(np.zeros((2, H)), outputs[1, 1:])
    self.assertIsInstance(final_state, tuple)
    self.assertIsInstance(final_state[0], cells.LSTMState)
    self.assertIsInstance(final_state[1], cells.GRUState)
    # Sequence 1 stopped after one step: its state is that of the first step.
    _, one_step_state = stack(inputs[1:2, 0], tf.nest.map_structure(lambda s: s[1:2], state))
    self.assertAllClose(tf.nest.map_structure(lambda s: s[0].numpy(), one_step_state),
                        tf.nest.map_structure(lambda s: s[1].numpy(), final_state),
                        rtol=1e-12, atol=1e-12)

  def test_dynamic_time_raises(self):
    core = make_cell("lstm")

    @tf.function(input_signature=[tf.TensorSpec([None, None, I], tf.float64)])
    def run(inputs):
      return unroll.static_unroll(core, inputs, core.initial_state(tf.shape(inputs)[0]))

    with self.assertRaisesRegex(ValueError, "static number of time steps"):
      run.get_concrete_function()


if __name__ == "__main__":
  tf.test.main()
