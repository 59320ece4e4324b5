"""Recurrent cores: one contract, two hand-written cells, and wrappers that compose.

The contract (`RNNCore`), in the style of Sonnet's recurrent cores:

    output, new_state = core(inputs, state)     # inputs [B, I], output [B, H]
    state = core.initial_state(batch_size)      # a namedtuple (or tuple of them) of [B, H]
    core.output_size                            # H

and nothing else. Variables are created on the first call, when the input size is known, and
are exposed as `trainable_variables` (`tf.Module`). Cores never see sequence lengths: masking
of padded steps belongs to `seq2seq.nn.unroll`.

Adding a cell is: subclass `RNNCore` (or write any object with the same three members),
implement `__call__`, `initial_state` and `output_size`, and compare it with a NumPy
re-derivation in a test. The train steps are traced with AutoGraph off: a core's Python runs
once, when the step is traced, so a choice that depends on a tensor's value is `tf.where` or
`tf.cond`, not `if` (a symbolic tensor has no Python truth value).

This is the reference layer: what is computed, written plainly. `seq2seq.fast` runs the
built-in cores and wrappers of this module faster (one input projection for all steps,
time-major slices, a one-matmul recurrent gradient, aligned matmuls, masks drawn for all
steps at once) on the same variables; `tests/test_fast_equivalence.py` checks it against
this module.
"""
import abc
import collections

import tensorflow as tf

from ops import cell_math

LSTMState = collections.namedtuple("LSTMState", ["hidden", "cell"])
GRUState = collections.namedtuple("GRUState", ["hidden"])


class RNNCore(tf.Module, metaclass=abc.ABCMeta):
  """Base contract of a recurrent core: one time step at a time."""

  @abc.abstractmethod
  def __call__(self, inputs, state):
    """Runs one step.

    Args:
      inputs: [B, I].
      state: a structure like `initial_state(B)`.

    Returns:
      (output [B, output_size], new_state) with new_state structured like `state`.
    """

  @abc.abstractmethod
  def initial_state(self, batch_size, dtype=None):
    """Zero state for `batch_size` sequences, in `dtype` (default: the core's dtype)."""

  @property
  @abc.abstractmethod
  def output_size(self):
    """H, the last dimension of the output."""


def dim(tensor, axis):
  """`tensor`'s size along `axis`: static when known, else a scalar tensor."""
  size = tensor.shape[axis]
  return tf.shape(tensor)[axis] if size is None else size


def time_major(tensor):
  """[B, T, ...] <-> [T, B, ...]: swaps the first two axes."""
  return tf.transpose(tensor, [1, 0] + list(range(2, tensor.shape.rank)))


def keep_mask(generator, shape, keep_prob, dtype):
  """A dropout mask of `shape` from one draw of `generator`: each unit kept with probability
  `keep_prob`, independently, and then scaled by 1 / keep_prob; `()` (nothing to apply) when
  keep_prob is 1. The uniforms are float32 whatever `dtype` (bf16 would round keep_prob).

  The generator's own draw (its state read as the Philox key and counter), not
  stateless_uniform of `generator.make_seeds`, whose seed hashing (StatelessRandomGetKeyCounter)
  XLA copies into each kernel that uses the mask.
  """
  if keep_prob >= 1.0:
    return ()
  keep = generator.uniform(shape, dtype=tf.float32) < keep_prob
  return tf.cast(keep, dtype) / tf.cast(keep_prob, dtype)


def apply_mask(tensor, mask):
  """`tensor` * `mask`, or `tensor` itself for the empty mask `()` of `keep_mask`."""
  return tensor if isinstance(mask, tuple) and not mask else tensor * mask


def _glorot_uniform(shape, dtype, seed):
  fan_in, fan_out = shape
  limit = (6.0 / (fan_in + fan_out)) ** 0.5
  return tf.random.stateless_uniform(shape, seed=seed, minval=-limit, maxval=limit, dtype=dtype)


class _GatedCell(RNNCore):
  """Shared variable handling of the LSTM and GRU: kernels w_input [I, nH] and w_hidden
  [H, nH] (n gate blocks), built on the first call. Cells compute in the dtype of their
  inputs, so bf16 inputs run bf16 matmuls against float32 master weights.

  Args:
    num_units: H.
    dtype: the variables' dtype.
    seed: seeds the Glorot-uniform kernels.
    per_gate_hidden_gradient: read by `seq2seq.fast` only (its recurrent gradient's d(h) as
      one matmul per gate); no effect on what is computed.
  """

  _num_gates = None  # set by subclasses

  def __init__(self, num_units, dtype=tf.float32, seed=0, name=None,
               per_gate_hidden_gradient=False):
    super().__init__(name=name)
    if num_units <= 0:
      raise ValueError(f"num_units must be positive, got {num_units}")
    self.num_units = int(num_units)
    self.dtype = tf.as_dtype(dtype)
    self._seed = int(seed)
    self.per_gate_hidden_gradient = bool(per_gate_hidden_gradient)
    self.w_input = None  # [I, nH], created on the first call

  @property
  def output_size(self):
    return self.num_units

  @property
  def built(self):
    return self.w_input is not None

  def build(self, input_size):
    """Creates the variables for inputs of size `input_size`; nothing once built."""
    if self.built:
      return
    width = self._num_gates * self.num_units
    with self.name_scope, tf.init_scope():
      self.w_input = tf.Variable(
          _glorot_uniform([input_size, width], self.dtype, [self._seed, 1]), name="w_input")
      self.w_hidden = tf.Variable(
          _glorot_uniform([self.num_units, width], self.dtype, [self._seed, 2]), name="w_hidden")
      self._build_biases(width)

  def _build_biases(self, width):
    raise NotImplementedError

  @staticmethod
  def like(variable, tensor):
    """`variable` in `tensor`'s dtype (a cast when they differ)."""
    return variable if variable.dtype == tensor.dtype else tf.cast(variable, tensor.dtype)

  def read_weights(self, inputs, names):
    """Builds the cell for `inputs` [B, I] and reads the variables `names` in their dtype."""
    self.build(int(inputs.shape[-1]))
    return [self.like(getattr(self, name), inputs) for name in names]


class LSTMCell(_GatedCell):
  """Long short-term memory cell; state `LSTMState(hidden [B, H], cell [B, H])`.

  Math in `ops.cell_math.lstm_step`. The output is the new hidden state. Variables:
  w_input [I, 4H], w_hidden [H, 4H], bias [4H], gate blocks i, g, f, o.
  """

  _num_gates = 4

  def __init__(self, num_units, forget_bias=1.0, dtype=tf.float32, seed=0, name=None,
               per_gate_hidden_gradient=False):
    super().__init__(num_units, dtype=dtype, seed=seed, name=name,
                     per_gate_hidden_gradient=per_gate_hidden_gradient)
    self.forget_bias = float(forget_bias)

  def _build_biases(self, width):
    self.bias = tf.Variable(tf.zeros([width], self.dtype), name="bias")

  def initial_state(self, batch_size, dtype=None):
    zeros = tf.zeros([batch_size, self.output_size], dtype or self.dtype)
    return LSTMState(hidden=zeros, cell=zeros)

  def __call__(self, inputs, state):
    """inputs [B, I], `LSTMState` of [B, H] -> (h' [B, H], `LSTMState(h', c')`)."""
    w_input, w_hidden, bias = self.read_weights(inputs, ("w_input", "w_hidden", "bias"))
    hidden, cell = cell_math.lstm_step(inputs, state.hidden, state.cell, w_input, w_hidden,
                                       bias, self.forget_bias)
    return hidden, LSTMState(hidden=hidden, cell=cell)


class GRUCell(_GatedCell):
  """Gated recurrent unit; state `GRUState(hidden [B, H])`. Math in `ops.cell_math.gru_step`.
  Variables: w_input [I, 3H], w_hidden [H, 3H], bias_input and bias_hidden [3H], gate blocks
  z, r, n."""

  _num_gates = 3

  def _build_biases(self, width):
    self.bias_input = tf.Variable(tf.zeros([width], self.dtype), name="bias_input")
    self.bias_hidden = tf.Variable(tf.zeros([width], self.dtype), name="bias_hidden")

  def initial_state(self, batch_size, dtype=None):
    return GRUState(hidden=tf.zeros([batch_size, self.output_size], dtype or self.dtype))

  def __call__(self, inputs, state):
    """inputs [B, I], `GRUState` of [B, H] -> (h' [B, H], `GRUState(h')`)."""
    weights = self.read_weights(inputs, ("w_input", "w_hidden", "bias_input", "bias_hidden"))
    hidden = cell_math.gru_step(inputs, state.hidden, *weights)
    return hidden, GRUState(hidden=hidden)


def _check_keep_probs(**probs):
  """Raises ValueError naming the first keep probability outside (0, 1]."""
  for label, prob in probs.items():
    if not 0.0 < prob <= 1.0:
      raise ValueError(f"{label} must be in (0, 1], got {prob}")


class DropoutWrapper(RNNCore):
  """Applies dropout to a core's inputs and outputs (Zaremba et al. 2014: not to the state).

  Every step gets its own masks (`keep_mask`), drawn from `generator`, a `tf.random.Generator`
  whose state is checkpointed by its owner, so a resumed run draws the same masks as an
  uninterrupted one. Masks are in the inputs' dtype. Build the wrapper for training only;
  evaluation uses the bare core (same variables).
  """

  def __init__(self, core, generator, input_keep_prob=1.0, output_keep_prob=1.0, name=None):
    super().__init__(name=name)
    _check_keep_probs(input_keep_prob=input_keep_prob, output_keep_prob=output_keep_prob)
    self.core = core
    self.generator = generator
    self.input_keep_prob = float(input_keep_prob)
    self.output_keep_prob = float(output_keep_prob)

  @property
  def output_size(self):
    return self.core.output_size

  def initial_state(self, batch_size, dtype=None):
    return self.core.initial_state(batch_size, dtype)

  def _mask(self, shape, keep_prob, dtype):
    return keep_mask(self.generator, shape, keep_prob, dtype)

  def __call__(self, inputs, state):
    """One step with fresh masks: input [B, I], output [B, H]."""
    return self.step_with(inputs, state, self.core)

  def step_with(self, inputs, state, run_core):
    """`__call__` with the core run by `run_core(inputs, state)` (another implementation of
    the same core: `seq2seq.fast` passes its own)."""
    batch = dim(inputs, 0)
    inputs = apply_mask(inputs, self._mask([batch, inputs.shape[-1]], self.input_keep_prob,
                                           inputs.dtype))
    output, new_state = run_core(inputs, state)
    return apply_mask(output, self._mask([batch, self.output_size], self.output_keep_prob,
                                         output.dtype)), new_state


class StackedCells(RNNCore):
  """Layers of cores fed one into the next; the state is a tuple of per-layer states."""

  def __init__(self, cores, name=None):
    super().__init__(name=name)
    if not cores:
      raise ValueError("StackedCells needs at least one core")
    self.cores = list(cores)

  @property
  def output_size(self):
    return self.cores[-1].output_size

  def initial_state(self, batch_size, dtype=None):
    return tuple(core.initial_state(batch_size, dtype) for core in self.cores)

  def __call__(self, inputs, state):
    """inputs [B, I], one state per layer -> (the top layer's output [B, H], new states)."""
    return self.step_with(inputs, state, self.cores)

  def step_with(self, inputs, state, run_cores):
    """`__call__` with layer l run by `run_cores[l](inputs, state)` (as `DropoutWrapper`'s)."""
    new_states = []
    for run_core, layer_state in zip(run_cores, state):
      inputs, new_layer_state = run_core(inputs, layer_state)
      new_states.append(new_layer_state)
    return inputs, tuple(new_states)


class ResidualWrapper(RNNCore):
  """Adds the core's input to its output (He et al. 2016; GNMT's residual stacks).

  The input size must equal the core's output size, so in a stack it wraps the layers above
  the first.
  """

  def __init__(self, core, name=None):
    super().__init__(name=name)
    self.core = core

  @property
  def output_size(self):
    return self.core.output_size

  def initial_state(self, batch_size, dtype=None):
    return self.core.initial_state(batch_size, dtype)

  def check_inputs(self, inputs):
    """Raises ValueError unless `inputs` [..., I] has I equal to the core's output size."""
    if inputs.shape[-1] != self.core.output_size:
      raise ValueError(f"a residual connection needs input size {inputs.shape[-1]} to equal the "
                       f"core's output size {self.core.output_size}")

  def __call__(self, inputs, state):
    """inputs [B, H] -> (the core's output + inputs [B, H], the core's new state)."""
    return self.step_with(inputs, state, self.core)

  def step_with(self, inputs, state, run_core):
    """`__call__` with the core run by `run_core(inputs, state)` (as `DropoutWrapper`'s)."""
    self.check_inputs(inputs)
    output, new_state = run_core(inputs, state)
    return output + inputs, new_state


VariationalState = collections.namedtuple(
    "VariationalState", ["core_state", "input_mask", "output_mask", "hidden_mask"])


class VariationalDropoutWrapper(RNNCore):
  """Per-sequence ("variational") dropout (Gal & Ghahramani 2016).

  One mask per sequence for the inputs, the outputs and the recurrent hidden state, drawn in
  `initial_state` and kept in the state, so every step of a sequence drops the same units.
  The recurrent mask applies to the `hidden` field of the core's state (LSTM, GRU); the LSTM
  cell state is left intact. Masks are scaled by 1 / keep_prob. Build it for training only.

  Args:
    core: the wrapped core.
    generator: a `tf.random.Generator` (checkpointed by its owner).
    input_size: I, the size of the inputs (the mask is drawn before the first step).
    input_keep_prob, output_keep_prob, state_keep_prob: in (0, 1].
  """

  def __init__(self, core, generator, input_size, input_keep_prob=1.0, output_keep_prob=1.0,
               state_keep_prob=1.0, name=None):
    super().__init__(name=name)
    _check_keep_probs(input_keep_prob=input_keep_prob, output_keep_prob=output_keep_prob,
                      state_keep_prob=state_keep_prob)
    self.core = core
    self.generator = generator
    self.input_size = int(input_size)
    self.keep_probs = (float(input_keep_prob), float(output_keep_prob), float(state_keep_prob))

  @property
  def output_size(self):
    return self.core.output_size

  def _mask(self, batch_size, size, keep_prob, dtype):
    if keep_prob >= 1.0:
      return tf.ones([batch_size, size], dtype)
    return keep_mask(self.generator, [batch_size, size], keep_prob, dtype)

  def initial_state(self, batch_size, dtype=None):
    core_state = self.core.initial_state(batch_size, dtype)
    dtype = tf.nest.flatten(core_state)[0].dtype
    input_keep, output_keep, state_keep = self.keep_probs
    return VariationalState(
        core_state=core_state,
        input_mask=self._mask(batch_size, self.input_size, input_keep, dtype),
        output_mask=self._mask(batch_size, self.core.output_size, output_keep, dtype),
        hidden_mask=self._mask(batch_size, self.core.output_size, state_keep, dtype))

  def with_core_state(self, state, core_state):
    """`state` (from `initial_state`) with its core state replaced, e.g. by an encoder's."""
    return state._replace(core_state=core_state)

  def __call__(self, inputs, state):
    """inputs [B, I], `VariationalState` -> (output [B, H], the new `VariationalState`)."""
    return self.step_with(inputs, state, self.core)

  def step_with(self, inputs, state, run_core):
    """`__call__` with the core run by `run_core(inputs, state)` (as `DropoutWrapper`'s)."""
    core_state = state.core_state
    if hasattr(core_state, "hidden"):
      core_state = core_state._replace(hidden=core_state.hidden * state.hidden_mask)
    output, new_core_state = run_core(inputs * state.input_mask, core_state)
    return output * state.output_mask, state._replace(core_state=new_core_state)
