"""--mode=export: the SavedModel, reloaded in a fresh process, answers as the checkpoint does."""
import json
import os
import shutil
import subprocess
import sys
import tempfile

from absl.testing import parameterized
import tensorflow as tf

from seq2seq import config as config_lib
from seq2seq.data import vocab as vocab_lib
from seq2seq.infer import chat
from seq2seq.infer import export
from seq2seq.models import encoder_decoder as model_lib
from seq2seq.runtime import checkpoints
from seq2seq.runtime import workdir as workdir_lib
from seq2seq.step import optimizers
from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = "hello world how are you don't ask a b c d e f g h".split()
# Punctuation, upper case, an unknown word ("zebra"), an input over max_length (6) words,
# an empty one and odd whitespace.
TEXTS = ["Hello, World!", "HOW are you?? (don't ask)", "hello zebra-crossing world",
         "a b c d e f g h a b c", "", "  Tabs\tand\u00a0spaces\n"]
TRICKY = TEXTS + ["don't.STOP", "a--b..c", "[x]^y\\z-", "ΟΔΟΣ Σ", "İstanbul", "Straße ẞ",
                  "a\u2003b\u3000c\x1cd\x85e\u2028f", "ǅ ǈ ﬁ", "émoji 😀 ok", "«quoted» ¿qué?"]

# The per-call settings the `reply` signature is asked with: beam_width, n_best, temperature.
PER_CALL = {"greedy": (1, 1, 0.0), "beam": (3, 2, 0.0), "sampled": (1, 1, 0.9)}
SEED = 5

# Run in a fresh interpreter, outside the repository: prints what the signatures return.
_LOAD = f"PER_CALL, SEED = {PER_CALL!r}, {SEED}\n" + """
import json, sys
import tensorflow as tf
texts = json.loads(sys.argv[1])
out = {}
for path in sys.argv[2:]:
  loaded = tf.saved_model.load(path)
  served = loaded.signatures["serving_default"](text=tf.constant(texts))
  encoded = loaded.signatures["encode"](text=tf.constant(texts))
  out[path] = {"replies": [[r.decode() for r in row] for row in served["replies"].numpy()],
               "scores": served["scores"].numpy().tolist(),
               "ids": encoded["ids"].numpy().tolist(),
               "lengths": encoded["lengths"].numpy().tolist(),
               "signatures": sorted(loaded.signatures)}
  for name, (beam_width, n_best, temperature) in PER_CALL.items():
    reply = loaded.signatures["reply"](
        text=tf.constant(texts), beam_width=tf.constant(beam_width), n_best=tf.constant(n_best),
        temperature=tf.constant(temperature), top_k=tf.constant(0),
        seed=tf.constant(SEED, tf.int64))
    out[path][name] = {
        "replies": [[r.decode() for r in row] for row in reply["replies"].numpy()],
        "scores": reply["scores"].numpy().tolist()}
out["imported_seq2seq"] = "seq2seq" in sys.modules
print(json.dumps(out))
"""


class NormalizeTest(tf.test.TestCase, parameterized.TestCase):
  """The TensorFlow normalisation splits exactly as vocab.Tokenizer."""

  @parameterized.parameters(
      (True, vocab_lib.DEFAULT_FILTERS, False), (True, vocab_lib.DEFAULT_FILTERS, True),
      (False, vocab_lib.DEFAULT_FILTERS, False), (True, "", False), (False, "", True),
      (True, "]^-\\[é«»¿'", False))
  def test_matches_tokenizer(self, lowercase, filters, traced):
    tokenizer = vocab_lib.Tokenizer(lowercase=lowercase, filters=filters)
    normalize = lambda text: export.normalize(text, lowercase, filters)
    if traced:
      normalize = tf.function(normalize)
    got = normalize(tf.constant(TRICKY)).to_list()
    self.assertEqual([[w.decode("utf-8") for w in words] for words in got],
                     [tokenizer(text) for text in TRICKY])

  def test_invalid_utf8_is_replaced_not_fatal(self):
    got = export.normalize(tf.constant([b"caf\xe9 OK", b"\xff\xfe"])).to_list()
    self.assertEqual(got, [["caf\ufffd".encode(), b"ok"], ["\ufffd\ufffd".encode()]])


def _write_trained_workdir(workdir, **changes):
  """A workdir as training leaves it: config.json, vocab.txt and a checkpoint (random weights);
  `changes` as in `helpers.tiny_config`."""
  run_config = helpers.tiny_config(workdir, "pairs.tsv", attention="luong", **changes)
  workdir_lib.check_or_save_config(run_config)
  vocabulary = vocab_lib.Vocabulary(list(vocab_lib.SPECIAL_TOKENS) + WORDS)
  vocabulary.save(workdir_lib.vocab_path(workdir))
  model = model_lib.build_model(run_config, vocabulary, helpers.quiet)
  # Sharper distributions than the initial near-uniform ones: no near-tie between replies.
  model.projection_kernel.assign(model.projection_kernel * 30.0)
  optimizer = optimizers.make_optimizer(run_config.train, model.trainable_variables)
  checkpoints.Checkpointer(workdir_lib.checkpoint_dir(workdir), model, optimizer,
                           checkpoints.Progress()).save()
  return run_config


class ExportTest(tf.test.TestCase):
  """Greedy through the library, beam search through train.py; both reloaded in one process."""

  BEAM = {"beam_width": 3, "n_best": 2, "length_penalty": 0.6}

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    cls.member = os.path.join(cls.tmp, "member")  # the second model of an ensemble export
    cls.ENSEMBLE = dict(cls.BEAM, ensemble=cls.member)
    cls.workdir = os.path.join(cls.tmp, "run")
    cls.run_config = _write_trained_workdir(cls.workdir)
    command = [sys.executable, os.path.join(ROOT, "train.py"), "--mode=export",
               f"--workdir={cls.workdir}", "--beam_width=3", "--n_best=2", "--length_penalty=0.6"]
    cli = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)  # runs beside the library export
    try:
      cls.greedy_dir = os.path.join(cls.tmp, "exports", "greedy")
      tf.saved_model.save(tf.Module(), cls.greedy_dir)  # an earlier export, to be replaced
      export.export_trained(config_lib.replace(cls.run_config, export_dir=cls.greedy_dir),
                            helpers.quiet)
      # An ensemble with a member of another size and seed, exported through the library.
      _write_trained_workdir(cls.member, hidden_size=24, seed=11)
      cls.ensemble_dir = os.path.join(cls.tmp, "exports", "ensemble")
      export.export_trained(config_lib.replace(cls.run_config, export_dir=cls.ensemble_dir,
                                               **cls.ENSEMBLE), helpers.quiet)
      stdout, stderr = cli.communicate(timeout=300)
    finally:
      cli.kill()
    cls.cli = subprocess.CompletedProcess(command, cli.returncode, stdout, stderr)
    cls.beam_dir = workdir_lib.export_dir(cls.workdir)
    cls.loaded = {}
    if cls.cli.returncode == 0:
      load = subprocess.run(
          [sys.executable, "-c", _LOAD, json.dumps(TEXTS), cls.greedy_dir, cls.beam_dir,
           cls.ensemble_dir],
          cwd=cls.tmp, capture_output=True, text=True, timeout=300,
          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
      assert load.returncode == 0, load.stderr
      cls.loaded = json.loads(load.stdout.strip().splitlines()[-1])

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp, ignore_errors=True)
    super().tearDownClass()

  def _assert_matches_checkpoint(self, export_dir, **decode_options):
    self.assertEqual(self.cli.returncode, 0, self.cli.stderr)
    decoder = chat.make_decoder(config_lib.replace(self.run_config, **decode_options),
                                helpers.quiet)
    want = decoder.n_best_batch(TEXTS)
    got = self.loaded[export_dir]
    self.assertEqual(got["replies"], [[reply for reply, _ in row] for row in want])
    self.assertAllClose(got["scores"], [[score for _, score in row] for row in want],
                        rtol=1e-5, atol=1e-5)
    return got

  def test_greedy_export_replies_as_the_checkpoint(self):
    got = self._assert_matches_checkpoint(self.greedy_dir)
    self.assertEqual([len(row) for row in got["replies"]], [1] * len(TEXTS))
    self.assertFalse(self.loaded["imported_seq2seq"])

  def test_beam_export_replies_as_the_checkpoint(self):
    got = self._assert_matches_checkpoint(self.beam_dir, beam_width=3, n_best=2,
                                          length_penalty=0.6)
    self.assertEqual([len(row) for row in got["replies"]], [2] * len(TEXTS))
    self.assertIn(f"exported to {self.beam_dir}", self.cli.stdout)

  def test_ensemble_export_replies_as_the_ensemble(self):
    got = self._assert_matches_checkpoint(self.ensemble_dir, **self.ENSEMBLE)
    # The member (another size and seed) moves the scores away from the run's own.
    self.assertNotAllClose(got["scores"], self.loaded[self.beam_dir]["scores"], atol=1e-3)
    self.assertFalse(self.loaded["imported_seq2seq"])

  def test_reply_signature_searches_as_asked_per_call(self):
    """One export (greedy by its flags) answers greedy, beam and sampled calls as the
    checkpoint's decoders with those settings do."""
    self.assertEqual(self.cli.returncode, 0, self.cli.stderr)
    for name, (beam_width, n_best, temperature) in PER_CALL.items():
      decoder = chat.make_decoder(config_lib.replace(
          self.run_config, beam_width=beam_width, n_best=n_best, temperature=temperature,
          seed=SEED, length_penalty=0.6), helpers.quiet)
      want = decoder.n_best_batch(TEXTS)
      got = self.loaded[self.greedy_dir][name]
      self.assertEqual(got["replies"], [[reply for reply, _ in row] for row in want], name)
      self.assertAllClose(got["scores"], [[score for _, score in row] for row in want],
                          rtol=1e-5, atol=1e-5)

  def test_align_signature_and_info_file(self):
    """`align` exists for one attention model, not for an ensemble; the info file names the
    checkpoint and its step."""
    self.assertEqual(self.cli.returncode, 0, self.cli.stderr)
    self.assertEqual(self.loaded[self.greedy_dir]["signatures"],
                     ["align", "encode", "reply", "serving_default"])
    self.assertEqual(self.loaded[self.ensemble_dir]["signatures"],
                     ["encode", "reply", "serving_default"])
    info = export.read_info(self.greedy_dir)
    self.assertEqual(info["step"], 0)
    self.assertEqual(info["checkpoints"], [os.path.join(self.workdir, "checkpoints", "ckpt-0")])
    self.assertEqual((info["attention"], info["vocabulary_size"], info["max_length"]),
                     (True, len(vocab_lib.SPECIAL_TOKENS) + len(WORDS), 6))
    self.assertEqual(export.read_info(self.ensemble_dir)["model"]["ensemble"], 2)

  def test_encode_signature_gives_the_vocabulary_ids(self):
    self.assertEqual(self.cli.returncode, 0, self.cli.stderr)
    vocabulary = vocab_lib.Vocabulary.load(workdir_lib.vocab_path(self.workdir))
    tokenizer = vocab_lib.Tokenizer()
    max_length = self.run_config.data.max_length
    want = [vocabulary.encode(tokenizer(text))[:max_length] for text in TEXTS]
    got = self.loaded[self.beam_dir]
    self.assertEqual(got["lengths"], [len(ids) for ids in want])
    self.assertEqual(got["ids"], [ids + [vocab_lib.PAD_ID] * (max_length - len(ids))
                                  for ids in want])
    self.assertIn(vocab_lib.UNK_ID, got["ids"][2])  # zebra
    self.assertEqual(got["lengths"][3], max_length)  # 11 words, cut

  def test_decode_max_length_sets_the_saved_models_length(self):
    """Trained with --max_length=6, exported with --decode_max_length=12: the SavedModel reads
    11 words of an 11-word input and replies as the checkpoint does with that flag."""
    export_dir = os.path.join(self.get_temp_dir(), "long")
    run_config = config_lib.replace(self.run_config, export_dir=export_dir, decode_max_length=12)
    export.export_trained(run_config, helpers.quiet)
    loaded = tf.saved_model.load(export_dir)
    encoded = loaded.signatures["encode"](text=tf.constant(TEXTS))
    self.assertEqual(encoded["ids"].shape, [len(TEXTS), 12])
    self.assertEqual(encoded["lengths"].numpy()[3], 11)  # not cut at 6
    served = loaded.signatures["serving_default"](text=tf.constant(TEXTS))
    want = chat.make_decoder(run_config, helpers.quiet).n_best_batch(TEXTS)
    self.assertEqual([[r.decode() for r in row] for row in served["replies"].numpy()],
                     [[reply for reply, _ in row] for row in want])

  def test_export_replaces_the_old_one_and_leaves_no_staging_folder(self):
    self.assertTrue(tf.saved_model.contains_saved_model(self.greedy_dir))
    self.assertIn(self.greedy_dir, self.loaded)  # it has the signatures, so it is the new one
    self.assertEqual(sorted(os.listdir(os.path.dirname(self.greedy_dir))), ["ensemble", "greedy"])
    self.assertEqual(sorted(n for n in os.listdir(self.workdir) if "export" in n), ["export"])

  def test_folder_that_is_not_a_saved_model_is_refused(self):
    taken = os.path.join(self.get_temp_dir(), "taken")
    os.makedirs(taken)
    with open(os.path.join(taken, "notes.txt"), "w", encoding="utf-8") as f:
      f.write("mine\n")
    with self.assertRaisesRegex(export.ExportError,
                                r"--export_dir=.*taken is not empty and is not a SavedModel"):
      export.export_trained(config_lib.replace(self.run_config, export_dir=taken), helpers.quiet)
    self.assertEqual(os.listdir(taken), ["notes.txt"])

  def test_sentencepiece_data_is_refused_naming_the_flag(self):
    prepared = os.path.join(self.get_temp_dir(), "prepared")
    os.makedirs(prepared)
    for name in ("report.json", "sentencepiece.model"):
      with open(os.path.join(prepared, name), "w", encoding="utf-8") as f:
        f.write("{}")
    run_config = config_lib.replace(self.run_config, data=prepared)
    with self.assertRaisesRegex(export.ExportError, r"--tokenizer=sentencepiece; --mode=export "
                                                    r"supports --tokenizer=word only"):
      export.export_trained(run_config, helpers.quiet)


if __name__ == "__main__":
  tf.test.main()
