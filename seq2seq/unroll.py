"""Unrolling a core over time, with masking of padded steps. Cores never see lengths."""
import contextlib
import functools

import tensorflow as tf

from ops import cell_math
from seq2seq import cells


def static_unroll(core, inputs, initial_state, sequence_length=None):
  """Runs `core` over T steps with a Python loop (T must be known when tracing).

  Past a sequence's length the output is zero, and the final state is each sequence's state
  at its last valid step (the initial state for an empty one). In an XLA-compiled function on
  a GPU, 16-bit steps may run on zero rows and units appended to align their matmuls
  (`alignment_rows`, `alignment_units`); they are dropped after the last step.

  Args:
    core: an `RNNCore`.
    inputs: [B, T, I].
    initial_state: the core's state structure, batch B.
    sequence_length: optional [B] int lengths (0 <= length <= T); None means all are T.

  Returns:
    (outputs [B, T, H], final_state).
  """
  inputs = tf.convert_to_tensor(inputs)
  if inputs.shape[1] is None:
    raise ValueError("static_unroll needs a static number of time steps (inputs.shape[1])")
  extra_rows, extra_units = alignment_rows(core, inputs), alignment_units(core, inputs)
  if not (extra_rows or extra_units):
    return _static_unroll(core, inputs, initial_state, sequence_length)
  rows, units = inputs.shape[0], core.output_size
  initial_state = tf.nest.map_structure(
      lambda leaf: _append_zeros(_append_zeros(leaf, 0, extra_rows), -1, extra_units),
      initial_state)
  if sequence_length is not None:
    sequence_length = _append_zeros(tf.convert_to_tensor(sequence_length), 0, extra_rows)
  with core.padded_units(extra_units) if extra_units else contextlib.nullcontext():
    outputs, final_state = _static_unroll(core, inputs, initial_state, sequence_length,
                                          extra_rows)
  return (outputs[:rows, :, :units],
          tf.nest.map_structure(lambda leaf: leaf[:rows, ..., :units], final_state))


def _static_unroll(core, inputs, initial_state, sequence_length, extra_rows=0):
  """`static_unroll` without its alignment; the precomputed leaves get `extra_rows` rows of
  zeros (the batch of `initial_state` and `sequence_length` already has them)."""
  num_steps = inputs.shape[1]
  state = initial_state
  outputs, states = [], []
  # The core's state-independent work (e.g. x W_x for every step, dropout masks) runs once,
  # outside the loop; step t gets every leaf's slice t. Time-major when the core can: the
  # slices (and their gradients' stack) are then contiguous, with no transposes of the wide
  # precomputed tensors; the inputs and outputs are transposed instead, and between two
  # layers those transposes cancel.
  time_axis = 0 if core.time_major_precompute else 1
  precomputed = (core.precompute_time_major(cells.time_major(inputs)) if time_axis == 0
                 else core.precompute(inputs))
  # Rows appended after the precomputation, so that it draws what an unaligned one draws.
  precomputed = tf.nest.map_structure(
      lambda leaf: _append_zeros(leaf, 1 - time_axis, extra_rows), precomputed)
  leaves = [tf.unstack(leaf, num_steps, axis=time_axis)
            for leaf in tf.nest.flatten(precomputed)]
  for t in range(num_steps):
    step_input = tf.nest.pack_sequence_as(precomputed, [leaf[t] for leaf in leaves])
    output, state = core.step(step_input, state)
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


# XLA:GPU pads every bf16 and fp16 matmul to multiples of this many rows and columns
# (cuBLAS tensor-core alignment).
GEMM_ALIGNMENT = 8


def alignment_rows(core, inputs):
  """Zero rows a static unroll appends to the batch, so that its per-step matmuls are aligned.

  XLA:GPU pads a [B, H] x [H, G] bf16 or fp16 matmul whose B is not a multiple of 8 to the
  next multiple (a copy kernel), and slices the product back (another): two more kernels and
  launches at every step of every layer, forward and backward. `seed_b20` (B = 20) launched 869
  kernels a step against 566 at B = 256, 335 of them such pads and slices. Appended once per
  layer instead (and dropped once after the last step), the steps run on aligned rows. The
  appended rows start from a zero state and read zero inputs; their outputs and final states
  are dropped, so they add nothing to any result or gradient.

  Nonzero only where XLA:GPU aligns (`_matmuls_aligned_by_xla`), for a static batch size
  that is not a multiple of 8, and for cores whose rows are independent
  (`RNNCore.independent_rows`).

  Args:
    core: the `RNNCore` being unrolled; inputs: its inputs [B, T, I].
  """
  rows = inputs.shape[0]
  if (rows is None or rows % GEMM_ALIGNMENT == 0 or not core.independent_rows
      or not _matmuls_aligned_by_xla(inputs)):
    return 0
  return -rows % GEMM_ALIGNMENT


def alignment_units(core, inputs):
  """Zero hidden units a static unroll appends to the state, so that its per-step matmuls are
  aligned.

  With H not a multiple of 8 (the 1500 units of `ptb_large`), XLA:GPU pads each step's
  h [B, H] to the next multiple for h W_h, and slices d(h) = d(gates) W_h^T back: on
  `ptb_large_b128`, 148 kernels of a 659-kernel step. (Without that padding, the unaligned bf16
  matmuls ran 3.6x slower: `--xla_disable_hlo_passes=cublas-pad-for-gemms` took the step from
  5.17 to 12.37 ms.) Inside `core.padded_units(extra)` the core computes on H + extra units
  whose weights are zeros, so those units stay 0 and the first H are unchanged; the unroll
  drops them after the last step.

  Nonzero only where XLA:GPU aligns (`_matmuls_aligned_by_xla`), for H not a multiple of 8,
  and for cores that can pad their units (`RNNCore.padded_units`: the LSTM and GRU cells,
  bare or with dropout).
  """
  units = core.output_size
  if units % GEMM_ALIGNMENT == 0 or not _matmuls_aligned_by_xla(inputs):
    return 0
  extra = -units % GEMM_ALIGNMENT
  return extra if core.padded_units(extra) is not None else 0


def _matmuls_aligned_by_xla(inputs):
  """Whether the steps over `inputs` are 16-bit matmuls that XLA:GPU will align: in an
  XLA-compiled function, on a machine with a GPU (XLA's CPU backend does not pad)."""
  return (inputs.dtype in (tf.bfloat16, tf.float16) and cell_math.in_xla_function()
          and _gpu_present())


def _gpu_present():
  """Whether TensorFlow sees a GPU."""
  return bool(tf.config.list_logical_devices("GPU"))


def _append_zeros(tensor, axis, count):
  """`tensor` with `count` zeros appended along `axis` (itself when `count` is 0)."""
  if not count:
    return tensor
  padding = [[0, 0]] * tensor.shape.rank
  padding[axis] = [0, count]
  return tf.pad(tensor, padding)


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
  back. The core must be built before the loop (variables cannot be created inside it):
  `precompute` builds the engine's cells.

  Args:
    core, inputs, initial_state, sequence_length: as `static_unroll`.
    steps_per_iteration: k, the steps unrolled inside one iteration. With k > 1, T must be
      static; the inputs are padded to a multiple of k and ceil(T / k) iterations run in the
      loop, the padded steps masked (state unchanged, outputs dropped). No step runs after the
      loop: two or more steps there, on the loop's TensorArrays, hang the tracing of an
      XLA-compiled train step (a TensorFlow graph-mutex deadlock in automatic control
      dependencies).

  Returns: as `static_unroll`.
  """
  inputs = tf.convert_to_tensor(inputs)
  precomputed = core.precompute(inputs)
  k = int(steps_per_iteration)
  static_steps = inputs.shape[1]
  if k > 1 and static_steps is None:
    raise ValueError("dynamic_unroll with steps_per_iteration > 1 needs a static T")
  # The steps each row runs, [B] or a scalar; None: all of them (nothing masked).
  valid_steps = None if sequence_length is None else tf.convert_to_tensor(sequence_length)
  leaves = tf.nest.flatten(precomputed)
  padding = -static_steps % k if k > 1 else 0
  if padding:
    # Pad T to a multiple of k so that every step runs inside the loop (see above); the
    # padded steps are masked.
    leaves = [tf.pad(leaf, [[0, 0], [0, padding]] + [[0, 0]] * (leaf.shape.rank - 2))
              for leaf in leaves]
    valid_steps = (tf.constant(static_steps) if valid_steps is None
                   else tf.minimum(valid_steps, static_steps))
  num_steps = tf.shape(inputs)[1] + padding
  # One TensorArray per leaf of the precomputed nest, each in its own dtype.
  step_inputs = [tf.TensorArray(leaf.dtype, size=num_steps).unstack(cells.time_major(leaf))
                 for leaf in leaves]
  # Cores compute in the dtype of their inputs (see cells.py), so outputs share it.
  outputs = tf.TensorArray(inputs.dtype, size=num_steps,
                           element_shape=[inputs.shape[0], core.output_size])

  def run_step(t, state, outputs):
    step_input = tf.nest.pack_sequence_as(precomputed, [ta.read(t) for ta in step_inputs])
    output, new_state = core.step(step_input, state)
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
  if padding:
    stacked = stacked[:, :static_steps]
  stacked.set_shape([inputs.shape[0], static_steps, core.output_size])  # keep static T
  return stacked, state


def unroll_from_config(model_config):
  """The unroll function a `ModelConfig` asks for (`unroll`, `unroll_steps`)."""
  if model_config.unroll == "static":
    return static_unroll
  return functools.partial(dynamic_unroll, steps_per_iteration=model_config.unroll_steps)


def layerwise_unroll(cores, inputs, initial_states, sequence_length=None, unroll=static_unroll):
  """Unrolls a stack layer by layer: the same result as `static_unroll(StackedCells(cores))`.

  Running each layer over all T steps before the next lets every layer (not only the first)
  precompute its input projection for the whole sequence.

  Args:
    cores: the layers, bottom first.
    inputs: [B, T, I].
    initial_states: a tuple with one state per layer.
    sequence_length: optional [B] lengths, applied in every layer.
    unroll: `static_unroll` or `dynamic_unroll`.

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
