"""Validation-driven training: the best checkpoint, learning-rate plateaus, early stopping."""
import math
import os
from unittest import mock

import numpy as np
import tensorflow as tf

from seq2seq import config as config_lib
from seq2seq.infer import chat
from seq2seq.runtime import checkpoints
from seq2seq.runtime import workdir as workdir_lib
from seq2seq.step import optimizers
from seq2seq.train import loop
from seq2seq.train import validation_record
from tests import helpers


class JudgeTest(tf.test.TestCase):

  def test_improvement_resets_the_count(self):
    verdict = validation_record.judge(1.0, 2.0, stale_epochs=3, plateau_patience=2,
                                      early_stopping=4)
    self.assertEqual(verdict, validation_record.Verdict(True, 0, False, False))

  def test_equal_and_nan_losses_do_not_improve(self):
    for loss in (2.0, math.nan):
      verdict = validation_record.judge(loss, 2.0, 0, 0, 0)
      self.assertFalse(verdict.improved)
      self.assertEqual(verdict.stale_epochs, 1)

  def test_plateau_cuts_every_patience_epochs_and_stopping_waits_for_its_own(self):
    cuts, stops, stale = [], [], 0
    for _ in range(6):
      verdict = validation_record.judge(5.0, 1.0, stale, plateau_patience=2, early_stopping=5)
      stale = verdict.stale_epochs
      cuts.append(verdict.learning_rate_cut)
      stops.append(verdict.stop)
    self.assertEqual(cuts, [False, True, False, True, False, True])
    self.assertEqual(stops, [False, False, False, False, True, True])

  def test_zero_turns_both_off(self):
    verdict = validation_record.judge(5.0, 1.0, 99, 0, 0)
    self.assertFalse(verdict.learning_rate_cut or verdict.stop)

  def test_record_tracks_best_and_scales_learning_rate(self):
    record = validation_record.ValidationRecord()
    for step, loss in enumerate([3.0, 2.0, 2.5, 2.6], start=1):
      record.observe(loss, step * 10, plateau_patience=1, plateau_factor=0.5)
    self.assertEqual(float(record.best_loss.numpy()), 2.0)
    self.assertEqual(int(record.best_step.numpy()), 20)
    self.assertEqual(int(record.stale_epochs.numpy()), 2)
    self.assertAllClose(record.learning_rate_scale.numpy(), 0.25)


class ValidatedTrainingTest(tf.test.TestCase):
  """The loop with a scripted validation loss (loop.evaluate replaced)."""

  LOSSES = [3.0, 2.0, 2.5, 2.6, 2.7, 2.8]

  def _train(self, workdir, data, **changes):
    losses = iter(self.LOSSES[self._calls:])

    def scripted(eval_step, schedule):
      del eval_step, schedule
      self._calls += 1
      loss = next(losses)
      return loss, math.exp(loss)

    messages = []
    config = helpers.tiny_config(workdir, data, val_data=data, **changes)
    with mock.patch.object(loop, "evaluate", scripted):
      result = loop.train(config, log=messages.append)
    return result, messages

  def setUp(self):
    super().setUp()
    self._calls = 0
    tmp = self.get_temp_dir()
    # 100 pairs in batches of 16: 7 steps an epoch.
    self.data = helpers.write_reverse_task(os.path.join(tmp, "reverse.tsv"), num_pairs=100)
    self.workdir = os.path.join(tmp, "run")

  def test_early_stopping_plateaus_and_the_best_checkpoint(self):
    result, messages = self._train(self.workdir, self.data, plateau_patience=1,
                                   plateau_factor=0.5, early_stopping=3)
    # Epoch 2 is the best; epochs 3, 4 and 5 do not improve: stop after epoch 5.
    self.assertEqual(result.epoch, 5)
    self.assertEqual(result.step, 35)
    self.assertTrue(any(m.startswith("early stopping: 3 epochs") for m in messages), messages)
    self.assertTrue(any("now x0.125" in m for m in messages), messages)
    best = tf.train.latest_checkpoint(os.path.join(self.workdir, "best"))
    self.assertTrue(best.endswith("best-14"), best)

    reader = tf.train.load_checkpoint(workdir_lib.checkpoint_dir(self.workdir))
    scale = reader.get_tensor("validation/learning_rate_scale/.ATTRIBUTES/VARIABLE_VALUE")
    self.assertAllClose(scale, 0.125)

    # The learning rate the optimizer used at the end is the schedule times the scale.
    run_config = helpers.tiny_config(self.workdir, self.data)
    record = validation_record.ValidationRecord()
    record.learning_rate_scale.assign(float(scale))
    optimizer = optimizers.make_optimizer(run_config.train,
                                          learning_rate_scale=record.learning_rate_scale)
    optimizer.iterations.assign(35)
    expected = 0.01 * 0.95 ** (35 / 100000) * 0.125
    self.assertAllClose(optimizer.current_learning_rate(), expected)

    # A resumed run keeps the record: it has already stopped, so it trains nothing.
    resumed, messages = self._train(self.workdir, self.data, plateau_patience=1,
                                    plateau_factor=0.5, early_stopping=3)
    self.assertEqual(resumed.step, 35)
    self.assertTrue(any("already stopped" in m for m in messages), messages)

  def test_inference_reads_the_best_checkpoint_by_default(self):
    self._train(self.workdir, self.data, num_epochs=4)
    def loaded_step(which):
      run_config = config_lib.replace(helpers.tiny_config(self.workdir, self.data),
                                      checkpoint=which)
      lines = []
      chat.load_trained(run_config, log=lines.append)
      return lines[-1]
    self.assertIn("best-14", loaded_step("auto"))
    self.assertIn("best-14", loaded_step("best"))
    self.assertIn("ckpt-28", loaded_step("latest"))

  def test_average_of_the_kept_best_checkpoints(self):
    self.LOSSES = [3.0, 2.0, 1.5, 1.0]
    self._train(self.workdir, self.data, num_epochs=4, keep_best=3)
    best_dir = os.path.join(self.workdir, "best")
    kept = tf.train.get_checkpoint_state(best_dir).all_model_checkpoint_paths
    self.assertEqual([os.path.basename(p) for p in kept], ["best-14", "best-21", "best-28"])

    config = helpers.tiny_config(self.workdir, self.data)
    lines = []
    averaged, _ = chat.load_trained(config_lib.replace(config, average_checkpoints=5),
                                    log=lines.append)
    self.assertIn("mean of 3 checkpoints", lines[-1])
    self.assertIn("newest at step 28", lines[-1])

    # The mean, variable by variable, of the three restored one at a time.
    model, _ = chat.load_trained(config, log=helpers.quiet)
    checkpointer = checkpoints.Checkpointer(
        workdir_lib.checkpoint_dir(self.workdir), model,
        optimizers.make_optimizer(config.train, model.trainable_variables),
        checkpoints.Progress())
    values = []
    for path in kept:
      checkpointer.restore(path, partial=True)
      values.append([v.numpy() for v in model.trainable_variables])
    self.assertNotAllClose(values[0][0], values[2][0])
    for i, variable in enumerate(averaged.trainable_variables):
      expected = np.mean([v[i] for v in values], axis=0)
      self.assertAllClose(variable.numpy(), expected, rtol=1e-6, atol=1e-7,
                          msg=variable.name)

  def test_without_validation_latest_is_read_and_best_is_refused(self):
    config = helpers.tiny_config(self.workdir, self.data, max_steps=3)
    loop.train(config, log=helpers.quiet)
    self.assertFalse(os.path.exists(os.path.join(self.workdir, "best")))
    lines = []
    chat.load_trained(config, log=lines.append)
    self.assertIn("ckpt-3", lines[-1])
    with self.assertRaisesRegex(checkpoints.CheckpointError, "no best checkpoint"):
      chat.load_trained(config_lib.replace(config, checkpoint="best"), log=helpers.quiet)

  def test_checkpoints_from_before_the_record_still_resume(self):
    """A checkpoint without the "validation" object (older runs) restores the rest."""
    config = helpers.tiny_config(self.workdir, self.data, max_steps=3)
    loop.train(config, log=helpers.quiet)
    latest = tf.train.latest_checkpoint(workdir_lib.checkpoint_dir(self.workdir))
    # Rewrite it without the record, as a run of an earlier version wrote it.
    model, _ = chat.load_trained(config, log=helpers.quiet)
    old_dir = os.path.join(self.get_temp_dir(), "old", "checkpoints")
    optimizer = optimizers.make_optimizer(config.train, model.trainable_variables)
    progress = checkpoints.Progress()
    tf.train.Checkpoint(model=model, optimizer=optimizer, progress=progress).restore(
        latest).expect_partial()
    tf.train.CheckpointManager(tf.train.Checkpoint(model=model, optimizer=optimizer,
                                                   progress=progress),
                               old_dir, 1, checkpoint_name="ckpt").save(checkpoint_number=3)
    names = {k.split("/")[0] for k in
             tf.train.load_checkpoint(old_dir).get_variable_to_shape_map()}
    self.assertNotIn("validation", names)
    record = validation_record.ValidationRecord()
    checkpointer = checkpoints.Checkpointer(old_dir, model, optimizer, checkpoints.Progress(),
                                            optional_extras={"validation": record})
    self.assertTrue(checkpointer.restore_latest().endswith("ckpt-3"))
    self.assertEqual(float(record.best_loss.numpy()), np.inf)
    self.assertEqual(int(checkpointer.progress.step.numpy()), 3)


class ConfigTest(tf.test.TestCase):

  def test_flags_that_need_validation_data_say_so(self):
    for name in ("plateau_patience", "early_stopping"):
      config = config_lib.replace(config_lib.RunConfig(), **{name: 2})
      with self.assertRaisesRegex(config_lib.ConfigError, f"{name}: .*--val_data"):
        config.check_training()

  def test_bad_values(self):
    for name, value in (("plateau_patience", -1), ("plateau_factor", 0.0),
                        ("plateau_factor", 1.5), ("early_stopping", -2), ("checkpoint", "best2"),
                        ("keep_best", 0), ("average_checkpoints", 0)):
      with self.assertRaisesRegex(config_lib.ConfigError, name):
        config_lib.replace(config_lib.RunConfig(), **{name: value})
