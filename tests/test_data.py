"""Reading pairs, the vocabulary, batching and pretrained vectors."""
import os

import numpy as np
import tensorflow as tf

from seq2seq.data import batches
from seq2seq.data import corpus
from seq2seq.data import vocab as vocab_lib
from seq2seq.nn import embeddings


def _write(path, text, mode="w"):
  with open(path, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
    f.write(text)
  return path


class CorpusTest(tf.test.TestCase):

  def test_embedded_corpus_reads(self):
    pairs, report = corpus.load_pairs(corpus.EMBEDDED_CORPUS)
    self.assertGreater(len(pairs), 1000)
    self.assertLen(report.files, 21)
    self.assertTrue(all(isinstance(q, str) and isinstance(a, str) for q, a in pairs))

  def test_tsv_malformed_lines_are_counted_with_places(self):
    path = _write(os.path.join(self.get_temp_dir(), "pairs.tsv"),
                  "hi there\thello you\nno tab here\n\t\nq\ta\textra\nhow are you\tfine thanks\n")
    pairs, report = corpus.load_pairs(path)
    self.assertEqual(pairs, [("hi there", "hello you"), ("how are you", "fine thanks")])
    self.assertEqual(sum(report.skipped.values()), 3)
    self.assertIn(f"{path}:2:", report.summary())

  def test_invalid_utf8_keeps_what_came_before(self):
    path = _write(os.path.join(self.get_temp_dir(), "bad.tsv"),
                  b"good one\tgood two\n\xff\xfe broken\tline\n", mode="wb")
    pairs, report = corpus.load_pairs(path)
    self.assertEqual(pairs, [("good one", "good two")])
    self.assertEqual(report.skipped["invalid UTF-8"], 1)

  def test_yaml_conversations_pair_consecutive_turns(self):
    path = _write(os.path.join(self.get_temp_dir(), "talk.yml"),
                  "conversations:\n- - a b c\n  - d e f\n  - g h i\n- - lonely\n- - 7\n  - x y z\n")
    pairs, report = corpus.load_pairs(path)
    self.assertEqual(pairs, [("a b c", "d e f"), ("d e f", "g h i")])
    self.assertEqual(sum(report.skipped.values()), 2)

  def test_yaml_that_is_not_a_conversation_list(self):
    directory = self.get_temp_dir()
    _write(os.path.join(directory, "weird.yml"), "- just\n- a list\n")
    with self.assertRaisesRegex(corpus.DataError, "no usable conversation pairs"):
      corpus.load_pairs(os.path.join(directory, "weird.yml"))

  def test_parallel_files_pair_line_by_line(self):
    directory = self.get_temp_dir()
    source = _write(os.path.join(directory, "p.en"), "a dog runs .\n\nthe cat\n")
    target = _write(os.path.join(directory, "p.de"), b"ein hund rennt .\nleer\n\xff\n", mode="wb")
    pairs, report = corpus.load_pairs(f"{source}|{target}")
    self.assertEqual(pairs, [("a dog runs .", "ein hund rennt .")])
    self.assertEqual(report.skipped, {"empty line": 1, "invalid UTF-8": 1})
    self.assertIn(f"{source}|{target}:2: empty line", report.summary())

  def test_parallel_files_that_do_not_align(self):
    directory = self.get_temp_dir()
    source = _write(os.path.join(directory, "q.en"), "one\ntwo\nthree\n")
    target = _write(os.path.join(directory, "q.de"), "eins\nzwei\n")
    with self.assertRaisesRegex(corpus.DataError, f"{target}: ends at line 2 but {source} goes on"):
      corpus.load_pairs(f"{source}|{target}")
    with self.assertRaisesRegex(corpus.DataError, "/no/such.de: no such file"):
      corpus.load_pairs(f"{source}|/no/such.de")

  def test_missing_and_empty_inputs(self):
    with self.assertRaisesRegex(corpus.DataError, "no such file"):
      corpus.load_pairs("/no/such/place.tsv")
    empty = _write(os.path.join(self.get_temp_dir(), "empty.tsv"), "")
    with self.assertRaisesRegex(corpus.DataError, f"{empty}: no usable"):
      corpus.load_pairs(empty)


class VocabularyTest(tf.test.TestCase):

  def test_tokenizer_lowercases_and_strips_punctuation(self):
    self.assertEqual(vocab_lib.Tokenizer()("Hello, World! Don't (stop)."),
                     ["hello", "world", "don't", "stop"])
    self.assertEqual(vocab_lib.Tokenizer(lowercase=False)("Hi!"), ["Hi"])

  def test_top_k_with_coverage_report(self):
    words = [["a", "a", "a", "b", "b", "c"], ["a", "d"]]
    vocabulary, report = vocab_lib.build_vocabulary(words, max_vocab=6)
    self.assertEqual(vocabulary.tokens, ["<PAD>", "<GO>", "<EOS>", "<UNK>", "a", "b"])
    self.assertEqual(report.unique_words, 4)
    self.assertEqual(report.kept_words, 2)
    self.assertAlmostEqual(report.type_share, 0.5)
    self.assertAlmostEqual(report.token_coverage, 6 / 8)
    self.assertEqual(vocabulary.encode(["a", "zzz"]), [4, vocab_lib.UNK_ID])
    self.assertEqual(vocabulary.decode([4, 5, vocab_lib.EOS_ID, 4]), ["a", "b"])

  def test_save_load_round_trip_is_plain_text(self):
    vocabulary, _ = vocab_lib.build_vocabulary([["x", "y", "y"]], max_vocab=10)
    path = os.path.join(self.get_temp_dir(), "vocab.txt")
    vocabulary.save(path)
    with open(path, encoding="utf-8") as f:
      self.assertEqual(f.read(), "<PAD>\n<GO>\n<EOS>\n<UNK>\ny\nx\n")
    self.assertEqual(vocab_lib.Vocabulary.load(path), vocabulary)

  def test_bad_vocabulary_file_names_the_file(self):
    path = _write(os.path.join(self.get_temp_dir(), "vocab.txt"), "a\nb\n")
    with self.assertRaisesRegex(ValueError, f"{path}: a vocabulary must start with"):
      vocab_lib.Vocabulary.load(path)


class BatchingTest(tf.test.TestCase):

  def test_pad_batch_teacher_forcing_layout(self):
    batch = batches.pad_batch([([5, 6, 7], [8, 9]), ([5], [8, 9, 10, 11])], length=4)
    go, eos = vocab_lib.GO_ID, vocab_lib.EOS_ID
    self.assertAllEqual(batch.source, [[5, 6, 7, 0], [5, 0, 0, 0]])
    self.assertAllEqual(batch.source_length, [3, 1])
    self.assertAllEqual(batch.decoder_input, [[go, 8, 9, 0, 0], [go, 8, 9, 10, 11]])
    self.assertAllEqual(batch.target, [[8, 9, eos, 0, 0], [8, 9, 10, 11, eos]])
    self.assertAllEqual(batch.target_weight, [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])

  def test_bucket_boundaries(self):
    self.assertEqual(batches.bucket_boundaries(20, 4), (5, 10, 15, 20))
    self.assertEqual(batches.bucket_boundaries(6, 1), (6,))
    self.assertEqual(batches.bucket_boundaries(3, 10), (1, 2, 3))

  def test_schedule_covers_each_example_once_in_a_seeded_order(self):
    rng = np.random.default_rng(0)
    examples = [(list(rng.integers(4, 20, rng.integers(1, 11))),
                 list(rng.integers(4, 20, rng.integers(1, 11)))) for _ in range(103)]
    schedule = batches.BatchSchedule(examples, batch_size=8, boundaries=(5, 10), seed=7)
    plan = schedule.epoch_plan(0)
    self.assertLen(plan, schedule.batches_per_epoch)
    seen = sorted(i for _, indices in plan for i in indices)
    self.assertEqual(seen, list(range(103)))
    for length, indices in plan:
      self.assertLessEqual(len(indices), 8)
      longest = max(max(len(examples[i][0]), len(examples[i][1])) for i in indices)
      self.assertLessEqual(longest, length)
      self.assertGreater(longest, 5 if length == 10 else 0)  # smallest bucket that fits
    self.assertEqual(plan, batches.BatchSchedule(examples, 8, (5, 10), seed=7).epoch_plan(0))
    self.assertNotEqual(plan, schedule.epoch_plan(1))
    resumed = list(schedule.batches(0, start=3))
    straight = list(schedule.batches(0))[3:]
    self.assertLen(resumed, len(straight))
    for a, b in zip(resumed, straight):
      self.assertAllEqual(a.source, b.source)


class PretrainedTest(tf.test.TestCase):

  def _vocabulary(self):
    return vocab_lib.Vocabulary(list(vocab_lib.SPECIAL_TOKENS) + ["cat", "dog", "eel"])

  def test_found_words_take_file_vectors(self):
    path = _write(os.path.join(self.get_temp_dir(), "glove.txt"),
                  "3 2\ncat 1.0 2.0\nbird 5 5\n\ndog 3 4\nthe dog 7 8\n")
    table, report = embeddings.load_pretrained(path, self._vocabulary(), dim=2)
    self.assertAllClose(table[4], [1.0, 2.0])
    self.assertAllClose(table[5], [3.0, 4.0])
    self.assertEqual(report.found, 2)
    self.assertEqual(report.malformed_lines, 1)
    self.assertEqual(table.shape, (7, 2))

  def test_dimension_mismatch_names_file_and_line(self):
    path = _write(os.path.join(self.get_temp_dir(), "glove.txt"), "cat 1 2 3\n")
    with self.assertRaisesRegex(Exception, f"{path}:1: vectors have 3 values but "
                                           "--embedding_size is 2"):
      embeddings.load_pretrained(path, self._vocabulary(), dim=2)

  def test_embedding_lives_on_cpu_by_default(self):
    table = embeddings.Embedding(10, 4)
    self.assertIn("CPU", table.table.device)
    self.assertAllEqual(table(tf.constant([[1, 2]])).shape, [1, 2, 4])


if __name__ == "__main__":
  tf.test.main()


class VocabularyChecksumTest(tf.test.TestCase):

  def test_edited_vocabulary_of_the_same_size_is_refused(self):
    vocabulary, _ = vocab_lib.build_vocabulary([["cat", "dog", "dog"]], max_vocab=10)
    path = os.path.join(self.get_temp_dir(), "vocab.txt")
    vocabulary.save(path)
    self.assertEqual(vocab_lib.Vocabulary.load(path), vocabulary)
    _write(path, "<PAD>\n<GO>\n<EOS>\n<UNK>\ncat\ndog\n")  # two words swapped: same size
    with self.assertRaisesRegex(corpus.DataError, f"{path}: changed since it was saved"):
      vocab_lib.Vocabulary.load(path)
