"""The split step with the next batch looked up ahead trains as the step run part after part,
whatever the next batch turns out to be; the loop pairs each batch with the next."""
import os
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf

from seq2seq import config as config_lib
from seq2seq.data import batches as batches_lib
from seq2seq.models import encoder_decoder as model_lib
from seq2seq.runtime import workdir as workdir_lib
from seq2seq.step import lookahead
from seq2seq.step import optimizers
from seq2seq.step import train_step as train_step_lib
from seq2seq.train import loop
from tests import helpers

VOCAB = 25


def _batches(count, seed=7, length=5):
  rng = np.random.default_rng(seed)
  return [batches_lib.pad_batch(
      [(list(rng.integers(4, VOCAB, rng.integers(2, length + 1))),
        list(rng.integers(4, VOCAB, rng.integers(2, length + 1)))) for _ in range(4)], length)
          for _ in range(count)]


def _train(calls, lookahead_on):
  """Parameters and slots after `calls` ([(batch, next batch given or None)])."""
  config = config_lib.ModelConfig(num_layers=1, hidden_size=8, embedding_size=6, keep_prob=1.0,
                                  share_embeddings=True, embedding_device="cpu")
  model = model_lib.Seq2Seq(config, VOCAB, seed=3)
  model.build()
  optimizer = optimizers.Adam(0.05)
  optimizer.build(model.trainable_variables)
  step = train_step_lib.make_train_step(model, optimizer, 1.0, batch_size=4,
                                        lookahead=lookahead_on)
  for batch, following in calls:
    step(batch, following) if lookahead_on else step(batch)
  if lookahead_on:
    step.flush()
  return [v.numpy() for v in model.trainable_variables] + [
      s.numpy() for name in optimizer.slot_names for s in optimizer.slots[name]]


class LookaheadStepTest(tf.test.TestCase):

  def test_is_the_step_for_pinned_tables_only_when_asked(self):
    config = config_lib.ModelConfig(num_layers=1, hidden_size=8, embedding_size=6)
    model = model_lib.Seq2Seq(config, VOCAB, seed=3)
    model.build()
    optimizer = optimizers.Adam(0.05)
    make = lambda on: train_step_lib.make_train_step(model, optimizer, 1.0, lookahead=on)
    self.assertIsInstance(make(True), lookahead.LookaheadStep)
    self.assertIsInstance(make(False), train_step_lib.BucketedFunction)

  def test_trains_as_the_step_part_after_part_whatever_comes_next(self):
    b = _batches(6)
    plain = _train([(batch, None) for batch in b], lookahead_on=False)
    # Looked up ahead every step; ahead for a batch that does not come (a stop, an epoch's
    # end); no next batch; the same batch twice in a row (every row both read and written).
    calls = [(b[0], b[1]), (b[1], b[2]), (b[2], b[4]), (b[3], None), (b[4], b[4]), (b[4], b[5])]
    calls_plain = [(batch, None) for batch, _ in calls]
    self._assert_equal(_train(calls, True), _train(calls_plain, False))
    self._assert_equal(_train([(x, y) for x, y in zip(b, b[1:] + [None])], True), plain)

  def _assert_equal(self, got, want):
    self.assertLen(got, len(want))
    for a, b in zip(got, want):
      self.assertAllEqual(a, b)


class WithNextTest(tf.test.TestCase):

  def test_pairs_each_item_with_the_next(self):
    feed = [(1.0, "a"), (2.0, "b"), (3.0, "c")]
    self.assertEqual(list(loop._with_next(iter(feed))),
                     [(1.0, ("a", "b")), (2.0, ("b", "c")), (3.0, ("c", None))])
    self.assertEqual(list(loop._with_next(iter([]))), [])


@pytest.mark.slow
class LoopLookaheadTest(tf.test.TestCase):

  def _train(self, workdir, data, ahead):
    config = helpers.tiny_config(workdir, data, jit_compile=True, embedding_device="cpu",
                                 max_steps=11, save_every=4, keep_checkpoints=5, val_data=data)
    with mock.patch.object(loop, "_looks_ahead", lambda _: ahead):
      loop.train(config, log=helpers.quiet)
    folder = workdir_lib.checkpoint_dir(workdir)
    return {step: helpers.checkpoint_values(os.path.join(folder, f"ckpt-{step}"),
                                            prefixes=("model/", "optimizer/"))
            for step in (4, 8, 11)}

  def test_checkpoints_and_validation_see_every_update(self):
    """Saved mid-epoch with an update held back, validated at each epoch's end: every
    checkpoint of the loop that looks ahead holds what the plain split step's does."""
    tmp = self.get_temp_dir()
    # 45 words: each batch reads some rows the next one does not (an update held back).
    data = helpers.write_reverse_task(os.path.join(tmp, "reverse.tsv"), num_pairs=100,
                                      symbols=[f"w{i}" for i in range(45)])
    plain = self._train(os.path.join(tmp, "plain"), data, False)
    ahead = self._train(os.path.join(tmp, "ahead"), data, True)
    for step, values in plain.items():
      self.assertEqual(sorted(values), sorted(ahead[step]))
      for key, value in values.items():
        self.assertAllEqual(value, ahead[step][key], msg=f"ckpt-{step} {key}")


@pytest.mark.slow
class AnyLengthTest(tf.test.TestCase):

  def test_the_compiled_part_is_traced_at_most_twice_for_three_lengths(self):
    config = config_lib.ModelConfig(num_layers=1, hidden_size=8, embedding_size=6,
                                    keep_prob=1.0, unroll="dynamic", unroll_steps=2,
                                    embedding_device="cpu")
    model = model_lib.Seq2Seq(config, VOCAB, seed=3)
    model.build()
    optimizer = optimizers.Adam(0.05)
    optimizer.build(model.trainable_variables)
    step = train_step_lib.make_train_step(model, optimizer, 1.0, jit_compile=True,
                                          batch_size=4, lookahead=True)
    b = [batch for length in (3, 5, 7) for batch in _batches(2, seed=length, length=length)]
    for batch, following in zip(b, b[1:] + [None]):
      loss, _, finite = step(batch, following)
      self.assertTrue(bool(finite))
    self.assertLessEqual(step._dense.experimental_get_tracing_count(), 2)
