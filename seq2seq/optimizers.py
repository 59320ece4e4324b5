"""Optimizers that own their slot variables and apply the update rules of `ops.optim`.

They are `tf.Module`s, so `tf.train.Checkpoint` saves their slots and step counter, and they
run the same way eagerly, in `tf.function` and under XLA.
"""
import tensorflow as tf

from ops import optim


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
    if callable(self.learning_rate):
      return self.learning_rate(self.iterations)
    return tf.constant(self.learning_rate, tf.float32)

  def build(self, variables):
    """Creates zero slots for `variables` (once; call before restoring a checkpoint)."""
    if self.slots is not None:
      return
    with tf.init_scope():
      self.slots = {
          slot: [tf.Variable(tf.zeros_like(v), trainable=False, name=f"{slot}_{i}")
                 for i, v in enumerate(variables)]
          for slot in self.slot_names}

  def apply(self, gradients, variables):
    """Updates `variables` in place with `gradients` (None entries are skipped)."""
    self.build(variables)
    lr = self.current_learning_rate()
    step = tf.cast(self.iterations + 1, tf.float32)
    for index, (grad, var) in enumerate(zip(gradients, variables)):
      if grad is None:
        continue
      grad = tf.convert_to_tensor(grad)  # densifies IndexedSlices (embedding gradients)
      slots = [self.slots[name][index] for name in self.slot_names]
      new_values = self._update(var, grad, slots, tf.cast(lr, var.dtype), tf.cast(step, var.dtype))
      var.assign(new_values[0])
      for slot, value in zip(slots, new_values[1:]):
        slot.assign(value)
    self.iterations.assign_add(1)

  def _update(self, var, grad, slots, lr, step):
    raise NotImplementedError


class SGD(Optimizer):
  def _update(self, var, grad, slots, lr, step):
    return (optim.sgd_update(var, grad, lr),)


class Adam(Optimizer):
  slot_names = ("m", "v")

  def __init__(self, learning_rate, beta1=0.9, beta2=0.999, epsilon=1e-8, name=None):
    super().__init__(learning_rate, name=name)
    self.beta1, self.beta2, self.epsilon = beta1, beta2, epsilon

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


def make_optimizer(train_config):
  """The optimizer named by a `TrainConfig`, with exponential learning-rate decay."""
  def schedule(step):
    return optim.exponential_decay(train_config.learning_rate, step, train_config.decay_steps,
                                   train_config.decay_rate, train_config.staircase)

  kinds = {"adam": Adam, "rmsprop": RMSProp, "sgd": SGD}
  return kinds[train_config.optimizer](schedule, name=train_config.optimizer)
