"""Adam on a table's looked-up rows in one pass over them.

On a CPU, for float32 and float64 tables, `adam_rows` runs the engine's own kernel
(`ops/kernels/sparse_adam_rows.cc`, built on first use by `ops.native`): it updates the
rows of the table and of its slots in place, each row read and written once, on all the
intra-op threads. Elsewhere, or where no compiler could build it, it runs its reference,
`reference_adam_rows`: three gathers, one pass of TensorFlow's fused kernel, three scatters.

That fused pass: `ops.optim.adam_update` is a dozen element-wise ops; on a CPU each is its
own pass over the [U, E] rows in memory, and for a table pinned to the host that rule is
most of the step's host update. `ResourceApplyAdam` does the whole rule in one
multi-threaded pass, but only on resource variables and in its own arithmetic, so here the
gathered rows are lent to three scratch variables (an assignment adopts a buffer nothing else
holds), and the kernel's inputs are chosen so that it computes `adam_update`'s values to
float32 rounding:

  - the kernel weights g^2 by 1 - b2 computed in the variable's dtype, which in float32 is
    off by up to 3e-5 relative for b2 = 0.999 (1 - b2 is a multiple of 2^-24 there); it is
    given v scaled by r = (1 - float32(b2)) / (1 - b2), so that it computes r v' with the
    rule's weight of g^2 (then divided by r), and lr and eps times sqrt(r) to keep the step;
  - the kernel puts eps beside sqrt(v') where the rule puts it beside sqrt(v' / (1 - b2^t)):
    eps * sqrt(1 - b2^t) is passed for eps, the same value of the rule.
"""
import numpy as np
import tensorflow as tf
from tensorflow.python.eager import context

from ops import native

KERNEL = "sparse_adam_rows"  # ops/kernels/sparse_adam_rows.cc
# (table, gradient) dtypes the kernel takes; a bfloat16 gradient (of a bf16 step) is read as
# it comes, without a pass to cast it.
_KERNEL_DTYPES = {(tf.float32, tf.float32), (tf.float32, tf.bfloat16), (tf.float64, tf.float64)}
_KERNEL_TABLE_DTYPES = {table for table, _ in _KERNEL_DTYPES}


def v_scale(beta2, dtype):
  """r of the module docstring for the rule's `beta2` (a Python float) in `dtype`."""
  kernel_weight = 1.0 - float(np.dtype(dtype).type(beta2))
  return 1.0 if kernel_weight == 0.0 else kernel_weight / (1.0 - beta2)


def adam_rows(gradient, rows, variable, m, v, learning_rate, step, beta1, beta2, epsilon):
  """`ops.optim.adam_update` on rows `rows` [U] (distinct ids) of `variable`, `m` and `v`
  (each [V, E]) with gradients `gradient` [U, E] (any float dtype: applied in theirs): the
  engine's kernel where `kernel_applies`, else three gathers, `rule`, three scatters.
  `learning_rate` and `step` (t, 1-based) are scalars of the variables' dtype."""
  kernel = kernel_applies(variable)
  if not (kernel and (variable.dtype, gradient.dtype) in _KERNEL_DTYPES):
    gradient = tf.cast(gradient, variable.dtype)
  if not kernel:
    reference_adam_rows(gradient, rows, variable, m, v, learning_rate, step, beta1, beta2,
                        epsilon)
    return
  scalar = lambda value: tf.constant(value, variable.dtype)
  native.load(KERNEL).seq2seq_sparse_adam_rows(
      var=variable.handle, m=m.handle, v=v.handle, rows=tf.cast(rows, tf.int32),
      grad=gradient, lr=learning_rate, step=step, beta1=scalar(beta1), beta2=scalar(beta2),
      one_minus_beta1=scalar(1.0 - beta1), one_minus_beta2=scalar(1.0 - beta2),
      epsilon=scalar(epsilon))


def kernel_applies(variable):
  """Whether `adam_rows` runs the engine's kernel on `variable`: a float32 or float64 table
  on a CPU, with the kernel built."""
  on_cpu = tf.DeviceSpec.from_string(variable.device or "CPU:0").device_type == "CPU"
  return (on_cpu and variable.dtype in _KERNEL_TABLE_DTYPES
          and native.load(KERNEL) is not None)


def reference_adam_rows(gradient, rows, variable, m, v, learning_rate, step, beta1, beta2,
                        epsilon):
  """`adam_rows` in TensorFlow's ops: three gathers, `rule`, three scatters."""
  targets = (variable, m, v)
  new_values = rule(*[tf.gather(target, rows) for target in targets], gradient,
                    learning_rate, step, beta1, beta2, epsilon)
  for target, value in zip(targets, new_values):
    target.scatter_update(tf.IndexedSlices(value, rows))


def rule(param, m, v, gradient, learning_rate, step, beta1, beta2, epsilon):
  """(param', m', v') of `ops.optim.adam_update`, each [U, E], in one pass of the kernel
  (plus two scalings of v when b2 is not exact in the dtype). `param`, `m` and `v` are
  handed over: their buffers become the results'."""
  dtype = param.dtype
  scale = v_scale(beta2, dtype.as_numpy_dtype)
  root = float(np.sqrt(scale))
  scratch = [_scratch(param), _scratch(m), _scratch(_times(v, scale))]
  beta2_power = tf.pow(tf.constant(beta2, dtype), step)
  tf.raw_ops.ResourceApplyAdam(
      var=scratch[0], m=scratch[1], v=scratch[2],
      beta1_power=tf.pow(tf.constant(beta1, dtype), step), beta2_power=beta2_power,
      lr=learning_rate * root, beta1=tf.constant(beta1, dtype),
      beta2=tf.constant(beta2, dtype), epsilon=epsilon * root * tf.sqrt(1.0 - beta2_power),
      grad=gradient)
  param, m, v = [tf.raw_ops.ReadVariableOp(resource=handle, dtype=dtype) for handle in scratch]
  return param, m, _times(v, 1.0 / scale)


def _times(value, factor):
  """`value` * `factor` (a Python float), with no pass when it is 1."""
  return value if factor == 1.0 else value * factor


def _scratch(value):
  """A resource variable holding `value`, freed with its handle (anonymous)."""
  handle = tf.raw_ops.VarHandleOp(dtype=value.dtype, shape=value.shape,
                                  shared_name=context.anonymous_name())
  tf.raw_ops.AssignVariableOp(resource=handle, value=value)
  return handle
