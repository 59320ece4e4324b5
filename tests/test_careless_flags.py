"""Flag values a careless user gives: refused naming the flag, or made harmless and said so."""
import dataclasses
import json
import math
import os
import re
import subprocess
import sys

import pytest
import tensorflow as tf
from absl import app
from absl.testing import parameterized

import train
from seq2seq import config as config_lib
from seq2seq.data import batches
from seq2seq.data import corpus
from seq2seq.data import datasets
from seq2seq.data import fingerprint
from seq2seq.data import vocab as vocab_lib
from seq2seq.distributed import distribution
from seq2seq.nn import embeddings
from seq2seq.runtime import workdir as workdir_lib
from seq2seq.train import lm_run
from seq2seq.train import loop
from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Numeric fields whose negative values mean something (scores, "one per core", a bias).
NEGATIVE_ALLOWED = {"min_score", "parse_workers", "forget_bias"}


def config_from_flags(*flags):
  """train.py's RunConfig for `flags`, parsed in this process (app.UsageError if refused)."""
  parse = train._config_from_flags  # pylint: disable=protected-access
  try:
    return parse(train.FLAGS(["train.py", *flags]))
  finally:
    train.FLAGS.unparse_flags()


def _numeric_fields():
  """(section class, field name, default) of every int and float field of the configs."""
  for section in [s.type for s in dataclasses.fields(config_lib.RunConfig)] + [
      config_lib.LaunchConfig]:
    for field in dataclasses.fields(section):
      if isinstance(field.default, (int, float)) and not isinstance(field.default, bool):
        yield section, field.name, field.default


class NumericRangesTest(parameterized.TestCase):
  """Every numeric field has a range: a new field without one fails here."""

  def test_no_number_is_left_unchecked(self):
    for section, name, default in _numeric_fields():
      bad = [math.nan, math.inf, -math.inf] if isinstance(default, float) else [2 ** 40, -2 ** 40]
      if name not in NEGATIVE_ALLOWED:
        bad.append(type(default)(-1))
      for value in bad:
        with self.assertRaises(config_lib.ConfigError, msg=f"{name}={value}") as caught:
          section(**{name: value})
        self.assertEqual(caught.exception.field, name)

  @parameterized.parameters(
      ("--seed=-1", r"--seed: must be in \[0, 2147483647\], got -1"),
      ("--learning_rate=inf", "--learning_rate: must be a finite number, got inf"),
      ("--forget_bias=nan", "--forget_bias: must be a finite number, got nan"),
      ("--batch_size=0", "--batch_size: must be > 0, got 0"),
      ("--hidden_size=99999999999", "--hidden_size: must be at most 2147483647"),
      ("--val_fraction=1.0", r"--val_fraction: must be in \[0, 1\)"),
      ("--keep_prob=0", r"--keep_prob: must be in \(0, 1\]"))
  def test_flag_is_named(self, flag, message):
    with self.assertRaisesRegex(app.UsageError, message):
      config_from_flags(flag)

  def test_largest_seed_is_accepted(self):
    self.assertEqual(config_from_flags("--seed=2147483647").train.seed, 2 ** 31 - 1)


class GivenFlagsAgainstWorkdirTest(tf.test.TestCase):
  """chat/decode/eval/export/serve use the workdir's model and data settings: a flag set to another
  value is refused, naming it, instead of being ignored."""

  def setUp(self):
    super().setUp()
    self.workdir = os.path.join(self.get_temp_dir(), "run")
    os.makedirs(self.workdir, exist_ok=True)
    self.data = os.path.join(self.workdir, "pairs.tsv")
    helpers.write_reverse_task(self.data, num_pairs=4)
    saved = helpers.tiny_config(self.workdir, self.data)  # lstm, 1x32, max_length 6
    with open(workdir_lib.config_path(self.workdir), "w", encoding="utf-8") as f:
      f.write(saved.to_json())

  def _refused(self, *flags):
    with self.assertRaises(app.UsageError) as caught:
      config_from_flags(f"--workdir={self.workdir}", *flags)
    return str(caught.exception)

  def test_each_contradicting_flag_is_named_with_the_workdir_value(self):
    message = self._refused("--mode=chat", "--cell=gru", "--hidden_size=512",
                            "--attention=luong", "--num_layers=1")
    self.assertIn("--cell='gru' (the workdir's: 'lstm')", message)
    self.assertIn("--hidden_size=512 (the workdir's: 32)", message)
    self.assertIn("--attention='luong' (the workdir's: 'none')", message)
    self.assertNotIn("--num_layers", message)  # the same as the workdir's
    self.assertIn("Drop them", message)

  def test_every_inference_mode_checks(self):
    decode = [f"--decode_input={__file__}", "--decode_output=out.txt"]
    lm = "--model='lm' (the workdir's: 'seq2seq')"
    for flags, named in (
        (["--mode=chat", "--model=lm"], lm), (["--mode=eval", "--model=lm"], lm),
        (["--mode=export", "--encoder=bi"], "--encoder='bi' (the workdir's: 'uni')"),
        (["--mode=serve", "--hidden_size=64"], "--hidden_size=64 (the workdir's: 32)"),
        (["--mode=decode", "--max_vocab=9", *decode], "--max_vocab=9 (the workdir's: ")):
      self.assertIn(named, self._refused(*flags))

  def test_data_flags_name_what_to_use_instead(self):
    self.assertIn("--decode_max_length sets", self._refused("--mode=chat", "--max_length=50"))
    self.assertIn("--mode=eval reads --val_data",
                  self._refused("--mode=eval", f"--data={__file__}"))

  def test_defaults_and_equal_values_pass(self):
    config = config_from_flags(f"--workdir={self.workdir}", "--mode=chat", "--cell=lstm",
                               "--hidden_size=32", f"--data={self.workdir}/./pairs.tsv",
                               "--beam_width=2")
    self.assertEqual(config.decode.beam_width, 2)

  def test_train_py_exits_1_without_a_traceback(self):
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "train.py"), f"--workdir={self.workdir}",
         "--mode=chat", "--cell=gru"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    self.assertEqual(result.returncode, 1, result.stderr)
    self.assertIn("--cell='gru' (the workdir's: 'lstm')", result.stderr)
    self.assertNotIn("Traceback", result.stderr)


class BatchSizeAbovePairsTest(tf.test.TestCase):

  def test_batches_are_those_of_the_pair_count(self):
    pairs = [([1] * (1 + i % 5), [2] * (1 + i % 3)) for i in range(40)]
    huge, fitted = (batches.BatchSchedule(pairs, size, (2, 5), seed=3) for size in (100000, 40))
    self.assertEqual(huge.epoch_plan(0), fitted.epoch_plan(0))

  def test_training_pads_to_the_pair_count_and_says_so(self):
    tmp = self.get_temp_dir()
    path = helpers.write_reverse_task(os.path.join(tmp, "reverse.tsv"), num_pairs=40)
    config = helpers.tiny_config(os.path.join(tmp, "run"), path, batch_size=100000,
                                 max_steps=2, val_data=path)
    messages = []
    result = loop.train(config, log=messages.append)
    self.assertEqual(result.step, 2)
    self.assertIn("--batch_size=100000 is more than the 40 training pairs: each bucket is one "
                  "batch of all its pairs, padded to 40 rows (not 100000)", messages)

  def test_prepared_folder_is_fitted_to_its_pair_count(self):
    config = helpers.tiny_config("w", "d", batch_size=100000)
    messages = []
    self.assertEqual(datasets.fit_batch_size(config, 1800, messages.append).train.batch_size, 1800)
    self.assertEqual(datasets.fit_batch_size(config, 0, messages.append), config)
    self.assertLen(messages, 1)

  def test_language_model_refuses_naming_the_largest_batch(self):
    tmp = self.get_temp_dir()
    text = os.path.join(tmp, "text.txt")
    with open(text, "w", encoding="utf-8") as f:
      f.write("the cat sat on the mat\n" * 60)  # 420 tokens with <EOS>
    os.makedirs(os.path.join(tmp, "run"))
    config = helpers.tiny_config(os.path.join(tmp, "run"), text, model="lm", batch_size=100000,
                                 num_steps=5)
    with self.assertRaisesRegex(corpus.DataError, rf"{text}: 420 tokens are too few .* lower "
                                r"--batch_size \(at most 70 rows with --num_steps=5\)"):
      lm_run.load_data(config, log=helpers.quiet)


class _Schedule:
  """A stand-in streamed schedule (`path`, `batches_per_epoch`)."""

  def __init__(self, path, batches_per_epoch=3):
    self.path, self.batches_per_epoch = path, batches_per_epoch


class DataFingerprintTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.workdir = self.get_temp_dir()
    self.data = os.path.join(self.workdir, "train.tsv")
    self._write("a b c\tc b a\n")

  def _write(self, text):
    with open(self.data, "w", encoding="utf-8") as f:
      f.write(text)

  def _note(self, resumed_at=10, schedule=None, **changes):
    config = helpers.tiny_config(self.workdir, self.data, **changes)
    return fingerprint.resume_note(config, schedule or _Schedule(self.data), resumed_at,
                                   self.workdir, self.workdir)

  def test_fresh_run_records_and_an_unchanged_resume_says_same_order(self):
    self.assertEqual(self._note(resumed_at=None), "")
    self.assertTrue(os.path.exists(fingerprint.path(self.workdir)))
    self.assertEqual(self._note(), fingerprint.SAME_ORDER)

  def test_changed_flags_are_named_with_both_values(self):
    self._note(resumed_at=None)
    note = self._note(max_length=5, batch_size=8)
    self.assertStartsWith(note, "but NOT the data order of an uninterrupted run")
    self.assertIn("--max_length: 6 -> 5", note)
    self.assertIn("--batch_size: 16 -> 8", note)
    self.assertIn("the model, optimizer and position continue from the checkpoint", note.lower())

  def test_changed_content_of_the_same_file_is_noticed(self):
    self._note(resumed_at=None)
    self._write("a b c\tc b a\nd e f\tf e d\n")
    self.assertIn(f"the content of --data={self.data} changed",
                  self._note(schedule=_Schedule(self.data, 4)))

  def test_pairs_in_memory_are_hashed(self):
    schedule = lambda pairs: batches.BatchSchedule(pairs, 2, (5,), seed=0)
    self.assertNotEqual(fingerprint.examples_digest(schedule([([4, 5], [6])])),
                        fingerprint.examples_digest(schedule([([4], [5, 6])])))

  def test_seed_alone_keeps_the_order(self):
    self._note(resumed_at=None)
    note = self._note(seed=9)
    self.assertStartsWith(note, fingerprint.SAME_ORDER)
    self.assertIn("--seed=9 differs from that run's 3", note)

  def test_no_record_says_what_must_match(self):
    self.assertIn("kept no record", self._note())
    with open(fingerprint.path(self.workdir), "w", encoding="utf-8") as f:
      f.write('{"flags": {}}')  # not a record of runs
    self.assertIn("kept no record", self._note())

  def test_compared_with_the_run_that_wrote_the_checkpoint(self):
    self._note(resumed_at=None)
    # A run on other data resumes at step 10 and stops before its first checkpoint.
    self.assertStartsWith(self._note(resumed_at=10, max_length=5), "but NOT")
    # The next resume is again at step 10: that checkpoint holds the first run's steps.
    self.assertIn("--max_length: 6 -> 5", self._note(resumed_at=10, max_length=5))
    self.assertEqual(self._note(resumed_at=10), fingerprint.SAME_ORDER)
    # A checkpoint at step 12 holds steps of the run that started at 10 (max_length 6).
    self.assertStartsWith(self._note(resumed_at=12, max_length=5), "but NOT")
    self.assertEqual(self._note(resumed_at=0), fingerprint.SAME_ORDER)

  def test_the_same_data_in_a_moved_folder_keeps_the_order(self):
    self._note(resumed_at=None)
    moved = os.path.join(self.workdir, "moved.tsv")
    os.rename(self.data, moved)
    config = helpers.tiny_config(self.workdir, moved)
    self.assertEqual(fingerprint.resume_note(config, _Schedule(moved), 10, self.workdir,
                                             self.workdir), fingerprint.SAME_ORDER)


@pytest.mark.slow
class ResumeWithOtherDataTest(tf.test.TestCase):

  def test_resume_line_names_the_change(self):
    tmp = self.get_temp_dir()
    first = helpers.write_reverse_task(os.path.join(tmp, "a.tsv"), num_pairs=60)
    second = helpers.write_reverse_task(os.path.join(tmp, "b.tsv"), num_pairs=60, seed=1)
    workdir = os.path.join(tmp, "run")
    loop.train(helpers.tiny_config(workdir, first, max_steps=2), log=helpers.quiet)
    messages = []
    loop.train(helpers.tiny_config(workdir, second, max_steps=4), log=messages.append)
    resumed = [m for m in messages if m.startswith("Resuming from")]
    self.assertLen(resumed, 1)
    self.assertIn("but NOT the data order of an uninterrupted run", resumed[0])
    self.assertIn(f"--data: {first!r} -> {second!r}", resumed[0])
    messages.clear()
    loop.train(helpers.tiny_config(workdir, second, max_steps=6), log=messages.append)
    self.assertIn(fingerprint.SAME_ORDER, "".join(messages))


class PretrainedEmbeddingsTest(tf.test.TestCase):

  def _load(self, text, dim=2):
    path = os.path.join(self.get_temp_dir(), "vectors.txt")
    with open(path, "w", encoding="utf-8") as f:
      f.write(text)
    vocabulary = vocab_lib.Vocabulary(list(vocab_lib.SPECIAL_TOKENS) + ["cat", "dog", "ice cream"])
    return path, lambda: embeddings.load_pretrained(path, vocabulary, dim)

  def test_bad_rows_are_refused_naming_file_line_and_word(self):
    for row, reason in (("dog nan 1", "NaN or Inf"), ("dog 1 inf", "NaN or Inf"),
                        ("dog 1 x", "not a number"), ("dog 1", "vectors have 1 values")):
      path, load = self._load(f"cat 1 2\n{row}\n")
      with self.assertRaisesRegex(corpus.DataError, rf"{re.escape(path)}:2: .*{reason}") as caught:
        load()
      self.assertIn("'dog'", str(caught.exception))

  def test_a_word_with_spaces_takes_the_last_values(self):
    _, load = self._load("cat 1 2\nice cream 3 4\n")
    table, report = load()
    self.assertAllClose(table[6], [3.0, 4.0])
    self.assertEqual(report.found, 2)


class DevicesTest(tf.test.TestCase):

  def test_a_device_that_is_not_here_is_refused_listing_those_that_are(self):
    for devices in ("/gpu:7", "/cpu:0,/gpu:7", "gpu7", "/cpu:0,/cpu:0"):
      with self.assertRaisesRegex(distribution.StrategyError, "--devices: .*") as caught:
        distribution.make_strategy("mirrored", devices)
      if "twice" not in str(caught.exception):
        self.assertIn("the devices here are /cpu:0", str(caught.exception))

  @pytest.mark.slow
  def test_train_py_stops_before_training(self):
    workdir = os.path.join(self.get_temp_dir(), "run")
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "train.py"), f"--workdir={workdir}",
         "--strategy=mirrored", "--devices=/gpu:7"], cwd=ROOT, capture_output=True, text=True,
        timeout=300)
    self.assertEqual(result.returncode, 1, result.stderr)
    self.assertIn("--devices: '/gpu:7' is not a device of this host", result.stderr)
    self.assertNotIn("Traceback", result.stderr)
    self.assertFalse(os.path.exists(workdir))
