"""Attention as a wrapper core: any decoder core gains attention without being changed.

    a_{t-1}                        the previous attentional vector (input feeding)
    h_t, s_t = core([x_t; a_{t-1}], s_{t-1})
    alpha_t  = masked_softmax(score(h_t, memory))          over the valid source positions
    c_t      = sum_s alpha_t[s] memory[s]
    a_t      = tanh([h_t; c_t] W_c)                         the output of the wrapper

This is Luong et al. (2015)'s "global attention with input feeding". Both score families use
the core's current output h_t as the query (as tensorflow/nmt does), so Bahdanau's additive
score plugs into the same step.

`Attention` owns the variables (score and output layer); `AttentionWrapper` is a light,
rebuildable view that pairs a core (bare or with dropout) with an `Attention` and a memory.
"""
import collections

import tensorflow as tf

from ops import attention as attention_ops
from seq2seq.nn import cells

AttentionState = collections.namedtuple("AttentionState",
                                        ["cell_state", "attention", "alignments"])

SCORES = ("luong", "luong_scaled", "luong_dot", "bahdanau", "bahdanau_norm")


def _dense_init(shape, dtype, seed):
  fan_in, fan_out = shape
  limit = (6.0 / (fan_in + fan_out)) ** 0.5
  return tf.random.stateless_uniform(shape, seed=seed, minval=-limit, maxval=limit, dtype=dtype)


def _like(variable, tensor):
  return variable if variable.dtype == tensor.dtype else tf.cast(variable, tensor.dtype)


class Attention(tf.Module):
  """Score and attention-layer variables; every size is known at construction.

  Args:
    score: one of SCORES. "luong" is Luong's general score (a memory layer W_a [M, Q]),
      "luong_dot" uses the memory itself (needs M == Q), "luong_scaled" adds a learned scalar
      gain g (initialised to 1), "bahdanau" is the additive score with U = `num_units`,
      "bahdanau_norm" adds weight normalisation of v and a bias.
    query_size: Q, the wrapped core's output size.
    memory_size: M, the encoder output size.
    output_size: A, the size of the attentional vector a_t.
    num_units: U of the additive score (default Q); Luong scores use U = Q.
  """

  def __init__(self, score, query_size, memory_size, output_size, num_units=None,
               dtype=tf.float32, seed=0, name=None):
    super().__init__(name=name)
    if score not in SCORES:
      raise ValueError(f"unknown attention score {score!r}; choose one of {', '.join(SCORES)}")
    if score == "luong_dot" and query_size != memory_size:
      raise ValueError(f"luong_dot needs equal query and memory sizes, got {query_size} and "
                       f"{memory_size}; use luong (general) instead")
    self.score = score
    self.query_size, self.memory_size, self.output_size = query_size, memory_size, output_size
    self.dtype = tf.as_dtype(dtype)
    # Luong's keys live in the query's space; only the additive score has its own width U.
    units = (num_units or query_size) if score.startswith("bahdanau") else query_size
    with self.name_scope:
      self.memory_kernel = None  # [M, U]; none for luong_dot
      if score != "luong_dot":
        self.memory_kernel = tf.Variable(
            _dense_init([memory_size, units], dtype, [seed, 1]), name="memory_kernel")
      if score == "luong_scaled":
        self.gain = tf.Variable(tf.ones([], dtype), name="gain")
      if score.startswith("bahdanau"):
        self.query_kernel = tf.Variable(
            _dense_init([query_size, units], dtype, [seed, 2]), name="query_kernel")
        limit = (3.0 / units) ** 0.5
        self.v = tf.Variable(tf.random.stateless_uniform(
            [units], seed=[seed, 3], minval=-limit, maxval=limit, dtype=dtype), name="v")
      if score == "bahdanau_norm":
        self.gain = tf.Variable(tf.constant(units ** -0.5, dtype), name="gain")
        self.bias = tf.Variable(tf.zeros([units], dtype), name="bias")
      self.output_kernel = tf.Variable(
          _dense_init([query_size + memory_size, output_size], dtype, [seed, 4]),
          name="output_kernel")

  def keys(self, memory):
    """[B, Ts, M] -> [B, Ts, U]: the memory side of the score, once per source sentence."""
    if self.memory_kernel is None:
      return memory
    return tf.einsum("bsm,mu->bsu", memory, _like(self.memory_kernel, memory))

  def scores(self, query, keys):
    """query [B, Q], keys [B, Ts, U] -> [B, Ts]."""
    if self.score.startswith("luong"):
      scale = _like(self.gain, query) if self.score == "luong_scaled" else None
      return attention_ops.dot_score(query, keys, scale)
    normalised = self.score == "bahdanau_norm"
    return attention_ops.additive_score(
        tf.matmul(query, _like(self.query_kernel, query)), keys, _like(self.v, query),
        bias=_like(self.bias, query) if normalised else None,
        gain=_like(self.gain, query) if normalised else None)

  def __call__(self, query, keys, memory, memory_length):
    """One attention step.

    Args:
      query: [B, Q]; keys: [B, Ts, U] from `keys`; memory: [B, Ts, M]; memory_length: [B].

    Returns:
      (attention [B, A], alignments [B, Ts]).
    """
    alignments = attention_ops.masked_softmax(self.scores(query, keys), memory_length)
    context = attention_ops.context(alignments, memory)
    attention = tf.tanh(tf.matmul(tf.concat([query, context], -1),
                                  _like(self.output_kernel, query)))
    return attention, alignments


class AttentionWrapper(cells.RNNCore):
  """Wraps `core` with `attention` over a memory; input feeding; the core is unchanged.

  State: `AttentionState(cell_state, attention [B, A], alignments [B, Ts])`. The output is the
  attentional vector a_t, so `output_size` is the attention's output size.

  Args:
    core: any `RNNCore` whose output size is `attention.query_size`; its input is
      [x_t; a_{t-1}], so it must accept I + A features.
    attention: an `Attention`.
    memory: optional [B, Ts, M] encoder outputs; or give it later with `with_memory`.
    memory_length: [B] valid lengths of `memory`.
  """

  def __init__(self, core, attention, memory=None, memory_length=None, name=None):
    super().__init__(name=name)
    if core.output_size != attention.query_size:
      raise ValueError(f"the core's output size {core.output_size} differs from the "
                       f"attention's query size {attention.query_size}")
    self.core = core
    self.attention = attention
    self.memory = None
    if memory is not None:
      if memory_length is None:
        raise ValueError("memory needs memory_length (the valid source lengths)")
      self.memory = tf.convert_to_tensor(memory)
      self.memory_length = tf.convert_to_tensor(memory_length)
      self.keys = attention.keys(self.memory)

  def with_memory(self, memory, memory_length):
    """The same core and attention (shared variables) attending over another memory."""
    return AttentionWrapper(self.core, self.attention, memory, memory_length)

  @property
  def output_size(self):
    return self.attention.output_size

  def check_memory(self):
    if self.memory is None:
      raise ValueError("AttentionWrapper has no memory: construct it with one or use with_memory")

  def initial_state(self, batch_size, dtype=None):
    """Zero attention and alignments; the core's own zero state (replace it with a bridge's)."""
    self.check_memory()
    dtype = dtype or self.memory.dtype
    return AttentionState(
        cell_state=self.core.initial_state(batch_size, dtype),
        attention=tf.zeros([batch_size, self.attention.output_size], dtype),
        alignments=tf.zeros([batch_size, tf.shape(self.memory)[1]], dtype))

  def __call__(self, inputs, state):
    """inputs [B, I], `AttentionState` -> (a_t [B, A], the new `AttentionState`)."""
    return self.step_with(inputs, state, self.core)

  def step_with(self, inputs, state, run_core):
    """`__call__` with the core run by `run_core(inputs [B, I + A], core state)` (another
    implementation of the same core: `seq2seq.fast` passes its own)."""
    self.check_memory()
    cell_input = tf.concat([inputs, state.attention], -1)
    query, cell_state = run_core(cell_input, state.cell_state)
    memory = tf.cast(self.memory, query.dtype)
    keys = tf.cast(self.keys, query.dtype)
    attention, alignments = self.attention(query, keys, memory, self.memory_length)
    return attention, AttentionState(cell_state, attention, alignments)
