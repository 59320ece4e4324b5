"""Language-model mode: a decoder-only stack over running text, with the state carried
from window to window within an epoch (truncated backpropagation through time).

As in the TensorFlow tutorial's PTB model: the token stream is cut into B parallel rows,
each row into windows of `num_steps` tokens; window i+1 of row b continues window i of row
b, so the final state of one batch is the initial state of the next. Gradients stop at the
window boundary (the carried state enters the step as a constant). The state is reset to
zeros at the start of each epoch.
"""
import numpy as np
import tensorflow as tf

from ops import losses
from seq2seq import cells
from seq2seq import embeddings
from seq2seq import model as model_lib
from seq2seq import unroll


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
    raise ValueError(f"{len(ids)} tokens are too few for one window of {batch_size} rows x "
                     f"{num_steps} steps; lower --batch_size or --num_steps")
  rows = ids[:batch_size * row_length].reshape(batch_size, row_length)
  return [(rows[:, i * num_steps:(i + 1) * num_steps],
           rows[:, i * num_steps + 1:(i + 1) * num_steps + 1]) for i in range(count)]


class LanguageModel(tf.Module):
  """Embedding -> stack of cores -> softmax projection, over windows of running text.

  Args:
    config: a `ModelConfig` (cell, num_layers, hidden_size, embedding_size, keep_prob).
    vocab_size: V.
  """

  def __init__(self, config, vocab_size, seed=0, dtype=tf.float32, name="language_model"):
    super().__init__(name=name)
    self.config = config
    self.vocab_size = int(vocab_size)
    self.dtype = tf.as_dtype(dtype)
    with self.name_scope:
      self.embedding = embeddings.Embedding(vocab_size, config.embedding_size,
                                            device=config.embedding_device, dtype=dtype,
                                            seed=seed, name="embedding")
      self.cells = [model_lib.make_cell(config.cell, config.hidden_size, config.forget_bias,
                                        dtype, seed=seed + 100 + layer, name=f"layer_{layer}")
                    for layer in range(config.num_layers)]
      self.dropout_generator = tf.random.Generator.from_seed(seed + 300)
      self.projection_kernel, self.projection_bias = model_lib.projection_variables(
          config.hidden_size, vocab_size, dtype, seed)

  def build(self):
    """Creates every variable (cells build lazily) with one tiny eager forward pass."""
    self(tf.zeros([1, 1], tf.int32), self.initial_state(1))

  def initial_state(self, batch_size):
    """Zeros: a tuple with one state per layer, each field [B, H]."""
    return tuple(c.initial_state(batch_size, self.dtype) for c in self.cells)

  def __call__(self, inputs, state, training=False):
    """inputs [B, T] ids, state from `initial_state` or a previous call ->
    (logits [B, T, V], final state)."""
    layer_cells = self.cells
    if training and self.config.keep_prob < 1.0:
      layer_cells = [cells.DropoutWrapper(c, self.dropout_generator,
                                          output_keep_prob=self.config.keep_prob)
                     for c in layer_cells]
    outputs, state = unroll.layerwise_unroll(layer_cells, self.embedding(inputs), state)
    logits = tf.einsum("bth,hv->btv", outputs, self.projection_kernel) + self.projection_bias
    return logits, state


def make_lm_train_step(model, optimizer, max_grad_norm):
  """A compiled step (inputs, targets, state) -> (loss, grad_norm, final state).

  The incoming state is a constant of the step, so backpropagation is truncated at the
  window's start; the returned state is what the next window starts from.
  """
  @tf.function
  def step(inputs, targets, state):
    with tf.GradientTape() as tape:
      logits, final_state = model(inputs, state, training=True)
      loss = losses.sequence_loss(logits, targets, tf.ones(tf.shape(targets), tf.float32))
    variables = model.trainable_variables
    gradients = tape.gradient(loss, variables)
    if max_grad_norm > 0:
      gradients, grad_norm = tf.clip_by_global_norm(gradients, max_grad_norm)
    else:
      grad_norm = tf.linalg.global_norm(gradients)
    optimizer.apply(gradients, variables)
    return loss, grad_norm, final_state
  return step


def run_epoch(step, windows, initial_state):
  """Runs `step` over the windows of one epoch, carrying the state from each to the next.

  Args:
    step: (inputs, targets, state) -> (loss, ..., final state), e.g. `make_lm_train_step`'s.
    windows: from `lm_windows`.
    initial_state: the state of the first window (zeros: each epoch starts afresh).

  Returns:
    (mean loss per token over the epoch, perplexity, the final state).
  """
  state = initial_state
  total = 0.0
  for inputs, targets in windows:
    loss, *_, state = step(tf.constant(inputs), tf.constant(targets), state)
    total += float(loss)
  mean = total / len(windows)
  return mean, float(np.exp(min(mean, 50.0))), state


def train_lm(model, optimizer, ids, batch_size, num_steps, num_epochs, max_grad_norm=5.0,
             log=print):
  """Trains on the token stream `ids`; the state is reset to zeros at every epoch.

  Returns:
    the list of per-epoch mean training losses.
  """
  windows = lm_windows(ids, batch_size, num_steps)
  model.build()
  optimizer.build(model.trainable_variables)
  step = make_lm_train_step(model, optimizer, max_grad_norm)
  history = []
  for epoch in range(num_epochs):
    loss, ppl, _ = run_epoch(step, windows, model.initial_state(batch_size))
    log(f"epoch {epoch + 1}/{num_epochs}: loss={loss:.4f} ppl={ppl:.2f}")
    history.append(loss)
  return history
