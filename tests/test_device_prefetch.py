"""Batches moved to the device ahead of the step: order, bounds, errors, shutdown, and the
training loops that use them (distributed, LM; a seq2seq step on one device gathers its
batches there instead: tests/test_resident_batches.py)."""
import os
import threading
import time
import types
from unittest import mock

from absl.testing import absltest
import numpy as np
import tensorflow as tf

from seq2seq.distributed import distributed_step
from seq2seq.runtime import workdir as workdir_lib
from seq2seq.step import device_prefetch
from seq2seq.step import train_step as train_step_lib
from seq2seq.train import loop
from tests import helpers


def _counting(count, fail_at=None):
  """A generator of 0..count-1 that records how many it has given and whether it was closed."""
  state = types.SimpleNamespace(given=0, closed=False)

  def generate():
    try:
      for number in range(count):
        if number == fail_at:
          raise ValueError(f"bad batch {number}")
        state.given += 1
        yield number
    finally:
      state.closed = True
  return generate(), state


class PrefetcherTest(absltest.TestCase):

  def test_pairs_in_order_moved_on_the_background_thread(self):
    threads = []
    moved = lambda n: (threads.append(threading.current_thread().name), n * 10)[1]
    source, _ = _counting(7)
    with device_prefetch.Prefetcher(source, moved) as batches:
      self.assertEqual(list(batches), [(n, n * 10) for n in range(7)])
    self.assertEqual(set(threads), {"device_prefetch"})

  def test_without_a_move_the_batch_is_given_as_is_on_this_thread(self):
    source, state = _counting(3)
    with device_prefetch.Prefetcher(source) as batches:
      self.assertEqual(list(batches), [(0, 0), (1, 1), (2, 2)])
    self.assertTrue(state.closed)

  def test_reads_at_most_depth_batches_ahead(self):
    source, state = _counting(100)
    with device_prefetch.Prefetcher(source, lambda n: n, depth=2) as batches:
      self.assertEqual(next(batches), (0, 0))
      deadline = time.time() + 5
      while state.given < 4 and time.time() < deadline:
        time.sleep(0.01)
      time.sleep(0.2)  # time to run further ahead, were it unbounded
      # the one returned, two queued, one moved and waiting for room
      self.assertEqual(state.given, 4)

  def test_an_error_reading_a_batch_is_raised_where_that_batch_was_due(self):
    source, _ = _counting(10, fail_at=3)
    with device_prefetch.Prefetcher(source, lambda n: -n) as batches:
      self.assertEqual([next(batches) for _ in range(3)], [(0, 0), (1, -1), (2, -2)])
      with self.assertRaisesRegex(ValueError, "bad batch 3"):
        next(batches)
      self.assertEqual(list(batches), [])

  def test_an_error_moving_a_batch_is_raised_too(self):
    def moved(n):
      if n == 1:
        raise RuntimeError("copy failed")
      return n
    source, _ = _counting(5)
    with device_prefetch.Prefetcher(source, moved) as batches:
      self.assertEqual(next(batches), (0, 0))
      with self.assertRaisesRegex(RuntimeError, "copy failed"):
        next(batches)

  def test_leaving_early_stops_the_thread_and_closes_the_batches(self):
    source, state = _counting(100)
    with device_prefetch.Prefetcher(source, lambda n: n) as batches:
      next(batches)
      thread = batches._thread
    self.assertFalse(thread.is_alive())
    self.assertTrue(state.closed)
    self.assertLess(state.given, 10)

  def test_depth_must_be_positive(self):
    with self.assertRaisesRegex(ValueError, "depth"):
      device_prefetch.Prefetcher(iter([]), lambda n: n, depth=0)


class ConstantsOnDeviceTest(tf.test.TestCase):

  def test_each_distinct_value_is_copied_once(self):
    on_device = device_prefetch.ConstantsOnDevice("/CPU:0")
    zeros, again = on_device(np.zeros(3, np.float32)), on_device(np.zeros(3, np.float32))
    one_hot = on_device(np.array([0, 1, 0], np.float32))
    self.assertIs(zeros, again)
    self.assertIsNot(zeros, one_hot)
    self.assertAllEqual(one_hot, [0, 1, 0])
    self.assertEqual(one_hot.dtype, tf.float32)
    self.assertIn("CPU:0", one_hot.device)

  def test_without_a_device_the_array_is_given_as_it_is(self):
    votes = np.zeros(3, np.float32)
    self.assertIs(device_prefetch.ConstantsOnDevice()(votes), votes)


class TrainingLoopTest(tf.test.TestCase):

  def test_batch_device_only_for_a_compiled_step_on_one_gpu(self):
    def run_config(jit_compile=True, embedding_device="gpu"):
      return types.SimpleNamespace(train=types.SimpleNamespace(jit_compile=jit_compile),
                                   model=types.SimpleNamespace(embedding_device=embedding_device))
    gpu = "/job:worker/replica:0/task:1/device:GPU:0"
    one_gpu = types.SimpleNamespace(extended=types.SimpleNamespace(worker_devices=(gpu,)))
    two_gpus = types.SimpleNamespace(extended=types.SimpleNamespace(
        worker_devices=(gpu, gpu[:-1] + "1")))
    cpu = types.SimpleNamespace(extended=types.SimpleNamespace(
        worker_devices=("/job:worker/replica:0/task:0/device:CPU:0",)))
    self.assertEqual(loop._batch_device(run_config(), one_gpu, True), gpu)
    self.assertIsNone(loop._batch_device(run_config(), two_gpus, True))
    self.assertIsNone(loop._batch_device(run_config(), cpu, True))
    self.assertIsNone(loop._batch_device(run_config(jit_compile=False), one_gpu, True))
    self.assertIsNone(loop._batch_device(run_config(embedding_device="cpu"), one_gpu, True))
    if not tf.config.list_physical_devices("GPU"):
      self.assertIsNone(loop._batch_device(run_config(), None, False))

  def test_a_distributed_step_is_given_its_batch_and_votes_on_the_device(self):
    """Under a strategy (mirrored over one CPU), the loop with the batches and the stop votes
    on the device ends with the parameters of the loop that gives NumPy arrays."""
    tf.config.experimental.enable_op_determinism()
    tmp = self.get_temp_dir()
    data = helpers.write_reverse_task(os.path.join(tmp, "reverse.tsv"), num_pairs=40)
    finals = {}
    for moved in (False, True):
      workdir = os.path.join(tmp, f"mirrored_{moved}")
      config = helpers.tiny_config(workdir, data, max_steps=5, strategy="mirrored",
                                   devices="/cpu:0")
      given = set()
      real_make = distributed_step.make_distributed_train_step

      def recording_step(*args, **kwargs):
        step = real_make(*args, **kwargs)
        def recorded(batch, votes):
          given.add((tf.as_dtype(batch.source.dtype), type(votes).__name__))
          return step(batch, votes)
        return recorded

      with mock.patch.object(loop, "_batch_device",
                             return_value="/job:localhost/replica:0/task:0/device:CPU:0"
                             if moved else None), \
           mock.patch.object(distributed_step, "make_distributed_train_step", recording_step):
        loop.train(config, log=helpers.quiet)
      self.assertEqual(given, {(tf.int64, "EagerTensor")} if moved else
                       {(tf.int32, "ndarray")})
      finals[moved] = helpers.checkpoint_values(workdir_lib.checkpoint_dir(workdir), ("model/",))
    helpers.assert_same_values(finals[False], finals[True], rtol=1e-6, atol=1e-7)

  def test_lm_windows_moved_ahead_train_as_the_numpy_windows(self):
    """--model=lm: windows moved onto the device (int64 ids) give the parameters and carried
    state of the loop given NumPy windows."""
    tf.config.experimental.enable_op_determinism()
    tmp = self.get_temp_dir()
    text = os.path.join(tmp, "text.txt")
    with open(text, "w", encoding="utf-8") as f:
      for number in range(60):
        f.write(" ".join(["the", "cat", "sat", "on", "a", "mat"][number % 3:]) + "\n")
    finals = {}
    for moved in (False, True):
      workdir = os.path.join(tmp, f"lm_{moved}")
      config = helpers.tiny_config(workdir, text, model="lm", num_steps=5, batch_size=4,
                                   hidden_size=16, embedding_size=8, max_steps=6)
      given = set()
      real_carried = train_step_lib.make_carried_step

      def recording_step(*args, **kwargs):
        step = real_carried(*args, **kwargs)
        def recorded(inputs, targets):
          given.add((inputs.dtype, targets.dtype))
          return step(inputs, targets)
        return recorded

      with mock.patch.object(loop, "_batch_device",
                             return_value="/CPU:0" if moved else None), \
           mock.patch.object(train_step_lib, "make_carried_step", recording_step):
        loop.train(config, log=helpers.quiet)
      self.assertEqual(given, {(tf.int64, tf.int64)} if moved else {(tf.int32, tf.int32)})
      finals[moved] = helpers.checkpoint_values(workdir_lib.checkpoint_dir(workdir), ("model/", "carried_state/"))
    helpers.assert_same_values(finals[False], finals[True], rtol=1e-6, atol=1e-7)


if __name__ == "__main__":
  absltest.main()
