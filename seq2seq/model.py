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
    dtype: variable dtype (float32, or float64 for tests).
    compute_dtype: dtype of the activations and matmuls (default: dtype); bfloat16 gives
      mixed precision with float32 master weights. The loss is always computed in float32.
  """

  def __init__(self, config, vocab_size, seed=0, pretrained_table=None, dtype=tf.float32,
               compute_dtype=None, name="seq2seq"):
    super().__init__(name=name)
    self.config = config
    self.vocab_size = int(vocab_size)
    self.variable_dtype = tf.as_dtype(dtype)
    self.dtype = tf.as_dtype(compute_dtype or dtype)  # what activations are computed in
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

  def embedding_tables(self):
    """The distinct trainable embedding tables (none when frozen; one when shared)."""
    tables = []
    for embedding in (self.source_embedding, self.target_embedding):
      if embedding.table.trainable and all(embedding.table is not t for t in tables):
        tables.append(embedding.table)
    return tables

  def embed(self, source, decoder_input):
    """Looks up ids on the embedding's device: ([B, Ts, E], [B, Tt, E]) in the table dtype.

    Kept apart from `logits_from_embedded` so that a compiled (XLA) step can take the
    looked-up vectors as inputs while the table stays on the CPU.
    """
    return self.source_embedding(source), self.target_embedding(decoder_input)

  def encode_embedded(self, source_embedded, source_length, training=False):
    """[B, Ts, E] vectors, lengths [B] -> (outputs [B, Ts, H], final state per layer)."""
    core = self.encoder(training)
    inputs = tf.cast(source_embedded, self.dtype)
    initial_state = core.initial_state(tf.shape(source_embedded)[0], self.dtype)
    return unroll.layerwise_unroll(core.cores, inputs, initial_state, source_length,
                                   unroll=unroll.unroll_from_config(self.config))

  def encode(self, source, source_length, training=False):
    """source [B, Ts] ids, source_length [B] -> (outputs [B, Ts, H], final state per layer)."""
    return self.encode_embedded(self.source_embedding(source), source_length, training)

  def project(self, outputs):
    """outputs [B, T, H] -> logits [B, T, V] with ONE matmul over all B*T rows."""
    batch, steps = tf.shape(outputs)[0], tf.shape(outputs)[1]
    flat = tf.reshape(outputs, [-1, self.config.hidden_size])  # [B*T, H]
    logits = (tf.matmul(flat, tf.cast(self.projection_kernel, flat.dtype))
              + tf.cast(self.projection_bias, flat.dtype))
    return tf.reshape(logits, [batch, steps, self.vocab_size])

  def logits_from_embedded(self, source_embedded, source_length, target_embedded,
                           training=False):
    """Teacher-forced logits [B, Tt, V] from looked-up vectors (see `embed`)."""
    _, encoder_state = self.encode_embedded(source_embedded, source_length, training)
    inputs = tf.cast(target_embedded, self.dtype)
    # No decoder masking: PAD positions come after the targets and only the loss reads them.
    outputs, _ = unroll.layerwise_unroll(self.decoder(training).cores, inputs, encoder_state,
                                         unroll=unroll.unroll_from_config(self.config))
    return self.project(outputs)

  def __call__(self, source, source_length, decoder_input, training=False):
    """Teacher-forced logits.

    Args:
      source: [B, Ts] int ids; source_length: [B].
      decoder_input: [B, Tt] ids, <GO> y1 .. yn, post-padded.

    Returns:
      logits [B, Tt, V] in the compute dtype. Positions past each target are garbage; the
      loss weights mask them.
    """
    source_embedded, target_embedded = self.embed(source, decoder_input)
    return self.logits_from_embedded(source_embedded, source_length, target_embedded, training)

  def build(self):
    """Creates every variable (cells build lazily) with one tiny eager forward pass."""
    ids = tf.ones([1, 1], tf.int32)
    self(ids, tf.ones([1], tf.int32), ids)
