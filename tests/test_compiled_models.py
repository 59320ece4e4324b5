"""Every model takes the step --jit_compile=auto gives it on a GPU: XLA-compiled, with the
dynamic unroll x5, traced once for every bucket (and compiled once per bucket). The GPU is injected
(`step_choice.visible_gpus`); the compiled programs run on this machine's CPU."""
import os
import tempfile
from unittest import mock

from absl.testing import parameterized
import numpy as np
import pytest
import tensorflow as tf

from seq2seq.models import encoder_decoder as model_lib
from seq2seq.models import language_model
from seq2seq.step import choice as step_choice
from seq2seq.train import loop
from tests import helpers

GPU = [tf.config.PhysicalDevice("/physical_device:GPU:0", "GPU")]
USER_LSTM = "benchmarks.user_cells:PlainLSTMCell"
MGU = "seq2seq.contrib.mgu:MGUCell"


def _text(folder):
  """A text file for --model=lm."""
  path = os.path.join(folder, "text.txt")
  with open(path, "w", encoding="utf-8") as f:
    f.write("\n".join(" ".join("abcdefgh"[(i + j) % 8] for j in range(9)) for i in range(40)))
  return path


def _train(workdir, data, gpus, **changes):
  """(TrainResult, logged lines, per-step losses) of `helpers.tiny_config` on a machine with
  `gpus`."""
  lines = []
  config = helpers.tiny_config(workdir, data, log_every=1, **changes)
  with mock.patch.object(step_choice, "visible_gpus", return_value=gpus):
    result = loop.train(config, log=lines.append)
  losses = [float(line.split("loss=")[1].split()[0]) for line in lines if " loss=" in line]
  return result, lines, losses


def _count_training_traces(cls, method):
  """A patch of `cls.method` that counts its calls with training=True (one per trace of a
  train step) in the returned list's length."""
  calls, original = [], getattr(cls, method)

  def counted(self, *args, **kwargs):
    if kwargs.get("training"):
      calls.append(1)
    return original(self, *args, **kwargs)
  return mock.patch.object(cls, method, counted), calls


class TracedOnceTest(tf.test.TestCase):

  @pytest.mark.slow
  def test_seq2seq_over_epochs_with_a_partial_last_batch(self):
    tmp = self.get_temp_dir()
    # 45 pairs of 3..5 words in buckets 4 and 6: batches of 16 leave a partial one per bucket.
    data = helpers.write_reverse_task(os.path.join(tmp, "pairs.tsv"), num_pairs=45)
    patch, traces = _count_training_traces(model_lib.Seq2Seq, "outputs_from_embedded")
    with patch:
      result, lines, _ = _train(os.path.join(tmp, "w"), data, GPU, num_epochs=3,
                                bucket_boundaries="4,6", min_length=1, hidden_size=8)
    self.assertStartsWith(lines[0], "step: XLA-compiled (1 GPU (--jit_compile=auto)), "
                                    "dynamic unroll x5")
    self.assertGreater(result.step, 6)
    self.assertLen(traces, 1)  # for both buckets, whatever the epochs and the last batch

  def test_language_model_over_epochs(self):
    tmp = self.get_temp_dir()
    patch, traces = _count_training_traces(language_model.LanguageModel, "logits_from_embedded")
    with patch:
      result, lines, _ = _train(os.path.join(tmp, "w"), _text(tmp), GPU, model="lm",
                                num_steps=7, batch_size=4, num_epochs=2, hidden_size=8)
    self.assertStartsWith(lines[0], "step: XLA-compiled")
    self.assertGreater(result.step, 4)
    self.assertLen(traces, 1)


@pytest.mark.slow
class EveryModelCompilesTest(parameterized.TestCase, tf.test.TestCase):
  """Each model's compiled step (dynamic x5) trains as the plain step does (static, on a CPU
  machine): the same losses without dropout; with dropout, finite ones."""

  @parameterized.named_parameters(
      ("bi_luong_residual", dict(encoder="bi", attention="luong", residual=True, num_layers=2)),
      ("user_lstm_bi_bahdanau", dict(cell=USER_LSTM, encoder="bi", attention="bahdanau")),
      ("lm_user_lstm", dict(model="lm", cell=USER_LSTM, num_steps=7, batch_size=4)),
      ("lm_gru", dict(model="lm", cell="gru", num_steps=7, batch_size=4)))
  def test_compiled_step_trains_as_the_plain_step(self, changes):
    losses = []
    for gpus in (GPU, []):
      tmp = tempfile.mkdtemp()
      data = (_text(tmp) if changes.get("model") == "lm" else
              helpers.write_reverse_task(os.path.join(tmp, "pairs.tsv"), num_pairs=40))
      _, lines, run_losses = _train(os.path.join(tmp, "w"), data, gpus, max_steps=3,
                                    **changes)
      self.assertStartsWith(lines[0], "step: XLA-compiled" if gpus else "plain step: no GPU")
      losses.append(run_losses)
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-3)

  @parameterized.named_parameters(
      ("dropout_wrappers", dict(attention="luong_scaled", keep_prob=0.8, num_layers=2,
                                residual=True)),
      ("variational_mgu", dict(cell=MGU, keep_prob=0.8, variational_dropout=True,
                               num_layers=2, attention="bahdanau_norm", encoder="bi")))
  def test_with_dropout(self, changes):
    tmp = tempfile.mkdtemp()
    data = helpers.write_reverse_task(os.path.join(tmp, "pairs.tsv"), num_pairs=40)
    result, lines, losses = _train(os.path.join(tmp, "w"), data, GPU, max_steps=3, **changes)
    self.assertStartsWith(lines[0], "step: XLA-compiled")
    self.assertEqual(result.step, 3)
    self.assertTrue(np.all(np.isfinite(losses)), losses)
