"""--cell=package.module:ClassName: the worked example's math, the contract checks and their
messages, and the example through train.py (train, resume, chat, decode, eval, export)."""
import os
import subprocess
import sys
import tempfile
import textwrap

from absl.testing import parameterized
import numpy as np
import pytest
import tensorflow as tf

from seq2seq import config as config_lib
from seq2seq.contrib import mgu
from seq2seq.models import encoder_decoder as model_lib
from seq2seq.nn import cell_registry
from seq2seq.nn import cells
from seq2seq.runtime import workdir as workdir_lib
from tests import helpers
from tests.test_cli import ROOT, TINY, run_train
from tests import test_train_step

MGU = "seq2seq.contrib.mgu:MGUCell"

# Cells that break the contract one way each, in a module the tests write to a temp folder.
BROKEN_CELLS = textwrap.dedent('''
    import collections
    import tensorflow as tf

    State = collections.namedtuple("State", ["hidden"])

    class Recorder(tf.Module):
      """Keeps the keyword options it was given; its step is the identity on h."""
      def __init__(self, num_units, seed=0, **kwargs):
        super().__init__()
        self.output_size, self.seed, self.kwargs = num_units, seed, kwargs
      def initial_state(self, batch_size, dtype):
        return State(tf.zeros([batch_size, self.output_size], dtype))
      def __call__(self, inputs, state):
        return state.hidden, state

    class NoInitialState(tf.Module):
      def __init__(self, num_units):
        super().__init__()
        self.output_size = num_units
      def __call__(self, inputs, state):
        return inputs, state

    class NotAModule:
      def __init__(self, num_units):
        self.output_size = num_units
      def initial_state(self, batch_size, dtype):
        return State(tf.zeros([batch_size, self.output_size], dtype))
      def __call__(self, inputs, state):
        return state.hidden, state

    class WideOutput(Recorder):
      def __call__(self, inputs, state):
        return tf.concat([state.hidden, state.hidden], -1), state

    class WideState(Recorder):
      def initial_state(self, batch_size, dtype):
        return State(tf.zeros([batch_size, 2 * self.output_size], dtype))
      def __call__(self, inputs, state):
        return state.hidden[:, :self.output_size], state

    class NarrowSize(tf.Module):
      output_size = tf.TensorShape([4])
      initial_state, __call__ = Recorder.initial_state, Recorder.__call__
      def __init__(self, num_units):
        super().__init__()

    class Float32Only(Recorder):
      def __call__(self, inputs, state):
        return state.hidden + tf.reduce_sum(inputs * tf.ones([1], tf.float32)), state

    class Refuses(Recorder):
      def __init__(self, num_units):
        raise ValueError("num_units must be even")
''')


def _write_module(folder, name, text):
  with open(os.path.join(folder, f"{name}.py"), "w", encoding="utf-8") as f:
    f.write(text)


def _mgu_step_numpy(weights, x, h):
  """One MGU step in float64 from the cell's variables (W_f, W_c [I + H, H], b_f, b_c [H])."""
  w_f, w_c, b_f, b_c = (np.asarray(w, np.float64) for w in weights)
  sigmoid = lambda z: 1.0 / (1.0 + np.exp(-z))
  f = sigmoid(np.concatenate([x, h], -1) @ w_f + b_f)
  c = np.tanh(np.concatenate([x, f * h], -1) @ w_c + b_c)
  return (1.0 - f) * h + f * c


class MGUCellTest(parameterized.TestCase, tf.test.TestCase):

  @parameterized.parameters(False, True)
  def test_step_matches_numpy(self, use_function):
    cell = mgu.MGUCell(4, seed=3)
    rng = np.random.default_rng(0)
    x, h = rng.normal(size=[3, 5]), rng.normal(size=[3, 4])
    call = tf.function(cell) if use_function else cell
    inputs, state = tf.constant(x, tf.float32), mgu.MGUState(tf.constant(h, tf.float32))
    call(inputs, state)  # builds the variables
    # Non-zero biases, so that a bias added in the wrong place shows.
    for bias in (cell.b_f, cell.b_c):
      bias.assign(rng.normal(size=[4]).astype(np.float32))
    output, state = call(inputs, state)
    want = _mgu_step_numpy([cell.w_f, cell.w_c, cell.b_f, cell.b_c], x, h)
    self.assertAllClose(output, want, rtol=1e-5, atol=1e-5)
    self.assertAllClose(state.hidden, want, rtol=1e-5, atol=1e-5)
    self.assertLen(cell.trainable_variables, 4)

  def test_bf16_inputs_give_a_bf16_step_on_float32_weights(self):
    cell = mgu.MGUCell(4)
    output, state = cell(tf.ones([2, 3], tf.bfloat16), cell.initial_state(2, tf.bfloat16))
    self.assertEqual((output.dtype, state.hidden.dtype), (tf.bfloat16, tf.bfloat16))
    self.assertEqual(cell.w_f.dtype, tf.float32)

  def test_the_worked_example_stays_short_and_appears_in_build_md(self):
    with open(mgu.__file__, encoding="utf-8") as f:
      source = f.read()
    self.assertLess(len(source.splitlines()), 40)
    with open(os.path.join(ROOT, "BUILD.md"), encoding="utf-8") as f:
      self.assertTrue(source[source.index("class MGUCell"):] in f.read(),
                      "BUILD.md's copy of the MGU differs from seq2seq/contrib/mgu.py")


def _mgu_model(**options):
  """A built two-layer Seq2Seq of MGU cells; `options` as in ModelConfig."""
  config = config_lib.ModelConfig(cell=MGU, num_layers=2, hidden_size=8, embedding_size=6,
                                  **options)
  model = model_lib.Seq2Seq(config, test_train_step.VOCAB, seed=1)
  model.build()
  return model


@pytest.mark.slow
class ModelOptionsTest(parameterized.TestCase, tf.test.TestCase):
  """A custom cell inside Seq2Seq: the compiled step against the plain one, and the options
  that change the time loop or the state."""

  def test_compiled_step_matches_plain_step(self):
    helpers.assert_compiled_step_matches_plain(
        lambda: _mgu_model(encoder="bi", attention="luong"), test_train_step._batch())

  @parameterized.parameters(
      dict(unroll="dynamic", variational_dropout=True, encoder="bi", attention="bahdanau"),
      dict(residual=True, attention="luong_scaled"))
  def test_train_step_runs_and_updates_the_cell(self, **options):
    model = _mgu_model(**{"keep_prob": 0.8, **options})
    loss, norm, changes = helpers.one_sgd_step(model, test_train_step._batch(), False)
    self.assertTrue(np.isfinite(loss) and norm > 0)
    for name, change in changes.items():
      if "/w_" in name:
        self.assertGreater(np.abs(change).max(), 0, name)
    self.assertLen([n for n in changes if "decoder_1" in n and "/w_" in n], 2)


class RegistryTest(parameterized.TestCase, tf.test.TestCase):
  """make_cell and cell_registry.check on cells from a module in a temp folder."""

  def setUp(self):
    super().setUp()
    self.folder = tempfile.mkdtemp(dir=self.get_temp_dir())
    _write_module(self.folder, "broken_cells", BROKEN_CELLS)
    sys.path.insert(0, self.folder)
    self.addCleanup(sys.path.remove, self.folder)
    self.addCleanup(sys.modules.pop, "broken_cells", None)

  def _check(self, cell, precision="fp32", **changes):
    config = config_lib.ModelConfig(cell=cell, hidden_size=8, embedding_size=6, **changes)
    cell_registry.check(config, model_lib.COMPUTE_DTYPES[precision])

  def test_options_go_only_to_the_parameters_init_names(self):
    core = model_lib.make_cell("broken_cells:Recorder", 8, dtype=tf.float32, seed=5, name="x")
    self.assertIsInstance(core, cell_registry.CustomCell)
    self.assertEqual((core.cell.seed, core.cell.kwargs), (5, {}))
    self.assertEqual(core.output_size, 8)
    self._check("broken_cells:Recorder")

  def test_an_rnn_core_subclass_is_used_as_it_is(self):
    _write_module(self.folder, "core_cells",
                  "from seq2seq.nn import cells\nclass Core(cells.GRUCell):\n  pass\n")
    self.addCleanup(sys.modules.pop, "core_cells", None)
    core = model_lib.make_cell("core_cells:Core", 8)
    self.assertIsInstance(core, cells.GRUCell)
    self._check("core_cells:Core", encoder="bi")

  def test_a_module_in_the_current_directory_is_found(self):
    _write_module(self.folder, "here_cells", "class Cell:\n  pass\n")
    sys.path.remove(self.folder)
    self.addCleanup(sys.path.insert, 0, self.folder)
    self.addCleanup(sys.modules.pop, "here_cells", None)
    here = os.getcwd()
    os.chdir(self.folder)
    self.addCleanup(os.chdir, here)
    self.addCleanup(lambda: sys.path.remove(self.folder) if self.folder in sys.path else None)
    self.assertEqual(cell_registry.load_class("here_cells:Cell").__name__, "Cell")

  @parameterized.named_parameters(
      ("no_module", "no_such_cells:Cell", r"^--cell=no_such_cells:Cell: no module named "
       r"'no_such_cells' on sys.path or in the current directory .*PYTHONPATH$"),
      ("no_class", "broken_cells:Missing", r"^--cell=broken_cells:Missing: module "
       r"'broken_cells' \(.*broken_cells.py\) has no 'Missing'; it defines Float32Only, "
       r"NarrowSize, NoInitialState, NotAModule, Recorder, Refuses, State, WideOutput, "
       r"WideState$"),
      ("not_a_class", "broken_cells:collections", r"broken_cells:collections is a module, "
       r"not a class; name a class with __call__\(inputs, state\)"),
      ("no_initial_state", "broken_cells:NoInitialState", r"^--cell=broken_cells:"
       r"NoInitialState: NoInitialState has no initial_state; a cell needs __call__"),
      ("not_a_module", "broken_cells:NotAModule", r"NotAModule has no tf.Module base"),
      ("narrow_size", "broken_cells:NarrowSize", r"NarrowSize\(num_units=8\).output_size is "
       r"TensorShape\(\[4\]\), not 8"),
      ("init_raises", "broken_cells:Refuses", r"^--cell=broken_cells:Refuses: Refuses\(8\) "
       r"raised ValueError: num_units must be even \(.*broken_cells.py, line \d+\)$"),
      ("wide_output", "broken_cells:WideOutput", r"one step of WideOutput returned an output "
       r"\[2, 16\] float32, not \[2, 8\] float32"),
  )
  def test_a_cell_off_the_contract_is_refused(self, cell, message):
    with self.assertRaisesRegex(cell_registry.CellError, message):
      self._check(cell)

  def test_bf16_step_of_a_float32_only_cell_says_to_cast(self):
    self._check("broken_cells:Float32Only")
    with self.assertRaisesRegex(cell_registry.CellError, r"one step of Float32Only on inputs "
                                r"\[2, 6\] bfloat16 .* raised .*cast the variables"):
      self._check("broken_cells:Float32Only", precision="bf16")

  def test_bidirectional_encoder_needs_hidden_sized_state_leaves(self):
    self._check("broken_cells:WideState")
    with self.assertRaisesRegex(cell_registry.CellError, r"--encoder=bi bridges each state "
                                r"leaf \[B, 8\] .* WideState's state has a leaf \[2, 16\]"):
      self._check("broken_cells:WideState", encoder="bi")

  def test_per_gate_hidden_gradient_needs_a_cell_that_takes_it(self):
    with self.assertRaisesRegex(cell_registry.CellError, r"^--per_gate_hidden_gradient: "
                                r"--cell=seq2seq.contrib.mgu:MGUCell builds MGUCell"):
      self._check(MGU, per_gate_hidden_gradient=True)

  def test_config_takes_an_import_path_and_refuses_other_names(self):
    self.assertEqual(config_lib.ModelConfig(cell=MGU).cell, MGU)
    for bad in ("rnn", "seq2seq.contrib.mgu", "seq2seq/contrib/mgu.py:MGUCell", "a:b:c"):
      with self.assertRaisesRegex(config_lib.ConfigError,
                                  r"^cell: must be lstm, gru, layer_norm_lstm, mgu or package.module:ClassName"):
        config_lib.ModelConfig(cell=bad)


def _run_in(folder, *flags, stdin=None):
  """train.py run from `folder` (the current directory a user's cell module is found in)."""
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  return subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *flags], cwd=folder,
                        input=stdin, capture_output=True, text=True, timeout=600, env=env)


@pytest.mark.slow
class TrainPyTest(tf.test.TestCase):
  """The worked example through train.py, as a user runs it."""

  def test_mgu_trains_resumes_chats_decodes_evaluates_and_exports(self):
    workdir = os.path.join(self.get_temp_dir(), "run")
    flags = [f"--workdir={workdir}", f"--cell={MGU}", *TINY, "--num_layers=2",
             "--keep_prob=0.8", "--encoder=bi", "--attention=luong", "--jit_compile",
             "--precision=bf16", "--max_length=8"]
    trained = run_train(*flags, "--max_steps=2", timeout=600)
    self.assertEqual(trained.returncode, 0, trained.stderr)
    self.assertIn(f"model: {MGU} 2x32", trained.stdout)
    self.assertIn(f'"cell": "{MGU}"', open(workdir_lib.config_path(workdir)).read())
    helpers.assert_resumes_and_every_mode_runs(self, flags, workdir)

  def test_a_cell_module_in_the_current_directory_is_recorded_and_needed_to_restore(self):
    folder = tempfile.mkdtemp(dir=self.get_temp_dir())
    with open(mgu.__file__, encoding="utf-8") as f:
      _write_module(folder, "my_cell", f.read())
    workdir = os.path.join(folder, "run")
    trained = _run_in(folder, f"--workdir={workdir}", "--cell=my_cell:MGUCell", *TINY,
                      "--max_steps=1")
    self.assertEqual(trained.returncode, 0, trained.stderr)
    chat = _run_in(folder, f"--workdir={workdir}", "--mode=chat", stdin="hello\nquit\n")
    self.assertEqual(chat.returncode, 0, chat.stderr)
    elsewhere = run_train(f"--workdir={workdir}", "--mode=chat", stdin="hello\nquit\n")
    self.assertEqual(elsewhere.returncode, 1, elsewhere.stderr)
    self.assertIn(f"error: --cell=my_cell:MGUCell (recorded in "
                  f"{workdir_lib.config_path(workdir)}): no module named 'my_cell'",
                  elsewhere.stderr)
    self.assertNotIn("Traceback", elsewhere.stderr)

  def test_a_bad_cell_stops_train_py_before_any_work(self):
    workdir = os.path.join(self.get_temp_dir(), "never_created")
    for cell, message in (("no_such_cells:Cell", "no module named 'no_such_cells'"),
                          ("seq2seq.contrib.mgu:GRU", "has no 'GRU'; it defines MGUCell")):
      result = run_train(f"--workdir={workdir}", f"--cell={cell}")
      self.assertEqual(result.returncode, 1, result.stderr)
      self.assertIn(f"error: --cell={cell}: ", result.stderr)
      self.assertIn(message, result.stderr)
      self.assertNotIn("Traceback", result.stderr)
      self.assertFalse(os.path.exists(workdir))
