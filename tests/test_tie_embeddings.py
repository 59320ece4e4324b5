"""--tie_embeddings: the output table doubles as the projection kernel. Its gradient in the
train step against NumPy (the lookups' rows plus the projection's), the config checks, and
runs of both models through train.py (train, resume, chat, export)."""
import os

from absl.testing import parameterized
import numpy as np
import pytest
import tensorflow as tf

from seq2seq import config as config_lib
from seq2seq.models import encoder_decoder as model_lib
from seq2seq.models import language_model
from seq2seq.step import optimizers
from seq2seq.step import train_step as train_step_lib
from seq2seq.runtime import workdir as workdir_lib
from tests import helpers
from tests.test_cli import TINY, run_train
from tests import test_train_step


def _model(share, **options):
  config = config_lib.ModelConfig(num_layers=1, hidden_size=8, embedding_size=8,
                                  tie_embeddings=True, share_embeddings=share, **options)
  model = model_lib.Seq2Seq(config, test_train_step.VOCAB, seed=2, dtype=tf.float64)
  model.build()
  return model


def _np_tied_gradient(table, bias, outputs, batch, vector_gradients, share):
  """d loss / d table [V, E] in float64: the softmax projection's gradient (the table is its
  kernel, transposed) plus each looked-up vector's gradient added to its row: the decoder
  input's, and the source's too when the table is shared."""
  logits = outputs @ table.T + bias  # [B, T, V]
  probabilities = np.exp(logits - logits.max(-1, keepdims=True))
  probabilities /= probabilities.sum(-1, keepdims=True)
  one_hot = np.eye(table.shape[0])[batch.target]
  weights = batch.target_weight[..., None] / batch.target_weight.sum()
  d_logits = (probabilities - one_hot) * weights  # of the mean loss per target token
  gradient = np.einsum("btv,bth->vh", d_logits, outputs)
  reads = list(zip((batch.source, batch.decoder_input), vector_gradients))
  for ids, vectors in reads if share else reads[1:]:
    np.add.at(gradient, ids.reshape(-1), vectors.reshape(-1, table.shape[1]))
  return gradient


class TiedGradientTest(parameterized.TestCase, tf.test.TestCase):

  @parameterized.product(share=(True, False), jit_compile=(False, True))
  def test_step_gradient_is_the_sum_of_both_uses(self, share, jit_compile):
    model, batch = _model(share, attention="luong"), test_train_step._batch()
    table = model.target_embedding.table
    self.assertNotIn("projection_kernel", " ".join(v.name for v in model.variables))
    # The decoder outputs and the gradients of the looked-up vectors, from the model itself.
    source, target = (tf.constant(e) for e in (model.source_embedding(batch.source),
                                               model.target_embedding(batch.decoder_input)))
    with tf.GradientTape() as tape:
      tape.watch([source, target])
      outputs = model.outputs_from_embedded(source, batch.source_length, target)
      loss = train_step_lib.loss_from_outputs(model, batch, outputs)
    vector_gradients = [g.numpy() for g in tape.gradient(loss, [source, target])]
    want = _np_tied_gradient(table.numpy(), model.projection_bias.numpy(), outputs.numpy(),
                             batch, vector_gradients, share)
    # One SGD step at rate 1 without clipping changes each variable by minus its gradient.
    step_loss, _, changes = helpers.one_sgd_step(model, batch, jit_compile, max_grad_norm=0.0)
    self.assertAllClose(float(loss), step_loss, rtol=1e-9)
    self.assertAllClose(want, changes[table.name], rtol=1e-7, atol=1e-10)
    # Both uses matter: the projection's share alone is not the whole gradient.
    self.assertGreater(np.abs(want - _np_tied_gradient(
        table.numpy(), model.projection_bias.numpy(), outputs.numpy(), batch,
        [0 * g for g in vector_gradients], share)).max(), 1e-4)

  def test_sampled_softmax_step_updates_the_tied_table(self):
    model = _model(False)
    table = model.target_embedding.table
    before = table.numpy()
    optimizer = optimizers.SGD(1.0)
    step = train_step_lib.make_train_step(model, optimizer, 5.0, num_sampled=5, seed=1)
    _, norm, finite = step(test_train_step._batch())
    self.assertTrue(bool(finite) and float(norm) > 0)
    changed = np.abs(table.numpy() - before).max(axis=1) > 0
    # Rows never looked up change too: the sampled projection reads them as candidates.
    looked_up = set(test_train_step._batch().decoder_input.reshape(-1))
    self.assertTrue(any(changed[i] for i in range(len(changed)) if i not in looked_up))

  def test_language_model_ties_its_table(self):
    config = config_lib.ModelConfig(model="lm", num_layers=1, hidden_size=8, embedding_size=8,
                                    tie_embeddings=True, embedding_device="cpu")
    model = language_model.LanguageModel(config, 30, seed=1)
    model.build()
    names = sorted(v.name for v in model.trainable_variables)
    self.assertFalse(any("projection_kernel" in n for n in names), names)
    kernel, _ = model.projection()
    self.assertAllEqual(tf.transpose(model.embedding.table), kernel)
    self.assertFalse(model.embedding.pinned_to_host)  # it lives with the projection
    self.assertIn("tied embeddings: the embedding table [30, 8]", model.tying_note())


class ConfigTest(parameterized.TestCase):

  def test_sizes_must_match(self):
    with self.assertRaisesRegex(config_lib.ConfigError,
                                r"^tie_embeddings: .*--embedding_size=128\].*--hidden_size=256; "
                                r"tying needs equal sizes: set --embedding_size=256"):
      config_lib.ModelConfig(tie_embeddings=True)

  def test_frozen_table_refused(self):
    with self.assertRaisesRegex(config_lib.ConfigError, r"^tie_embeddings: a frozen table"):
      config_lib.ModelConfig(tie_embeddings=True, embedding_size=256, freeze_embeddings=True,
                             pretrained_embeddings="glove.txt")

  def test_one_device_only(self):
    model = config_lib.ModelConfig(tie_embeddings=True, embedding_size=256)
    with self.assertRaisesRegex(config_lib.ConfigError, r"^tie_embeddings: trains on one device"):
      config_lib.RunConfig(model=model, train=config_lib.TrainConfig(strategy="mirrored"))

  def test_off_by_default_and_untied_models_keep_their_kernel(self):
    self.assertFalse(config_lib.ModelConfig().tie_embeddings)
    model = model_lib.Seq2Seq(config_lib.ModelConfig(num_layers=1, hidden_size=8,
                                                     embedding_size=8), 20)
    self.assertIs(model.projection()[0], model.projection_kernel)
    self.assertEqual(model.tying_note(), "")


@pytest.mark.slow
class TrainPyTest(tf.test.TestCase):

  def _run_all(self, *flags):
    workdir = os.path.join(self.get_temp_dir(), "run")
    flags = [f"--workdir={workdir}", "--tie_embeddings", *flags, "--embedding_size=32"]
    trained = run_train(*flags, "--max_steps=2", timeout=600)
    self.assertEqual(trained.returncode, 0, trained.stderr)
    self.assertIn("tied embeddings:", trained.stdout)
    self.assertIn('"tie_embeddings": true', open(workdir_lib.config_path(workdir)).read())
    keys = helpers.checkpoint_values(os.path.join(workdir, "checkpoints"))
    self.assertFalse(any("projection_kernel" in k for k in keys), sorted(keys))
    resumed = run_train(*[f for f in flags if f != "--jit_compile"], "--max_steps=3",
                        timeout=600)
    self.assertEqual(resumed.returncode, 0, resumed.stderr)
    self.assertIn("done at step 3", resumed.stdout)
    chat = run_train(f"--workdir={workdir}", "--mode=chat", stdin="hello how are you\nquit\n")
    self.assertEqual(chat.returncode, 0, chat.stderr)
    return workdir

  def test_seq2seq_trains_resumes_chats_and_exports(self):
    workdir = self._run_all(*TINY, "--noshare_embeddings", "--attention=luong",
                            "--num_sampled=20", "--jit_compile", "--embedding_device=gpu",
                            "--unroll=dynamic", "--unroll_steps=5", "--max_length=8")
    helpers.assert_exports_and_replies(self.get_temp_dir(), workdir)

  def test_language_model_trains_resumes_and_chats(self):
    text = os.path.join(self.get_temp_dir(), "text.txt")
    with open(text, "w", encoding="utf-8") as f:
      f.write("the cat sat on the mat and the dog sat on the log\n" * 40)
    self._run_all("--model=lm", f"--data={text}", "--num_layers=1", "--hidden_size=32",
                  "--batch_size=4", "--num_steps=5", "--jit_compile")

  def test_unequal_sizes_stop_train_py_with_one_line(self):
    result = run_train(f"--workdir={self.get_temp_dir()}/never", "--tie_embeddings")
    self.assertEqual(result.returncode, 1, result.stderr)
    self.assertIn("error: --tie_embeddings: the target embedding", result.stderr)
    self.assertNotIn("Traceback", result.stderr)
