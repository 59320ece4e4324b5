"""Learning-rate schedules (`ops.optim.scheduled_learning_rate`) against NumPy float64, through
the optimizer, across a checkpoint restore, and their config checks."""
import dataclasses
import os

from absl.testing import parameterized
import numpy as np
import pytest
import tensorflow as tf

from ops import optim
from seq2seq import config
from seq2seq.step import optimizers
from tests.test_cli import TINY, run_train

KINDS = config.LR_SCHEDULES
STEPS = (0, 1, 5, 6, 7, 19, 20, 21, 49, 50, 51, 120, 1000)


def np_learning_rate(kind, lr, step, decay_steps, decay_rate=0.95, staircase=False,
                     warmup_steps=0):
  """The schedule written out in float64: warmup times the decay of `kind`."""
  warmup = min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0
  if kind == "exponential":
    decay = decay_rate ** (step // decay_steps if staircase else step / decay_steps)
  elif kind == "constant":
    decay = 1.0
  elif kind == "inverse_sqrt":
    decay = np.sqrt(decay_steps / max(step, decay_steps))
  else:
    decay = 0.5 * (1.0 + np.cos(np.pi * min(step, decay_steps) / decay_steps))
  return lr * warmup * decay


class ScheduleTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.product(kind=KINDS, warmup_steps=(0, 7, 50), staircase=(False, True))
  def test_against_numpy(self, kind, warmup_steps, staircase):
    compiled = tf.function(lambda step: optim.scheduled_learning_rate(
        0.3, step, kind, 20, 0.5, staircase, warmup_steps))
    for step in STEPS:
      expected = np_learning_rate(kind, 0.3, step, 20, 0.5, staircase, warmup_steps)
      eager = optim.scheduled_learning_rate(0.3, tf.constant(step, tf.int64), kind, 20, 0.5,
                                            staircase, warmup_steps)
      self.assertAllClose(expected, eager, rtol=1e-5, atol=1e-9, msg=f"{kind} step {step}")
      self.assertAllClose(expected, compiled(tf.constant(step, tf.int64)), rtol=1e-5,
                          atol=1e-9, msg=f"{kind} step {step} in tf.function")

  def test_warmup_rises_linearly_and_never_gives_zero(self):
    rates = [float(optim.scheduled_learning_rate(1.0, step, "constant", 10, warmup_steps=4))
             for step in range(6)]
    self.assertAllClose([0.25, 0.5, 0.75, 1.0, 1.0, 1.0], rates)

  def test_cosine_ends_at_zero_and_stays(self):
    for step in (100, 101, 500):
      self.assertAllClose(0.0, optim.scheduled_learning_rate(1.0, step, "cosine", 100), atol=1e-7)
    self.assertAllClose(0.5, optim.scheduled_learning_rate(1.0, 50, "cosine", 100), atol=1e-6)

  def test_unknown_kind(self):
    with self.assertRaisesRegex(ValueError, "unknown learning-rate schedule 'linear'"):
      optim.decay_factor("linear", 0, 10)


class OptimizerScheduleTest(tf.test.TestCase, parameterized.TestCase):

  def _config(self, kind, **changes):
    return dataclasses.replace(config.TrainConfig(), optimizer="sgd", learning_rate=0.4,
                               lr_schedule=kind, decay_steps=30, decay_rate=0.5,
                               warmup_steps=10, **changes)

  @parameterized.parameters(*KINDS)
  def test_optimizer_follows_schedule_times_plateau_scale(self, kind):
    scale = tf.Variable(0.25)
    optimizer = optimizers.make_optimizer(self._config(kind), learning_rate_scale=scale)
    for step in (0, 4, 9, 10, 29, 30, 45, 60):
      optimizer.iterations.assign(step)
      expected = 0.25 * np_learning_rate(kind, 0.4, step, 30, 0.5, False, 10)
      self.assertAllClose(expected, optimizer.current_learning_rate(), rtol=1e-5, atol=1e-9)

  def test_sgd_update_uses_the_scheduled_rate(self):
    optimizer = optimizers.make_optimizer(self._config("inverse_sqrt"))
    variables = [tf.Variable([1.0, 1.0])]
    for step in range(3):
      before = variables[0].numpy().copy()
      optimizer.apply([tf.constant([1.0, -2.0])], variables)
      lr = np_learning_rate("inverse_sqrt", 0.4, step, 30, 0.5, False, 10)
      self.assertAllClose(before + lr * np.array([-1.0, 2.0]), variables[0], rtol=1e-6)

  @parameterized.parameters(*KINDS)
  def test_restored_step_counter_continues_the_schedule(self, kind):
    variables = [tf.Variable([1.0, 2.0])]
    trained = optimizers.make_optimizer(self._config(kind), variables)
    for _ in range(37):
      trained.apply([tf.constant([0.1, 0.1])], variables)
    path = tf.train.Checkpoint(optimizer=trained).save(os.path.join(self.get_temp_dir(), "schedule"))
    resumed = optimizers.make_optimizer(self._config(kind), [tf.Variable([0.0, 0.0])])
    self.assertAllClose(np_learning_rate(kind, 0.4, 0, 30, 0.5, False, 10),
                        resumed.current_learning_rate())
    tf.train.Checkpoint(optimizer=resumed).restore(path).assert_existing_objects_matched()
    self.assertEqual(37, int(resumed.iterations))
    self.assertAllClose(np_learning_rate(kind, 0.4, 37, 30, 0.5, False, 10),
                        resumed.current_learning_rate(), rtol=1e-5, atol=1e-9)


class ScheduleConfigTest(parameterized.TestCase):

  def test_default_is_the_exponential_decay_without_warmup(self):
    train = config.TrainConfig()
    self.assertEqual(("exponential", 0), (train.lr_schedule, train.warmup_steps))

  @parameterized.parameters(
      (dict(lr_schedule="linear"), "lr_schedule: must be one of exponential, constant"),
      (dict(warmup_steps=-1), "warmup_steps: must be >= 0"),
  )
  def test_bad_values_name_the_flag(self, changes, message):
    with self.assertRaisesRegex(config.ConfigError, message):
      dataclasses.replace(config.TrainConfig(), **changes)

@pytest.mark.slow
class FastFlagsTest(tf.test.TestCase):

  def test_schedule_and_adam_flags_train_under_the_fast_flags(self):
    workdir = os.path.join(self.get_temp_dir(), "run")
    flags = [f"--workdir={workdir}", *TINY, "--max_length=8", "--attention=luong",
             "--lr_schedule=cosine", "--warmup_steps=2", "--decay_steps=4", "--adam_beta2=0.98",
             "--jit_compile", "--embedding_device=gpu", "--unroll=dynamic", "--unroll_steps=5",
             "--log_every=1"]
    trained = run_train(*flags, "--max_steps=2", timeout=600)
    self.assertEqual(trained.returncode, 0, trained.stderr)
    # A line shows the rate of the next update, at n updates done: 0.002 * (1 + cos(pi n / 4)) / 2
    # once the warmup (n + 1 of 2) is over.
    self.assertRegex(trained.stdout, r"1/2 \(epoch 1/\d+\) .* lr=0.00171 ")
    self.assertRegex(trained.stdout, r"2/2 \(epoch 1/\d+\) .* lr=0.001 ")
    resumed = run_train(*flags, "--max_steps=4", timeout=600)
    self.assertEqual(resumed.returncode, 0, resumed.stderr)
    self.assertRegex(resumed.stdout, r"3/4 \(epoch 1/\d+\) .* lr=0.000293 ")
    self.assertRegex(resumed.stdout, r"4/4 \(epoch 1/\d+\) .* lr=0 ")
