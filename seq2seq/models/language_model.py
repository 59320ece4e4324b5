"""Language-model mode: a decoder-only stack over running text, with the state carried
from window to window within an epoch (truncated backpropagation through time).

As in the TensorFlow tutorial's PTB model: the token stream is cut into B parallel rows,
each row into windows of `num_steps` tokens; window i+1 of row b continues window i of row
b, so the final state of one batch is the initial state of the next. Gradients stop at the
window boundary (the carried state enters the step as a constant). The state is reset to
zeros at the start of each epoch. The train step is the engine's (`train_step.make_lm_train_step`):
the same clipping, sparse embedding update, NaN/Inf gating, XLA and bf16 options as seq2seq.
"""
import numpy as np
import tensorflow as tf

from ops import losses
from seq2seq.fast import unroll as fast_unroll
from seq2seq.models import encoder_decoder as model_lib
from seq2seq.nn import cells
from seq2seq.nn import embeddings
from seq2seq.nn import unroll


def lm_windows(ids, batch_size, num_steps):
  """Cuts a token stream into (inputs, targets) windows, targets shifted by one token.

  Args:
    ids: 1-D sequence of ints, the whole text.
    batch_size: B rows read in parallel; row b is the b-th contiguous share of the text.
    num_steps: T tokens per window.

  Returns:
    a list of (inputs [B, T], targets [B, T]) int32 arrays; row b of window i+1 continues
    row b of window i.

  Raises:
    ValueError: if the text is too short for one window.
  """
  ids = np.asarray(ids, np.int32)
  row_length = len(ids) // batch_size
  count = (row_length - 1) // num_steps
  if count <= 0:
    most = len(ids) // (num_steps + 1)  # each row needs num_steps + 1 tokens
    raise ValueError(f"{len(ids)} tokens are too few for one window of {batch_size} rows x "
                     f"{num_steps} steps; lower --batch_size (at most {most} rows with "
                     f"--num_steps={num_steps}) or --num_steps")
  rows = ids[:batch_size * row_length].reshape(batch_size, row_length)
  return [(rows[:, i * num_steps:(i + 1) * num_steps],
           rows[:, i * num_steps + 1:(i + 1) * num_steps + 1]) for i in range(count)]


class LanguageModel(model_lib.SequenceModel):
  """Embedding -> stack of cores -> softmax projection, over windows of running text.

  Args:
    config: a `ModelConfig` (cell, num_layers, hidden_size, embedding_size, keep_prob,
      embedding_device, unroll, unroll_steps).
    vocab_size: V.
    seed: seeds the initial weights and the dropout masks.
    dtype: variable dtype (float32, or float64 for tests).
    compute_dtype: dtype of the activations, matmuls and carried state (default: dtype);
      bfloat16 gives mixed precision with float32 master weights, as in `Seq2Seq`.
  """

  def __init__(self, config, vocab_size, seed=0, dtype=tf.float32, compute_dtype=None,
               name="language_model"):
    super().__init__(config, vocab_size, dtype, compute_dtype, name)
    with self.name_scope:
      self.embedding = embeddings.Embedding(vocab_size, config.embedding_size,
                                            device=model_lib.table_device(config, True),
                                            dtype=dtype, seed=seed, name="embedding")
      self.output_embedding = self.embedding
      self.cells = [model_lib.make_cell(config.cell, config.hidden_size, config.forget_bias,
                                        dtype, seed=seed + 100 + layer, name=f"layer_{layer}",
                                        per_gate_hidden_gradient=config.per_gate_hidden_gradient)
                    for layer in range(config.num_layers)]
      self.dropout_generator = tf.random.Generator.from_seed(seed + 300)
      self.make_projection(seed)

  def build(self):
    """Creates every variable (cells build lazily) with one tiny eager forward pass."""
    self(tf.zeros([1, 1], tf.int32), self.initial_state(1))

  def initial_state(self, batch_size):
    """Zeros in the compute dtype: a tuple with one state per layer, each field [B, H]."""
    return tuple(c.initial_state(batch_size, self.dtype) for c in self.cells)

  def embed(self, inputs):
    """ids [B, T] -> [B, T, E], looked up on the table's device (kept apart from
    `logits_from_embedded` so that a compiled step can take the vectors as inputs)."""
    return self.embedding(inputs)

  def logits_from_embedded(self, embedded, state, training=False):
    """[B, T, E] vectors and the initial state -> (logits [B, T, V] in the compute dtype,
    final state)."""
    layer_cells = self.cells
    if training and self.config.keep_prob < 1.0:
      layer_cells = [cells.DropoutWrapper(c, self.dropout_generator,
                                          output_keep_prob=self.config.keep_prob)
                     for c in layer_cells]
    outputs, state = unroll.layerwise_unroll(layer_cells, tf.cast(embedded, self.dtype), state,
                                             unroll=fast_unroll.unroll_from_config(self.config))
    return model_lib.project(outputs, *self.projection()), state

  def __call__(self, inputs, state, training=False):
    """inputs [B, T] ids, state from `initial_state` or a previous call ->
    (logits [B, T, V], final state)."""
    return self.logits_from_embedded(self.embed(inputs), state, training)


class CarriedState(tf.Module):
  """The state carried from one window to the next, as variables, so checkpoints hold it.

  A run resumed mid-epoch restores it with the weights and continues exactly where the
  interrupted run was. Stored in the variable dtype (float32); read in the compute dtype.
  """

  def __init__(self, model, batch_size, name="carried_state"):
    super().__init__(name=name)
    self._model = model
    self._zeros = model.initial_state(batch_size)
    with self.name_scope:
      self.values = [tf.Variable(tf.zeros(t.shape, model.variable_dtype), trainable=False,
                                 name=f"state_{i}")
                     for i, t in enumerate(tf.nest.flatten(self._zeros))]

  def read(self):
    """The carried state, structured like `model.initial_state(batch_size)`."""
    return tf.nest.pack_sequence_as(
        self._zeros, [tf.cast(v, self._model.dtype) for v in self.values])

  def assign(self, state, keep=True):
    """Carries `state` to the next window; zeros instead where `keep` (a bool) is false."""
    for variable, value in zip(self.values, tf.nest.flatten(state)):
      value = tf.cast(value, variable.dtype)
      variable.assign(tf.where(keep, value, tf.zeros_like(value)))

  def reset(self):
    """Zeros: each epoch starts afresh."""
    for variable in self.values:
      variable.assign(tf.zeros_like(variable))


def make_lm_eval_step(model):
  """step(inputs, targets, state) -> (summed token cross entropy, tokens, final state)."""
  @tf.function(autograph=False)
  def step(inputs, targets, state):
    logits, final_state = model(inputs, state, training=False)
    per_token = losses.sequence_loss(logits, targets, tf.ones(tf.shape(targets), tf.float32),
                                     average_across_timesteps=False,
                                     average_across_batch=False)
    return tf.reduce_sum(per_token), tf.cast(tf.size(targets), tf.float32), final_state
  return step


def evaluate(eval_step, windows, initial_state):
  """(mean loss per token, perplexity) over `windows`, the state carried from each to the next.

  Every window is full (see `lm_windows`), so this is the mean over all their tokens.
  """
  state = initial_state
  total_loss = total_tokens = 0.0
  for inputs, targets in windows:
    loss_sum, tokens, state = eval_step(tf.constant(inputs), tf.constant(targets), state)
    total_loss += float(loss_sum)
    total_tokens += float(tokens)
  loss = total_loss / max(total_tokens, 1.0)
  return loss, losses.perplexity(loss)
