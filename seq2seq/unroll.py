"""Unrolling a core over time, with masking of padded steps. Cores never see lengths."""
import tensorflow as tf


def static_unroll(core, inputs, initial_state, sequence_length=None):
  """Runs `core` over T steps with a Python loop (T must be known when tracing).

  Past a sequence's length the state is carried unchanged and the output is zero, so the
  final state is each sequence's state at its last valid step.

  Args:
    core: an `RNNCore`.
    inputs: [B, T, I].
    initial_state: the core's state structure, batch B.
    sequence_length: optional [B] int lengths (0 <= length <= T); None means all are T.

  Returns:
    (outputs [B, T, H], final_state).
  """
  inputs = tf.convert_to_tensor(inputs)
  num_steps = inputs.shape[1]
  if num_steps is None:
    raise ValueError("static_unroll needs a static number of time steps (inputs.shape[1])")
  state = initial_state
  outputs = []
  # The core's state-independent work (e.g. x W_x for every step) runs once, outside the loop.
  precomputed = core.precompute(inputs)
  for t, step_input in enumerate(tf.unstack(precomputed, axis=1)):
    output, new_state = core.step(step_input, state)
    if sequence_length is None:
      state = new_state
    else:
      valid = tf.expand_dims(t < sequence_length, -1)  # [B, 1]
      output = tf.where(valid, output, tf.zeros_like(output))
      state = tf.nest.map_structure(
          lambda new, old, valid=valid: tf.where(valid, new, old), new_state, state)
    outputs.append(output)
  return tf.stack(outputs, axis=1), state


def layerwise_unroll(cores, inputs, initial_states, sequence_length=None):
  """Unrolls a stack layer by layer: the same result as `static_unroll(StackedCells(cores))`.

  Running each layer over all T steps before the next lets every layer (not only the first)
  precompute its input projection for the whole sequence.

  Args:
    cores: the layers, bottom first.
    inputs: [B, T, I].
    initial_states: a tuple with one state per layer.
    sequence_length: optional [B] lengths, applied in every layer.

  Returns:
    (outputs [B, T, H] of the top layer, tuple of per-layer final states).
  """
  final_states = []
  for core, state in zip(cores, initial_states):
    inputs, final_state = static_unroll(core, inputs, state, sequence_length)
    final_states.append(final_state)
  return inputs, tuple(final_states)


def bidirectional_unroll(forward_core, backward_core, inputs, forward_state, backward_state,
                         sequence_length):
  """Reads each sequence both ways; the backward core sees only the valid tokens, reversed.

  Each sequence is reversed within its own length (`tf.reverse_sequence`), so the backward
  core starts at the last real token, not at the padding; its outputs are reversed back so
  that position t of both directions refers to token t.

  Args:
    forward_core, backward_core: `RNNCore`s.
    inputs: [B, T, I].
    forward_state, backward_state: the cores' initial states, batch B.
    sequence_length: [B] int lengths.

  Returns:
    (outputs [B, T, Hf + Hb], zero past each length; (forward final state, backward final
    state)), the backward final state being the one after reading token 0.
  """
  sequence_length = tf.convert_to_tensor(sequence_length)
  reverse = lambda x: tf.reverse_sequence(x, sequence_length, seq_axis=1, batch_axis=0)
  forward_outputs, forward_final = static_unroll(forward_core, inputs, forward_state,
                                                 sequence_length)
  backward_outputs, backward_final = static_unroll(backward_core, reverse(inputs),
                                                   backward_state, sequence_length)
  outputs = tf.concat([forward_outputs, reverse(backward_outputs)], -1)
  return outputs, (forward_final, backward_final)
