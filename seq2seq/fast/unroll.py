"""The fast unroll: the reference unroll's loops (`seq2seq.nn.unroll.run_static`,
`run_dynamic`) fed a `FastCore`'s precomputed slices, with its matmuls aligned on a GPU.

`static_unroll`, `dynamic_unroll` and `unroll_from_config` take reference cores: a core that
`cores.adapt` knows runs fast, any other through the reference unroll, with the same results.
"""
import contextlib
import functools

import tensorflow as tf

from seq2seq.fast import activations
from seq2seq.fast import cores
from seq2seq.nn import cells
from seq2seq.nn import unroll as reference


def static_unroll(core, inputs, initial_state, sequence_length=None):
  """`seq2seq.nn.unroll.static_unroll`, fast when `cores.adapt(core)` knows the core.

  In an XLA-compiled function on a GPU, 16-bit steps may run on zero rows and units appended
  to align their matmuls (`alignment_rows`, `alignment_units`); they are dropped after the
  last step.
  """
  fast = cores.adapt(core)
  if fast is None:
    return reference.static_unroll(core, inputs, initial_state, sequence_length)
  inputs = tf.convert_to_tensor(inputs)
  if inputs.shape[1] is None:
    raise ValueError("static_unroll needs a static number of time steps (inputs.shape[1])")
  extra_rows, extra_units = alignment_rows(fast, inputs), alignment_units(fast, inputs)
  if not (extra_rows or extra_units):
    return _static_unroll(fast, inputs, initial_state, sequence_length)
  rows, units = inputs.shape[0], fast.output_size
  initial_state = tf.nest.map_structure(
      lambda leaf: _append_zeros(_append_zeros(leaf, 0, extra_rows), -1, extra_units),
      initial_state)
  if sequence_length is not None:
    sequence_length = _append_zeros(tf.convert_to_tensor(sequence_length), 0, extra_rows)
  with fast.padded_units(extra_units) if extra_units else contextlib.nullcontext():
    outputs, final_state = _static_unroll(fast, inputs, initial_state, sequence_length,
                                          extra_rows)
  return (outputs[:rows, :, :units],
          tf.nest.map_structure(lambda leaf: leaf[:rows, ..., :units], final_state))


def _static_unroll(fast, inputs, initial_state, sequence_length, extra_rows=0):
  """`static_unroll` of a `FastCore` without its alignment; the precomputed leaves get
  `extra_rows` rows of zeros (the batch of `initial_state` and `sequence_length` already has
  them)."""
  # The core's state-independent work (e.g. x W_x for every step, dropout masks) runs once,
  # outside the loop; step t gets every leaf's slice t. Time-major when the core can: the
  # slices (and their gradients' stack) are then contiguous, with no transposes of the wide
  # precomputed tensors; the inputs and outputs are transposed instead, and between two
  # layers those transposes cancel.
  time_axis = 0 if fast.time_major_precompute else 1
  precomputed = (fast.precompute_time_major(cells.time_major(inputs)) if time_axis == 0
                 else fast.precompute(inputs))
  # Rows appended after the precomputation, so that it draws what an unaligned one draws.
  precomputed = tf.nest.map_structure(
      lambda leaf: _append_zeros(leaf, 1 - time_axis, extra_rows), precomputed)
  return reference.run_static(fast.step, precomputed, initial_state, sequence_length,
                              inputs.shape[1], time_axis)


def dynamic_unroll(core, inputs, initial_state, sequence_length=None, steps_per_iteration=1):
  """`seq2seq.nn.unroll.dynamic_unroll`, fast when `cores.adapt(core)` knows the core. The
  precomputation builds the cells before the loop."""
  fast = cores.adapt(core)
  if fast is None:
    return reference.dynamic_unroll(core, inputs, initial_state, sequence_length,
                                    steps_per_iteration)
  inputs = tf.convert_to_tensor(inputs)
  return reference.run_dynamic(fast.step, fast.precompute(inputs), inputs, initial_state,
                               sequence_length, steps_per_iteration, fast.output_size)


def unroll_from_config(model_config):
  """The unroll function a `ModelConfig` asks for (`unroll`, `unroll_steps`). A train step
  gets its config with `auto` resolved (`seq2seq.step.choice`); elsewhere (decoding,
  evaluation) `auto` is the static unroll and `unroll_steps` 0 is 1."""
  if model_config.unroll != "dynamic":
    return static_unroll
  return functools.partial(dynamic_unroll, steps_per_iteration=model_config.unroll_steps or 1)


def any_length(model_config):
  """Whether the unroll `unroll_from_config` gives runs for a number of steps that is unknown
  when tracing: the dynamic unroll (the static one is a Python loop over T)."""
  return model_config.unroll == "dynamic"


# XLA:GPU pads every bf16 and fp16 matmul to multiples of this many rows and columns
# (cuBLAS tensor-core alignment).
GEMM_ALIGNMENT = 8


def alignment_rows(fast, inputs):
  """Zero rows a static unroll appends to the batch, so that its per-step matmuls are aligned.

  XLA:GPU pads a [B, H] x [H, G] bf16 or fp16 matmul whose B is not a multiple of 8 to the
  next multiple (a copy kernel), and slices the product back (another): two more kernels and
  launches at every step of every layer, forward and backward (`seed_b20`, B = 20: 335 of
  869 kernels a step). Appended once per layer instead (and dropped once after the last
  step), the steps run on aligned rows. The appended rows start from a zero state and read
  zero inputs; their outputs and final states are dropped, so they add nothing to any result
  or gradient.

  Nonzero only where XLA:GPU aligns (`_matmuls_aligned_by_xla`), for a static batch size
  that is not a multiple of 8, and for cores whose rows are independent
  (`FastCore.independent_rows`).

  Args:
    fast: the `FastCore` being unrolled; inputs: its inputs [B, T, I].
  """
  rows = inputs.shape[0]
  if (rows is None or rows % GEMM_ALIGNMENT == 0 or not fast.independent_rows
      or not _matmuls_aligned_by_xla(inputs)):
    return 0
  return -rows % GEMM_ALIGNMENT


def alignment_units(fast, inputs):
  """Zero hidden units a static unroll appends to the state, so that its per-step matmuls are
  aligned.

  With H not a multiple of 8 (the 1500 units of `ptb_large`), XLA:GPU pads each step's
  h [B, H] to the next multiple for h W_h, and slices d(h) = d(gates) W_h^T back: on
  `ptb_large_b128`, 148 kernels of a 659-kernel step. (Without that padding, the unaligned bf16
  matmuls ran 3.6x slower.) Inside `fast.padded_units(extra)` the core computes on H + extra
  units whose weights are zeros, so those units stay 0 and the first H are unchanged; the
  unroll drops them after the last step.

  Nonzero only where XLA:GPU aligns (`_matmuls_aligned_by_xla`), for H not a multiple of 8,
  and for cores that can pad their units (`FastCore.padded_units`: the LSTM and GRU cells,
  bare or with dropout).
  """
  units = fast.output_size
  if units % GEMM_ALIGNMENT == 0 or not _matmuls_aligned_by_xla(inputs):
    return 0
  extra = -units % GEMM_ALIGNMENT
  return extra if fast.padded_units(extra) is not None else 0


def _matmuls_aligned_by_xla(inputs):
  """Whether the steps over `inputs` are 16-bit matmuls that XLA:GPU will align: in an
  XLA-compiled function, on a machine with a GPU (XLA's CPU backend does not pad)."""
  return (inputs.dtype in (tf.bfloat16, tf.float16) and activations.in_xla_function()
          and gpu_present())


def gpu_present():
  """Whether TensorFlow sees a GPU."""
  return bool(tf.config.list_logical_devices("GPU"))


def _append_zeros(tensor, axis, count):
  """`tensor` with `count` zeros appended along `axis` (itself when `count` is 0)."""
  if not count:
    return tensor
  padding = [[0, 0]] * tensor.shape.rank
  padding[axis] = [0, count]
  return tf.pad(tensor, padding)
