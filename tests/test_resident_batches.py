"""Batches gathered on the device by the step: the schedule's batches, and the same training."""
import os
from unittest import mock

import pytest
import numpy as np
import tensorflow as tf

from seq2seq.data import batches
from seq2seq.runtime import workdir as workdir_lib
from seq2seq.step import resident_batches
from seq2seq.step import train_step as train_step_lib
from seq2seq.train import loop
from tests import helpers

DEVICE = "/CPU:0"


def _schedule(batch_size=4, seed=5):
  """Pairs of 2..7 tokens in buckets 4 and 8: each bucket has a smaller last batch."""
  rng = np.random.default_rng(0)
  examples = [(list(rng.integers(4, 30, rng.integers(2, 8))),
               list(rng.integers(4, 30, rng.integers(2, 8)))) for _ in range(23)]
  return batches.BatchSchedule(examples, batch_size, boundaries=(4, 8), seed=seed)


def _as_batch(batch):
  return batches.Batch(*batch)


class ResidentBatchesTest(tf.test.TestCase):

  def test_each_step_gathers_the_schedules_batch(self):
    """From any start, the steps get the batches `BatchSchedule.batches` gives, padded to the
    step's rows (`pad_rows`), with int64 ids (`device_batch`), and the planned tokens."""
    schedule = _schedule()
    resident = resident_batches.ResidentBatches(schedule, _as_batch, DEVICE, rows=5)
    self.assertEqual((4, 8), resident.lengths)
    for epoch, start in ((0, 0), (1, 0), (1, 3)):
      planned = resident.epoch(epoch, start)
      wanted = list(schedule.batches(epoch, start=start))
      self.assertLen(planned, schedule.batches_per_epoch - start)
      self.assertLen(wanted, len(planned))
      for plan, want in zip(planned, wanted):
        got = resident.step(plan)
        want = train_step_lib.pad_rows(want, 5)
        self.assertEqual(plan.length, want.source.shape[1])
        self.assertEqual(plan.tokens, want.target_weight.sum())
        for field, got_field, want_field in zip(batches.Batch._fields, got, want):
          self.assertEqual(got_field.dtype, tf.int64 if field != "target_weight" else tf.float32)
          self.assertAllEqual(want_field, got_field, msg=field)

  def test_a_later_epoch_restarts_each_bucket(self):
    """A new epoch (or a resumed one) sets each bucket's position, however far the last got."""
    schedule = _schedule()
    resident = resident_batches.ResidentBatches(schedule, _as_batch, DEVICE, rows=4)
    first = resident.epoch(0)
    resident.step(first[0])  # one batch of epoch 0, then epoch 2 from its start
    for plan, want in zip(resident.epoch(2), schedule.batches(2)):
      self.assertAllEqual(train_step_lib.pad_rows(want, 4).source, resident.step(plan).source)

  def test_batches_larger_than_the_step_are_refused(self):
    with self.assertRaisesRegex(ValueError, "batches of 4 rows, more than the 3"):
      resident_batches.ResidentBatches(_schedule(), _as_batch, DEVICE, rows=3)


@pytest.mark.slow
class ResidentTrainingTest(tf.test.TestCase):

  def test_resident_batches_train_as_the_numpy_batches(self):
    """The loop whose compiled step gathers its batches on the device ends with the parameters
    of the loop given NumPy batches: two buckets, smaller last batches, dropout, three epochs,
    and a run stopped mid-epoch and resumed."""
    tf.config.experimental.enable_op_determinism()
    tmp = self.get_temp_dir()
    pairs = helpers.write_reverse_task(os.path.join(tmp, "reverse.tsv"), num_pairs=40)
    finals = {}
    for resident in (False, True):
      workdir = os.path.join(tmp, f"resident_{resident}")
      config = lambda steps: helpers.tiny_config(
          workdir, pairs, max_steps=steps, keep_prob=0.8, num_buckets=2, jit_compile=True,
          embedding_device="gpu")
      steps_taken = []
      real_step = resident_batches.ResidentBatches.step

      def counted(self, planned):
        steps_taken.append(planned.length)
        return real_step(self, planned)

      with mock.patch.object(loop, "_batch_device",
                             return_value=DEVICE if resident else None), \
           mock.patch.object(resident_batches.ResidentBatches, "step", counted):
        for steps in ((4, 9) if resident else (9,)):  # resumed at step 4, mid-epoch
          result = loop.train(config(steps), log=helpers.quiet)
      self.assertEqual(9, result.step)
      self.assertEqual(9 if resident else 0, len(steps_taken))
      if resident:
        self.assertEqual({3, 6}, set(steps_taken))
        self.assertTrue(result.resumed_from)
      finals[resident] = helpers.checkpoint_values(workdir_lib.checkpoint_dir(workdir))
    helpers.assert_same_values(finals[False], finals[True], rtol=1e-5, atol=1e-6)


if __name__ == "__main__":
  tf.test.main()
