"""Every bucket's step compiled before training, several at once: the compiling steps change
nothing, and training after them is training without them, on programs already traced."""
import os
from unittest import mock

from absl.testing import parameterized
import numpy as np
import pytest
import tensorflow as tf

from seq2seq import config as config_lib
from seq2seq.data import batches as batches_lib
from seq2seq.models import encoder_decoder as model_lib
from seq2seq.runtime import workdir as workdir_lib
from seq2seq.step import compile_ahead
from seq2seq.step import optimizers
from seq2seq.step import resident_batches
from seq2seq.step import train_step as train_step_lib
from seq2seq.train import loop
from tests import helpers

VOCAB = 30
ROWS = 4
LENGTHS = (3, 4, 5)


def _batches(lengths, seed=11):
  """One batch of ROWS pairs for each of `lengths`, each padded to its length."""
  rng = np.random.default_rng(seed)
  return [batches_lib.pad_batch(
      [(list(rng.integers(4, VOCAB, rng.integers(1, length + 1))),
        list(rng.integers(4, VOCAB, rng.integers(1, length + 1)))) for _ in range(ROWS)], length)
          for length in lengths]


def _model(embedding_device="cpu"):
  """A bidirectional attention model on the dynamic unroll, with dropout, and its Adam."""
  config = config_lib.ModelConfig(num_layers=1, hidden_size=8, embedding_size=6, keep_prob=0.7,
                                  unroll="dynamic", unroll_steps=2, encoder="bi",
                                  attention="luong", embedding_device=embedding_device)
  model = model_lib.Seq2Seq(config, VOCAB, seed=4)
  model.build()
  optimizer = optimizers.make_optimizer(config_lib.TrainConfig(learning_rate=0.05),
                                        model.trainable_variables)
  return model, optimizer


def _state(model, optimizer):
  """Every value a step may write: parameters, Adam slots and step counter, dropout state."""
  return ([v.numpy() for v in model.trainable_variables]
          + [v.numpy() for v in optimizer.variables]
          + [model.dropout_generator.state.numpy()])


def _train(kind, warm):
  """(state after compiling ahead or None, state after training on four batches, the step)."""
  model, optimizer = _model()
  step = train_step_lib.make_train_step(model, optimizer, 1.0, jit_compile=True,
                                        batch_size=ROWS, lookahead=kind == "lookahead")
  before = _state(model, optimizer)
  if warm:
    compile_ahead.compile_buckets(step, LENGTHS, ROWS, [model.dropout_generator], threads=3)
    for want, got in zip(before, _state(model, optimizer)):
      np.testing.assert_array_equal(want, got)
  batches = _batches((5, 4, 5, 3))
  for batch, following in zip(batches, batches[1:] + [None]):
    finite = step(batch, following)[2] if kind == "lookahead" else step(batch)[2]
    assert bool(finite)
  if kind == "lookahead":
    step.flush()
  return _state(model, optimizer), step


class CompileAheadTest(tf.test.TestCase, parameterized.TestCase):

  def test_the_unapplied_batch(self):
    batch = compile_ahead.unapplied_batch(3, 5)
    self.assertEqual([(3, 5), (3,), (3, 6), (3, 6), (3, 6)], [f.shape for f in batch])
    self.assertAllEqual([5, 5, 5], batch.source_length)
    self.assertTrue(np.isnan(batch.target_weight).all())

  def test_a_failed_step_leaves_the_generators_as_they_were(self):
    """A step that fails (out of memory) after drawing dropout masks: the error reaches the
    caller, and the generator's state is put back."""
    generator = tf.random.Generator.from_seed(1)
    before = generator.state.numpy()

    class Failing:
      def warm_up_calls(self, lengths, rows):
        def call():
          generator.uniform([rows, lengths[0]])
          raise tf.errors.ResourceExhaustedError(None, None, "out of memory")
        return [call]

    with self.assertRaises(tf.errors.ResourceExhaustedError):
      compile_ahead.compile_buckets(Failing(), (3,), 2, [generator], threads=2)
    self.assertAllEqual(before, generator.state)

  @parameterized.parameters("bucketed", "lookahead")
  def test_changes_nothing_and_training_runs_the_programs_it_traced(self, kind):
    """Compiled ahead for three lengths on three threads, the step leaves every parameter,
    slot, the step counter and the dropout generator as they were (checked in `_train`);
    training then traces nothing more and ends where training without it does."""
    warmed, step = _train(kind, warm=True)
    if kind == "lookahead":  # traced once for all lengths, the first one included
      self.assertEqual(1, step._dense.experimental_get_tracing_count())  # pylint: disable=protected-access
    else:
      self.assertEqual(LENGTHS, step.traced_lengths)
      self.assertEqual(1, step.traced(3).experimental_get_tracing_count())
    plain, _ = _train(kind, warm=False)
    for want, got in zip(plain, warmed):
      # The same programs, except that without it the first length gets a trace of its own
      # (float32 rounding of another XLA program).
      self.assertAllClose(want, got, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
class ResidentCompileAheadTest(tf.test.TestCase):

  def test_resident_steps_change_nothing_and_are_not_traced_again(self):
    """The steps that gather their batches on the device: compiled ahead with NaN weights,
    they change no value and leave each bucket's position; an epoch then runs each bucket's
    one trace and trains as without them."""
    finals = []
    for warm in (True, False):
      model, optimizer = _model(embedding_device="gpu")
      step = train_step_lib.make_train_step(model, optimizer, 1.0, jit_compile=True,
                                            batch_size=ROWS)
      rng = np.random.default_rng(2)
      examples = [(list(rng.integers(4, VOCAB, rng.integers(1, 6))),
                   list(rng.integers(4, VOCAB, rng.integers(1, 6)))) for _ in range(11)]
      schedule = batches_lib.BatchSchedule(examples, ROWS, boundaries=(3, 5), seed=1)
      resident = resident_batches.ResidentBatches(schedule, step.fn, "/CPU:0", ROWS)
      if warm:
        before = _state(model, optimizer)
        compile_ahead.compile_buckets(resident, resident.lengths, ROWS,
                                      [model.dropout_generator], threads=2)
        for want, got in zip(before, _state(model, optimizer)):
          np.testing.assert_array_equal(want, got)
      for planned in resident.epoch(0):
        self.assertTrue(bool(resident.step(planned)[2]))
      if warm:
        for function in resident._functions.values():  # pylint: disable=protected-access
          self.assertEqual(1, function.experimental_get_tracing_count())
      finals.append(_state(model, optimizer))
    for want, got in zip(*finals):
      self.assertAllClose(want, got, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
class LoopCompileAheadTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters("plain", "lookahead", "resident")
  def test_the_loop_compiles_every_bucket_first_and_trains_the_same(self, feed):
    """--compile_ahead=2 against 0, with each step the loop may compile: the split step, the
    split step looking ahead, and the whole step gathering its batches on the device."""
    tmp = self.get_temp_dir()
    data = helpers.write_reverse_task(os.path.join(tmp, "reverse.tsv"), num_pairs=60)
    finals, logs = {}, {}
    for threads in (2, 0):
      workdir = os.path.join(tmp, f"{feed}_{threads}")
      config = helpers.tiny_config(
          workdir, data, jit_compile=True, num_buckets=2, max_steps=6, keep_prob=0.8,
          unroll="dynamic", unroll_steps=2, compile_ahead=threads,
          embedding_device="gpu" if feed == "resident" else "cpu")
      logs[threads] = []
      with mock.patch.object(loop, "_looks_ahead", lambda _: feed == "lookahead"), \
           mock.patch.object(loop, "_batch_device",
                             return_value="/CPU:0" if feed == "resident" else None):
        loop.train(config, log=logs[threads].append)
      finals[threads] = helpers.checkpoint_values(workdir_lib.checkpoint_dir(workdir),
                                                  prefixes=("model/", "optimizer/"))
    compiled = [line for line in logs[2] if line.startswith("compiled the step of")]
    self.assertLen(compiled, 1)
    self.assertIn("2 buckets (padded lengths 3, 6), 2 at a time", compiled[0])
    self.assertFalse([line for line in logs[0] if line.startswith("compiled the step of")])
    helpers.assert_same_values(finals[0], finals[2], rtol=1e-5, atol=1e-6)

  def test_out_of_memory_while_compiling_ahead_leaves_it_to_the_batches(self):
    tmp = self.get_temp_dir()
    data = helpers.write_reverse_task(os.path.join(tmp, "reverse.tsv"), num_pairs=30)
    config = helpers.tiny_config(os.path.join(tmp, "w"), data, jit_compile=True, max_steps=2)
    lines = []
    oom = tf.errors.ResourceExhaustedError(None, None, "out of memory")
    with mock.patch.object(compile_ahead, "compile_buckets", side_effect=oom):
      result = loop.train(config, log=lines.append)
    self.assertEqual(2, result.step)
    self.assertTrue([line for line in lines if "ran out of memory; each bucket compiles at its "
                     "first batch instead (--compile_ahead=1" in line], lines)


class CompileAheadFlagTest(tf.test.TestCase):

  def test_a_negative_count_is_refused_naming_the_flag(self):
    with self.assertRaisesRegex(config_lib.ConfigError, "compile_ahead.*>= 0"):
      config_lib.TrainConfig(workdir="/tmp/w", compile_ahead=-1)


if __name__ == "__main__":
  tf.test.main()
