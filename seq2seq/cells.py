"""Recurrent cores: one contract, two hand-written cells, and wrappers that compose.

The contract (`RNNCore`), in the style of Sonnet's recurrent cores:

    output, new_state = core(inputs, state)     # inputs [B, I], output [B, H]
    state = core.initial_state(batch_size)      # a namedtuple (or tuple of them) of [B, H]

Variables are created on the first call, when the input size is known, and are exposed as
`trainable_variables` (`tf.Module`). Cores never see sequence lengths: masking of padded
steps belongs to `seq2seq.unroll`.

Adding a cell is: subclass `RNNCore`, implement `__call__`, `initial_state` and
`output_size`, and compare it with a NumPy re-derivation in a test. The train steps are traced
with AutoGraph off (it only cost tracing time): a core's Python runs once, when the step is
traced, so a choice that depends on a tensor's value is `tf.where` or `tf.cond`, not `if`
(which fails when the step is traced: a symbolic tensor has no Python truth value).

Optional fast path: a core may also split its step into `precompute(inputs [B, T, I])`, work
that does not depend on the state and can run for all T steps at once (one big matmul instead
of T small ones, one dropout draw instead of T), and `step(precomputed_t, state)`.
`precompute` returns a nest of [B, T, ...] tensors; the unroll hands `step` each leaf's slice
at step t, [B, ...]. A core whose inputs depend on the state (attention's input feeding) can
still draw its randomness for all steps at once: `presample(B, T, I, dtype)` returns a nest of
[B, T, ...] draws (dropout masks) and `step_presampled(inputs, state, presampled_t)` runs one
step with step t's slice. The defaults pass the inputs through, draw nothing and call
`__call__`, so a new core needs none of these.

A core whose `precompute` treats every (b, t) position alike can also offer
`precompute_time_major(inputs [T, B, I])` (with `time_major_precompute = True`): the static
unroll then slices the time axis where the tensors are contiguous. The cells and the dropout
and residual wrappers do.

The LSTM and GRU steps that follow a `precompute` in the same graph (the static unroll) take
h W_h through `ops.recurrent_matmul.RecurrentMatmul`, whose gradient for W_h is one matmul
over all T steps instead of T; a new cell with a recurrent kernel can do the same.

Two optional answers let the static unroll align the per-step matmuls of a compiled 16-bit
step on a GPU (`unroll.alignment_rows`, `unroll.alignment_units`): `independent_rows` (the
rows of a step depend only on the same rows: extra zero rows may run alongside) and
`padded_units(extra)` (a context in which the core runs with `extra` zero hidden units
appended). Both default to "no"; the cells and the dropout wrapper say yes.
"""
import abc
import collections
import contextlib

import tensorflow as tf
from tensorflow.compiler.tf2xla.python import xla as tf2xla  # pylint: disable=g-direct-tensorflow-import

from ops import cell_math
from ops import recurrent_matmul

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

  def precompute(self, inputs):
    """State-independent work for all steps at once: [B, T, I] -> a nest of [B, T, ...].
    Default: none (the inputs)."""
    return inputs

  def step(self, precomputed, state):
    """One step from `precompute`'s nest at one time index ([B, ...] leaves). Default:
    `__call__`."""
    return self(precomputed, state)

  # Whether `precompute_time_major` exists: `precompute` treats every (b, t) position alike.
  time_major_precompute = False

  # Whether each row of a step's output and new state depends only on the same row of its
  # inputs, state and precomputed slices (the core holds no tensor with batch rows, as
  # attention holds its memory). An unroll may then run the steps on extra rows
  # (`unroll.alignment_rows`). Off unless a core says so.
  independent_rows = False

  def padded_units(self, extra):
    """A context in which the core runs with `extra` hidden units appended, always zero: its
    `output_size` is H + extra, its `precompute` and `step` take and give state leaves
    [B, H + extra] and outputs [B, H + extra] whose last `extra` columns stay 0 (given a zero
    state there), and the first H are what the core computes outside it. None (the default)
    when the core cannot; see `unroll.alignment_units`."""
    del extra
    return None

  def precompute_time_major(self, inputs):
    """`precompute` of time-major inputs [T, B, I] -> the same nest, time-major [T, B, ...].

    With it, an unroll slices the time axis of contiguous tensors: no transposes of the
    precomputed [B, T, nH] tensors forward, nor of their gradients backward (on the H200
    they were 0.5 ms of the seed_b256 step). Random draws must equal `precompute`'s from the
    same generator state (draw [B, T, ...], then transpose). Only for cores whose
    `time_major_precompute` is True.
    """
    raise NotImplementedError(f"{type(self).__name__} has no time-major precompute")

  def presample(self, batch_size, num_steps, input_size, dtype):
    """Random draws of T steps at once that depend on neither inputs nor state (dropout
    masks), for inputs of size I: a nest of [B, T, ...]. Default: none, `()`."""
    del batch_size, num_steps, input_size, dtype
    return ()

  def step_presampled(self, inputs, state, presampled):
    """`__call__` with step t's slice of `presample` ([B, ...] leaves) instead of fresh
    draws. Default: `__call__`."""
    del presampled
    return self(inputs, state)


@contextlib.contextmanager
def _extra_units_set(core, extra, inner=None):
  """Inside `inner` (a context, e.g. the wrapped core's `padded_units`), sets
  `core._extra_units` to `extra` for the duration; 0 again on leaving."""
  with inner or contextlib.nullcontext():
    core._extra_units = int(extra)  # pylint: disable=protected-access
    try:
      yield
    finally:
      core._extra_units = 0  # pylint: disable=protected-access


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

  Two choices keep an XLA-compiled step small (seed_b256, H200, 2026-11-30: 22,603 optimized
  HLO instructions -> 18,648; first step 14.2-17.1 s -> 11.9-12.0 s in one lease; step back
  to back 5.42-5.44 -> 5.36-5.37 ms):
  - the generator's own draw (its state read as the Philox key and counter), not
    stateless_uniform of `generator.make_seeds`, which hashes a seed into a key and counter
    (StatelessRandomGetKeyCounter): scalar work that XLA copied into each kernel using it;
  - in a compiled graph the mask goes behind an optimization barrier, so that one kernel
    writes it and the steps read it, instead of XLA fusing the Philox rounds into every
    kernel that applies a step's slice of it, forward and backward.
  """
  if keep_prob >= 1.0:
    return ()
  keep = generator.uniform(shape, dtype=tf.float32) < keep_prob
  mask = tf.cast(keep, dtype) / tf.cast(keep_prob, dtype)
  if cell_math.in_xla_function():
    mask, = tf2xla.optimization_barrier(mask)
  return mask


def apply_mask(tensor, mask):
  """`tensor` * `mask`, or `tensor` itself for the empty mask `()` of `keep_mask`."""
  return tensor if isinstance(mask, tuple) and not mask else tensor * mask


def _glorot_uniform(shape, dtype, seed):
  fan_in, fan_out = shape
  limit = (6.0 / (fan_in + fan_out)) ** 0.5
  return tf.random.stateless_uniform(shape, seed=seed, minval=-limit, maxval=limit, dtype=dtype)


class _GatedCell(RNNCore):
  """Shared variable handling of the LSTM and GRU: kernels [I, nH] and [H, nH], lazily built."""

  _num_gates = None  # set by subclasses
  independent_rows = True
  _extra_units = 0  # hidden units appended inside `padded_units`

  def __init__(self, num_units, dtype=tf.float32, seed=0, name=None,
               per_gate_hidden_gradient=False):
    super().__init__(name=name)
    if num_units <= 0:
      raise ValueError(f"num_units must be positive, got {num_units}")
    self.num_units = int(num_units)
    self.dtype = tf.as_dtype(dtype)
    self._seed = int(seed)
    # d(h) of the unrolled steps as one matmul per gate, summed (`ops.recurrent_matmul`)
    self.per_gate_hidden_gradient = bool(per_gate_hidden_gradient)
    self.w_input = None  # [I, nH], created on the first call

  @property
  def output_size(self):
    return self.num_units + self._extra_units

  def padded_units(self, extra):
    """Appends `extra` units whose weights (read zero-padded, `_read`) are zero: their gates
    are 0, so an LSTM's c and h and a GRU's h stay 0 there from a zero state."""
    return _extra_units_set(self, extra)

  def _pad_units(self, name, weight):
    """Variable `name`'s value `weight` with the `padded_units` zeros appended: after each
    gate's H columns of a kernel [I, nH] or bias [nH], and after W_h's H rows."""
    extra = self._extra_units
    if not extra:
      return weight
    gates, units = self._num_gates, self.num_units
    if weight.shape.rank == 1:
      return tf.reshape(tf.pad(tf.reshape(weight, [gates, units]), [[0, 0], [0, extra]]), [-1])
    rows = extra if name == "w_hidden" else 0
    padded = tf.pad(tf.reshape(weight, [-1, gates, units]), [[0, rows], [0, 0], [0, extra]])
    return tf.reshape(padded, [-1, gates * (units + extra)])

  def _read(self, name, like):
    """Variable `name` in `like`'s dtype, with any `padded_units` appended."""
    return self._pad_units(name, self._like(getattr(self, name), like))

  @property
  def built(self):
    return self.w_input is not None

  def build(self, input_size):
    """Creates the variables for inputs of size `input_size`. Called by the first `__call__`."""
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

  def _maybe_build(self, inputs):
    if not self.built:
      self.build(int(inputs.shape[-1]))

  @staticmethod
  def _like(variable, tensor):
    """`variable` in `tensor`'s dtype: cells compute in the dtype of their inputs, so bf16
    inputs run bf16 matmuls against float32 master weights."""
    return variable if variable.dtype == tensor.dtype else tf.cast(variable, tensor.dtype)

  # The variables `step` reads, by attribute name (set by subclasses).
  _step_variables = ()

  time_major_precompute = True

  def precompute_time_major(self, inputs):
    """[T, B, I] -> [T, B, nH]: `precompute` (of the subclass) along time axis 0."""
    return self.precompute(inputs, time_axis=0)

  def _read_step_weights(self, like, time_axis=1):
    """Reads the variables `step` uses, for the steps that follow, when `like` (the inputs)
    has the variables' dtype.

    `precompute` calls it: an unroll runs `precompute` once, before its time loop. Inside a
    `tf.while_loop` (`unroll.dynamic_unroll`) a variable read in the body is read, and kept
    for the gradient, again at every iteration; read here, outside the loop, it is one
    loop-invariant tensor. A cast (bf16 inputs) stays in each step of such a loop: cast once,
    the steps' weight gradients would be summed in bf16 instead of float32 (and, measured on
    the H200, the compiled seed_b256 step was slower: 836 kernels instead of 802). Eagerly
    nothing is kept (a later step must see later values). Steps in this graph (the static
    unroll) multiply through `_start_recurrent_product`'s one read instead.
    """
    self._step_weights = None
    if not tf.executing_eagerly() and like.dtype == self.dtype:
      self._step_weights = _StepWeights(
          tf.compat.v1.get_default_graph(),
          {name: tf.convert_to_tensor(self._read(name, like)) for name in self._step_variables})
    self._start_recurrent_product(like, time_axis)

  def _start_recurrent_product(self, like, time_axis):
    """Sets up h W_h for the T steps that follow a `precompute` of `like` ([B, T, I], or
    [T, B, I] when `time_axis` is 0), with W_h's gradient as one matmul over the steps
    (`ops.recurrent_matmul`, stacking them on `time_axis`) instead of T.

    Only for steps traced in this graph (the static unroll), not eagerly nor in a
    `tf.while_loop` body, whose gradient is traced once for all iterations. The weight is
    read (and cast to `like`'s dtype) once: no gradient goes through the steps' reads.
    """
    self._recurrent = None
    num_steps = like.shape[time_axis] if like.shape.rank == 3 else None
    if tf.executing_eagerly() or num_steps is None or cell_math.in_loop_body():
      return
    self._recurrent = _RecurrentSteps(
        tf.compat.v1.get_default_graph(),
        recurrent_matmul.RecurrentMatmul(
            self._step_weight("w_hidden", like), time_axis,
            gate_blocks=self._num_gates if self.per_gate_hidden_gradient else 1),
        num_steps)

  def _hidden_product(self, hidden):
    """hidden [B, H] @ W_h [H, nH] for one step: through the latest `precompute`'s
    `RecurrentMatmul` while this is one of its T steps in its graph; else a plain matmul."""
    recurrent = getattr(self, "_recurrent", None)
    if (recurrent is not None and recurrent.matmul.num_steps < recurrent.num_steps
        and recurrent.graph is tf.compat.v1.get_default_graph()
        and hidden.dtype == recurrent.matmul.dtype):
      return recurrent.matmul(hidden)
    return tf.matmul(hidden, self._step_weight("w_hidden", hidden))

  def _step_weight(self, name, like):
    """Variable `name` in `like`'s dtype: the read of the latest `precompute` when it was
    made in the graph being built or in one enclosing it (a loop body's outer graph)."""
    kept = getattr(self, "_step_weights", None)
    if kept is not None and like.dtype == self.dtype:
      graph = tf.compat.v1.get_default_graph()
      while graph is not None:
        if graph is kept.graph:
          return kept.weights[name]
        graph = getattr(graph, "outer_graph", None)
    return self._read(name, like)


class _StepWeights:
  """What `_GatedCell._read_step_weights` keeps: the graph of the reads, and the read tensors
  by variable name. A plain object, so that `tf.Module` does not track it (for checkpoints
  or SavedModels) as it would a tuple or a dict."""

  def __init__(self, graph, weights):
    self.graph = graph
    self.weights = weights


class _RecurrentSteps:
  """What `_GatedCell._start_recurrent_product` keeps (a plain object, untracked like
  `_StepWeights`): the graph of the steps, their `RecurrentMatmul`, and how many steps it
  serves (the T of the `precompute`)."""

  def __init__(self, graph, matmul, num_steps):
    self.graph = graph
    self.matmul = matmul
    self.num_steps = num_steps


class LSTMCell(_GatedCell):
  """Long short-term memory cell; state `LSTMState(hidden [B, H], cell [B, H])`.

  Math in `ops.cell_math.lstm_step`. The output is the new hidden state.
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
    self._maybe_build(inputs)
    like = lambda v: self._like(v, inputs)
    hidden, cell = cell_math.lstm_step(
        inputs, state.hidden, state.cell, like(self.w_input), like(self.w_hidden),
        like(self.bias), self.forget_bias)
    return hidden, LSTMState(hidden=hidden, cell=cell)

  _step_variables = ("w_hidden",)

  def precompute(self, inputs, time_axis=1):
    """x W_x + b for all steps: [B, T, I] -> [B, T, 4H] in one matmul."""
    self._maybe_build(inputs)
    self._read_step_weights(inputs, time_axis)
    return cell_math.input_projection(inputs, self._read("w_input", inputs),
                                      self._read("bias", inputs))

  def step(self, precomputed, state):
    gates = precomputed + self._hidden_product(state.hidden)
    hidden, cell = cell_math.lstm_gates_to_state(gates, state.cell, self.forget_bias)
    return hidden, LSTMState(hidden=hidden, cell=cell)


class GRUCell(_GatedCell):
  """Gated recurrent unit; state `GRUState(hidden [B, H])`. Math in `ops.cell_math.gru_step`."""

  _num_gates = 3

  def _build_biases(self, width):
    self.bias_input = tf.Variable(tf.zeros([width], self.dtype), name="bias_input")
    self.bias_hidden = tf.Variable(tf.zeros([width], self.dtype), name="bias_hidden")

  def initial_state(self, batch_size, dtype=None):
    return GRUState(hidden=tf.zeros([batch_size, self.output_size], dtype or self.dtype))

  def __call__(self, inputs, state):
    self._maybe_build(inputs)
    like = lambda v: self._like(v, inputs)
    hidden = cell_math.gru_step(inputs, state.hidden, like(self.w_input), like(self.w_hidden),
                                like(self.bias_input), like(self.bias_hidden))
    return hidden, GRUState(hidden=hidden)

  _step_variables = ("w_hidden", "bias_hidden")

  def precompute(self, inputs, time_axis=1):
    """x W_x + b_x for all steps: [B, T, I] -> [B, T, 3H] in one matmul."""
    self._maybe_build(inputs)
    self._read_step_weights(inputs, time_axis)
    return cell_math.input_projection(inputs, self._read("w_input", inputs),
                                      self._read("bias_input", inputs))

  def step(self, precomputed, state):
    projected_hidden = (self._hidden_product(state.hidden)
                        + self._step_weight("bias_hidden", precomputed))
    hidden = cell_math.gru_gates_to_state(precomputed, projected_hidden, state.hidden)
    return hidden, GRUState(hidden=hidden)


DropoutMasks = collections.namedtuple("DropoutMasks", ["input", "output", "core"])
DropoutPrecomputed = collections.namedtuple("DropoutPrecomputed", ["core", "output_mask"])


class DropoutWrapper(RNNCore):
  """Applies dropout to a core's inputs and outputs (Zaremba et al. 2014: not to the state).

  Every step gets its own masks, drawn from `generator`, a `tf.random.Generator` whose state is
  checkpointed by its owner, so a resumed run draws the same masks as an uninterrupted one.
  Unrolled (`precompute`/`step`, or `presample`/`step_presampled`), the masks of all T steps
  come from one draw per mask, [B, T, ...]: the law of T per-step draws in one op. Both draw
  the input mask, the output mask, then the core's, so from one generator state they draw the
  same masks. Masks are `keep_mask`s in the inputs' dtype. Build the wrapper for training
  only; evaluation uses the bare core (same variables).
  """

  def __init__(self, core, generator, input_keep_prob=1.0, output_keep_prob=1.0, name=None):
    super().__init__(name=name)
    for label, prob in (("input_keep_prob", input_keep_prob),
                        ("output_keep_prob", output_keep_prob)):
      if not 0.0 < prob <= 1.0:
        raise ValueError(f"{label} must be in (0, 1], got {prob}")
    self.core = core
    self.generator = generator
    self.input_keep_prob = float(input_keep_prob)
    self.output_keep_prob = float(output_keep_prob)

  @property
  def independent_rows(self):
    return self.core.independent_rows

  _extra_units = 0  # the core's units appended inside `padded_units`

  def padded_units(self, extra):
    """The core's `padded_units`; output masks are drawn for the core's own units and padded,
    so that they are the masks drawn without the padding."""
    inner = self.core.padded_units(extra)
    return None if inner is None else _extra_units_set(self, extra, inner)

  def _output_mask(self, shape, dtype):
    """An output mask of `shape` [..., H]: the draw for the core's own units, then zeros for
    any `padded_units`."""
    extra = self._extra_units
    mask = self._mask(shape[:-1] + [shape[-1] - extra], self.output_keep_prob, dtype)
    if not extra or isinstance(mask, tuple):
      return mask
    return tf.pad(mask, [[0, 0]] * (len(shape) - 1) + [[0, extra]])

  @property
  def output_size(self):
    return self.core.output_size

  def initial_state(self, batch_size, dtype=None):
    return self.core.initial_state(batch_size, dtype)

  def _mask(self, shape, keep_prob, dtype):
    return keep_mask(self.generator, shape, keep_prob, dtype)

  def __call__(self, inputs, state):
    """One step with fresh masks: input [B, I], output [B, H]."""
    batch = dim(inputs, 0)
    inputs = apply_mask(inputs, self._mask([batch, inputs.shape[-1]], self.input_keep_prob,
                                           inputs.dtype))
    output, new_state = self.core(inputs, state)
    return apply_mask(output, self._mask([batch, self.output_size], self.output_keep_prob,
                                         output.dtype)), new_state

  def precompute(self, inputs):
    """[B, T, I] -> `DropoutPrecomputed(core's precomputation of the dropped-out inputs,
    output mask [B, T, H])`."""
    input_mask, output_mask = self._sequence_masks(dim(inputs, 0), dim(inputs, 1), inputs)
    return DropoutPrecomputed(core=self.core.precompute(apply_mask(inputs, input_mask)),
                              output_mask=output_mask)

  @property
  def time_major_precompute(self):
    return self.core.time_major_precompute

  def precompute_time_major(self, inputs):
    """[T, B, I] -> `DropoutPrecomputed` with time-major leaves; the masks are `precompute`'s
    draws, transposed."""
    masks = self._sequence_masks(dim(inputs, 1), dim(inputs, 0), inputs)
    input_mask, output_mask = (mask if isinstance(mask, tuple) else time_major(mask)
                               for mask in masks)
    return DropoutPrecomputed(
        core=self.core.precompute_time_major(apply_mask(inputs, input_mask)),
        output_mask=output_mask)

  def _sequence_masks(self, batch, steps, inputs):
    """The input mask [B, T, I] and output mask [B, T, H] of B sequences of T steps (each `()`
    when its keep probability is 1)."""
    return (self._mask([batch, steps, inputs.shape[-1]], self.input_keep_prob, inputs.dtype),
            self._output_mask([batch, steps, self.output_size], inputs.dtype))

  def step(self, precomputed, state):
    output, new_state = self.core.step(precomputed.core, state)
    return apply_mask(output, precomputed.output_mask), new_state

  def presample(self, batch_size, num_steps, input_size, dtype):
    """`DropoutMasks(input [B, T, I], output [B, T, H], the core's presample)`."""
    return DropoutMasks(
        input=self._mask([batch_size, num_steps, input_size], self.input_keep_prob, dtype),
        output=self._output_mask([batch_size, num_steps, self.output_size], dtype),
        core=self.core.presample(batch_size, num_steps, input_size, dtype))

  def step_presampled(self, inputs, state, presampled):
    output, new_state = self.core.step_presampled(apply_mask(inputs, presampled.input), state,
                                                  presampled.core)
    return apply_mask(output, presampled.output), new_state


class StackedCells(RNNCore):
  """Layers of cores fed one into the next; the state is a tuple of per-layer states.

  Unrolled step-major, the first layer precomputes (its inputs are known for all steps) and
  the layers above presample (their inputs are the outputs of the layer below).
  """

  def __init__(self, cores, name=None):
    super().__init__(name=name)
    if not cores:
      raise ValueError("StackedCells needs at least one core")
    self.cores = list(cores)

  @property
  def independent_rows(self):
    return all(core.independent_rows for core in self.cores)

  @property
  def output_size(self):
    return self.cores[-1].output_size

  def initial_state(self, batch_size, dtype=None):
    return tuple(core.initial_state(batch_size, dtype) for core in self.cores)

  def __call__(self, inputs, state):
    new_states = []
    for core, layer_state in zip(self.cores, state):
      inputs, new_layer_state = core(inputs, layer_state)
      new_states.append(new_layer_state)
    return inputs, tuple(new_states)

  def _presample_above(self, batch_size, num_steps, dtype):
    """The presample of each layer above the first, whose input is the layer below's output."""
    return tuple(core.presample(batch_size, num_steps, below.output_size, dtype)
                 for below, core in zip(self.cores, self.cores[1:]))

  def precompute(self, inputs):
    """[B, T, I] -> (the first layer's precomputation, the presample of each layer above)."""
    first = self.cores[0].precompute(inputs)
    return (first,) + self._presample_above(dim(inputs, 0), dim(inputs, 1), inputs.dtype)

  def step(self, precomputed, state):
    inputs, first_state = self.cores[0].step(precomputed[0], state[0])
    output, above_states = _step_layers(self.cores[1:], inputs, state[1:], precomputed[1:])
    return output, (first_state,) + above_states

  def presample(self, batch_size, num_steps, input_size, dtype):
    """A tuple with each layer's presample."""
    first = self.cores[0].presample(batch_size, num_steps, input_size, dtype)
    return (first,) + self._presample_above(batch_size, num_steps, dtype)

  def step_presampled(self, inputs, state, presampled):
    return _step_layers(self.cores, inputs, state, presampled)


def _step_layers(cores, inputs, states, presampled):
  """Runs `cores`, each fed the output of the previous one, by `step_presampled`."""
  new_states = []
  for core, layer_state, layer_presampled in zip(cores, states, presampled):
    inputs, new_layer_state = core.step_presampled(inputs, layer_state, layer_presampled)
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
  def independent_rows(self):
    return self.core.independent_rows

  @property
  def output_size(self):
    return self.core.output_size

  def initial_state(self, batch_size, dtype=None):
    return self.core.initial_state(batch_size, dtype)

  def _check(self, inputs):
    if inputs.shape[-1] != self.core.output_size:
      raise ValueError(f"a residual connection needs input size {inputs.shape[-1]} to equal the "
                       f"core's output size {self.core.output_size}")

  def __call__(self, inputs, state):
    self._check(inputs)
    output, new_state = self.core(inputs, state)
    return output + inputs, new_state

  def precompute(self, inputs):
    """[B, T, I] -> (the core's precomputation, the inputs [B, T, I])."""
    self._check(inputs)
    return self.core.precompute(inputs), inputs

  @property
  def time_major_precompute(self):
    return self.core.time_major_precompute

  def precompute_time_major(self, inputs):
    """[T, B, I] -> (the core's time-major precomputation, the inputs)."""
    self._check(inputs)
    return self.core.precompute_time_major(inputs), inputs

  def step(self, precomputed, state):
    core_precomputed, inputs = precomputed
    output, new_state = self.core.step(core_precomputed, state)
    return output + inputs, new_state

  def presample(self, batch_size, num_steps, input_size, dtype):
    return self.core.presample(batch_size, num_steps, input_size, dtype)

  def step_presampled(self, inputs, state, presampled):
    self._check(inputs)
    output, new_state = self.core.step_presampled(inputs, state, presampled)
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
    for label, prob in (("input_keep_prob", input_keep_prob),
                        ("output_keep_prob", output_keep_prob),
                        ("state_keep_prob", state_keep_prob)):
      if not 0.0 < prob <= 1.0:
        raise ValueError(f"{label} must be in (0, 1], got {prob}")
    self.core = core
    self.generator = generator
    self.input_size = int(input_size)
    self.keep_probs = (float(input_keep_prob), float(output_keep_prob), float(state_keep_prob))

  @property
  def independent_rows(self):
    return self.core.independent_rows

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
    core_state = state.core_state
    if hasattr(core_state, "hidden"):
      core_state = core_state._replace(hidden=core_state.hidden * state.hidden_mask)
    output, new_core_state = self.core(inputs * state.input_mask, core_state)
    return output * state.output_mask, state._replace(core_state=new_core_state)
