"""Fast views of the built-in cores: the same step on the same variables, split for speed.

`adapt(core)` returns a `FastCore` for a core built only from the built-in classes of
`seq2seq.nn.cells` and `seq2seq.nn.attention` (exact types: a subclass may change the step), else
None. A `FastCore` reads the reference core's variables and owns none, so checkpoints see only
the reference tree; it is made for one unroll and keeps, for that unroll, the weights it read
and its `RecurrentMatmul`.
"""
import collections
import contextlib
import functools

import tensorflow as tf

from ops import cell_math
from seq2seq.fast import activations
from seq2seq.fast import masks
from seq2seq.fast import recurrent_matmul
from seq2seq.nn import attention as attention_lib
from seq2seq.nn import cells


class FastCore:
  """The fast layer's contract, around a reference core `reference` (its `__call__` math).

  Beyond the cell contract (`__call__`, `initial_state`, `output_size`, the reference's):
  - `precompute(inputs [B, T, I])`: the work that does not depend on the state, for all T
    steps at once (one big matmul instead of T small ones, one dropout draw instead of T): a
    nest of [B, T, ...]; `step(precomputed_t, state)` runs step t from each leaf's slice t.
  - `time_major_precompute` / `precompute_time_major(inputs [T, B, I])`: the same nest,
    time-major, for cores whose `precompute` treats every (b, t) alike; random draws equal
    `precompute`'s from the same generator state (drawn [B, T, ...], then transposed).
  - `presample(B, T, I, dtype)`: the random draws of T steps (dropout masks), a nest of
    [B, T, ...], for a core whose inputs depend on the state (attention's input feeding);
    `step_presampled(inputs, state, presampled_t)` runs a step with step t's slice.
  - `independent_rows`: each row of a step depends only on the same rows of its inputs and
    state, so extra zero rows may run alongside (`unroll.alignment_rows`).
  - `padded_units(extra)`: a context in which the core runs with `extra` zero hidden units
    appended (outputs and state leaves [B, H + extra], the last `extra` columns 0 given a
    zero state there, the first H unchanged), or None when it cannot
    (`unroll.alignment_units`).
  The defaults pass the inputs through, draw nothing and run `__call__`.
  """

  independent_rows = False
  time_major_precompute = False

  def __init__(self, reference):
    self.reference = reference

  @property
  def output_size(self):
    return self.reference.output_size

  def initial_state(self, batch_size, dtype=None):
    return self.reference.initial_state(batch_size, dtype)

  def __call__(self, inputs, state):
    return self.reference(inputs, state)

  def precompute(self, inputs):
    return inputs

  def step(self, precomputed, state):
    return self(precomputed, state)

  def precompute_time_major(self, inputs):
    raise NotImplementedError(f"{type(self).__name__} has no time-major precompute")

  def presample(self, batch_size, num_steps, input_size, dtype):
    del batch_size, num_steps, input_size, dtype
    return ()

  def step_presampled(self, inputs, state, presampled):
    del presampled
    return self(inputs, state)

  def padded_units(self, extra):
    del extra
    return None


# Reference class -> its FastCore class (`register`).
_FAST_CLASSES = {}


def register(reference_class):
  """Class decorator: the decorated `FastCore` class runs cores of exactly `reference_class`."""
  def decorate(fast_class):
    _FAST_CLASSES[reference_class] = fast_class
    return fast_class
  return decorate


def adapt(core):
  """The `FastCore` of `core` (a reference core), or None when some core in it is not a
  built-in one."""
  fast_class = _FAST_CLASSES.get(type(core))
  return None if fast_class is None else fast_class.adapt(core)


class _Wrapper(FastCore):
  """A fast wrapper of one inner core (`reference.core`), itself adapted."""

  def __init__(self, reference, inner):
    super().__init__(reference)
    self.inner = inner

  @classmethod
  def adapt(cls, reference):
    inner = adapt(reference.core)
    return None if inner is None else cls(reference, inner)

  @property
  def independent_rows(self):
    return self.inner.independent_rows

  def __call__(self, inputs, state):
    return self.reference.step_with(inputs, state, self.inner)


@contextlib.contextmanager
def _extra_units_set(core, extra, inner=None):
  """Inside `inner` (a context, e.g. the wrapped core's `padded_units`), sets
  `core.extra_units` to `extra` for the duration; 0 again on leaving."""
  with inner or contextlib.nullcontext():
    core.extra_units = int(extra)
    try:
      yield
    finally:
      core.extra_units = 0


class _FastGated(FastCore):
  """The LSTM and GRU cells: x W_x + b for all steps in one matmul, h W_h through a
  `RecurrentMatmul` in a static unroll, the weights read once before a loop over time."""

  independent_rows = True
  time_major_precompute = True
  extra_units = 0  # hidden units appended inside `padded_units`
  _step_variables = ()  # the variables `step` reads, by attribute name

  def __init__(self, reference):
    super().__init__(reference)
    self._step_weights = None
    self._recurrent = None

  @classmethod
  def adapt(cls, reference):
    return cls(reference)

  @property
  def output_size(self):
    return self.reference.num_units + self.extra_units

  def padded_units(self, extra):
    """Appends `extra` units whose weights (read zero-padded, `_read`) are zero: their gates
    are 0, so an LSTM's c and h and a GRU's h stay 0 there from a zero state."""
    return _extra_units_set(self, extra)

  def _pad_units(self, name, weight):
    """Variable `name`'s value `weight` with the `padded_units` zeros appended: after each
    gate's H columns of a kernel [I, nH] or bias [nH], and after W_h's H rows."""
    extra = self.extra_units
    if not extra:
      return weight
    gates, units = self.reference._num_gates, self.reference.num_units  # pylint: disable=protected-access
    if weight.shape.rank == 1:
      return tf.reshape(tf.pad(tf.reshape(weight, [gates, units]), [[0, 0], [0, extra]]), [-1])
    rows = extra if name == "w_hidden" else 0
    padded = tf.pad(tf.reshape(weight, [-1, gates, units]), [[0, rows], [0, 0], [0, extra]])
    return tf.reshape(padded, [-1, gates * (units + extra)])

  def _read(self, name, like):
    """Variable `name` in `like`'s dtype, with any `padded_units` appended."""
    return self._pad_units(name, self.reference.like(getattr(self.reference, name), like))

  def precompute_time_major(self, inputs):
    """[T, B, I] -> [T, B, nH]: `precompute` along time axis 0."""
    return self.precompute(inputs, time_axis=0)

  def _project_inputs(self, inputs, time_axis, bias_name):
    """x W_x + b for all steps: [B, T, I] (or [T, B, I]) -> [B, T, nH] in one matmul, after
    reading the steps' weights (`_read_step_weights`)."""
    self.reference.build(int(inputs.shape[-1]))
    self._read_step_weights(inputs, time_axis)
    return cell_math.input_projection(inputs, self._read("w_input", inputs),
                                      self._read(bias_name, inputs))

  def _read_step_weights(self, like, time_axis=1):
    """Reads the variables `step` uses, for the steps that follow, when `like` (the inputs)
    has the variables' dtype.

    Inside a `tf.while_loop` (the dynamic unroll) a variable read in the body is read, and
    kept for the gradient, again at every iteration; read here, before the loop, it is one
    loop-invariant tensor. A cast (bf16 inputs) stays in each step of such a loop: cast once,
    the steps' weight gradients would be summed in bf16 instead of float32 (and the compiled
    seed_b256 step was slower). Eagerly nothing is kept (a later step must see later
    values). Steps in this graph (the static unroll) multiply through
    `_start_recurrent_product`'s one read instead.
    """
    self._step_weights = None
    if not tf.executing_eagerly() and like.dtype == self.reference.dtype:
      self._step_weights = (
          tf.compat.v1.get_default_graph(),
          {name: tf.convert_to_tensor(self._read(name, like)) for name in self._step_variables})
    self._start_recurrent_product(like, time_axis)

  def _start_recurrent_product(self, like, time_axis):
    """Sets up h W_h for the T steps that follow a `precompute` of `like` ([B, T, I], or
    [T, B, I] when `time_axis` is 0), with W_h's gradient as one matmul over the steps
    (`recurrent_matmul`, stacking them on `time_axis`) instead of T.

    Only for steps traced in this graph (the static unroll), not eagerly nor in a
    `tf.while_loop` body, whose gradient is traced once for all iterations. The weight is
    read (and cast to `like`'s dtype) once: no gradient goes through the steps' reads.
    """
    self._recurrent = None
    num_steps = like.shape[time_axis] if like.shape.rank == 3 else None
    if tf.executing_eagerly() or num_steps is None or activations.in_loop_body():
      return
    gate_blocks = (self.reference._num_gates  # pylint: disable=protected-access
                   if self.reference.per_gate_hidden_gradient else 1)
    self._recurrent = (
        tf.compat.v1.get_default_graph(),
        recurrent_matmul.RecurrentMatmul(self._step_weight("w_hidden", like), time_axis,
                                         gate_blocks=gate_blocks),
        num_steps)

  def _hidden_product(self, hidden):
    """hidden [B, H] @ W_h [H, nH] for one step: through the latest `precompute`'s
    `RecurrentMatmul` while this is one of its T steps in its graph; else a plain matmul."""
    if self._recurrent is not None:
      graph, matmul, num_steps = self._recurrent
      if (matmul.num_steps < num_steps and graph is tf.compat.v1.get_default_graph()
          and hidden.dtype == matmul.dtype):
        return matmul(hidden)
    return tf.matmul(hidden, self._step_weight("w_hidden", hidden))

  def _step_weight(self, name, like):
    """Variable `name` in `like`'s dtype: the read of the latest `precompute` when it was
    made in the graph being built or in one enclosing it (a loop body's outer graph)."""
    if self._step_weights is not None and like.dtype == self.reference.dtype:
      kept_graph, weights = self._step_weights
      graph = tf.compat.v1.get_default_graph()
      while graph is not None:
        if graph is kept_graph:
          return weights[name]
        graph = getattr(graph, "outer_graph", None)
    return self._read(name, like)


@register(cells.LSTMCell)
class FastLSTM(_FastGated):
  """`cells.LSTMCell`, with `activations.lstm_gates_to_state`."""

  _step_variables = ("w_hidden",)

  def __call__(self, inputs, state):
    weights = self.reference.read_weights(inputs, ("w_input", "w_hidden", "bias"))
    hidden, cell = cell_math.lstm_step(
        inputs, state.hidden, state.cell, *weights, self.reference.forget_bias,
        gates_to_state=activations.lstm_gates_to_state)
    return hidden, cells.LSTMState(hidden=hidden, cell=cell)

  def precompute(self, inputs, time_axis=1):
    """x W_x + b for all steps: [B, T, I] -> [B, T, 4H] in one matmul."""
    return self._project_inputs(inputs, time_axis, "bias")

  def step(self, precomputed, state):
    gates = precomputed + self._hidden_product(state.hidden)
    hidden, cell = activations.lstm_gates_to_state(gates, state.cell,
                                                   self.reference.forget_bias)
    return hidden, cells.LSTMState(hidden=hidden, cell=cell)


@register(cells.GRUCell)
class FastGRU(_FastGated):
  """`cells.GRUCell`, with `activations`' sigmoid and tanh."""

  _step_variables = ("w_hidden", "bias_hidden")

  def __call__(self, inputs, state):
    weights = self.reference.read_weights(
        inputs, ("w_input", "w_hidden", "bias_input", "bias_hidden"))
    hidden = cell_math.gru_step(inputs, state.hidden, *weights, sigmoid=activations.sigmoid,
                                tanh=activations.tanh)
    return hidden, cells.GRUState(hidden=hidden)

  def precompute(self, inputs, time_axis=1):
    """x W_x + b_x for all steps: [B, T, I] -> [B, T, 3H] in one matmul."""
    return self._project_inputs(inputs, time_axis, "bias_input")

  def step(self, precomputed, state):
    projected_hidden = (self._hidden_product(state.hidden)
                        + self._step_weight("bias_hidden", precomputed))
    hidden = activations.gru_gates_to_state(precomputed, projected_hidden, state.hidden)
    return hidden, cells.GRUState(hidden=hidden)


DropoutMasks = collections.namedtuple("DropoutMasks", ["input", "output", "core"])
DropoutPrecomputed = collections.namedtuple("DropoutPrecomputed", ["core", "output_mask"])


@register(cells.DropoutWrapper)
class FastDropout(_Wrapper):
  """`cells.DropoutWrapper` with the masks of all T steps drawn at once, [B, T, ...]: the law
  of T per-step draws in one op. `precompute` and `presample` both draw the input mask, the
  output mask, then the core's, so from one generator state they draw the same masks. Masks
  are `masks.keep_mask`s in the inputs' dtype."""

  extra_units = 0  # the core's units appended inside `padded_units`

  def padded_units(self, extra):
    """The core's `padded_units`; output masks are drawn for the core's own units and padded,
    so that they are the masks drawn without the padding."""
    inner = self.inner.padded_units(extra)
    return None if inner is None else _extra_units_set(self, extra, inner)

  @property
  def output_size(self):
    return self.inner.output_size

  def _mask(self, shape, keep_prob, dtype):
    return masks.keep_mask(self.reference.generator, shape, keep_prob, dtype)

  def _output_mask(self, shape, dtype):
    """An output mask of `shape` [..., H]: the draw for the core's own units, then zeros for
    any `padded_units`."""
    extra = self.extra_units
    mask = self._mask(shape[:-1] + [shape[-1] - extra], self.reference.output_keep_prob, dtype)
    if not extra or isinstance(mask, tuple):
      return mask
    return tf.pad(mask, [[0, 0]] * (len(shape) - 1) + [[0, extra]])

  def _sequence_masks(self, batch, steps, inputs):
    """The input mask [B, T, I] and output mask [B, T, H] of B sequences of T steps (each `()`
    when its keep probability is 1)."""
    return (self._mask([batch, steps, inputs.shape[-1]], self.reference.input_keep_prob,
                       inputs.dtype),
            self._output_mask([batch, steps, self.output_size], inputs.dtype))

  def precompute(self, inputs):
    """[B, T, I] -> `DropoutPrecomputed(core's precomputation of the dropped-out inputs,
    output mask [B, T, H])`."""
    input_mask, output_mask = self._sequence_masks(cells.dim(inputs, 0), cells.dim(inputs, 1),
                                                   inputs)
    return DropoutPrecomputed(core=self.inner.precompute(cells.apply_mask(inputs, input_mask)),
                              output_mask=output_mask)

  @property
  def time_major_precompute(self):
    return self.inner.time_major_precompute

  def precompute_time_major(self, inputs):
    """[T, B, I] -> `DropoutPrecomputed` with time-major leaves; the masks are `precompute`'s
    draws, transposed."""
    drawn = self._sequence_masks(cells.dim(inputs, 1), cells.dim(inputs, 0), inputs)
    input_mask, output_mask = (mask if isinstance(mask, tuple) else cells.time_major(mask)
                               for mask in drawn)
    return DropoutPrecomputed(
        core=self.inner.precompute_time_major(cells.apply_mask(inputs, input_mask)),
        output_mask=output_mask)

  def step(self, precomputed, state):
    output, new_state = self.inner.step(precomputed.core, state)
    return cells.apply_mask(output, precomputed.output_mask), new_state

  def presample(self, batch_size, num_steps, input_size, dtype):
    """`DropoutMasks(input [B, T, I], output [B, T, H], the core's presample)`."""
    return DropoutMasks(
        input=self._mask([batch_size, num_steps, input_size], self.reference.input_keep_prob,
                         dtype),
        output=self._output_mask([batch_size, num_steps, self.output_size], dtype),
        core=self.inner.presample(batch_size, num_steps, input_size, dtype))

  def step_presampled(self, inputs, state, presampled):
    output, new_state = self.inner.step_presampled(
        cells.apply_mask(inputs, presampled.input), state, presampled.core)
    return cells.apply_mask(output, presampled.output), new_state


@register(cells.ResidualWrapper)
class FastResidual(_Wrapper):
  """`cells.ResidualWrapper`: the core's precomputation carries the inputs along."""

  def precompute(self, inputs):
    """[B, T, I] -> (the core's precomputation, the inputs [B, T, I])."""
    self.reference.check_inputs(inputs)
    return self.inner.precompute(inputs), inputs

  @property
  def time_major_precompute(self):
    return self.inner.time_major_precompute

  def precompute_time_major(self, inputs):
    """[T, B, I] -> (the core's time-major precomputation, the inputs)."""
    self.reference.check_inputs(inputs)
    return self.inner.precompute_time_major(inputs), inputs

  def step(self, precomputed, state):
    core_precomputed, inputs = precomputed
    output, new_state = self.inner.step(core_precomputed, state)
    return output + inputs, new_state

  def presample(self, batch_size, num_steps, input_size, dtype):
    return self.inner.presample(batch_size, num_steps, input_size, dtype)

  def step_presampled(self, inputs, state, presampled):
    return self.reference.step_with(
        inputs, state, lambda x, s: self.inner.step_presampled(x, s, presampled))


@register(cells.VariationalDropoutWrapper)
class FastVariational(_Wrapper):
  """`cells.VariationalDropoutWrapper`: its masks live in the state; the core runs fast."""


@register(cells.StackedCells)
class FastStack(FastCore):
  """`cells.StackedCells`. Unrolled step-major, the first layer precomputes (its inputs are
  known for all steps) and the layers above presample (their inputs are the outputs of the
  layer below)."""

  def __init__(self, reference, layers):
    super().__init__(reference)
    self.layers = layers

  @classmethod
  def adapt(cls, reference):
    layers = [adapt(core) for core in reference.cores]
    return None if any(layer is None for layer in layers) else cls(reference, layers)

  @property
  def independent_rows(self):
    return all(layer.independent_rows for layer in self.layers)

  def __call__(self, inputs, state):
    return self.reference.step_with(inputs, state, self.layers)

  def _presample_above(self, batch_size, num_steps, dtype):
    """The presample of each layer above the first, whose input is the layer below's output."""
    return tuple(layer.presample(batch_size, num_steps, below.output_size, dtype)
                 for below, layer in zip(self.layers, self.layers[1:]))

  def precompute(self, inputs):
    """[B, T, I] -> (the first layer's precomputation, the presample of each layer above)."""
    first = self.layers[0].precompute(inputs)
    return (first,) + self._presample_above(cells.dim(inputs, 0), cells.dim(inputs, 1),
                                            inputs.dtype)

  def step(self, precomputed, state):
    inputs, first_state = self.layers[0].step(precomputed[0], state[0])
    output, above_states = self._step_layers(self.layers[1:], inputs, state[1:],
                                             precomputed[1:])
    return output, (first_state,) + above_states

  def presample(self, batch_size, num_steps, input_size, dtype):
    """A tuple with each layer's presample."""
    first = self.layers[0].presample(batch_size, num_steps, input_size, dtype)
    return (first,) + self._presample_above(batch_size, num_steps, dtype)

  def step_presampled(self, inputs, state, presampled):
    return self._step_layers(self.layers, inputs, state, presampled)

  def _step_layers(self, layers, inputs, states, presampled):
    """Runs `layers`, each fed the output of the previous one, by `step_presampled`."""
    run = [functools.partial(_step_presampled, layer, layer_presampled)
           for layer, layer_presampled in zip(layers, presampled)]
    return self.reference.step_with(inputs, states, run)


def _step_presampled(layer, presampled, inputs, state):
  return layer.step_presampled(inputs, state, presampled)


@register(attention_lib.AttentionWrapper)
class FastAttention(_Wrapper):
  """`attention.AttentionWrapper`: the core's input depends on the previous step (input
  feeding), so only its draws (dropout masks) are made for all steps at once."""

  independent_rows = False  # it holds its memory's rows

  def precompute(self, inputs):
    """[B, T, I] -> (the inputs, the core's `presample` for T steps of [x_t; a_{t-1}])."""
    self.reference.check_memory()
    return inputs, self.presample(cells.dim(inputs, 0), cells.dim(inputs, 1),
                                  inputs.shape[-1], inputs.dtype)

  def step(self, precomputed, state):
    inputs, presampled = precomputed
    return self.step_presampled(inputs, state, presampled)

  def presample(self, batch_size, num_steps, input_size, dtype):
    """The core's presample, for its inputs of I + A features."""
    return self.inner.presample(batch_size, num_steps,
                                input_size + self.reference.attention.output_size, dtype)

  def step_presampled(self, inputs, state, presampled):
    return self.reference.step_with(
        inputs, state, lambda x, s: self.inner.step_presampled(x, s, presampled))
