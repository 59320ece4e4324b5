"""The compiled train and eval steps, traced once per padded length (bucket)."""
import tensorflow as tf

from ops import clipping
from ops import losses
from seq2seq import data


def _batch_signature(source_length):
  """TensorSpecs of a `Batch` whose source is padded to `source_length`; batch size free."""
  ids = lambda t: tf.TensorSpec([None, t], tf.int32)
  return data.Batch(
      source=ids(source_length),
      source_length=tf.TensorSpec([None], tf.int32),
      decoder_input=ids(source_length + 1),
      target=ids(source_length + 1),
      target_weight=tf.TensorSpec([None, source_length + 1], tf.float32))


class BucketedFunction:
  """Calls `fn(batch)` through one `tf.function` per padded length.

  The unroll is a Python loop, so the time dimension must be static; the batch dimension is
  left as None in the input signature. A bucket is therefore traced exactly once, and the
  last, smaller batch of an epoch does not retrace.
  """

  def __init__(self, fn, jit_compile=None):
    self._fn = fn
    self._jit_compile = jit_compile
    self._functions = {}

  @property
  def traced_lengths(self):
    return tuple(sorted(self._functions))

  def __call__(self, batch):
    length = int(batch.source.shape[1])
    function = self._functions.get(length)
    if function is None:
      function = tf.function(self._fn, input_signature=[_batch_signature(length)],
                             jit_compile=self._jit_compile)
      self._functions[length] = function
    return function(data.Batch(*batch))


def batch_loss(model, batch, training):
  """Mean cross entropy per real target token of `batch`, and the logits."""
  logits = model(batch.source, batch.source_length, batch.decoder_input, training=training)
  return losses.sequence_loss(logits, batch.target, batch.target_weight), logits


def make_train_step(model, optimizer, max_grad_norm):
  """A compiled step: forward, backward, clip by global norm, update.

  Returns:
    step(batch) -> (loss, grad_norm): scalar loss before the update and the gradients' global
    norm before clipping.
  """
  def step(batch):
    with tf.GradientTape() as tape:
      loss, _ = batch_loss(model, batch, training=True)
    variables = model.trainable_variables
    gradients = tape.gradient(loss, variables)
    gradients, grad_norm = clipping.clip_gradients(gradients, max_grad_norm)
    optimizer.apply(gradients, variables)
    return loss, grad_norm

  return BucketedFunction(step)


def make_eval_step(model):
  """A compiled step: (summed token cross entropy, number of target tokens) of a batch."""
  def step(batch):
    logits = model(batch.source, batch.source_length, batch.decoder_input, training=False)
    per_token = losses.sequence_loss(logits, batch.target, batch.target_weight,
                                     average_across_timesteps=False,
                                     average_across_batch=False)
    return tf.reduce_sum(per_token), tf.reduce_sum(batch.target_weight)

  return BucketedFunction(step)
