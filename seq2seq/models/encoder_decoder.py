"""The encoder-decoder: embedding -> encoder stack -> decoder stack -> one softmax projection.

Options (`ModelConfig`): a bidirectional encoder (`encoder="bi"`, its final states bridged to
the decoder's size) and attention over the encoder outputs (`attention`, an
`AttentionWrapper` around the whole decoder stack, with input feeding).
"""
import tensorflow as tf

from seq2seq import config as config_lib
from seq2seq.fast import masks as fast_masks
from seq2seq.fast import unroll as fast_unroll
from seq2seq.nn import attention as attention_lib
from seq2seq.nn import bridge as bridge_lib
from seq2seq.nn import cell_registry
from seq2seq.nn import cells
from seq2seq.nn import embeddings
from seq2seq.nn import unroll


def make_cell(kind, num_units, forget_bias=1.0, dtype=tf.float32, seed=0, name=None,
              per_gate_hidden_gradient=False):
  """An `RNNCore` by name: "lstm", "gru", or a class by import path, "package.module:ClassName"
  (`cell_registry.make_custom_cell`, which raises `cell_registry.CellError`)."""
  options = dict(dtype=dtype, seed=seed, name=name,
                 per_gate_hidden_gradient=per_gate_hidden_gradient)
  if kind == "lstm":
    return cells.LSTMCell(num_units, forget_bias=forget_bias, **options)
  if kind == "gru":
    return cells.GRUCell(num_units, **options)
  if config_lib.is_custom_cell(kind):
    return cell_registry.make_custom_cell(kind, num_units, forget_bias=forget_bias, **options)
  raise ValueError(f"unknown cell {kind!r}")


# --precision: the dtype activations and matmuls are computed in (weights stay float32).
COMPUTE_DTYPES = {"fp32": tf.float32, "bf16": tf.bfloat16}


def _without_masks(layer_states):
  """Per-layer states with variational-dropout masks stripped: the cores' own states."""
  return tuple(s.core_state if isinstance(s, cells.VariationalState) else s
               for s in layer_states)


def projection_variables(hidden_size, vocab_size, dtype=tf.float32, seed=0):
  """The softmax projection: kernel [H, V] (Glorot uniform) and bias [V] (zeros)."""
  limit = (6.0 / (hidden_size + vocab_size)) ** 0.5
  kernel = tf.Variable(tf.random.stateless_uniform(
      [hidden_size, vocab_size], seed=[seed, 400], minval=-limit, maxval=limit, dtype=dtype),
                       name="projection_kernel")
  return kernel, tf.Variable(tf.zeros([vocab_size], dtype), name="projection_bias")


def table_device(config, output_side):
  """Where an embedding table lives: one tied to the output projection (--tie_embeddings, the
  `output_side` table) with the projection, on the accelerator ("gpu": TensorFlow's default
  placement), since the projection reads all of it at every step; any other table where
  --embedding_device says."""
  return "gpu" if config.tie_embeddings and output_side else config.embedding_device


def any_table_on_host(config):
  """Whether a model of `config` (a `ModelConfig`, either model) has a table on the host:
  --embedding_device=cpu, and a table not tied to the projection (one table is both sides'
  with --share_embeddings, and the LM's)."""
  sides = (True,) if config.share_embeddings or config.model == "lm" else (False, True)
  return any(table_device(config, side) == "cpu" for side in sides)


def _device_name(device):
  """'GPU:0' of a variable's full device string."""
  spec = tf.DeviceSpec.from_string(device or "")
  return f"{spec.device_type}:{spec.device_index}" if spec.device_type else "the default device"


def project(outputs, kernel, bias):
  """outputs [B, T, H] -> logits [B, T, V] with ONE matmul over all B*T rows, in the dtype of
  `outputs` (float32 master weights are cast to it)."""
  batch, steps = tf.shape(outputs)[0], tf.shape(outputs)[1]
  flat = tf.reshape(outputs, [-1, kernel.shape[0]])  # [B*T, H]
  logits = tf.matmul(flat, tf.cast(kernel, flat.dtype)) + tf.cast(bias, flat.dtype)
  return tf.reshape(logits, [batch, steps, kernel.shape[1]])


class SequenceModel(tf.Module):
  """What the models share: their config, vocabulary size and dtypes.

  Args:
    config: the model's ModelConfig.
    vocab_size: V, the rows of the embedding and the columns of the softmax.
    dtype: the variables' dtype.
    compute_dtype: the activations' dtype (default `dtype`); bfloat16 over float32 variables
      is mixed precision.
  """

  def __init__(self, config, vocab_size, dtype=tf.float32, compute_dtype=None, name=None):
    super().__init__(name=name)
    self.config = config
    self.vocab_size = int(vocab_size)
    self.variable_dtype = tf.as_dtype(dtype)
    self.dtype = tf.as_dtype(compute_dtype or dtype)  # what activations are computed in
    self.output_embedding = None  # the table of the output side; subclasses set it

  def tied(self, embedding):
    """Whether `embedding`'s table is also the output projection (--tie_embeddings)."""
    return (self.config.tie_embeddings and self.output_embedding is not None
            and embedding.table is self.output_embedding.table)

  def make_projection(self, seed):
    """Creates the softmax projection's variables: kernel [H, V] and bias [V], or with
    --tie_embeddings the bias alone (the kernel is the output table, see `projection`)."""
    if self.config.tie_embeddings:
      self.projection_bias = tf.Variable(tf.zeros([self.vocab_size], self.variable_dtype),
                                         name="projection_bias")
    else:
      self.projection_kernel, self.projection_bias = projection_variables(
          self.config.hidden_size, self.vocab_size, self.variable_dtype, seed)

  def tying_note(self):
    """The start message's line on --tie_embeddings ("" when untied): which table, and where
    it lives."""
    if not self.config.tie_embeddings:
      return ""
    which = ("embedding" if self.config.model == "lm" else
             "shared source and target" if self.config.share_embeddings else "target")
    return (f"tied embeddings: the {which} table [{self.vocab_size}, "
            f"{self.config.embedding_size}] is also the output projection's kernel; it lives "
            f"with the projection, on {_device_name(self.output_embedding.table.device)} "
            "(--embedding_device places untied tables only)")

  def projection(self):
    """(kernel [H, V], bias [V]) of the softmax projection. Tied (--tie_embeddings), the
    kernel is the output table [V, E] transposed (E = H), read where the table lives, and its
    gradient is the sum of the lookups' and the projection's."""
    if self.config.tie_embeddings:
      return tf.transpose(self.output_embedding.table), self.projection_bias
    return self.projection_kernel, self.projection_bias


class Seq2Seq(SequenceModel):
  """A sequence-to-sequence model with teacher forcing.

  The decoder starts from the encoder's final state (layer by layer; through a dense bridge
  for a bidirectional encoder). Training-time dropout wraps the same cells, so training and
  inference share every variable.

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
    super().__init__(config, vocab_size, dtype, compute_dtype, name)
    with self.name_scope:
      def embedding(name, offset, output_side):
        return embeddings.Embedding(
            vocab_size, config.embedding_size, device=table_device(config, output_side),
            initial_value=pretrained_table, trainable=not config.freeze_embeddings,
            dtype=dtype, seed=seed + offset, name=name)

      self.source_embedding = embedding("source_embedding", 0, config.share_embeddings)
      self.target_embedding = (self.source_embedding if config.share_embeddings
                               else embedding("target_embedding", 1, True))
      self.output_embedding = self.target_embedding

      def stack(prefix, offset):
        return [make_cell(config.cell, config.hidden_size, config.forget_bias, dtype,
                          seed=seed + offset + layer, name=f"{prefix}_{layer}",
                          per_gate_hidden_gradient=config.per_gate_hidden_gradient)
                for layer in range(config.num_layers)]

      self.encoder_cells = stack("encoder", 100)  # the forward direction when bidirectional
      self.decoder_cells = stack("decoder", 200)
      # Optional parts exist only when configured, so a default model's checkpoint is unchanged.
      hidden = config.hidden_size
      self.bidirectional = config.encoder == "bi"
      if self.bidirectional:
        self.encoder_backward_cells = stack("encoder_backward", 150)
        num_fields = len(tf.nest.flatten(self.encoder_cells[0].initial_state(1)))
        self.bridge = bridge_lib.Bridge(config.num_layers, num_fields, 2 * hidden, hidden,
                                        dtype=dtype, seed=seed + 600, name="bridge")
      self.memory_size = 2 * hidden if self.bidirectional else hidden
      if config.attention != "none":
        self.attention = attention_lib.Attention(
            config.attention, query_size=hidden, memory_size=self.memory_size,
            output_size=hidden, dtype=dtype, seed=seed + 500, name="attention")
      self.dropout_generator = tf.random.Generator.from_seed(seed + 300)
      self.make_projection(seed)

  def _stack(self, layer_cells, training, input_sizes, residual=False):
    """The cells as one core; with dropout on the first layer's input and on each layer's
    output when training, and with residual connections around the layers above the first
    when `residual`.

    With `variational_dropout`, each layer's output and recurrent hidden state get one mask
    per sequence (layer states become `VariationalState`s holding the masks); `input_sizes`
    gives each layer's input size for those masks.
    """
    keep_prob = self.config.keep_prob
    if training and keep_prob < 1.0:
      if self.config.variational_dropout:
        layer_cells = [cells.VariationalDropoutWrapper(
            c, self.dropout_generator, size, output_keep_prob=keep_prob,
            state_keep_prob=keep_prob) for c, size in zip(layer_cells, input_sizes)]
      else:
        # The first layer's input (the embeddings) is dropped too (Zaremba et al. 2014).
        layer_cells = [cells.DropoutWrapper(c, self.dropout_generator,
                                            input_keep_prob=keep_prob if i == 0 else 1.0,
                                            output_keep_prob=keep_prob)
                       for i, c in enumerate(layer_cells)]
    if residual:
      layer_cells = [c if i == 0 else cells.ResidualWrapper(c) for i, c in enumerate(layer_cells)]
    return cells.StackedCells(layer_cells)

  def _input_sizes(self, first, upper):
    return [first] + [upper] * (self.config.num_layers - 1)

  def encoder(self, training=False, backward=False):
    """The (forward, or `backward`) encoder stack. A bidirectional encoder's upper layers
    read 2H features, so they get no residual connection."""
    config = self.config
    sizes = self._input_sizes(config.embedding_size, self.memory_size)
    return self._stack(self.encoder_backward_cells if backward else self.encoder_cells,
                       training, sizes, config.residual and not self.bidirectional)

  def decoder(self, training=False):
    config = self.config
    feeding = config.hidden_size if config.attention != "none" else 0
    sizes = self._input_sizes(config.embedding_size + feeding, config.hidden_size)
    return self._stack(self.decoder_cells, training, sizes, config.residual)

  def embed(self, source, decoder_input):
    """Looks up ids on the embedding's device: ([B, Ts, E], [B, Tt, E]) in the table dtype.

    Kept apart from `logits_from_embedded` so that a compiled (XLA) step can take the
    looked-up vectors as inputs while the table stays on the CPU.
    """
    return self.source_embedding(source), self.target_embedding(decoder_input)

  def encode_embedded(self, source_embedded, source_length, training=False):
    """[B, Ts, E] vectors, lengths [B] -> (outputs [B, Ts, M], decoder-sized state per layer).

    M is H, or 2H for a bidirectional encoder (each layer reads the concatenated outputs of
    both directions of the layer below; its two final states are bridged to H).
    """
    core = self.encoder(training)
    inputs = tf.cast(source_embedded, self.dtype)
    batch = tf.shape(source_embedded)[0]
    initial_state = core.initial_state(batch, self.dtype)
    if not self.bidirectional:
      outputs, final_states = unroll.layerwise_unroll(
          core.cores, inputs, initial_state, source_length,
          unroll=fast_unroll.unroll_from_config(self.config))
      return outputs, _without_masks(final_states)
    backward = self.encoder(training, backward=True).cores
    forward_finals, backward_finals = [], []
    backward_initial = tuple(c.initial_state(batch, self.dtype) for c in backward)
    for forward_core, backward_core, forward_state, backward_state in zip(
        core.cores, backward, initial_state, backward_initial):
      inputs, (forward_final, backward_final) = unroll.bidirectional_unroll(
          forward_core, backward_core, inputs, forward_state, backward_state, source_length,
          unroll=fast_unroll.unroll_from_config(self.config))
      forward_finals.append(forward_final)
      backward_finals.append(backward_final)
    return inputs, self.bridge(_without_masks(forward_finals), _without_masks(backward_finals))

  def encode(self, source, source_length, training=False):
    """source [B, Ts] ids, source_length [B] -> (outputs [B, Ts, M], final state per layer)."""
    return self.encode_embedded(self.source_embedding(source), source_length, training)

  def start_decoder(self, source_embedded, source_length, training=False):
    """Encodes, and returns the decoder core ready to run, with its initial state.

    Without attention the core is the decoder stack and the state the encoder's. With
    attention it is an `AttentionWrapper` over the encoder outputs, whose state holds the
    encoder's as `cell_state`. Decoding code needs only `core(inputs [B, E], state)`.

    Returns:
      (core, initial state), the core's output size being H.
    """
    return self.decoder_from_encoded(
        self.encode_embedded(source_embedded, source_length, training), source_length, training)

  def decoder_from_encoded(self, encoded, source_length, training=False):
    """`start_decoder` from `encode_embedded`'s (outputs [B, Ts, M], state): (core, state)."""
    memory, encoder_state = encoded
    batch = tf.shape(memory)[0]
    decoder = self.decoder(training)
    if training and self.config.variational_dropout and self.config.keep_prob < 1.0:
      # The decoder's layer states hold its own dropout masks around the encoder's states.
      masks = decoder.initial_state(batch, self.dtype)
      encoder_state = tuple(m._replace(core_state=s) for m, s in zip(masks, encoder_state))
    if self.config.attention == "none":
      return decoder, encoder_state
    core = attention_lib.AttentionWrapper(decoder, self.attention, memory, source_length)
    state = core.initial_state(batch, self.dtype)
    return core, state._replace(cell_state=encoder_state)

  def start_decoding(self, source, source_length):
    """Encodes a batch for decoding one token at a time (greedy, sampling, beam search).

    Args:
      source: [B, Ts] ids; source_length: [B].

    Returns:
      (step, state): step(tokens [B] int32, state) -> (log-probabilities [B, V] float32 of
      the next token, new state), fed the previous token (<GO> first); the state is a nest
      of [B, ...] tensors (`AttentionState` with attention).
    """
    core, state = self.start_decoder(self.source_embedding(source), source_length)

    def step(tokens, state):
      output, state = core(tf.cast(self.target_embedding(tokens), self.dtype), state)
      logits = self.project(output[:, None, :])[:, 0, :]
      return tf.nn.log_softmax(tf.cast(logits, tf.float32)), state
    return step, state

  def project(self, outputs):
    """outputs [B, T, H] -> logits [B, T, V] (see `project`)."""
    return project(outputs, *self.projection())

  def outputs_from_embedded(self, source_embedded, source_length, target_embedded,
                            training=False):
    """Teacher-forced decoder outputs [B, Tt, H], before the projection (see `embed`).

    A sampled-softmax loss reads these with the projection variables, so the [B, Tt, V]
    logits are never formed in training.
    """
    return self.outputs_from_encoded(
        self.encode_embedded(source_embedded, source_length, training), source_length,
        target_embedded, training)

  def outputs_from_encoded(self, encoded, source_length, target_embedded, training=False):
    """`outputs_from_embedded` from `encode_embedded`'s (outputs, state): [B, Tt, H]."""
    core, state = self.decoder_from_encoded(encoded, source_length, training)
    inputs = tf.cast(target_embedded, self.dtype)
    # No decoder masking: PAD positions come after the targets and only the loss reads them.
    if isinstance(core, cells.StackedCells):
      outputs, _ = unroll.layerwise_unroll(
          core.cores, inputs, state, unroll=fast_unroll.unroll_from_config(self.config))
    else:
      # Input feeding makes every layer's step t depend on the attention at t-1: step-major.
      outputs, _ = fast_unroll.unroll_from_config(self.config)(core, inputs, state)
      if training and self.config.keep_prob < 1.0:  # the attentional vectors, before softmax
        outputs *= fast_masks.keep_mask(self.dropout_generator, tf.shape(outputs),
                                        self.config.keep_prob, outputs.dtype)
    return outputs

  def logits_from_embedded(self, source_embedded, source_length, target_embedded,
                           training=False):
    """Teacher-forced logits [B, Tt, V] from looked-up vectors (see `embed`)."""
    return self.project(self.outputs_from_embedded(source_embedded, source_length,
                                                   target_embedded, training))

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


def build_model(run_config, vocabulary, log=print, initialize_pretrained=True):
  """A built `Seq2Seq` for `vocabulary`, initialised from pretrained vectors if configured."""
  model_config = run_config.model
  table = None
  if model_config.pretrained_embeddings and initialize_pretrained:
    table, report = embeddings.load_pretrained(
        model_config.pretrained_embeddings, vocabulary, model_config.embedding_size,
        seed=run_config.train.seed)
    log(f"pretrained embeddings: {report.found} of {report.vocab_size} vocabulary words found in "
        f"{report.path} ({report.malformed_lines} malformed lines skipped); the rest start random"
        + (" (frozen)" if model_config.freeze_embeddings else ""))
  model = Seq2Seq(model_config, len(vocabulary), seed=run_config.train.seed,
                  pretrained_table=table, compute_dtype=COMPUTE_DTYPES[run_config.train.precision])
  model.build()
  return model
