"""The activations and the LSTM's elementwise half, spelled for a quick XLA compile and a
lean gradient. Same values and gradients as `ops.cell_math`'s plain spellings.

Shapes: B = batch, H = hidden size.
"""
import functools

import tensorflow as tf
# TensorFlow-internal names: XLA's optimization barrier, the builder of an op without a Python
# wrapper, and the tests that tell a while loop's body and an XLA-compiled function from other
# graphs.
from tensorflow.compiler.tf2xla.python import xla as tf2xla  # pylint: disable=g-direct-tensorflow-import
from tensorflow.python.framework import op_def_library  # pylint: disable=g-direct-tensorflow-import
from tensorflow.python.ops import control_flow_util  # pylint: disable=g-direct-tensorflow-import
from tensorflow.python.ops import control_flow_util_v2  # pylint: disable=g-direct-tensorflow-import

from ops import cell_math


def in_loop_body():
  """Whether the graph being built is the body (or condition) of a `tf.while_loop`."""
  return control_flow_util_v2.in_while_loop_defun(tf.compat.v1.get_default_graph())


def in_xla_function():
  """Whether the graph being built is compiled with XLA (`tf.function(jit_compile=True)`, or a
  function or loop body inside one)."""
  return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


def sigmoid(x):
  """tf.sigmoid(x), gradient included, in a form XLA's TensorFlow bridge lowers quickly.

  In an XLA-compiled graph (`in_xla_function`) it is the op SoftplusGrad(1, x) = 1 * sigmoid(x),
  with the gradient dy * y * (1 - y). TF 2.21's tf2xla lowers Sigmoid, Tanh and Exp one op at
  a time through an MLIR pass pipeline of their own (`MlirXlaOpKernel`): 6-8 ms an op on a
  2-core CPU, against 0.1-0.3 ms for SoftplusGrad or a Mul, which it lowers directly. A
  `seed_b256` train step has 492 sigmoids (3 a step in the forward pass and 3 in the
  recomputing gradient, 82 steps). XLA removes the multiplication by one, so the optimized
  program is the same, instruction for instruction, and so is the step time; the first step
  (trace and compile) is shorter (benchmarks/README.md). Elsewhere it is tf.sigmoid.

  Args:
    x: [...] floating point.

  Returns:
    sigmoid(x), [...] of x's dtype.
  """
  if not in_xla_function():
    return tf.sigmoid(x)
  return _sigmoid_as_softplus_grad(x)


@tf.custom_gradient
def _sigmoid_as_softplus_grad(x):
  """`sigmoid` in an XLA-compiled graph: y = SoftplusGrad(1, x), d(x) = SigmoidGrad(y, dy)."""
  # OnesLike, not tf.ones_like: the ones of a static shape would be folded into one constant
  # [...] per call by the bridge's constant folding, 1 MB each at seed_b256.
  y = tf.raw_ops.SoftplusGrad(gradients=tf.raw_ops.OnesLike(x=x), features=x)
  return y, lambda dy: sigmoid_grad(y, dy)


def tanh(x):
  """tf.tanh(x), gradient included, in a form XLA's TensorFlow bridge lowers quickly.

  In an XLA-compiled graph (`in_xla_function`) it is TensorFlow's `_UnaryOpsComposition` op
  with the one op "Tanh" (the op Grappler fuses chains of unary ops into), which the bridge
  lowers straight to XLA's tanh instead of through the per-op MLIR pipeline of `Tanh` (see
  `sigmoid`): 200 chained tanh took 1.2-1.4 s to lower on a 2-core CPU, 0.3 s so. The op
  takes float16, float32 and float64; bfloat16 goes through float32 (XLA:GPU computes a bf16
  tanh in float32 anyway). The gradient is dy * (1 - y^2). XLA's optimized program is the
  same. Elsewhere it is tf.tanh.

  Written with other ops the bridge lowers directly (through expm1) it added 6,000
  instructions to the `seed_b256` program, whose HLO passes took 2 s longer, and a slower step.

  Args:
    x: [...] floating point.

  Returns:
    tanh(x), [...] of x's dtype.
  """
  if not in_xla_function():
    return tf.tanh(x)
  return _tanh_as_unary_composition(x)


# The dtypes `_UnaryOpsComposition` takes.
_UNARY_COMPOSITION_DTYPES = (tf.float16, tf.float32, tf.float64)


@tf.custom_gradient
def _tanh_as_unary_composition(x):
  """`tanh` in an XLA-compiled graph: y = _UnaryOpsComposition(x, ["Tanh"]), d(x) = TanhGrad."""
  computed = x if x.dtype in _UNARY_COMPOSITION_DTYPES else tf.cast(x, tf.float32)
  y = tf.cast(_unary_ops_composition(computed, ["Tanh"]), x.dtype)
  return y, lambda dy: tanh_grad(y, dy)


def _unary_ops_composition(x, op_names):
  """TensorFlow's `_UnaryOpsComposition(x, op_names)`: the unary ops `op_names` applied in
  turn. A graph-only op without a Python wrapper (its name starts with an underscore)."""
  _, _, op, _ = op_def_library._apply_op_helper(  # pylint: disable=protected-access
      "_UnaryOpsComposition", x=x, op_names=op_names, name="UnaryOpsComposition")
  return op.outputs[0]


def sigmoid_grad(y, dy):
  """dy * y * (1 - y), the gradient through y = sigmoid(x), as one op."""
  return tf.raw_ops.SigmoidGrad(y=y, dy=dy)


def tanh_grad(y, dy):
  """dy * (1 - y^2), the gradient through y = tanh(x), as one op."""
  return tf.raw_ops.TanhGrad(y=y, dy=dy)


def gru_gates_to_state(projected_input, projected_hidden, hidden):
  """`cell_math.gru_gates_to_state` with this module's activations."""
  return cell_math.gru_gates_to_state(projected_input, projected_hidden, hidden, sigmoid, tanh)


def lstm_gates_to_state(gates, cell, forget_bias=1.0, recompute=None):
  """`cell_math.lstm_gates_to_state`: gate pre-activations [B, 4H] to (h', c'), each [B, H].

  In a graph (a `tf.function` being traced) the ops are those of one `tf.function` per
  setting, traced once and called at every step (`_traced_gates_to_state`); eagerly they run
  one by one.

  Args:
    gates: [B, 4H]; cell: [B, H]; forget_bias: as `cell_math.lstm_step`.
    recompute: whether the gradient keeps only the gates and c and recomputes the
      activations from them (`_lstm_gates_to_state_recomputing`) instead of keeping the six
      [B, H] activations and products that TensorFlow's derivation keeps. None: when traced
      in the body of a `tf.while_loop` (the dynamic unroll), whose gradient stacks every
      kept tensor step by step, one GPU kernel each (seed_b256 with 2 steps a loop iteration,
      XLA: 1,114 -> 778 such kernels), and in an XLA-compiled function
      (`recompute_behind_barrier`). Elsewhere (a step without XLA runs op by op) the
      derivation has fewer ops to trace and run.
  """
  for_xla = in_xla_function()
  if recompute is None:
    recompute = in_loop_body() or for_xla
  barrier = bool(recompute) and recompute_behind_barrier()
  if tf.executing_eagerly() or not isinstance(forget_bias, (int, float)):
    return _gates_to_state(gates, cell, forget_bias, recompute, barrier)
  return _traced_gates_to_state(float(forget_bias), bool(recompute), barrier,
                                for_xla)(gates, cell)


def _gates_to_state(gates, cell, forget_bias, recompute, barrier):
  if recompute:
    return _lstm_gates_to_state_recomputing(gates, cell, forget_bias, barrier)
  return _lstm_state(gates, cell, forget_bias)


@functools.lru_cache(maxsize=None)
def _traced_gates_to_state(forget_bias, recompute, barrier, for_xla):
  """`lstm_gates_to_state` of one setting as a `tf.function` (gates, cell) -> (h', c').

  `for_xla`: whether the caller's graph is XLA-compiled. The ops differ (`sigmoid`), and a
  function is traced where it is first called, so a function traced for one must not be
  called from the other.

  A static unroll calls the step's elementwise half at every step of every layer: traced
  inline, its forward and gradient ops are most of the unrolled train step's graph. As one
  function, traced once per shape and called at each step, the `seed_b256` train step
  (2 + 2 layers, 20 + 21 steps, XLA) has 2,375 ops instead of 5,901 to build, and is traced
  in half the time. XLA inlines the calls: the optimized program is the same, instruction
  for instruction.
  """
  del for_xla  # a cache key only: `sigmoid` reads the graph being traced
  return tf.function(
      lambda gates, cell: _gates_to_state(gates, cell, forget_bias, recompute, barrier),
      autograph=False)


def _lstm_state(gates, cell, forget_bias):
  """(h', c') from the gate pre-activations [B, 4H] and c [B, H]."""
  return cell_math.lstm_gates_to_state(gates, cell, forget_bias, sigmoid, tanh)


def recompute_behind_barrier():
  """Whether a written-out gradient that recomputes forward values should hide its inputs
  from XLA behind an optimization barrier: in an XLA-compiled function, outside loop bodies.

  There XLA sees the forward pass and its gradient as one program, and would otherwise merge
  the recomputation with the forward pass's own activations (common subexpressions) and keep
  those, as TensorFlow's derivation does. Behind the barrier the forward kernel of a step
  writes only h' and c', and the gradient kernel recomputes the activations from the gates
  it reads anyway (seed_b256, bf16: about 7% off the step; benchmarks/README.md). A loop
  body's gradient runs in a loop of its own, so nothing there can merge with the forward pass.

  Only the forward values (gates, c) go behind it. The incoming d(h') and d(c') stay outside,
  so that XLA can fuse the ops that make them (e.g. the sum of the per-gate products of
  `RecurrentMatmul(gate_blocks=4)`) into the gradient's kernel.
  """
  return in_xla_function() and not in_loop_body()


def _lstm_gates_to_state_recomputing(gates, cell, forget_bias, barrier):
  """`lstm_gates_to_state` with a written-out gradient that keeps only `gates` and `cell`
  (behind an XLA optimization barrier when `barrier`: see `recompute_behind_barrier`)."""

  @tf.custom_gradient
  def gates_to_state(gates, cell):

    def gradient(d_hidden, d_cell):
      """d(h'), d(c') [B, H] -> d(gates) [B, 4H], d(c) [B, H]."""
      kept_gates, kept_cell = gates, cell
      if barrier:  # the forward values only: see `recompute_behind_barrier`
        kept_gates, kept_cell = tf2xla.optimization_barrier(gates, cell)
      i, g, f, o = cell_math.lstm_activations(kept_gates, forget_bias, sigmoid, tanh)
      tanh_cell = tanh(f * kept_cell + i * g)
      d_new_cell = d_cell + tanh_grad(tanh_cell, d_hidden * o)
      d_gates = tf.concat([sigmoid_grad(i, d_new_cell * g),
                           tanh_grad(g, d_new_cell * i),
                           sigmoid_grad(f, d_new_cell * kept_cell),
                           sigmoid_grad(o, d_hidden * tanh_cell)], axis=-1)
      return d_gates, d_new_cell * f

    return _lstm_state(gates, cell, forget_bias), gradient

  return gates_to_state(gates, cell)
