"""Dropout masks for a compiled step: `cells.keep_mask` behind an XLA optimization barrier."""
# TensorFlow-internal name: XLA's optimization barrier.
from tensorflow.compiler.tf2xla.python import xla as tf2xla  # pylint: disable=g-direct-tensorflow-import

from seq2seq.fast import activations
from seq2seq.nn import cells


def keep_mask(generator, shape, keep_prob, dtype):
  """`cells.keep_mask`, the same draw; in an XLA-compiled graph behind an optimization
  barrier, so that one kernel writes the mask and the steps read it, instead of XLA fusing
  the Philox rounds into every kernel that applies a step's slice of it, forward and
  backward (a smaller program that compiles sooner and runs as fast)."""
  mask = cells.keep_mask(generator, shape, keep_prob, dtype)
  if isinstance(mask, tuple) or not activations.in_xla_function():
    return mask
  mask, = tf2xla.optimization_barrier(mask)
  return mask
