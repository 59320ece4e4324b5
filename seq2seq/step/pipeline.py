"""The one sequence every train step runs:

    loss and gradients -> all-reduce -> global norm -> clip -> gated update

`run` is that sequence; each train step of the engine passes it its own pieces:

  step                             compute                all_reduce        apply
  one device, whole program        lookups, forward,      `identity`        `clipped_update` of
  (`train_step`, XLA, tables on    backward; tables as                      every variable, then
  the accelerator)                 `TouchedRows`                            the step counter
  one device, split (tables on     forward and backward   `identity`        `clipped_update` of
  the host: only this part is      from each distinct                       the dense variables;
  compiled)                        looked-up row; tables                    the clipped
                                   as `UniqueRows`                          `UniqueRows` are
                                                                            applied on the host
  a strategy, two programs         the replica's share    the replica       `merge_call`: on each
  (`distributed_step`)             of the global loss     context's         device,
                                                          all-reduce        `clipped_update` of
                                                                            its copies
  a strategy, one program          the same, its backward XLA collectives   `clipped_update` of
                                   pass in stages                           the replica's copies

The language model's step is the one-device step with another loss
(`train_step.make_lm_train_step`).

A step whose loss or gradient norm is not finite (NaN or Inf) changes nothing: `update` keeps
every old value where `finite` is false, inside the step, with no branch (an XLA conditional or
a `tf.cond` on a device value makes the host wait for its predicate, so that it could not queue
the next step while this one runs).
"""
import collections
import typing

import tensorflow as tf

from ops import clipping
from seq2seq.step import optimizers


class Rows(typing.NamedTuple):
  """A table's gradient as the rows a batch looked up (a row looked up twice is there twice).

  values: [N, E] row gradients; indices: [N] their row ids; shape: the table's [V, E].
  """
  values: tf.Tensor
  indices: tf.Tensor
  shape: tf.TensorShape

  def slices(self):
    """The rows as the `tf.IndexedSlices` an optimizer update takes (duplicates summed there)."""
    return tf.IndexedSlices(self.values, self.indices, self.shape)


class UniqueRows(typing.NamedTuple):
  """A table's gradient as one row per distinct id a batch looked up (the ids stay on the
  table's device, `unique_rows.look_up`): gradient [C, E], the first U rows those ids' (each
  summed over its lookups), the rest zero (rows that pad U to a fixed C)."""
  gradient: tf.Tensor


class Gradients(typing.NamedTuple):
  """The gradients of one step.

  dense: one tensor per dense (non-table) variable, of its shape.
  tables: one per trainable table: all `optimizers.TouchedRows` ([V, E] summed rows, [V]
    touched), written densely for XLA, all `UniqueRows`, or all `Rows`.
  as_rows: the tables are `Rows` (also with no table: it picks the form of the norm).
  """
  dense: list
  tables: list
  as_rows: bool = False


# What `run` returns: the loss before the update (float32 scalar), the global norm before
# clipping, whether the update was applied (bool scalar), the step's `extra` nest, and what
# the `update` given to `clipped_update` returned (`kept`; None for most steps).
StepOutputs = collections.namedtuple("StepOutputs", "loss grad_norm finite extra kept")


def identity(loss, gradients, extra):
  """The all-reduce of a single device: nothing to sum."""
  return loss, gradients, extra


def run(compute, all_reduce, apply):
  """The train step: loss and gradients -> all-reduce -> global norm -> clip -> gated update.

  Args:
    compute: () -> (loss, gradients, extra): the forward and backward pass; `extra` is any
      nest the step hands back (the LM's final state, a worker's stop votes; `()` for none).
    all_reduce: (loss, gradients, extra) -> the same, summed over the replicas (`identity` on
      one device).
    apply: (loss, gradients) -> (grad_norm, finite, kept): the global norm, the clipping and the
      gated update (`clipped_update`, or that on each device of a strategy).

  Returns:
    `StepOutputs`.
  """
  loss, gradients, extra = compute()
  loss, gradients, extra = all_reduce(loss, gradients, extra)
  grad_norm, finite, kept = apply(loss, gradients)
  return StepOutputs(loss, grad_norm, finite, extra, kept)


def clipped_update(max_grad_norm, update, loss, gradients):
  """Global norm -> clip -> gated update: the tail of `run`'s sequence.

  Args:
    max_grad_norm: clip to this global norm; 0 for no clipping (the norm is still returned).
    update: (clipped `Gradients`, finite) -> kept: writes the optimizer's update, keeping every
      old value where `finite` (a bool scalar) is false (`Optimizer.update(condition=...)`).
    loss: the step's loss, a float32 scalar.
    gradients: `Gradients`.

  Returns:
    (grad_norm, finite, kept): the global norm before clipping, whether the loss and the norm
    are finite (the update applied), and what `update` returned.
  """
  grad_norm = global_norm(gradients)
  finite = is_finite_step(loss, grad_norm)
  scale = clipping.clip_scale(grad_norm, max_grad_norm)
  return grad_norm, finite, update(scaled(gradients, scale), finite)


def global_norm(gradients):
  """The L2 norm of all of `gradients` (`Gradients`) as one vector, a float32 scalar; a
  table's rows looked up more than once are summed first, as in the table's dense gradient."""
  if gradients.as_rows:
    return clipping.global_norm_with_rows(
        gradients.dense, [(rows.values, rows.indices, rows.shape[0]) for rows in gradients.tables])
  return tf.linalg.global_norm(gradients.dense + [table.gradient for table in gradients.tables])


def is_finite_step(loss, grad_norm):
  """True when both the loss and the global gradient norm are finite."""
  return tf.math.logical_and(tf.math.is_finite(loss), tf.math.is_finite(grad_norm))


def scaled(gradients, scale):
  """`gradients` (`Gradients`) times `scale` (a scalar)."""
  return gradients._replace(dense=scale_gradients(gradients.dense, scale),
                            tables=scale_gradients(gradients.tables, scale))


def scale_gradients(gradients, scale):
  """Each gradient (a tensor, `Rows`, `UniqueRows` or `optimizers.TouchedRows`) times
  `scale`."""
  def scaled_one(gradient):
    if isinstance(gradient, Rows):
      return gradient._replace(values=gradient.values * scale)
    if isinstance(gradient, UniqueRows):
      return UniqueRows(gradient.gradient * scale)
    if isinstance(gradient, optimizers.TouchedRows):
      return optimizers.TouchedRows(gradient.gradient * scale, gradient.touched)
    return gradient * scale
  return [scaled_one(g) for g in gradients]
