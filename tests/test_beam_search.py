"""Beam search on toy chains with known probabilities, and width 1 == greedy on a model."""
import itertools

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from seq2seq.data import vocab as vocab_lib
from seq2seq.infer import beam_search
from seq2seq.infer import decoding
from tests.test_model_options import _model
from tests.test_train_step import _batch

PAD, GO, EOS = vocab_lib.PAD_ID, vocab_lib.GO_ID, vocab_lib.EOS_ID
A, B_, C = 4, 5, 6  # word ids (3 is UNK)
V = 7


def chain_step(log_table):
  """A second-order chain: P(next | previous, current) = table[previous, current, next].

  The state is the previous token, so the search must reorder it with its beams."""
  table = tf.constant(log_table, tf.float32)

  def step(tokens, previous):
    return tf.gather_nd(table, tf.stack([previous, tokens], -1)), tokens
  return step


def search(log_table, batch, width, max_length, alpha=0.0):
  fn = tf.function(lambda: beam_search.beam_search(
      chain_step(log_table), tf.fill([batch * width], PAD), batch, width, max_length, alpha))
  return fn()


def np_score(log_table, sequence, alpha):
  previous, current, total = PAD, GO, 0.0
  for token in sequence:
    total += log_table[previous, current, token]
    previous, current = current, token
  return total / ((5.0 + len(sequence)) / 6.0) ** alpha


class ToyChainTest(parameterized.TestCase, tf.test.TestCase):

  def test_beam_finds_the_best_sequence_that_greedy_misses(self):
    probs = np.full((V, V, V), 1e-12)
    probs[:, GO, [A, B_, EOS]] = [0.5, 0.4, 0.1]   # greedy takes A first ...
    probs[:, A, [A, C, EOS]] = [0.34, 0.36, 0.3]   # ... then C: A C <EOS> has 0.18 in all
    probs[:, C, EOS] = probs[:, B_, EOS] = probs[:, EOS, EOS] = 1.0  # B <EOS> has 0.4: the best
    log_table = np.log(probs / probs.sum(-1, keepdims=True))
    # Width 1 is greedy (see test_width_one_equals_greedy).
    one = search(log_table, 1, 1, 5)
    self.assertEqual(list(one.ids.numpy()[0, 0, :4]), [A, C, EOS, PAD])
    self.assertAllClose(np.exp(one.log_probs.numpy()[0, 0]), 0.18, rtol=1e-5)
    two = search(log_table, 1, 2, 5)
    self.assertEqual(list(two.ids.numpy()[0, 0, :2]), [B_, EOS])
    self.assertAllClose(np.exp(two.log_probs.numpy()[0, 0]), 0.4, rtol=1e-5)
    self.assertEqual(two.lengths.numpy()[0, 0], 2)

  @parameterized.parameters(0.0, 0.8)
  def test_wide_beam_is_exhaustive_n_best(self, alpha):
    """With K above the number of hypotheses the search is exact: compare all n-best."""
    rng = np.random.default_rng(int(alpha * 10))
    words = [EOS, A, B_]
    probs = np.zeros((V, V, V))
    probs[..., words] = rng.dirichlet(np.ones(3), size=(V, V))
    probs[:, EOS, :] = 0.0
    probs[:, EOS, PAD] = 1.0  # irrelevant: ended beams are extended by PAD at no cost
    with np.errstate(divide="ignore"):
      log_table = np.log(probs)
    max_length = 3
    hypotheses = []
    for n in range(1, max_length + 1):
      for seq in itertools.product(words, repeat=n):
        if EOS not in seq[:-1] and (seq[-1] == EOS or n == max_length):
          hypotheses.append(seq)
    want = sorted(((np_score(log_table, s, alpha), s) for s in hypotheses), reverse=True)
    result = search(log_table, 2, 20, max_length, alpha)
    for row in range(2):
      got = [(float(score), tuple(int(i) for i in ids if i != PAD))
             for score, ids in zip(result.scores.numpy()[row], result.ids.numpy()[row])
             if np.isfinite(score)]
      self.assertLen(got, len(want))
      for (got_score, got_seq), (want_score, want_seq) in zip(got, want):
        self.assertEqual(got_seq, want_seq)
        self.assertAllClose(got_score, want_score, rtol=1e-5)

  def test_stops_when_every_beam_has_ended(self):
    probs = np.full((V, V, V), 1e-9)
    probs[:, :, EOS] = 1.0
    log_table = np.log(probs / probs.sum(-1, keepdims=True))
    counter = tf.Variable(0)  # counts the while loop's steps

    def counted(tokens, state):
      counter.assign_add(1)
      return chain_step(log_table)(tokens, state)

    tf.function(lambda: beam_search.beam_search(counted, tf.fill([3], PAD), 1, 3, 50))()
    self.assertLessEqual(int(counter.numpy()), 2)


class ModelBeamTest(parameterized.TestCase, tf.test.TestCase):

  @parameterized.parameters(("uni", "none"), ("bi", "bahdanau"))
  def test_width_one_equals_greedy(self, encoder, attention):
    model = _model(encoder, attention)
    batch = _batch(size=5)
    greedy = decoding.greedy_decode(model, batch.source, batch.source_length, 8)
    beam = tf.function(lambda s, n: beam_search.beam_decode(model, s, n, 1, 8, alpha=0.6))(
        batch.source, batch.source_length)
    self.assertAllEqual(beam.ids[:, 0], greedy)

  def test_wider_beam_scores_no_worse(self):
    model = _model("uni", "luong")
    batch = _batch(size=5)
    narrow = beam_search.beam_decode(model, batch.source, batch.source_length, 1, 6)
    wide = beam_search.beam_decode(model, batch.source, batch.source_length, 4, 6)
    self.assertAllGreaterEqual(wide.scores[:, 0] - narrow.scores[:, 0], -1e-6)
    self.assertAllGreaterEqual(wide.scores[:, :-1] - wide.scores[:, 1:], 0.0)

  @parameterized.parameters(False, True)
  def test_tracked_alignments_are_those_of_each_beams_path(self, tensor_width):
    """Each beam's tracked alignments equal the decoder's when it is fed that beam's tokens
    (a decode whose choice replays them), with the width a Python int or a tensor."""
    model = _model("bi", "luong")
    batch = _batch(size=3)
    width = tf.constant(3) if tensor_width else 3
    result = tf.function(lambda s, n: beam_search.beam_decode(model, s, n, width, 6, alpha=0.6,
                                                              alignments=True))(
        batch.source, batch.source_length)
    self.assertEqual(result.tracked.shape, [3, 3, 6, batch.source.shape[1]])
    for k in range(3):
      ids = result.ids[:, k]
      replay = lambda scores, step, ids=ids: ids[:, step]
      _, want = decoding.decode(model, batch.source, batch.source_length, 6, replay,
                                alignments=True)
      lengths = result.lengths[:, k].numpy()
      for row, length in enumerate(lengths):  # past a beam's end the search went on without it
        self.assertAllClose(result.tracked[row, k, :length], want[row, :length], atol=1e-6)


if __name__ == "__main__":
  tf.test.main()
