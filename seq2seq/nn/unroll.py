"""Unrolling a core over time, with masking of padded steps. Cores never see lengths.

The reference unroll: each step is the core's `__call__`, so any object with the cell
contract (`seq2seq.nn.cells`) runs here. `seq2seq.fast` unrolls the built-in cores faster on the
same loops (`run_static`, `run_dynamic`), giving each step precomputed slices instead of the
inputs.
"""
import tensorflow as tf

from seq2seq.nn import cells


def static_unroll(core, inputs, initial_state, sequence_length=None):
  """Runs `core` over T steps with a Python loop (T must be known when tracing).

  Past a sequence's length the output is zero, and the final state is each sequence's state
  at its last valid step (the initial state for an empty one).

  Args:
    core: an `RNNCore` (or any object with its contract).
    inputs: [B, T, I].
    initial_state: the core's state structure, batch B.
    sequence_length: optional [B] int lengths (0 <= length <= T); None means all are T.

  Returns:
    (outputs [B, T, H], final_state).
  """
  inputs = tf.convert_to_tensor(inputs)
  if inputs.shape[1] is None:
    raise ValueError("static_unroll needs a static number of time steps (inputs.shape[1])")
  return run_static(core, inputs, initial_state, sequence_length, inputs.shape[1])


def run_static(step, sequence, initial_state, sequence_length, num_steps, time_axis=1):
  """The loop of `static_unroll`: `step(slice t of sequence, state) -> (output [B, H], state)`
  for t < `num_steps`, masked as `static_unroll`.

  Args:
    step: the step function (a core).
    sequence: a nest of [B, T, ...] tensors (of [T, B, ...] when `time_axis` is 0); step t
      gets every leaf's slice t, [B, ...].
    initial_state, sequence_length: as `static_unroll`.
    num_steps: T, static.
    time_axis: the time axis of `sequence`'s leaves, 1 or 0.

  Returns:
    (outputs [B, T, H], final_state).
  """
  state = initial_state
  outputs, states = [], []
  leaves = [tf.unstack(leaf, num_steps, axis=time_axis) for leaf in tf.nest.flatten(sequence)]
  for t in range(num_steps):
    output, state = step(tf.nest.pack_sequence_as(sequence, [leaf[t] for leaf in leaves]),
                         state)
    outputs.append(output)
    states.append(state)
  outputs = tf.stack(outputs, axis=time_axis)
  if sequence_length is not None:
    # The steps past a row's length ran on padding, and nothing reads them: the masking is
    # done once for all steps rather than step by step (each op of the unrolled graph is a
    # host dispatch when the step runs without XLA). They get no gradient either.
    valid = tf.sequence_mask(sequence_length, num_steps)[:, :, None]  # [B, T, 1]
    if time_axis == 0:
      valid = cells.time_major(valid)
    outputs = tf.where(valid, outputs, tf.zeros_like(outputs))
  if time_axis == 0:
    outputs = cells.time_major(outputs)
  if sequence_length is None:
    return outputs, state
  return outputs, _state_at_lengths(initial_state, states, sequence_length)


def _state_at_lengths(initial_state, states, sequence_length):
  """Row b's state after its step length[b] - 1, or its initial state when length[b] is 0.

  Args:
    initial_state: the state structure, batch B.
    states: the states after each of the T steps, a list of such structures.
    sequence_length: [B] int lengths.
  """
  sequence_length = tf.convert_to_tensor(sequence_length)
  rows = tf.range(tf.shape(sequence_length)[0], dtype=sequence_length.dtype)
  row_and_step = tf.stack([rows, tf.maximum(sequence_length - 1, 0)], axis=1)  # [B, 2]
  nonempty = sequence_length > 0  # [B]

  def pick(initial, *per_step):
    at_length = tf.gather_nd(tf.stack(per_step, axis=1), row_and_step)
    return tf.where(tf.reshape(nonempty, [-1] + [1] * (initial.shape.rank - 1)), at_length,
                    initial)
  return tf.nest.map_structure(pick, initial_state, *states)


def dynamic_unroll(core, inputs, initial_state, sequence_length=None, steps_per_iteration=1):
  """`static_unroll` as a `tf.while_loop`: the same results, fewer copies of the step.

  A compiler (XLA) then sees the cell `steps_per_iteration` times instead of T times, which
  cuts compile time; each loop iteration costs a launch sequence that the compiler cannot
  overlap with the next, so a few steps per iteration buy most of the static unroll's speed
  back. In a graph, the core must be built before the loop (variables cannot be created
  inside it): call it once, e.g. eagerly.

  Args:
    core, inputs, initial_state, sequence_length: as `static_unroll`.
    steps_per_iteration: k, the steps unrolled inside one iteration. With k > 1, the inputs
      are padded to a multiple of k and ceil(T / k) iterations run in the loop, the padded
      steps masked (state unchanged, outputs dropped). T may be unknown when tracing (XLA
      sees each T as a constant). No step runs after the loop: two or more steps there, on
      the loop's TensorArrays, hang the tracing of an XLA-compiled train step (a TensorFlow
      graph-mutex deadlock in automatic control dependencies).

  Returns: as `static_unroll`.
  """
  inputs = tf.convert_to_tensor(inputs)
  return run_dynamic(core, inputs, inputs, initial_state, sequence_length,
                     steps_per_iteration, core.output_size)


def run_dynamic(step, sequence, inputs, initial_state, sequence_length, steps_per_iteration,
                output_size):
  """The loop of `dynamic_unroll`: `step(slice t of sequence, state)` for each step t.

  Args:
    step: the step function (a core).
    sequence: a nest of [B, T, ...] tensors; step t gets every leaf's slice t, [B, ...].
    inputs: the [B, T, I] inputs, for B, T and the outputs' dtype.
    initial_state, sequence_length, steps_per_iteration: as `dynamic_unroll`.
    output_size: H.

  Returns: as `static_unroll`.
  """
  k = int(steps_per_iteration)
  static_steps = inputs.shape[1]
  # The steps each row runs, [B] or a scalar; None: all of them (nothing masked).
  valid_steps = None if sequence_length is None else tf.convert_to_tensor(sequence_length)
  leaves = tf.nest.flatten(sequence)
  # Ints where T is static, else scalar tensors: a step traced once for every length pads
  # and masks also where the padding turns out to be 0 (the masks then keep every step).
  steps = tf.shape(inputs)[1] if static_steps is None else static_steps
  padding = -steps % k if k > 1 else 0
  padded = not isinstance(padding, int) or padding > 0
  if padded:
    # Pad T to a multiple of k so that every step runs inside the loop (see above); the
    # padded steps are masked.
    leaves = [tf.pad(leaf, [[0, 0], [0, padding]] + [[0, 0]] * (leaf.shape.rank - 2))
              for leaf in leaves]
    valid_steps = (tf.convert_to_tensor(steps) if valid_steps is None
                   else tf.minimum(valid_steps, steps))
  num_steps = tf.shape(inputs)[1] + padding
  # One TensorArray per leaf of the sequence nest, each in its own dtype.
  step_inputs = [tf.TensorArray(leaf.dtype, size=num_steps).unstack(cells.time_major(leaf))
                 for leaf in leaves]
  # Cores compute in the dtype of their inputs (see cells.py), so outputs share it.
  outputs = tf.TensorArray(inputs.dtype, size=num_steps,
                           element_shape=[inputs.shape[0], output_size])

  def run_step(t, state, outputs):
    step_input = tf.nest.pack_sequence_as(sequence, [ta.read(t) for ta in step_inputs])
    output, new_state = step(step_input, state)
    if valid_steps is not None:
      valid = t < valid_steps
      if valid.shape.rank:  # [B] -> [B, 1]; a scalar broadcasts over the batch as it is
        valid = tf.expand_dims(valid, -1)
      output = tf.where(valid, output, tf.zeros_like(output))
      new_state = tf.nest.map_structure(
          lambda new, old: tf.where(valid, new, old), new_state, state)
    return new_state, outputs.write(t, output)

  def body(t, state, outputs):
    for i in range(k):
      state, outputs = run_step(t + i, state, outputs)
    return t + k, state, outputs

  iterations = num_steps // k
  _, state, outputs = tf.while_loop(
      lambda t, *_: t < iterations * k, body, (tf.constant(0), initial_state, outputs),
      maximum_iterations=iterations)
  stacked = tf.transpose(outputs.stack(), [1, 0, 2])
  if padded:
    stacked = stacked[:, :steps]
  stacked.set_shape([inputs.shape[0], static_steps, output_size])  # keep static T
  return stacked, state


def layerwise_unroll(cores, inputs, initial_states, sequence_length=None, unroll=static_unroll):
  """Unrolls a stack layer by layer: the same result as `static_unroll(StackedCells(cores))`.

  Each layer sees its whole input sequence [B, T, I] at once, so an unroll that works on
  whole sequences (the fast one projects the inputs of all steps in one matmul) does so in
  every layer, not only the first.

  Args:
    cores: the layers, bottom first.
    inputs: [B, T, I].
    initial_states: a tuple with one state per layer.
    sequence_length: optional [B] lengths, applied in every layer.
    unroll: `static_unroll` or `dynamic_unroll` (or another unroll with their signature).

  Returns:
    (outputs [B, T, H] of the top layer, tuple of per-layer final states).
  """
  final_states = []
  for core, state in zip(cores, initial_states):
    inputs, final_state = unroll(core, inputs, state, sequence_length)
    final_states.append(final_state)
  return inputs, tuple(final_states)


def bidirectional_unroll(forward_core, backward_core, inputs, forward_state, backward_state,
                         sequence_length, unroll=static_unroll):
  """Reads each sequence both ways; the backward core sees only the valid tokens, reversed.

  Each sequence is reversed within its own length (`tf.reverse_sequence`), so the backward
  core starts at the last real token, not at the padding; its outputs are reversed back so
  that position t of both directions refers to token t.

  Args:
    forward_core, backward_core: `RNNCore`s.
    inputs: [B, T, I].
    forward_state, backward_state: the cores' initial states, batch B.
    sequence_length: [B] int lengths.
    unroll: `static_unroll` or `dynamic_unroll`, for both directions.

  Returns:
    (outputs [B, T, Hf + Hb], zero past each length; (forward final state, backward final
    state)), the backward final state being the one after reading token 0.
  """
  sequence_length = tf.convert_to_tensor(sequence_length)
  reverse = lambda x: tf.reverse_sequence(x, sequence_length, seq_axis=1, batch_axis=0)
  forward_outputs, forward_final = unroll(forward_core, inputs, forward_state, sequence_length)
  backward_outputs, backward_final = unroll(backward_core, reverse(inputs), backward_state,
                                            sequence_length)
  outputs = tf.concat([forward_outputs, reverse(backward_outputs)], -1)
  return outputs, (forward_final, backward_final)
