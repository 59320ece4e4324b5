"""Batches moved onto the device a few steps ahead of the step that reads them.

Copying a batch to a GPU waits for the work already queued there (TensorFlow's host-to-device
copy waits for the compute stream, so that it never overwrites memory a queued kernel still
reads). Made on the training loop's thread, that copy would hold the loop until the step
before has finished, and the GPU would sit idle while the loop issues the next step. Made
here, on a background thread `depth` batches ahead, it waits there instead.
"""
import queue
import threading

import numpy as np
import tensorflow as tf

_END = object()


class _Failure:
  """An exception raised on the background thread, for the loop's thread to raise."""

  def __init__(self, error):
    self.error = error


class Prefetcher:
  """Iterates `batches` as (batch, moved(batch)) pairs, `moved` run `depth` batches ahead on
  a background thread. Without `moved`, (batch, batch) pairs, on the caller's thread.

  Use it as a context manager: leaving the block (at the end, on `break` or on an error)
  stops the thread and closes `batches`. An exception raised while reading or moving a batch
  is raised by the `next` call that would have returned that batch.
  """

  def __init__(self, batches, moved=None, depth=2):
    if depth < 1:
      raise ValueError(f"depth must be at least 1, got {depth}")
    self._batches = iter(batches)
    self._moved = moved
    self._queue = queue.Queue(maxsize=depth)
    self._stop = threading.Event()
    self._finished = False
    self._thread = None
    if moved is not None:
      self._thread = threading.Thread(target=self._fill, name="device_prefetch", daemon=True)
      self._thread.start()

  def _put(self, item):
    """Queues `item`, unless `close` is called first; returns whether it was queued."""
    while not self._stop.is_set():
      try:
        self._queue.put(item, timeout=0.05)
        return True
      except queue.Full:
        pass
    return False

  def _fill(self):
    try:
      for batch in self._batches:
        if not self._put((batch, self._moved(batch))):
          return
      self._put(_END)
    except BaseException as error:  # pylint: disable=broad-except  (raised on the loop's thread)
      self._put(_Failure(error))

  def __iter__(self):
    return self

  def __next__(self):
    if self._finished:
      raise StopIteration
    if self._thread is None:
      batch = next(self._batches)
      return batch, batch
    item = self._queue.get()
    if item is _END or isinstance(item, _Failure):
      self._finished = True
      if item is _END:
        raise StopIteration
      raise item.error
    return item

  def close(self):
    """Stops the background thread (after the batch it is moving) and closes `batches`."""
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
    close = getattr(self._batches, "close", None)
    if close is not None:
      close()

  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    self.close()


class ConstantsOnDevice:
  """Small arrays that repeat (the stop votes each distributed step takes) as tensors on
  `device`, each distinct value copied there once: a copy made for every step would wait, on
  the loop's thread, for the step before. Without a device, the arrays are given as they are.
  """

  def __init__(self, device=None):
    self._device = device
    self._tensors = {}

  def __call__(self, array):
    if self._device is None:
      return array
    array = np.asarray(array)
    key = (array.dtype.str, array.shape, array.tobytes())
    tensor = self._tensors.get(key)
    if tensor is None:
      with tf.device(self._device):
        tensor = self._tensors[key] = tf.identity(tf.constant(array))
    return tensor
