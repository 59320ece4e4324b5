"""Host tensors in page-locked memory, for steps that move a table's rows to a GPU and back.

With --embedding_device=cpu every step copies the looked-up rows to the GPU and their
gradients back. From ordinary (pageable) memory the driver copies through a staging buffer,
a step at a time and with the host waiting; from page-locked memory the GPU's copy engine
reads and writes the buffer itself, at the bus's speed and while the host goes on. TensorFlow
allocates every host tensor page-locked when its GPU option `force_gpu_compatible` is set;
that option is read once, when TensorFlow starts its devices, so `pin_host_tensors` must run
before the first op.
"""
from tensorflow.core.protobuf import config_pb2
from tensorflow.python.eager import context


def pin_host_tensors():
  """Has TensorFlow allocate host tensors in page-locked memory where a GPU is present.

  Returns True when set; False when TensorFlow has already started its devices (an op has
  run), which leaves the allocation as it was."""
  eager = context.context()
  if eager._initialized:  # pylint: disable=protected-access
    return False
  config = config_pb2.ConfigProto()
  if eager._config is not None:  # pylint: disable=protected-access
    config.CopyFrom(eager._config)  # pylint: disable=protected-access
  config.gpu_options.force_gpu_compatible = True
  eager._config = config  # pylint: disable=protected-access
  return True

