"""Sampling choices against their distributions, and the text Decoder's options."""
import os

import numpy as np
import tensorflow as tf

from seq2seq import config as config_lib
from seq2seq.data import vocab as vocab_lib
from seq2seq.infer import chat
from seq2seq.infer import decoding
from seq2seq.runtime import workdir as workdir_lib
from tests import helpers
from tests.test_export import _write_trained_workdir
from tests.test_model_options import _model
from tests.test_train_step import VOCAB


class SamplingTest(tf.test.TestCase):

  def _frequencies(self, choose, logits, draws=4000):
    rows = tf.tile(tf.constant(logits, tf.float32)[None], [draws, 1])
    tokens = choose(rows, 3).numpy()
    return np.bincount(tokens, minlength=len(logits)) / draws

  def test_temperature_sampling_follows_the_tempered_softmax(self):
    logits = np.array([2.0, 1.0, 0.0, -1.0])
    for temperature in (0.5, 2.0):
      want = np.exp(logits / temperature) / np.exp(logits / temperature).sum()
      got = self._frequencies(decoding.sampling_choice(temperature, seed=7), logits)
      self.assertAllClose(got, want, atol=0.03)  # ~4 standard errors at 4000 draws

  def test_top_k_renormalises_over_the_k_best(self):
    logits = np.array([0.5, 2.0, 1.0, 1.5, -1.0])
    got = self._frequencies(decoding.sampling_choice(1.0, top_k=2, seed=1), logits)
    want = np.zeros(5)
    want[[1, 3]] = np.exp([2.0, 1.5]) / np.exp([2.0, 1.5]).sum()
    self.assertAllClose(got, want, atol=0.03)
    self.assertEqual(got[[0, 2, 4]].sum(), 0.0)

  def test_sampling_is_reproducible_and_needs_a_temperature(self):
    logits = tf.random.stateless_normal([8, 30], seed=[1, 2])
    choose = decoding.sampling_choice(1.0, seed=5)
    self.assertAllEqual(choose(logits, 0), choose(logits, 0))
    with self.assertRaisesRegex(ValueError, "temperature must be > 0"):
      decoding.sampling_choice(0.0)


class FakeVocabulary:
  def encode(self, words):
    return [4 + int(w) for w in words]

  def decode(self, ids):
    out = []
    for i in ids:
      if i in (vocab_lib.EOS_ID, vocab_lib.PAD_ID):
        break
      out.append(str(i))
    return out


class DecoderTest(tf.test.TestCase):

  def test_beam_decoder_n_best_is_sorted(self):
    model = _model("bi", "luong", dtype=tf.float32)
    decoder = decoding.Decoder(model, FakeVocabulary(), str.split, 5, beam_width=3, n_best=3)
    replies = decoder.n_best("1 2 3")
    self.assertLen(replies, 3)
    scores = [score for _, score in replies]
    self.assertEqual(scores, sorted(scores, reverse=True))
    self.assertEqual(decoder.reply("1 2 3"), replies[0][0])

  def test_greedy_and_sampling_decoders_reply(self):
    model = _model("uni", "none", dtype=tf.float32)
    greedy = decoding.Decoder(model, FakeVocabulary(), str.split, 5)
    sampler = decoding.Decoder(model, FakeVocabulary(), str.split, 5, temperature=1.0, top_k=5)
    for decoder in (greedy, sampler):
      self.assertIsInstance(decoder.reply("1 2"), str)
      self.assertLen(decoder.n_best("1 2"), 1)
    self.assertTrue(all(0 <= int(w) < VOCAB for w in sampler.reply("3").split()))

  def test_decode_file_in_batches_equals_one_by_one(self):
    model = _model("uni", "bahdanau", dtype=tf.float32)
    decoder = decoding.Decoder(model, FakeVocabulary(), str.split, 5, beam_width=2)
    lines = ["1 2 3", "4", "5 6 7 8 9 10 11", "", "2 2"]
    source = os.path.join(self.get_temp_dir(), "in.txt")
    target = os.path.join(self.get_temp_dir(), "out.txt")
    with open(source, "w", encoding="utf-8") as f:
      f.write("\n".join(lines) + "\n")
    self.assertEqual(decoder.decode_file(source, target, batch_size=2), len(lines))
    with open(target, encoding="utf-8") as f:
      self.assertEqual(f.read().split("\n")[:-1], [decoder.reply(line) for line in lines])

  def test_beam_and_sampling_exclude_each_other(self):
    with self.assertRaisesRegex(ValueError, "exclude each other"):
      decoding.Decoder(None, None, None, 5, beam_width=2, temperature=1.0)



class DecodeMaxLengthTest(tf.test.TestCase):
  """--decode_max_length: the longest input read and reply written, past the trained one."""

  def test_zero_is_the_trained_max_length_a_positive_value_wins_negative_is_refused(self):
    data = config_lib.DataConfig(max_length=7)
    self.assertEqual(config_lib.DecodeConfig().max_length_for(data), 7)
    self.assertEqual(config_lib.DecodeConfig(decode_max_length=30).max_length_for(data), 30)
    self.assertEqual(config_lib.DecodeConfig(decode_max_length=3).max_length_for(data), 3)
    refused = r"^decode_max_length: must be >= 0 \(0 = the trained --max_length\), got -1$"
    with self.assertRaisesRegex(config_lib.ConfigError, refused):
      config_lib.DecodeConfig(decode_max_length=-1)
    # The flag's name is one field of RunConfig (DataConfig's max_length is another).
    run_config = config_lib.replace(config_lib.RunConfig(), decode_max_length=9)
    self.assertEqual(run_config.decode.max_length_for(run_config.data), 9)
    self.assertEqual(config_lib.field_names()["decode_max_length"], "decode")

  def test_decoder_reads_and_replies_past_the_trained_max_length(self):
    """A workdir trained with --max_length=6, decoded as train.py does: its data settings from
    config.json, the decode settings from the flags."""
    workdir = os.path.join(self.get_temp_dir(), "run")
    self.assertEqual(_write_trained_workdir(workdir).data.max_length, 6)
    text = "a b c d e f g h a b c"  # 11 words
    for decode_max_length, want in ((0, 6), (12, 12)):
      flags = config_lib.replace(config_lib.RunConfig(), workdir=workdir,
                                 decode_max_length=decode_max_length)
      decoder = chat.make_decoder(workdir_lib.trained_settings(flags), helpers.quiet)
      self.assertEqual(decoder.max_length, want)
      source, lengths = decoder._encode([text])  # pylint: disable=protected-access
      self.assertEqual(source.shape, [1, want])
      self.assertEqual(lengths.numpy().tolist(), [min(11, want)])
      # No <EOS> (nor <PAD>, <GO>) ever: the reply runs to the last step, max_length + 1.
      bias = decoder.model.projection_bias
      bias.assign(tf.tensor_scatter_nd_update(
          bias, [[vocab_lib.PAD_ID], [vocab_lib.GO_ID], [vocab_lib.EOS_ID]], [-1e4] * 3))
      self.assertLen(decoder.reply(text).split(), want + 1)


if __name__ == "__main__":
  tf.test.main()
