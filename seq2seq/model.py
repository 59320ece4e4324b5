"""The encoder-decoder: embedding -> encoder stack -> decoder stack -> one softmax projection."""
import tensorflow as tf

from seq2seq import cells
from seq2seq import embeddings
from seq2seq import unroll


def make_cell(kind, num_units, forget_bias=1.0, dtype=tf.float32, seed=0, name=None):
  """An `RNNCore` by name ("lstm" or "gru")."""
  if kind == "lstm":
    return cells.LSTMCell(num_units, forget_bias=forget_bias, dtype=dtype, seed=seed, name=name)
  if kind == "gru":
    return cells.GRUCell(num_units, dtype=dtype, seed=seed, name=name)
  raise ValueError(f"unknown cell {kind!r}")


class Seq2Seq(tf.Module):
  """A sequence-to-sequence model with teacher forcing.

  The decoder starts from the encoder's final state (layer by layer). Training-time dropout
  wraps the same cells, so training and inference share every variable.

  Args:
    config: a `ModelConfig`.
    vocab_size: V.
    seed: seeds the initial weights and the dropout masks.
    pretrained_table: optional [V, E] array that initialises the embedding(s).
    dtype: variable and compute dtype (float32, or float64 for tests).
  """

  def __init__(self, config, vocab_size, seed=0, pretrained_table=None, dtype=tf.float32,
               name="seq2seq"):
    super().__init__(name=name)
    self.config = config
    self.vocab_size = int(vocab_size)
    self.dtype = tf.as_dtype(dtype)
    with self.name_scope:
      def embedding(name, offset):
        return embeddings.Embedding(
            vocab_size, config.embedding_size, device=config.embedding_device,
            initial_value=pretrained_table, trainable=not config.freeze_embeddings,
            dtype=dtype, seed=seed + offset, name=name)

      self.source_embedding = embedding("source_embedding", 0)
      self.target_embedding = (self.source_embedding if config.share_embeddings
                               else embedding("target_embedding", 1))

      def stack(prefix, offset):
        return [make_cell(config.cell, config.hidden_size, config.forget_bias, dtype,
                          seed=seed + offset + layer, name=f"{prefix}_{layer}")
                for layer in range(config.num_layers)]

      self.encoder_cells = stack("encoder", 100)
      self.decoder_cells = stack("decoder", 200)
      self.dropout_generator = tf.random.Generator.from_seed(seed + 300)
      limit = (6.0 / (config.hidden_size + vocab_size)) ** 0.5
      self.projection_kernel = tf.Variable(tf.random.stateless_uniform(
          [config.hidden_size, vocab_size], seed=[seed, 400], minval=-limit, maxval=limit,
          dtype=dtype), name="projection_kernel")
      self.projection_bias = tf.Variable(tf.zeros([vocab_size], dtype), name="projection_bias")

  def _stack(self, layer_cells, training):
    """The cells as one core; with dropout on each layer's output when training."""
    keep_prob = self.config.keep_prob
    if training and keep_prob < 1.0:
      layer_cells = [cells.DropoutWrapper(c, self.dropout_generator, output_keep_prob=keep_prob)
                     for c in layer_cells]
    return cells.StackedCells(layer_cells)

  def encoder(self, training=False):
    return self._stack(self.encoder_cells, training)

  def decoder(self, training=False):
    return self._stack(self.decoder_cells, training)

  def encode(self, source, source_length, training=False):
    """source [B, Ts] ids, source_length [B] -> (outputs [B, Ts, H], final state per layer)."""
    core = self.encoder(training)
    inputs = tf.cast(self.source_embedding(source), self.dtype)
    initial_state = core.initial_state(tf.shape(source)[0], self.dtype)
    return unroll.layerwise_unroll(core.cores, inputs, initial_state, source_length)

  def project(self, outputs):
    """outputs [B, T, H] -> logits [B, T, V] with ONE matmul over all B*T rows."""
    batch, steps = tf.shape(outputs)[0], tf.shape(outputs)[1]
    flat = tf.reshape(outputs, [-1, self.config.hidden_size])  # [B*T, H]
    logits = tf.matmul(flat, self.projection_kernel) + self.projection_bias
    return tf.reshape(logits, [batch, steps, self.vocab_size])

  def __call__(self, source, source_length, decoder_input, training=False):
    """Teacher-forced logits.

    Args:
      source: [B, Ts] int ids; source_length: [B].
      decoder_input: [B, Tt] ids, <GO> y1 .. yn, post-padded.

    Returns:
      logits [B, Tt, V]. Positions past each target are garbage; the loss weights mask them.
    """
    _, encoder_state = self.encode(source, source_length, training)
    inputs = tf.cast(self.target_embedding(decoder_input), self.dtype)
    # No decoder masking: PAD positions come after the targets and only the loss reads them.
    outputs, _ = unroll.layerwise_unroll(self.decoder(training).cores, inputs, encoder_state)
    return self.project(outputs)

  def build(self):
    """Creates every variable (cells build lazily) with one tiny eager forward pass."""
    ids = tf.ones([1, 1], tf.int32)
    self(ids, tf.ones([1], tf.int32), ids)
