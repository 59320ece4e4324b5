"""The layer-normalised LSTM (seq2seq/contrib/layer_norm_lstm.py): its step and gradient
against NumPy float64 and finite differences, its names in the registry, the model options
around it, and a run through train.py (train, resume, chat, decode, eval, export)."""
import os

from absl.testing import parameterized
import numpy as np
import pytest
import tensorflow as tf

from seq2seq import config as config_lib
from seq2seq.contrib import layer_norm_lstm as ln_lstm
from seq2seq.models import encoder_decoder as model_lib
from seq2seq.nn import cell_registry
from seq2seq.runtime import workdir as workdir_lib
from tests import helpers
from tests.test_cli import TINY, run_train
from tests import test_train_step

PATH = "seq2seq.contrib.layer_norm_lstm:LayerNormLSTMCell"
NAMES = ("w_input", "w_hidden", "gain_input", "gain_hidden", "bias", "gain_cell", "bias_cell")


def np_layer_norm(x, gain, groups=1):
  """x [B, groups * N] normalised per group of N, times gain; float64."""
  grouped = x.reshape(x.shape[0], groups, -1)
  normal = (grouped - grouped.mean(-1, keepdims=True)) / np.sqrt(
      grouped.var(-1, keepdims=True) + ln_lstm.EPSILON)
  return normal.reshape(x.shape) * gain


def np_step(weights, x, h, c, forget_bias=1.0):
  """One layer-normalised LSTM step in float64 -> (h', c'). `weights` in NAMES order."""
  w_x, w_h, a_x, a_h, b, a_c, b_c = (np.asarray(w, np.float64) for w in weights)
  sigmoid = lambda z: 1.0 / (1.0 + np.exp(-z))
  gates = np_layer_norm(x @ w_x, a_x, 4) + np_layer_norm(h @ w_h, a_h, 4) + b
  i, g, f, o = np.split(gates, 4, axis=-1)
  cell = sigmoid(f + forget_bias) * c + sigmoid(i) * np.tanh(g)
  return sigmoid(o) * np.tanh(np_layer_norm(cell, a_c) + b_c), cell


def _cell_with_random_weights(dtype, units=3, inputs=5, seed=0):
  """A built cell whose gains and biases are random too, so that each one's place shows."""
  cell = ln_lstm.LayerNormLSTMCell(units, forget_bias=0.7, dtype=dtype, seed=seed)
  cell(tf.zeros([1, inputs], dtype), cell.initial_state(1))
  rng = np.random.default_rng(seed + 1)
  for name in NAMES[2:]:
    variable = getattr(cell, name)
    variable.assign(rng.normal(1.0 if "gain" in name else 0.0, 0.5, variable.shape))
  return cell


class StepTest(parameterized.TestCase, tf.test.TestCase):

  @parameterized.parameters(False, True)
  def test_step_matches_numpy(self, use_function):
    cell = _cell_with_random_weights(tf.float32)
    rng = np.random.default_rng(2)
    x, h, c = rng.normal(size=[4, 5]), rng.normal(size=[4, 3]), rng.normal(size=[4, 3])
    call = tf.function(cell) if use_function else cell
    output, state = call(tf.constant(x, tf.float32), ln_lstm.LayerNormLSTMState(
        tf.constant(h, tf.float32), tf.constant(c, tf.float32)))
    want_h, want_c = np_step([getattr(cell, n) for n in NAMES], x, h, c, forget_bias=0.7)
    self.assertAllClose(want_h, output, rtol=1e-5, atol=1e-5)
    self.assertAllClose(want_h, state.hidden, rtol=1e-5, atol=1e-5)
    self.assertAllClose(want_c, state.cell, rtol=1e-5, atol=1e-5)
    self.assertLen(cell.trainable_variables, len(NAMES))

  def test_gradient_matches_finite_differences(self):
    cell = _cell_with_random_weights(tf.float64)
    rng = np.random.default_rng(3)
    x, h, c = rng.normal(size=[2, 5]), rng.normal(size=[2, 3]), rng.normal(size=[2, 3])
    r_h, r_c = rng.normal(size=[2, 3]), rng.normal(size=[2, 3])  # a loss reading h' and c'
    weights = [getattr(cell, n).numpy() for n in NAMES]

    def np_loss(values):
      new_h, new_c = np_step(values[:-1], values[-1], h, c, forget_bias=0.7)
      return float((new_h * r_h).sum() + (new_c * r_c).sum())

    inputs = tf.constant(x)
    with tf.GradientTape() as tape:
      tape.watch(inputs)
      new_h, state = cell(inputs, ln_lstm.LayerNormLSTMState(tf.constant(h), tf.constant(c)))
      loss = tf.reduce_sum(new_h * r_h) + tf.reduce_sum(state.cell * r_c)
    gradients = tape.gradient(loss, [getattr(cell, n) for n in NAMES] + [inputs])
    values = weights + [x]
    for index, gradient in enumerate(gradients):
      numeric = np.zeros_like(values[index])
      for position in np.ndindex(*values[index].shape):
        for sign in (1, -1):
          moved = [v.copy() for v in values]
          moved[index][position] += sign * 1e-6
          numeric[position] += sign * np_loss(moved) / 2e-6
      self.assertAllClose(numeric, gradient, rtol=1e-5, atol=1e-6,
                          msg=(NAMES + ("inputs",))[index])

  def test_bf16_inputs_give_a_bf16_step_on_float32_weights(self):
    cell = ln_lstm.LayerNormLSTMCell(4)
    output, state = cell(tf.ones([2, 3], tf.bfloat16), cell.initial_state(2, tf.bfloat16))
    self.assertEqual((output.dtype, state.cell.dtype), (tf.bfloat16, tf.bfloat16))
    self.assertEqual(cell.gain_cell.dtype, tf.float32)


class RegistryTest(parameterized.TestCase, tf.test.TestCase):

  @parameterized.parameters("layer_norm_lstm", PATH)
  def test_by_name_and_by_path(self, spec):
    self.assertEqual(config_lib.ModelConfig(cell=spec).cell, spec)
    core = model_lib.make_cell(spec, 8, forget_bias=0.5, seed=4)
    self.assertIsInstance(core.cell, ln_lstm.LayerNormLSTMCell)
    self.assertEqual((core.cell.forget_bias, core.cell.seed), (0.5, 4))
    cell_registry.check(config_lib.ModelConfig(cell=spec, hidden_size=8, embedding_size=6,
                                               encoder="bi"), tf.bfloat16)

  def test_unknown_short_name_lists_the_names(self):
    with self.assertRaisesRegex(config_lib.ConfigError,
                                r"^cell: must be lstm, gru, layer_norm_lstm, mgu or package"):
      config_lib.ModelConfig(cell="layernorm")


def _model(**options):
  """A built two-layer Seq2Seq of layer-normalised LSTMs; `options` as in ModelConfig."""
  config = config_lib.ModelConfig(cell="layer_norm_lstm", num_layers=2, hidden_size=8,
                                  embedding_size=6, **options)
  model = model_lib.Seq2Seq(config, test_train_step.VOCAB, seed=1)
  model.build()
  return model


@pytest.mark.slow
class ModelOptionsTest(parameterized.TestCase, tf.test.TestCase):
  """The cell inside Seq2Seq, as tests/test_custom_cells.py checks the MGU."""

  def test_compiled_step_matches_plain_step(self):
    helpers.assert_compiled_step_matches_plain(
        lambda: _model(encoder="bi", attention="luong", unroll="dynamic", unroll_steps=2),
        test_train_step._batch())

  @parameterized.parameters(
      dict(unroll="dynamic", variational_dropout=True, encoder="bi", attention="bahdanau"),
      dict(residual=True, attention="luong_scaled"))
  def test_train_step_updates_every_variable(self, **options):
    model = _model(**{"keep_prob": 0.8, **options})
    loss, norm, changes = helpers.one_sgd_step(model, test_train_step._batch(), False)
    self.assertTrue(np.isfinite(loss) and norm > 0)
    for name in NAMES:
      changed = [n for n, change in changes.items()
                 if f"/{name}:" in n and np.abs(change).max() > 0]
      self.assertLen(changed, 6 if options.get("encoder") == "bi" else 4, name)


@pytest.mark.slow
class TrainPyTest(tf.test.TestCase):

  def test_trains_resumes_chats_decodes_evaluates_and_exports(self):
    workdir = os.path.join(self.get_temp_dir(), "run")
    flags = [f"--workdir={workdir}", "--cell=layer_norm_lstm", *TINY, "--num_layers=2",
             "--keep_prob=0.8", "--encoder=bi", "--attention=luong", "--max_length=8",
             "--jit_compile", "--embedding_device=gpu", "--unroll=dynamic", "--unroll_steps=5"]
    trained = run_train(*flags, "--max_steps=2", timeout=600)
    self.assertEqual(trained.returncode, 0, trained.stderr)
    self.assertIn("model: layer_norm_lstm 2x32", trained.stdout)
    self.assertIn('"cell": "layer_norm_lstm"', open(workdir_lib.config_path(workdir)).read())
    helpers.assert_resumes_and_every_mode_runs(self, flags, workdir)
