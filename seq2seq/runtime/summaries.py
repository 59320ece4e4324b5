"""TensorBoard scalars, written without importing the tensorboard package.

`tf.summary.scalar` needs tensorboard installed; the event format itself does not. This writes
the same record (a float32 scalar tagged for the "scalars" plugin) that TensorBoard reads.
"""
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

_SCALAR_METADATA = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))


class ScalarWriter:
  """Writes named scalars to an event file under `logdir`."""

  def __init__(self, logdir):
    self._writer = tf.summary.create_file_writer(logdir)

  def write(self, step, values):
    """values: {tag: float}."""
    with self._writer.as_default():
      for tag, value in values.items():
        tf.summary.write(tag, tf.constant(value, tf.float32), step=step,
                         metadata=_SCALAR_METADATA)

  def flush(self):
    self._writer.flush()
