"""The step a run gets (`seq2seq.step.choice`): --jit_compile=auto compiles it where a GPU runs
it, with the unroll that compiles fast and the XLA cache in the workdir; a CPU-only machine
keeps the plain step. A GPU is injected as the device list `choose` reads."""
import json
import os
import tempfile
from unittest import mock

from absl import app
from absl.testing import parameterized
import tensorflow as tf

from seq2seq import config as config_lib
from seq2seq.runtime import workdir as workdir_lib
from seq2seq.runtime import xla_cache
from seq2seq.step import choice as step_choice
from tests.test_careless_flags import config_from_flags

GPU = [tf.config.PhysicalDevice("/physical_device:GPU:0", "GPU")]


def _config(**changes):
  return config_lib.replace(config_lib.RunConfig(), **{"workdir": "runs/w", **changes})


def _resolved(choice):
  model, train = choice.run_config.model, choice.run_config.train
  return train.jit_compile, model.unroll, model.unroll_steps, train.xla_cache_dir


class ChooseTest(parameterized.TestCase):

  def test_defaults_on_a_gpu_compile_the_fast_compiling_unroll_with_the_cache(self):
    choice = step_choice.choose(_config(), gpus=GPU)
    self.assertEqual(_resolved(choice), (True, "dynamic", 5, os.path.join("runs/w", "xla_cache")))
    line = step_choice.describe(choice)
    self.assertStartsWith(line, "step: XLA-compiled (1 GPU (--jit_compile=auto)), dynamic unroll "
                                "x5, embedding on the CPU (looked up a batch ahead; lookup and row update outside")

  def test_defaults_without_a_gpu_keep_the_plain_step(self):
    choice = step_choice.choose(_config(), gpus=[])
    self.assertEqual(_resolved(choice), (False, "static", 1, ""))
    self.assertEqual(step_choice.describe(choice), "plain step: no GPU; static unroll")

  @parameterized.named_parameters(
      ("static_kept", dict(unroll="static"), GPU, (True, "static", 1)),
      ("dynamic_steps_kept", dict(unroll="dynamic", unroll_steps=3), GPU, (True, "dynamic", 3)),
      ("dynamic_on_cpu_one_step", dict(unroll="dynamic"), [], (False, "dynamic", 1)),
      ("off_on_a_gpu", dict(jit_compile=False), GPU, (False, "static", 1)),
      # On a CPU an explicit --jit_compile compiles the static unroll, as it always did.
      ("on_without_a_gpu", dict(jit_compile=True), [], (True, "static", 1)),
      ("per_gate_needs_static", dict(per_gate_hidden_gradient=True), GPU, (True, "static", 1)),
      ("tpu_compiles_its_own", dict(strategy="tpu"), GPU, (False, "static", 1)),
      ("mirrored_on_cpus", dict(strategy="mirrored", devices="/cpu:0,/cpu:1"), GPU,
       (False, "static", 1)),
      ("mirrored_on_gpus", dict(strategy="mirrored"), GPU + GPU, (True, "dynamic", 5)),
      ("language_model", dict(model="lm"), GPU, (True, "dynamic", 5)),
      ("custom_cell", dict(cell="seq2seq.contrib.mgu:MGUCell", attention="luong",
                           encoder="bi"), GPU, (True, "dynamic", 5)))
  def test_choice(self, changes, gpus, expected):
    self.assertEqual(_resolved(step_choice.choose(_config(**changes), gpus=gpus))[:3], expected)

  @parameterized.parameters(([],), (GPU,))
  def test_a_resolved_config_chooses_itself(self, gpus):
    once = step_choice.choose(_config(), gpus=GPU).run_config
    self.assertEqual(step_choice.choose(once, gpus=gpus).run_config, once)

  def test_xla_options_of_a_step_left_plain_are_dropped(self):
    plain = step_choice.choose(_config(xla_autotune=True, xla_cache_dir="/c"), gpus=[])
    self.assertEqual((plain.run_config.train.xla_autotune, plain.run_config.train.xla_cache_dir),
                     (False, ""))
    compiled = step_choice.choose(_config(xla_autotune=True), gpus=GPU)
    self.assertTrue(compiled.run_config.train.xla_autotune)

  def test_cache_folder_flag(self):
    off = step_choice.choose(_config(xla_cache_dir=""), gpus=GPU)
    self.assertEqual(off.run_config.train.xla_cache_dir, "")
    self.assertIn("; no XLA cache", step_choice.describe(off))
    named = step_choice.choose(_config(xla_cache_dir="/c"), gpus=GPU)
    self.assertEqual(named.run_config.train.xla_cache_dir, "/c")

  def test_the_line_counts_the_steps_in_the_active_cache(self):
    folder = tempfile.mkdtemp()
    open(os.path.join(folder, "xla_compile_cache__1__2__XLA_GPU_JIT.pb"), "w").close()
    with mock.patch.dict(os.environ, {"TF_XLA_FLAGS": f"{xla_cache.FLAG}={folder}"}):
      self.assertEndsWith(step_choice.describe(step_choice.choose(_config(), gpus=GPU)),
                          f"; XLA cache {folder}: 1 compiled step there")
    with mock.patch.dict(os.environ, {"TF_XLA_FLAGS": ""}):
      self.assertIn("no XLA cache (runs/w", step_choice.describe(
          step_choice.choose(_config(), gpus=GPU)))


class FlagTest(parameterized.TestCase):
  """--jit_compile takes auto and absl's boolean spellings."""

  @parameterized.parameters(
      ([], "auto"), (["--jit_compile"], True), (["--nojit_compile"], False),
      (["--jit_compile=auto"], "auto"), (["--jit_compile=AUTO"], "auto"),
      (["--jit_compile=true"], True), (["--jit_compile=1"], True),
      (["--jit_compile=false"], False), (["--jit_compile=0"], False))
  def test_spellings(self, flags, expected):
    self.assertEqual(config_from_flags(*flags).train.jit_compile, expected)

  def test_other_values_are_refused_naming_the_flag(self):
    with self.assertRaisesRegex(Exception, "jit_compile.*must be auto, true or false"):
      config_from_flags("--jit_compile=maybe")

  def test_a_cache_folder_needs_a_step_that_may_compile(self):
    with self.assertRaisesRegex(app.UsageError, "--xla_cache_dir: keeps the XLA-compiled "
                                                "step; it needs --jit_compile=true or auto"):
      config_from_flags("--nojit_compile", "--xla_cache_dir=/c")


def test_folder_before_start():
  train = config_lib.TrainConfig(workdir="w")
  assert xla_cache.folder_before_start(train) == os.path.join("w", "xla_cache")
  assert xla_cache.folder_before_start(config_lib.TrainConfig(jit_compile=False)) is None
  assert xla_cache.folder_before_start(config_lib.TrainConfig(xla_cache_dir="")) is None
  assert xla_cache.folder_before_start(config_lib.TrainConfig(xla_cache_dir="c")) == "c"


class SavedConfigTest(parameterized.TestCase):
  """config.json records the resolved step; files written before `auto` (true / false) load."""

  @parameterized.parameters(False, True, "auto")
  def test_jit_compile_values_load(self, value):
    workdir = tempfile.mkdtemp()
    saved = json.loads(_config(workdir=workdir).to_json())
    saved["train"]["jit_compile"] = value
    with open(workdir_lib.config_path(workdir), "w", encoding="utf-8") as f:
      json.dump(saved, f)
    self.assertEqual(workdir_lib.load_run_config(workdir).train.jit_compile, value)

  def test_other_values_are_named(self):
    workdir = tempfile.mkdtemp()
    saved = json.loads(_config(workdir=workdir).to_json())
    saved["train"]["jit_compile"] = "yes"
    with open(workdir_lib.config_path(workdir), "w", encoding="utf-8") as f:
      json.dump(saved, f)
    with self.assertRaisesRegex(workdir_lib.WorkdirError,
                                '"train.jit_compile" is "yes", not "auto", true or false'):
      workdir_lib.load_run_config(workdir)


def test_the_flag_shows_and_writes_auto():
  """--helpfull says auto, and a written flagfile keeps it (not absl's true)."""
  import train  # pylint: disable=import-outside-toplevel
  flag = train.FLAGS["jit_compile"]
  assert flag.default_as_str == "'auto'"
  assert flag._serialize("auto") == "--jit_compile=auto"  # pylint: disable=protected-access
  assert flag._serialize(False) == "--nojit_compile"  # pylint: disable=protected-access
