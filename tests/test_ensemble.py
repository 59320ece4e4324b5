"""Ensemble decoding: the mean of the members' probabilities, and loading members from workdirs."""
import os

import numpy as np
import tensorflow as tf

from seq2seq.infer import beam_search
from seq2seq.infer import chat
from seq2seq.infer import decoding
from seq2seq.infer import ensemble
from seq2seq.runtime import workdir as workdir_lib
from seq2seq.train import loop
from tests import helpers
from tests.test_model_options import _model
from tests.test_train_step import _batch


def _np_log_mean_softmax(logits_list):
  """log(mean_m softmax(logits_m)) in float64: [B, T, V] each -> [B, T, V]."""
  probs = []
  for logits in logits_list:
    logits = np.asarray(logits, np.float64)
    exp = np.exp(logits - logits.max(-1, keepdims=True))
    probs.append(exp / exp.sum(-1, keepdims=True))
  return np.log(np.mean(probs, axis=0))


class EnsembleStepTest(tf.test.TestCase):

  def test_step_is_the_log_of_the_mean_probability(self):
    """Fed the teacher's tokens, each step equals log(mean softmax) of the members' logits."""
    members = [_model("uni", "none"), _model("bi", "luong"), _model("bi", "bahdanau", cell="gru")]
    batch = _batch()
    expected = _np_log_mean_softmax(
        [m(batch.source, batch.source_length, batch.decoder_input) for m in members])
    step, state = ensemble.Ensemble(members).start_decoding(batch.source, batch.source_length)
    for t in range(batch.decoder_input.shape[1]):
      log_probs, state = step(batch.decoder_input[:, t], state)
      self.assertAllClose(log_probs, expected[:, t], atol=1e-5)  # float32 log-softmax
    self.assertLen(state, 3)

  def test_one_member_decodes_as_the_model(self):
    model = _model("bi", "luong")
    alone = ensemble.Ensemble([model])
    batch = _batch(size=5)
    self.assertAllEqual(decoding.greedy_decode(alone, batch.source, batch.source_length, 8),
                        decoding.greedy_decode(model, batch.source, batch.source_length, 8))
    expected = beam_search.beam_decode(model, batch.source, batch.source_length, 3, 8, 0.6)
    actual = beam_search.beam_decode(alone, batch.source, batch.source_length, 3, 8, 0.6)
    self.assertAllEqual(actual.ids, expected.ids)
    self.assertAllClose(actual.scores, expected.scores, atol=1e-6)

  def test_greedy_takes_the_arg_max_of_the_mean(self):
    members = [_model("uni", "none"), _model("bi", "luong")]
    pair = ensemble.Ensemble(members)
    batch = _batch(size=5)
    ids = decoding.greedy_decode(pair, batch.source, batch.source_length, 6).numpy()
    # Replaying the chosen tokens: each one is the arg-max of the members' mean probability.
    decoder_input = np.concatenate([np.full([5, 1], 1), ids[:, :-1]], 1)  # <GO> = 1
    mean = _np_log_mean_softmax([m(batch.source, batch.source_length, decoder_input)
                                 for m in members])
    for row in range(5):
      for t in range(6):
        if t and ids[row, t - 1] in (0, 2):  # ended (<PAD>, <EOS>): only padding follows
          break
        self.assertEqual(ids[row, t], np.argmax(mean[row, t]), (row, t))
    width_one = beam_search.beam_decode(pair, batch.source, batch.source_length, 1, 6)
    self.assertAllEqual(width_one.ids[:, 0], ids)

  def test_alignments_need_one_model(self):
    pair = ensemble.Ensemble([_model("uni", "luong"), _model("bi", "luong")])
    with self.assertRaisesRegex(ValueError, r"one model; an ensemble averages 2"):
      decoding.make_alignment_search(pair, 5)


class VocabularyCheckTest(tf.test.TestCase):

  def test_names_the_first_differing_line(self):
    with self.assertRaisesRegex(ensemble.VocabularyMismatch,
                                r"^b/vocab.txt: line 3 is 'dog' where a/vocab.txt has 'cat'"):
      ensemble.check_same_vocabulary(["<PAD>", "<GO>", "cat"], "a/vocab.txt",
                                     ["<PAD>", "<GO>", "dog"], "b/vocab.txt")

  def test_names_a_size_difference(self):
    with self.assertRaisesRegex(ensemble.VocabularyMismatch, r"b: 2 tokens where a has 3"):
      ensemble.check_same_vocabulary(["x", "y", "z"], "a", ["x", "y"], "b")
    ensemble.check_same_vocabulary(["x", "y"], "a", ["x", "y"], "b")  # the same: no error


class LoadEnsembleTest(tf.test.TestCase):

  def test_members_come_from_their_own_workdirs(self):
    tmp = self.get_temp_dir()
    data = helpers.write_reverse_task(os.path.join(tmp, "reverse.tsv"), num_pairs=50)
    first, second = os.path.join(tmp, "first"), os.path.join(tmp, "second")
    loop.train(helpers.tiny_config(first, data, max_steps=2), log=helpers.quiet)
    # Another architecture and seed: each member is built from its own workdir's config.
    loop.train(helpers.tiny_config(second, data, hidden_size=24, seed=9, max_steps=3),
               log=helpers.quiet)
    messages = []
    config = helpers.tiny_config(first, data, ensemble=second)
    model, vocabulary = chat.load_ensemble(config, log=messages.append)
    self.assertIsInstance(model, ensemble.Ensemble)
    self.assertLen(model.models, 2)
    self.assertEqual(model.models[1].config.hidden_size, 24)
    self.assertIn(f"decoding with an ensemble of 2 models: {first}, {second}", messages)
    for member, workdir in zip(model.models, (first, second)):
      reader = tf.train.load_checkpoint(workdir_lib.checkpoint_dir(workdir))
      kernel = [k for k in reader.get_variable_to_shape_map()
                if "projection_kernel" in k and "optimizer" not in k][0]
      self.assertAllEqual(member.projection_kernel, reader.get_tensor(kernel))
    replies = decoding.Decoder(model, vocabulary, str.split, 6, beam_width=2).n_best_batch(
        ["a b c", "d e"])
    self.assertLen(replies, 2)

  def test_another_vocabulary_is_refused(self):
    tmp = self.get_temp_dir()
    data = helpers.write_reverse_task(os.path.join(tmp, "reverse.tsv"), num_pairs=50)
    other = helpers.write_reverse_task(os.path.join(tmp, "other.tsv"), num_pairs=50,
                                      symbols="pqrstuvw")
    first, second = os.path.join(tmp, "first"), os.path.join(tmp, "second")
    loop.train(helpers.tiny_config(first, data, max_steps=1), log=helpers.quiet)
    loop.train(helpers.tiny_config(second, other, max_steps=1),
               log=helpers.quiet)
    with self.assertRaisesRegex(ensemble.VocabularyMismatch,
                                rf"^{second}/vocab.txt: .*{first}/vocab.txt"):
      chat.load_ensemble(helpers.tiny_config(first, data, ensemble=second), log=helpers.quiet)

  def test_a_member_without_checkpoint_is_reported(self):
    tmp = self.get_temp_dir()
    data = helpers.write_reverse_task(os.path.join(tmp, "reverse.tsv"), num_pairs=50)
    first, empty = os.path.join(tmp, "first"), os.path.join(tmp, "empty")
    loop.train(helpers.tiny_config(first, data, max_steps=1), log=helpers.quiet)
    os.makedirs(empty)
    with self.assertRaisesRegex(FileNotFoundError, rf"{empty}/vocab.txt: not found"):
      chat.load_ensemble(helpers.tiny_config(first, data, ensemble=empty), log=helpers.quiet)


if __name__ == "__main__":
  tf.test.main()
