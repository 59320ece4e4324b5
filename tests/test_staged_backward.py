"""The staged backward pass (`seq2seq.distributed.staged_backward`) against the one-tape gradients."""
import pytest
from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from seq2seq import config as config_lib
from seq2seq.data import batches
from seq2seq.distributed import staged_backward
from seq2seq.models import encoder_decoder as model_lib
from seq2seq.step import train_step as train_step_lib


def _batch(rows=4, source=5, target=6, vocab=20, seed=0):
  rng = np.random.default_rng(seed)
  target_ids = rng.integers(4, vocab, [rows, target]).astype(np.int32)
  return batches.Batch(
      source=tf.constant(rng.integers(4, vocab, [rows, source]).astype(np.int32)),
      source_length=tf.constant([source, source - 2, source, 3][:rows], tf.int32),
      decoder_input=tf.constant(np.roll(target_ids, 1, axis=1)),
      target=tf.constant(target_ids),
      target_weight=tf.constant((rng.random([rows, target]) < 0.8).astype(np.float64)))


@pytest.mark.slow
class StagedBackwardTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("shared_table_lstm", dict(share_embeddings=True), 0),
      ("two_tables_bi_attention_gru", dict(share_embeddings=False, encoder="bi",
                                           attention="luong", cell="gru"), 0),
      ("dropout", dict(share_embeddings=False, keep_prob=0.7), 0),
      ("sampled_softmax", dict(share_embeddings=False), 7))
  def test_stages_hold_the_one_tape_gradients(self, options, num_sampled):
    """Inside one XLA program (barriers included), float64: every variable's gradient and
    every table's rows equal the one-tape gradients of the same loss, each in one stage:
    the projection in the loss stage, the decoder's in the decoder stage, the encoder's and
    the source table's in the encoder stage."""
    model = model_lib.Seq2Seq(config_lib.ModelConfig(hidden_size=6, embedding_size=5,
                                                     **options), 20, seed=3, dtype=tf.float64)
    model.build()
    batch = _batch()
    lookups = train_step_lib.seq2seq_lookups(model)
    tables = train_step_lib.trainable_tables(lookups)
    dense_variables = [v for v in model.trainable_variables
                       if all(v is not t for t in tables)]
    seed = tf.constant([1, 2], tf.int64)
    loss_from_outputs = lambda outputs: tf.reduce_sum(train_step_lib.loss_from_outputs(
        model, batch, outputs, num_sampled, seed, average=False))
    generator_state = model.dropout_generator.state.numpy()

    @tf.function(jit_compile=True, autograph=False)
    def staged():
      embedded = [tf.cast(e(ids(batch)), tf.float64) for e, ids in lookups]
      return staged_backward.staged_loss_and_gradients(model, batch, embedded, lookups,
                                                       dense_variables, loss_from_outputs)

    @tf.function(jit_compile=True, autograph=False)
    def one_tape():
      embedded = [tf.cast(e(ids(batch)), tf.float64) for e, ids in lookups]

      def loss_fn(batch, embedded):
        outputs = model.outputs_from_embedded(embedded[0], batch.source_length, embedded[1],
                                              training=True)
        return loss_from_outputs(outputs), ()
      loss, _, dense, rows = train_step_lib.loss_and_gradients(loss_fn, batch, embedded,
                                                               lookups, dense_variables)
      return loss, dense, rows

    loss, stages = staged()
    model.dropout_generator.reset(generator_state)
    expected_loss, expected_dense, expected_rows = one_tape()
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-12)
    self.assertLen(stages, 3)
    found = {}
    for number, stage in enumerate(stages):
      for index, gradient in stage.dense.items():
        self.assertNotIn(index, found)
        found[index] = number
        np.testing.assert_allclose(gradient, expected_dense[index], rtol=1e-9, atol=1e-12,
                                   err_msg=dense_variables[index].name)
      for index, (values, indices) in stage.rows.items():
        self.assertEqual(number, 2 if tables[index] is model.source_embedding.table else 1)
        np.testing.assert_allclose(values, expected_rows[index][0], rtol=1e-9, atol=1e-12)
        np.testing.assert_array_equal(indices, expected_rows[index][1])
    self.assertEqual(sorted(found), list(range(len(dense_variables))))
    self.assertEqual(sum(len(stage.rows) for stage in stages), len(tables))
    stage_of = {dense_variables[i].name: number for i, number in found.items()}
    for name, number in stage_of.items():
      if "projection" in name:
        self.assertEqual(number, 0, name)
      elif "decoder" in name or "attention" in name:
        self.assertEqual(number, 1, name)
      elif "encoder" in name or "bridge" in name:
        self.assertEqual(number, 2, name)

  def test_in_order_keeps_values_and_nones(self):
    first = [tf.constant(1.0)]
    then = {"a": tf.constant([2.0, 3.0]), "b": None,
            "c": tf.IndexedSlices(tf.constant([[4.0]]), tf.constant([1]), tf.constant([3, 1]))}
    held = tf.function(lambda: staged_backward.in_order(first, then), jit_compile=True)()
    self.assertIsNone(held["b"])
    np.testing.assert_array_equal(held["a"], [2.0, 3.0])
    np.testing.assert_array_equal(held["c"].values, [[4.0]])
    np.testing.assert_array_equal(held["c"].indices, [1])


if __name__ == "__main__":
  absltest.main()
