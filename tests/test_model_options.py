"""The bidirectional encoder and attention inside Seq2Seq: consistent, compiled, learning."""
import os
import re

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from seq2seq import config as config_lib
from seq2seq.infer import decoding
from seq2seq.models import encoder_decoder as model_lib
from seq2seq.models import language_model
from seq2seq.nn import cells
from seq2seq.step import optimizers
from seq2seq.step import train_step as train_step_lib
from seq2seq.train import loop
from tests import helpers
from tests.test_train_step import VOCAB, _batch

VARIANTS = [("uni", "luong"), ("bi", "none"), ("bi", "luong_scaled"), ("uni", "bahdanau"),
            ("bi", "bahdanau_norm")]


def _model(encoder, attention, cell="lstm", dtype=tf.float64, residual=False):
  config = config_lib.ModelConfig(cell=cell, num_layers=2, hidden_size=8, embedding_size=6,
                                  encoder=encoder, attention=attention, residual=residual)
  model = model_lib.Seq2Seq(config, VOCAB, seed=4, dtype=dtype)
  model.build()
  return model


class ModelOptionsTest(parameterized.TestCase, tf.test.TestCase):

  @parameterized.parameters(*VARIANTS, ("uni", "none", True), ("bi", "luong", True))
  def test_teacher_forcing_equals_step_by_step(self, encoder, attention, residual=False):
    """logits_from_embedded (the train step's entry) == running the decoder core step by step."""
    model = _model(encoder, attention, residual=residual)
    batch = _batch()
    logits = model(batch.source, batch.source_length, batch.decoder_input).numpy()
    core, state = model.start_decoder(model.source_embedding(batch.source), batch.source_length)
    for t in range(batch.decoder_input.shape[1]):
      output, state = core(model.target_embedding(batch.decoder_input[:, t]), state)
      self.assertAllClose(model.project(output[:, None])[:, 0], logits[:, t], atol=1e-10)

  @parameterized.parameters(*VARIANTS)
  def test_source_padding_does_not_change_logits(self, encoder, attention):
    model = _model(encoder, attention)
    batch = _batch()
    source = batch.source.copy()
    for b, n in enumerate(batch.source_length):
      source[b, n:] = 7  # a real token id where PAD was
    first = model(batch.source, batch.source_length, batch.decoder_input)
    second = model(source, batch.source_length, batch.decoder_input)
    self.assertAllClose(first, second, atol=1e-12)

  def test_residual_adds_each_upper_layer_input(self):
    plain, residual = _model("uni", "none"), _model("uni", "none", residual=True)
    batch = _batch()
    self.assertNotAllClose(plain(batch.source, batch.source_length, batch.decoder_input),
                           residual(batch.source, batch.source_length, batch.decoder_input))
    layers = residual.decoder().cores
    self.assertNotIsInstance(layers[0], cells.ResidualWrapper)
    self.assertIsInstance(layers[1], cells.ResidualWrapper)
    self.assertEqual(len(plain.trainable_variables), len(residual.trainable_variables))

  @parameterized.parameters(("static", 0), ("dynamic", 5))
  def test_unroll_option_reaches_the_bidirectional_encoder_and_attention_decoder(
      self, unroll, expected_loops):
    config = config_lib.ModelConfig(num_layers=2, hidden_size=8, embedding_size=6, encoder="bi",
                                    attention="luong", unroll=unroll)
    model = model_lib.Seq2Seq(config, VOCAB, seed=4, dtype=tf.float64)
    model.build()
    batch = _batch()
    graph = tf.function(model.__call__).get_concrete_function(
        batch.source, batch.source_length, batch.decoder_input).graph
    loops = [op for op in graph.get_operations() if op.type in ("While", "StatelessWhile")]
    # dynamic: 2 layers x 2 directions of the encoder, and the attention decoder.
    self.assertLen(loops, expected_loops)

  def test_dropout_covers_embeddings_layer_outputs_and_attentional_vectors(self):
    config = config_lib.ModelConfig(num_layers=2, hidden_size=8, embedding_size=6,
                                    attention="luong", keep_prob=0.5)
    model = model_lib.Seq2Seq(config, VOCAB, seed=4, dtype=tf.float64)
    model.build()
    for stack in (model.encoder(training=True), model.decoder(training=True)):
      first, second = stack.cores
      self.assertEqual((first.input_keep_prob, first.output_keep_prob), (0.5, 0.5))
      self.assertEqual((second.input_keep_prob, second.output_keep_prob), (1.0, 0.5))
    batch = _batch()
    embedded = model.embed(batch.source, batch.decoder_input)
    outputs = model.outputs_from_embedded(*embedded[:1], batch.source_length, embedded[1],
                                          training=True).numpy()
    # Inverted dropout on the attentional vectors: a share of exact zeros, the rest scaled x2.
    zeros = np.mean(outputs == 0.0)
    self.assertBetween(zeros, 0.3, 0.7)
    eval_outputs = model.outputs_from_embedded(*embedded[:1], batch.source_length, embedded[1])
    self.assertEqual(np.mean(eval_outputs.numpy() == 0.0), 0.0)

  @parameterized.parameters(("uni", "none"), ("bi", "bahdanau"))
  def test_variational_dropout_trains_and_is_off_in_eval(self, encoder, attention):
    config = config_lib.ModelConfig(num_layers=2, hidden_size=8, embedding_size=6,
                                    encoder=encoder, attention=attention, keep_prob=0.5,
                                    variational_dropout=True, residual=True)
    model = model_lib.Seq2Seq(config, VOCAB, seed=4, dtype=tf.float64)
    model.build()
    batch = _batch()
    run = lambda training: model(batch.source, batch.source_length, batch.decoder_input,
                                 training=training)
    self.assertAllClose(run(False), run(False))
    self.assertNotAllClose(run(True), run(True))  # fresh masks for each batch
    optimizer = optimizers.SGD(0.1)
    optimizer.build(model.trainable_variables)
    loss, norm, _ = train_step_lib.make_train_step(model, optimizer, 5.0)(batch)
    self.assertTrue(np.isfinite(float(loss)) and np.isfinite(float(norm)))

  def test_default_model_has_no_new_variables(self):
    names = {v.name for v in _model("uni", "none").trainable_variables}
    self.assertFalse([n for n in names if "attention" in n or "bridge" in n or "backward" in n])

  @parameterized.parameters(("bi", "luong", "gru"), ("uni", "bahdanau_norm", "lstm"))
  def test_xla_step_matches_plain_step(self, encoder, attention, cell):
    results = []
    for jit_compile in (False, True):
      model = _model(encoder, attention, cell, dtype=tf.float32)
      optimizer = optimizers.SGD(0.5)
      optimizer.build(model.trainable_variables)
      step = train_step_lib.make_train_step(model, optimizer, 5.0, jit_compile=jit_compile)
      loss, norm, _ = step(_batch())
      results.append((float(loss), float(norm), [v.numpy() for v in model.trainable_variables]))
    (loss0, norm0, vars0), (loss1, norm1, vars1) = results
    self.assertAllClose(loss0, loss1, rtol=1e-5)
    self.assertAllClose(norm0, norm1, rtol=1e-4)
    for a, b in zip(vars0, vars1):
      self.assertAllClose(a, b, atol=1e-5)

  @parameterized.parameters(True, False)
  def test_per_gate_hidden_gradient_reaches_every_cell_and_keeps_the_step(self, jit_compile):
    """--per_gate_hidden_gradient: every cell (both encoder directions, the decoder under
    attention, the LM's layers) computes d(h) per gate, and the train step's loss, norm and
    updates are those of the one-matmul d(h)."""
    results = []
    for per_gate in (False, True):
      config = config_lib.ModelConfig(num_layers=2, hidden_size=8, embedding_size=6,
                                      encoder="bi", attention="luong",
                                      per_gate_hidden_gradient=per_gate)
      model = model_lib.Seq2Seq(config, VOCAB, seed=4, dtype=tf.float32)
      model.build()
      every_cell = model.encoder_cells + model.encoder_backward_cells + model.decoder_cells
      self.assertEqual([per_gate] * 6, [c.per_gate_hidden_gradient for c in every_cell])
      results.append(helpers.one_sgd_step(model, _batch(), jit_compile))
    (loss0, norm0, change0), (loss1, norm1, change1) = results
    self.assertAllClose(loss0, loss1, rtol=1e-6)
    self.assertAllClose(norm0, norm1, rtol=1e-5)
    for name, change in change0.items():
      self.assertAllClose(change, change1[name], atol=1e-6, msg=name)
    lm_config = config_lib.ModelConfig(num_layers=2, hidden_size=8, embedding_size=6,
                                       model="lm", per_gate_hidden_gradient=True)
    lm = language_model.LanguageModel(lm_config, VOCAB, seed=3)
    self.assertEqual([True, True], [c.per_gate_hidden_gradient for c in lm.cells])

  def test_per_gate_hidden_gradient_needs_the_static_unroll(self):
    """A while loop's steps compute d(h) as one matmul: the option would do nothing there."""
    with self.assertRaisesRegex(config_lib.ConfigError,
                                "per_gate_hidden_gradient: needs --unroll=static"):
      config_lib.ModelConfig(unroll="dynamic", per_gate_hidden_gradient=True)
    config_lib.ModelConfig(unroll="static", per_gate_hidden_gradient=True)

  def test_bf16_forward_is_close(self):
    batch = _batch()
    full = _model("bi", "bahdanau", dtype=tf.float32)
    half = model_lib.Seq2Seq(full.config, VOCAB, seed=4, compute_dtype=tf.bfloat16)
    half.build()
    a = full(batch.source, batch.source_length, batch.decoder_input)
    b = half(batch.source, batch.source_length, batch.decoder_input)
    self.assertEqual(b.dtype, tf.bfloat16)
    self.assertAllClose(a, tf.cast(b, tf.float32), atol=0.1)

  def test_greedy_decode_runs_compiled(self):
    model = _model("bi", "luong", dtype=tf.float32)
    batch = _batch()
    fn = tf.function(lambda s, n: decoding.greedy_decode(model, s, n, 7))
    self.assertEqual(fn(batch.source, batch.source_length).shape, (6, 7))

  def test_bidirectional_attention_learns_reverse_task(self):
    tmp = self.get_temp_dir()
    data = helpers.write_reverse_task(os.path.join(tmp, "reverse.tsv"))
    config = helpers.tiny_config(os.path.join(tmp, "run"), data, hidden_size=32, max_steps=200,
                                 encoder="bi", attention="luong", log_every=10)
    lines = []
    loop.train(config, log=lines.append)
    losses = [float(m.group(1)) for m in map(re.compile(r"\) loss=([0-9.]+)").search, lines) if m]
    self.assertLen(losses, 20)
    # Uniform guessing costs ln(12) = 2.5 nats. The median of the last 10 logged batch losses:
    # Adam at this learning rate, near zero loss, has spikes (a batch of 0.01 then of 0.9),
    # and which step they hit moves with the order of float sums.
    self.assertLess(np.median(losses[-10:]), 0.5)


if __name__ == "__main__":
  tf.test.main()
