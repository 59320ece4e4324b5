"""Optimizers that own their slot variables and apply the update rules of `ops.optim`.

They are `tf.Module`s, so `tf.train.Checkpoint` saves their slots and step counter, and they
run the same way eagerly, in `tf.function` and under XLA.
"""
import collections

import tensorflow as tf

from ops import clipping
from ops import optim
from seq2seq.step import fused_adam

# A table's gradient written densely, with the rows a batch looked up: `Optimizer.update`
# applies the lazy (rows-only) rule to exactly those rows, as for an IndexedSlices, in one
# pass over the table with no tf.unique, so that it compiles with XLA.
#   gradient [V, E]: the looked-up rows' gradients summed per row (zero elsewhere);
#   touched [V] bool: the rows looked up, whether or not their gradient is zero.
TouchedRows = collections.namedtuple("TouchedRows", ["gradient", "touched"])


def summed_rows(values, indices, num_rows, present=None):
  """(gradient [num_rows, E], lookups [num_rows] float32) of a table from row gradients
  `values` [N, E] looked up at `indices` [N]: repeated indices summed, and how many times
  each row was looked up. Both add up across replicas (the distributed step all-reduces them).
  `present` [N] float32, 1 or 0, leaves out the lookups of padding entries (default: all 1)."""
  gradient = tf.math.unsorted_segment_sum(values, indices, num_rows)
  if present is None:
    present = tf.ones_like(indices, tf.float32)
  lookups = tf.math.unsorted_segment_sum(present, indices, num_rows)
  return gradient, lookups


def touched_rows(values, indices, num_rows):
  """TouchedRows of a [num_rows, E] table from row gradients `values` [N, E] looked up at
  `indices` [N] (repeated indices summed)."""
  gradient, lookups = summed_rows(values, indices, num_rows)
  return TouchedRows(gradient, lookups > 0)


class Optimizer(tf.Module):
  """Base: a step counter, a learning-rate schedule and per-variable slots.

  Args:
    learning_rate: float, or a callable step (int64 tensor) -> learning rate.
  """

  slot_names = ()

  def __init__(self, learning_rate, name=None):
    super().__init__(name=name)
    self.learning_rate = learning_rate
    self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False, name="iterations")
    self.slots = None  # {slot name: [variable per parameter]}, made by build()

  def current_learning_rate(self):
    return self.learning_rate_at(self.iterations)

  def learning_rate_at(self, iterations):
    """The learning rate when the step counter reads `iterations` (int64)."""
    if callable(self.learning_rate):
      return self.learning_rate(iterations)
    return tf.constant(self.learning_rate, tf.float32)

  def build(self, variables):
    """Creates zero slots for `variables` (once; call before restoring a checkpoint).

    Slots are placed beside their variable (a CPU-pinned embedding keeps CPU slots).
    """
    if self.slots is not None:
      return
    self._index = {v.ref(): i for i, v in enumerate(variables)}
    with tf.init_scope():
      def zeros(v, name):
        with tf.device(v.device):
          return tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False, name=name)
      self.slots = {slot: [zeros(v, f"{slot}_{i}") for i, v in enumerate(variables)]
                    for slot in self.slot_names}

  def apply(self, gradients, variables):
    """One optimizer step: `update`, then advance the step counter."""
    self.update(gradients, variables)
    self.finish_step()

  def finish_step(self, condition=None):
    """Advances the step counter (when `condition`, a scalar bool tensor, is true)."""
    self.iterations.assign_add(_count(condition))

  def update(self, gradients, variables, condition=None):
    """Updates `variables` in place, without advancing the step counter.

    A train step may call this more than once (e.g. dense variables inside a compiled
    function, the embedding outside it) and then `finish_step` once. None gradients are
    skipped. An `IndexedSlices` gradient updates only its rows ("lazy" Adam / RMSProp: the
    rule runs on the rows a batch touches, as TF1's LazyAdamOptimizer did); for SGD this is
    the same as the dense update. A `TouchedRows` gradient does the same for its touched rows.

    With `condition` (a scalar bool tensor), every write keeps the old value where it is
    false, so that the update changes nothing then; without a branch, which would make the
    host wait for the condition (an XLA conditional, or a `tf.cond` on a GPU value, copies its
    predicate to the host and blocks until it is there).
    """
    self.build(variables)
    lr = self.current_learning_rate()
    step = tf.cast(self.iterations + 1, tf.float32)
    for grad, var in zip(gradients, variables):
      if grad is None:
        continue
      self._apply(grad, var, self._slots_at(self._index[var.ref()]), lr, step, condition)

  def update_copies(self, gradients, variables, slots, iterations, learning_rate,
                    condition=None):
    """`update` of one device's copies of mirrored variables, then advances its counter.

    Args:
      gradients: as for `update`, one per variable.
      variables: that device's copies of the variables, in the order `build` was given.
      slots: that device's copies of `self.slots` ({slot name: [copy per variable]}).
      iterations: that device's copy of the step counter.
      learning_rate: `learning_rate_at(iterations)`, computed by the caller (a schedule may
        read variables of other devices, which an XLA-compiled caller cannot).
      condition: as for `update`; the counter advances only when it is true.
    """
    step = tf.cast(iterations + 1, tf.float32)
    for index, (grad, var) in enumerate(zip(gradients, variables)):
      if grad is not None:
        self._apply(grad, var, [slots[name][index] for name in self.slot_names],
                    learning_rate, step, condition)
    iterations.assign_add(_count(condition))

  def update_rows(self, gradient, rows, variable, condition=None, read_condition=False,
                  schedule=None):
    """The lazy rule on the rows `rows` [U] (distinct ids) of `variable` and of its slots,
    with their gradients `gradient` [U, E] (applied in the variable's dtype: a bfloat16
    gradient in float32), without advancing the step counter: what `update` does for an
    `IndexedSlices` without repeated indices, with no merge of repeated rows.

    Only those U rows are read and written (three gathers, the rule, three scatters; for
    Adam with no condition left, `fused_adam`: on a CPU one in-place pass of the engine's
    kernel), so the work is O(U E) whatever the table's size. Call it outside XLA.

    `condition` (a scalar bool tensor), as for `update`: with `read_condition`, the rows are
    cut to none when it is false, which makes the caller's device read its value (free where
    the gradient itself is read back from the accelerator, as for a table on the host);
    otherwise every write keeps the old value where it is false, without a branch.
    `schedule`: the (learning rate, step) of `schedule()` to apply, for rows of a step whose
    counter has already advanced; None: the current ones.
    """
    slots = self._slots_at(self._index[variable.ref()])
    if condition is not None and read_condition:
      count = tf.shape(rows)[0] * tf.cast(condition, tf.int32)
      rows, gradient, condition = rows[:count], gradient[:count], None
    lr, step = [tf.cast(value, variable.dtype) for value in (schedule or self.schedule())]
    if condition is None:
      self._apply_distinct_rows(gradient, rows, variable, slots, lr, step)
    else:
      self._apply_rows(tf.cast(gradient, variable.dtype), rows, variable, slots, lr, step,
                       condition)

  def schedule(self):
    """(learning rate, step t counted from 1) of the next update, float32 scalars."""
    return self.current_learning_rate(), tf.cast(self.iterations + 1, tf.float32)

  def _slots_at(self, index):
    return [self.slots[name][index] for name in self.slot_names]

  def _apply(self, grad, var, slots, lr, step, condition):
    """Writes the rule's new values of `var` and its `slots`, each kept where `condition`."""
    lr_v, step_v = tf.cast(lr, var.dtype), tf.cast(step, var.dtype)
    if isinstance(grad, tf.IndexedSlices):
      grad = clipping.merge_duplicate_rows(grad)
      self._apply_rows(grad.values, grad.indices, var, slots, lr_v, step_v, condition)
      return
    if isinstance(grad, TouchedRows):  # the rule over the table, kept on the touched rows
      touched = grad.touched[:, tf.newaxis]
      if condition is not None:
        touched = tf.math.logical_and(touched, condition)
      new_values = self._update(var, grad.gradient, slots, lr_v, step_v)
      for target, value in zip([var, *slots], new_values):
        target.assign(tf.where(touched, value, target))
      return
    new_values = self._update(var, grad, slots, lr_v, step_v)
    for target, value in zip([var, *slots], new_values):
      target.assign(_kept(condition, value, target))

  def _apply_rows(self, values, rows, var, slots, lr, step, condition):
    """The rule on rows `rows` [U] (distinct) of `var` and `slots`, gradients `values` [U, E]."""
    old_values = [tf.gather(target, rows) for target in [var, *slots]]
    new_values = self._update(old_values[0], values, old_values[1:], lr, step)
    for target, new, old in zip([var, *slots], new_values, old_values):
      target.scatter_update(tf.IndexedSlices(_kept(condition, new, old), rows))

  def _apply_distinct_rows(self, values, rows, var, slots, lr, step):
    """`_apply_rows` with no condition, outside XLA (an optimizer may fuse the rule, and
    read `values` in their own dtype)."""
    self._apply_rows(tf.cast(values, var.dtype), rows, var, slots, lr, step, None)

  def _update(self, var, grad, slots, lr, step):
    raise NotImplementedError


def _kept(condition, new, old):
  """`new`, or `old` where the scalar bool `condition` is false (None: always `new`)."""
  return new if condition is None else tf.where(condition, new, old)


def _count(condition):
  """1 (int64) when `condition` is None or true, else 0: how far a step moves the counter."""
  return tf.constant(1, tf.int64) if condition is None else tf.cast(condition, tf.int64)


class SGD(Optimizer):
  def _update(self, var, grad, slots, lr, step):
    return (optim.sgd_update(var, grad, lr),)


class Adam(Optimizer):
  slot_names = ("m", "v")

  def __init__(self, learning_rate, beta1=0.9, beta2=0.999, epsilon=1e-8, name=None):
    super().__init__(learning_rate, name=name)
    self.beta1, self.beta2, self.epsilon = beta1, beta2, epsilon

  def _apply_distinct_rows(self, values, rows, var, slots, lr, step):
    # One pass over the rows instead of gathers, the rule and scatters: the host's update
    # of a pinned table (`fused_adam`).
    fused_adam.adam_rows(values, rows, var, *slots, lr, step, self.beta1, self.beta2,
                         self.epsilon)

  def _update(self, var, grad, slots, lr, step):
    m, v = slots
    return optim.adam_update(var, grad, m, v, lr, step, self.beta1, self.beta2, self.epsilon)


class RMSProp(Optimizer):
  slot_names = ("mean_square",)

  def __init__(self, learning_rate, rho=0.9, epsilon=1e-7, name=None):
    super().__init__(learning_rate, name=name)
    self.rho, self.epsilon = rho, epsilon

  def _update(self, var, grad, slots, lr, step):
    return optim.rmsprop_update(var, grad, slots[0], lr, self.rho, self.epsilon)


def make_optimizer(train_config, variables=None, learning_rate_scale=None):
  """The optimizer named by a `TrainConfig`, on its learning-rate schedule.

  The schedule (`ops.optim.scheduled_learning_rate`: --warmup_steps, then --lr_schedule) is
  a function of the step counter, which checkpoints hold, so a resumed run continues it.
  With `variables`, its slots are built for them at once (as a checkpoint restore needs).
  `learning_rate_scale` (a float32 variable, e.g. `ValidationRecord.learning_rate_scale`)
  multiplies the schedule; it is read at every step, so lowering it takes effect at once.
  """
  def schedule(step):
    rate = optim.scheduled_learning_rate(
        train_config.learning_rate, step, train_config.lr_schedule, train_config.decay_steps,
        train_config.decay_rate, train_config.staircase, train_config.warmup_steps)
    if learning_rate_scale is not None:
      rate = rate * tf.cast(learning_rate_scale, rate.dtype)
    return rate

  if train_config.optimizer == "adam":
    optimizer = Adam(schedule, beta2=train_config.adam_beta2,
                     epsilon=train_config.adam_epsilon, name="adam")
  else:
    kinds = {"rmsprop": RMSProp, "sgd": SGD}
    optimizer = kinds[train_config.optimizer](schedule, name=train_config.optimizer)
  if variables is not None:
    optimizer.build(variables)
  return optimizer
