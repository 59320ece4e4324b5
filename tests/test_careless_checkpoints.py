"""A careless user's workdir loses nothing: lost or garbled state files, damaged checkpoints,
folder names TensorFlow reads as patterns, a deleted vocabulary, a damaged config.json and a
--workdir that is not a folder each end in a working run or in a clear message."""
import json
import os
import subprocess
import sys
from unittest import mock

from absl.testing import parameterized
import numpy as np
import pytest
import tensorflow as tf

from seq2seq import config as config_lib
from seq2seq.data import datasets
from seq2seq.infer import chat
from seq2seq.infer import restore
from seq2seq.runtime import checkpoint_folder
from seq2seq.runtime import checkpoints
from seq2seq.runtime import workdir as workdir_lib
from seq2seq.train import loop
from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_FILE = "ckpt-3.data-00000-of-00001"


class _Toy(tf.Module):
  """A stand-in model: one variable whose value says which checkpoint was restored."""

  def __init__(self):
    super().__init__()
    self.weights = tf.Variable(np.zeros([2, 3], np.float32))


def _saved_steps(directory, steps=(1, 2, 3), max_to_keep=5):
  """Saves a checkpoint at each of `steps`, the toy's weights all equal to the step there."""
  model, progress = _Toy(), checkpoints.Progress()
  checkpointer = checkpoints.Checkpointer(directory, model, None, progress, max_to_keep,
                                          log=helpers.quiet)
  for step in steps:
    progress.step.assign(step)
    model.weights.assign(np.full([2, 3], step, np.float32))
    checkpointer.save()
  return checkpointer


def _fresh(directory, lines, max_to_keep=5):
  """A Checkpointer of a new toy over `directory`, logging into `lines`."""
  return checkpoints.Checkpointer(directory, _Toy(), None, checkpoints.Progress(), max_to_keep,
                                  log=lines.append)


def _restored_value(checkpointer):
  return float(checkpointer.checkpoint.model.weights.numpy()[0, 0])


def _damage(directory, how):
  """Damages checkpoint 3 of `directory` as a full disk, a bad block or a careless rm would."""
  data = os.path.join(directory, DATA_FILE)
  if how == "truncated":
    with open(data, "r+b") as f:
      f.truncate(os.path.getsize(data) // 2)
  elif how == "corrupted":
    with open(data, "r+b") as f:
      content = bytearray(f.read())
      for i in range(len(content)):
        content[i] ^= 0x5A
      f.seek(0)
      f.write(content)
  elif how == "missing_index":
    os.remove(os.path.join(directory, "ckpt-3.index"))
  elif how == "missing_data":
    os.remove(data)


class StateFileTest(tf.test.TestCase):
  """A lost or garbled `checkpoint` state file is rebuilt from the files on disk."""

  def setUp(self):
    super().setUp()
    self.directory = os.path.join(self.get_temp_dir(), "checkpoints")
    _saved_steps(self.directory)
    self.state = os.path.join(self.directory, "checkpoint")

  def test_missing_state_file_is_rebuilt_and_the_newest_restored(self):
    os.remove(self.state)
    lines = []
    checkpointer = _fresh(self.directory, lines)
    self.assertEqual(checkpointer.restore_latest(), os.path.join(self.directory, "ckpt-3"))
    self.assertEqual(_restored_value(checkpointer), 3.0)
    self.assertRegex(lines[0], r"checkpoint was missing: rebuilt it from the 3 checkpoint\(s\)")
    self.assertEqual(tf.train.get_checkpoint_state(self.directory).all_model_checkpoint_paths,
                     [os.path.join(self.directory, f"ckpt-{s}") for s in (1, 2, 3)])

  def test_garbled_state_file_is_kept_aside_and_rebuilt(self):
    with open(self.state, "w", encoding="utf-8") as f:
      f.write("model_checkpoint_path: {{{ not a state file\n")
    lines = []
    checkpointer = _fresh(self.directory, lines)
    self.assertTrue(checkpointer.restore_latest().endswith("ckpt-3"))
    self.assertIn("could not be read", lines[0])
    with open(os.path.join(self.directory, "damaged", "checkpoint"), encoding="utf-8") as f:
      self.assertIn("not a state file", f.read())

  def test_state_file_naming_an_older_checkpoint_is_rebuilt(self):
    checkpoint_folder.Folder(self.directory, "ckpt").write_state([1])
    lines = []
    self.assertTrue(_fresh(self.directory, lines).restore_latest().endswith("ckpt-3"))
    self.assertIn("named ckpt-1 but the files on disk are ckpt-1 to ckpt-3", lines[0])

  def test_saving_after_a_rebuild_keeps_the_older_checkpoints(self):
    os.remove(self.state)
    checkpointer = _fresh(self.directory, [])
    checkpointer.restore_latest()
    self.assertEqual(int(checkpointer.progress.step.numpy()), 3)
    checkpointer.progress.step.assign(4)
    checkpointer.save()
    self.assertEqual(tf.train.get_checkpoint_state(self.directory).all_model_checkpoint_paths,
                     [os.path.join(self.directory, f"ckpt-{s}") for s in (1, 2, 3, 4)])


class DamagedCheckpointTest(tf.test.TestCase, parameterized.TestCase):
  """The newest checkpoint that loads is used; a damaged one is named and kept in damaged/."""

  def setUp(self):
    super().setUp()
    self.directory = os.path.join(self.get_temp_dir(), "checkpoints")
    _saved_steps(self.directory)

  @parameterized.parameters("truncated", "corrupted", "missing_index", "missing_data")
  def test_resume_falls_back_to_the_previous_checkpoint(self, how):
    with open(os.path.join(self.directory, DATA_FILE), "rb") as f:
      original = f.read()
    _damage(self.directory, how)
    lines = []
    checkpointer = _fresh(self.directory, lines)
    self.assertTrue(checkpointer.restore_latest().endswith("ckpt-2"))
    self.assertEqual(_restored_value(checkpointer), 2.0)
    self.assertEqual(int(checkpointer.progress.step.numpy()), 2)
    self.assertRegex(lines[-1], r"could not read .*ckpt-3 \(.+\); its files are kept in "
                                r".*damaged; using .*ckpt-2")
    damaged = os.path.join(self.directory, "damaged")
    self.assertNotIn("ckpt-3", "".join(os.listdir(self.directory)))
    if how != "missing_data":  # what was left of it is kept, byte for byte where unchanged
      self.assertIn(DATA_FILE, os.listdir(damaged))
    if how in ("missing_index",):
      with open(os.path.join(damaged, DATA_FILE), "rb") as f:
        self.assertEqual(f.read(), original)

  def test_no_readable_checkpoint_is_a_clear_error_and_nothing_moves(self):
    for step in (1, 2, 3):
      with open(os.path.join(self.directory, f"ckpt-{step}.data-00000-of-00001"), "r+b") as f:
        f.truncate(3)
    before = sorted(os.listdir(self.directory))
    with self.assertRaisesRegex(checkpoints.CheckpointError,
                                rf"no checkpoint in {self.directory} can be read: .*ckpt-3 .*"
                                r"ckpt-1 .*Nothing was moved or deleted"):
      _fresh(self.directory, []).restore_latest()
    self.assertEqual(sorted(os.listdir(self.directory)), before)

  def test_a_folder_another_run_writes_is_read_but_not_changed(self):
    _damage(self.directory, "truncated")
    lines = []
    checkpointer = _fresh(self.directory, lines)
    self.assertTrue(checkpointer.restore_for_inference("latest", writable=False)[0]
                    .endswith("ckpt-2"))
    self.assertIn("left in place", lines[-1])
    self.assertIn(DATA_FILE, os.listdir(self.directory))

  def test_inference_averages_the_readable_ones_and_needs_no_optimizer(self):
    _damage(self.directory, "corrupted")
    checkpointer = _fresh(self.directory, [])
    restored = checkpointer.restore_for_inference("latest", average=2)
    self.assertEqual([os.path.basename(p) for p in restored], ["ckpt-2", "ckpt-1"])
    self.assertEqual(_restored_value(checkpointer), 1.5)
    self.assertEqual(int(checkpointer.progress.step.numpy()), 2)

  def test_damaged_best_checkpoint_falls_back_to_the_training_ones(self):
    best = checkpoints.best_directory(self.directory)
    checkpointer = _saved_steps(self.directory, steps=(4,))
    checkpoints.BestCheckpoint(checkpointer).save()
    with open(os.path.join(best, "best-4.data-00000-of-00001"), "r+b") as f:
      f.truncate(5)
    lines = []
    restored = _fresh(self.directory, lines).restore_for_inference("auto")
    self.assertTrue(restored[0].endswith(os.path.join("checkpoints", "ckpt-4")), restored)
    self.assertIn("best-4", lines[0])


class PatternFolderTest(tf.test.TestCase, parameterized.TestCase):
  """A folder whose name holds glob characters saves, prunes and restores its own files."""

  @parameterized.parameters("run[1]", "run*", "run?", "a[b]*?c")
  def test_save_prune_and_restore(self, name):
    tmp = self.get_temp_dir()
    # A neighbour that the name, read as a pattern, would match, with the same steps.
    neighbour = os.path.join(tmp, "run1", "checkpoints")
    _saved_steps(neighbour)
    directory = os.path.join(tmp, name, "checkpoints")
    _saved_steps(directory, steps=(1, 2, 3), max_to_keep=2)
    self.assertEqual(sorted(os.listdir(directory)),
                     ["checkpoint", "ckpt-2.data-00000-of-00001", "ckpt-2.index",
                      "ckpt-3.data-00000-of-00001", "ckpt-3.index"])
    self.assertEqual(len(os.listdir(neighbour)), 7)  # none of its files was pruned
    checkpointer = _fresh(directory, [])
    self.assertEqual(checkpointer.restore_latest(), os.path.join(directory, "ckpt-3"))
    self.assertEqual(_restored_value(checkpointer), 3.0)
    self.assertEqual(checkpointer.restore_for_inference("latest"),
                     [os.path.join(directory, "ckpt-3")])


def _train(workdir, data, steps, log=helpers.quiet):
  return loop.train(helpers.tiny_config(workdir, data, max_steps=steps, save_every=2), log)


@pytest.mark.slow
class TrainedWorkdirTest(tf.test.TestCase):
  """The guards through training and chat's loading."""

  def setUp(self):
    super().setUp()
    tmp = self.get_temp_dir()
    self.data = helpers.write_reverse_task(os.path.join(tmp, "reverse.tsv"), num_pairs=100)
    self.workdir = os.path.join(tmp, "run[1]")
    _train(self.workdir, self.data, 4)
    self.directory = workdir_lib.checkpoint_dir(self.workdir)

  def test_lost_state_file_resumes_and_chat_finds_the_checkpoints(self):
    os.remove(os.path.join(self.directory, "checkpoint"))
    lines = []
    chat.load_trained(self.config(), log=lines.append)
    self.assertTrue(lines[-1].startswith(f"loaded {self.directory}/ckpt-4 (step 4)"), lines)
    os.remove(os.path.join(self.directory, "checkpoint"))
    lines = []
    self.assertEqual(_train(self.workdir, self.data, 6, lines.append).step, 6)
    self.assertTrue(any(m.startswith("Resuming from") and "at step 4" in m for m in lines))
    self.assertEqual(checkpoint_folder.Folder(self.directory, "ckpt").steps_on_disk(),
                     [2, 4, 6])

  def test_damaged_latest_checkpoint_resumes_from_the_one_before(self):
    with open(os.path.join(self.directory, "ckpt-4.data-00000-of-00001"), "r+b") as f:
      f.truncate(10)
    lines = []
    chat.load_trained(self.config(), log=lines.append)
    self.assertIn("loaded", lines[-1])
    self.assertIn("ckpt-2 (step 2)", lines[-1])
    self.assertEqual(sorted(os.listdir(os.path.join(self.directory, "damaged"))),
                     ["ckpt-4.data-00000-of-00001", "ckpt-4.index"])
    lines = []
    self.assertEqual(_train(self.workdir, self.data, 6, lines.append).step, 6)
    self.assertTrue(any(m.startswith("Resuming from") and "at step 2" in m for m in lines))

  def test_deleted_vocabulary_is_not_rebuilt(self):
    vocab = workdir_lib.vocab_path(self.workdir)
    with open(vocab + ".sha256", encoding="utf-8") as f:
      checksum = f.read()
    os.remove(vocab)
    with self.assertRaisesRegex(workdir_lib.WorkdirError, r"vocab.txt is missing.*Restore "
                                r"vocab.txt \(and vocab.txt.sha256\)"):
      _train(self.workdir, self.data, 6)
    with self.assertRaisesRegex(workdir_lib.WorkdirError, "vocab.txt is missing"):
      chat.load_trained(self.config(), log=helpers.quiet)
    self.assertFalse(os.path.exists(vocab))
    with open(vocab + ".sha256", encoding="utf-8") as f:
      self.assertEqual(f.read(), checksum)

  def test_chat_with_no_readable_checkpoint_exits_1_naming_the_folder(self):
    for step in (2, 4):
      with open(os.path.join(self.directory, f"ckpt-{step}.data-00000-of-00001"), "r+b") as f:
        f.truncate(7)
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "train.py"), f"--workdir={self.workdir}",
         "--mode=chat"], cwd=ROOT, input="", capture_output=True, text=True, timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), check=False)
    self.assertEqual(result.returncode, 1, result.stderr)
    self.assertIn(f"no checkpoint in {self.directory} can be read", result.stderr)
    self.assertNotIn("Traceback", result.stderr)
    self.assertEqual(len(os.listdir(self.directory)), 5)  # nothing moved

  def config(self):
    return workdir_lib.trained_settings(helpers.tiny_config(self.workdir, self.data))


class VocabularyKeptTest(tf.test.TestCase):
  """A workdir's vocabulary is never rebuilt once a checkpoint exists (no training here)."""

  def setUp(self):
    super().setUp()
    self.workdir = self.get_temp_dir()
    self.vocab = workdir_lib.vocab_path(self.workdir)
    with open(self.vocab + ".sha256", "w", encoding="utf-8") as f:
      f.write("0" * 64 + "\n")
    self.data_config = config_lib.DataConfig(max_vocab=10)

  def _checkpoint_file(self, *parts):
    path = os.path.join(self.workdir, *parts)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "w", encoding="utf-8").close()

  def _build(self):
    return datasets.load_or_build_vocabulary([["a", "b"]], self.data_config, self.workdir,
                                             helpers.quiet)

  def test_any_checkpoint_file_blocks_a_new_vocabulary(self):
    for parts in (("checkpoints", "ckpt-2.index"), ("best", "best-5.data-00000-of-00001"),
                  ("checkpoints", "damaged", "ckpt-9.index")):
      with self.subTest(parts=parts):
        self._checkpoint_file(*parts)
        with self.assertRaisesRegex(workdir_lib.WorkdirError,
                                    rf"{self.vocab} is missing, .*{parts[-1]}"):
          self._build()
        self.assertFalse(os.path.exists(self.vocab))
        with open(self.vocab + ".sha256", encoding="utf-8") as f:
          self.assertEqual(f.read(), "0" * 64 + "\n")
        os.remove(os.path.join(self.workdir, *parts))

  def test_without_checkpoints_it_is_built(self):
    self._checkpoint_file("checkpoints", "checkpoint")  # a state file alone trains nothing
    self.assertEqual(len(self._build()), 6)

  def test_inference_names_the_missing_file_not_train_first(self):
    with self.assertRaisesRegex(restore.NoCheckpoint, "train first"):
      restore.load_vocabulary(self.workdir, "python train.py")
    self._checkpoint_file("checkpoints", "ckpt-2.index")
    with self.assertRaisesRegex(workdir_lib.WorkdirError, "Restore vocab.txt"):
      restore.load_vocabulary(self.workdir, "python train.py")


class ConfigFileTest(tf.test.TestCase, parameterized.TestCase):
  """A damaged config.json is named with the field at fault."""

  def _saved(self, text):
    workdir = self.get_temp_dir()
    with open(workdir_lib.config_path(workdir), "w", encoding="utf-8") as f:
      f.write(text)
    return workdir

  def _good(self):
    return json.loads(config_lib.RunConfig().to_json())

  def test_a_saved_config_loads(self):
    workdir = self._saved(json.dumps(self._good()))
    self.assertEqual(workdir_lib.load_run_config(workdir).model, config_lib.ModelConfig())

  @parameterized.named_parameters(
      ("empty", "", "cannot be read as JSON"),
      ("not_json", "{'model': 1", "cannot be read as JSON"),
      ("empty_object", "{}", 'section "model" is missing'),
      ("a_list", "[1, 2]", "holds a list, not a JSON object"),
      ("binary", b"\xff\xfe\x00".decode("latin-1"), "cannot be read as JSON"))
  def test_unreadable(self, text, message):
    workdir = self._saved(text)
    with self.assertRaisesRegex(workdir_lib.WorkdirError,
                                rf"{workdir_lib.config_path(workdir)}: .*{message}.* restore"):
      workdir_lib.load_run_config(workdir)

  @parameterized.named_parameters(
      ("wrong_type", "model", "hidden_size", "256",
       r'"model.hidden_size" is "256", not an integer'),
      ("bool_for_int", "model", "num_layers", True, r'"model.num_layers" is true, not an integer'),
      ("string_for_bool", "data", "lowercase", "yes",
       r'"data.lowercase" is "yes", not true or false'),
      ("out_of_range", "model", "cell", "rnn", r'"model.cell" is invalid'),
      ("unknown", "train", "learning_rat", 0.1, r'"train.learning_rat" is not a setting'),
      ("missing", "model", "cell", None, r'"model.cell" is missing'),
      ("section_type", "data", None, [], r'section "data" is missing or not an object'))
  def test_bad_field(self, section, field, value, message):
    saved = self._good()
    if field is None:
      saved[section] = value
    elif value is None:
      del saved[section][field]
    else:
      saved[section][field] = value
    workdir = self._saved(json.dumps(saved))
    with self.assertRaisesRegex(workdir_lib.WorkdirError, message):
      workdir_lib.load_run_config(workdir)

  def test_a_field_newer_than_the_file_takes_its_default(self):
    saved = self._good()
    del saved["train"]["log_every"]
    loaded = workdir_lib.load_run_config(self._saved(json.dumps(saved)))
    self.assertEqual(loaded.train.log_every, config_lib.TrainConfig().log_every)


class WorkdirFolderTest(tf.test.TestCase):
  """--workdir must be a folder (or makeable), and writable to train in."""

  def setUp(self):
    super().setUp()
    self.file = os.path.join(self.get_temp_dir(), "a_file")
    with open(self.file, "w", encoding="utf-8") as f:
      f.write("precious\n")

  def test_a_file(self):
    with self.assertRaisesRegex(workdir_lib.WorkdirError, rf"--workdir={self.file} is a file"):
      workdir_lib.check_folder(self.file, writing=False)

  def test_under_a_file(self):
    with self.assertRaisesRegex(workdir_lib.WorkdirError,
                                rf"cannot be made: {self.file} is a file"):
      workdir_lib.check_folder(os.path.join(self.file, "run", "deeper"), writing=True)

  def test_not_writable(self):
    folder = self.get_temp_dir()
    workdir_lib.check_folder(os.path.join(folder, "new", "run"), writing=True)
    with mock.patch("tempfile.TemporaryFile",
                    side_effect=PermissionError(13, "Permission denied")):
      workdir_lib.check_folder(folder, writing=False)  # reading needs no write
      with self.assertRaisesRegex(workdir_lib.WorkdirError,
                                  rf"cannot be written: creating a file in {folder} failed "
                                  r"\(Permission denied\)"):
        workdir_lib.check_folder(os.path.join(folder, "new", "run"), writing=True)

  def test_an_export_that_would_not_load_is_refused(self):
    for path in ("run[1]/export", "/tmp/a*/export", "b?"):
      with self.subTest(path=path), self.assertRaisesRegex(workdir_lib.WorkdirError,
                                                           "--export_dir=FOLDER"):
        workdir_lib.check_loadable_export(path)
    workdir_lib.check_loadable_export(os.path.join(self.get_temp_dir(), "run_1", "export"))

  def test_train_py_refuses_before_loading_anything(self):
    workdir = self.get_temp_dir()
    with open(workdir_lib.config_path(workdir), "w", encoding="utf-8") as f:
      f.write("{}")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    for flags, message in (([f"--workdir={self.file}"], "is a file, not a folder"),
                           ([f"--workdir={self.file}/run", "--mode=chat"], "cannot be made"),
                           ([f"--workdir={workdir}", "--mode=chat"], 'section "model"'),
                           ([f"--workdir={workdir}", "--mode=chat", f"--ensemble={self.file}"],
                            'section "model"'),
                           ([f"--ensemble={self.file}", "--mode=chat", f"--workdir={self.file}x"],
                            f"--ensemble={self.file} is a file"),
                           ([f"--workdir={workdir}/run[1]", "--mode=export"],
                            "SavedModel loader reads as a pattern")):
      with self.subTest(flags=flags):
        result = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *flags],
                                cwd=ROOT, capture_output=True, text=True, env=env, timeout=120,
                                check=False)
        self.assertEqual(result.returncode, 1, result.stderr)
        self.assertIn(message, result.stderr)
        self.assertNotIn("Traceback", result.stderr)
    with open(self.file, encoding="utf-8") as f:
      self.assertEqual(f.read(), "precious\n")
