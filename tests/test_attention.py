"""Attention scores, masking and the wrapper step against NumPy float64 re-derivations."""
import functools

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from ops import attention as attention_ops
from seq2seq.fast import cores as fast_cores
from seq2seq.fast import unroll as fast_unroll
from seq2seq.nn import attention
from seq2seq.nn import cells
from seq2seq.nn import unroll
from tests.test_cells import np_lstm_step

B, TS, Q, M, A, I = 3, 5, 4, 6, 7, 2
LENGTHS = np.array([5, 2, 3])


def np_masked_softmax(scores, lengths):
  out = np.zeros_like(scores)
  for b, n in enumerate(lengths):
    e = np.exp(scores[b, :n] - scores[b, :n].max())
    out[b, :n] = e / e.sum()
  return out


def np_scores(kind, variables, query, memory):
  """The score of `kind` written out position by position, from the definitions."""
  scores = np.zeros(memory.shape[:2])
  for b in range(memory.shape[0]):
    for s in range(memory.shape[1]):
      m = memory[b, s]
      if kind.startswith("luong"):
        key = m if kind == "luong_dot" else m @ variables["memory_kernel"]
        scores[b, s] = query[b] @ key * (variables["gain"] if kind == "luong_scaled" else 1.0)
      else:
        v = variables["v"]
        pre = m @ variables["memory_kernel"] + query[b] @ variables["query_kernel"]
        if kind == "bahdanau_norm":
          pre = pre + variables["bias"]
          v = variables["gain"] * v / np.linalg.norm(v)
        scores[b, s] = v @ np.tanh(pre)
  return scores


def randomize(module, rng):
  for var in module.trainable_variables:
    var.assign(rng.uniform(-0.8, 0.8, var.shape))
  return {v.name.split("/")[-1].split(":")[0]: v.numpy() for v in module.trainable_variables}


class OpsTest(tf.test.TestCase):

  def test_masked_softmax_zeroes_padding_and_normalises(self):
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(B, TS)) * 3
    scores[1, 3] = 50.0  # a large score at a padded position must not leak in
    got = attention_ops.masked_softmax(tf.constant(scores), tf.constant(LENGTHS)).numpy()
    self.assertAllClose(got, np_masked_softmax(scores, LENGTHS), atol=1e-12)
    self.assertAllEqual(got[1, 2:], np.zeros(3))
    self.assertAllClose(got.sum(-1), np.ones(B))

  def test_empty_row_is_all_zeros(self):
    got = attention_ops.masked_softmax(tf.ones([1, 4], tf.float64), tf.constant([0]))
    self.assertAllEqual(got, np.zeros([1, 4]))

  def test_masked_softmax_in_bfloat16(self):
    scores = tf.constant([[1.0, 2.0, 3.0]], tf.bfloat16)
    got = attention_ops.masked_softmax(scores, tf.constant([2]))
    self.assertAllClose(tf.cast(got, tf.float32), [[0.2689, 0.7311, 0.0]], atol=1e-2)


class ScoreTest(parameterized.TestCase, tf.test.TestCase):

  @parameterized.parameters(*attention.SCORES)
  def test_scores_against_numpy(self, kind):
    rng = np.random.default_rng(1)
    memory_size = Q if kind == "luong_dot" else M
    module = attention.Attention(kind, Q, memory_size, A, num_units=5, dtype=tf.float64)
    variables = randomize(module, rng)
    query = rng.normal(size=(B, Q))
    memory = rng.normal(size=(B, TS, memory_size))
    got = module.scores(tf.constant(query), module.keys(tf.constant(memory)))
    self.assertAllClose(got, np_scores(kind, variables, query, memory), atol=1e-12)

  def test_dot_needs_equal_sizes(self):
    with self.assertRaisesRegex(ValueError, "luong_dot needs equal"):
      attention.Attention("luong_dot", Q, M, A)

  def test_unknown_score(self):
    with self.assertRaisesRegex(ValueError, "unknown attention score"):
      attention.Attention("cosine", Q, M, A)


class WrapperTest(parameterized.TestCase, tf.test.TestCase):

  def _setup(self, kind, rng):
    core = cells.LSTMCell(Q, dtype=tf.float64)
    module = attention.Attention(kind, Q, M, A, dtype=tf.float64)
    core(tf.zeros([1, I + A], tf.float64), core.initial_state(1))
    for var in core.trainable_variables:
      var.assign(rng.uniform(-0.7, 0.7, var.shape))
    variables = randomize(module, rng)
    return core, module, variables

  def _np_unroll(self, kind, core, variables, inputs, memory, lengths, masks=None):
    """With `masks` (`DropoutMasks` [B, T, ...]), the core's input and output are dropped."""
    h = np.zeros((B, Q))
    c = np.zeros((B, Q))
    a = np.zeros((B, A))
    outputs, alignments = [], []
    for t in range(inputs.shape[1]):
      x = np.concatenate([inputs[:, t], a], -1)  # input feeding
      if masks is not None:
        x = x * masks.input[:, t]
      h, c = np_lstm_step(x, h, c, core.w_input.numpy(), core.w_hidden.numpy(),
                          core.bias.numpy(), core.forget_bias)
      query = h if masks is None else h * masks.output[:, t]  # the state is not dropped
      align = np_masked_softmax(np_scores(kind, variables, query, memory), lengths)
      ctx = np.einsum("bs,bsm->bm", align, memory)
      a = np.tanh(np.concatenate([query, ctx], -1) @ variables["output_kernel"])
      outputs.append(a)
      alignments.append(align)
    return np.stack(outputs, 1), np.stack(alignments, 1)

  @parameterized.parameters("luong", "luong_scaled", "bahdanau", "bahdanau_norm")
  def test_unroll_against_numpy(self, kind):
    rng = np.random.default_rng(2)
    core, module, variables = self._setup(kind, rng)
    inputs = rng.normal(size=(B, 4, I))
    memory = rng.normal(size=(B, TS, M))
    memory[1, 2:] = 100.0  # padding content must be ignored
    want, want_align = self._np_unroll(kind, core, variables, inputs, memory, LENGTHS)

    wrapper = attention.AttentionWrapper(core, module).with_memory(memory, LENGTHS)

    def run(inputs):
      return unroll.static_unroll(wrapper, inputs, wrapper.initial_state(B, tf.float64))

    for fn in (run, tf.function(run)):
      outputs, state = fn(tf.constant(inputs))
      self.assertAllClose(outputs, want, atol=1e-10)
      self.assertAllClose(state.alignments, want_align[:, -1], atol=1e-10)
      self.assertAllClose(state.attention, want[:, -1], atol=1e-10)
      self.assertAllEqual(state.alignments.numpy()[1, 2:], np.zeros(3))

  @parameterized.parameters(
      (fast_unroll.static_unroll,), (fast_unroll.dynamic_unroll,),
      (functools.partial(fast_unroll.dynamic_unroll, steps_per_iteration=3),))
  def test_dropout_masks_of_all_steps_drawn_before_the_loop(self, unroll_fn):
    rng = np.random.default_rng(4)
    core, module, variables = self._setup("luong", rng)
    inputs = rng.normal(size=(B, 4, I))
    memory = rng.normal(size=(B, TS, M))

    def wrapper(generator):
      dropped = cells.DropoutWrapper(core, generator, input_keep_prob=0.7, output_keep_prob=0.6)
      return attention.AttentionWrapper(dropped, module).with_memory(memory, LENGTHS)

    drawn = tf.random.Generator.from_seed(6)
    masks = tf.nest.map_structure(lambda m: m.numpy(),
                                  fast_cores.adapt(wrapper(drawn)).presample(B, 4, I, tf.float64))
    self.assertEqual(masks.input.shape, (B, 4, I + A))
    want, _ = self._np_unroll("luong", core, variables, inputs, memory, LENGTHS, masks)
    unrolled = tf.random.Generator.from_seed(6)
    dropped_wrapper = wrapper(unrolled)
    run = tf.function(lambda x: unroll_fn(dropped_wrapper, x,
                                          dropped_wrapper.initial_state(B, tf.float64)))
    outputs, _ = run(tf.constant(inputs))
    self.assertAllClose(outputs, want, atol=1e-10)
    self.assertAllEqual(unrolled.state, drawn.state)  # two draws, not two a step
    # A step by `__call__` (decoding) still draws its own masks.
    dropped_wrapper(tf.constant(inputs[:, 0]), dropped_wrapper.initial_state(B, tf.float64))
    self.assertNotAllEqual(unrolled.state, drawn.state)

  def test_core_output_size_must_match(self):
    module = attention.Attention("luong", Q + 1, M, A)
    with self.assertRaisesRegex(ValueError, "query size"):
      attention.AttentionWrapper(cells.LSTMCell(Q), module)

  def test_needs_memory(self):
    wrapper = attention.AttentionWrapper(cells.LSTMCell(Q), attention.Attention("luong", Q, M, A))
    with self.assertRaisesRegex(ValueError, "no memory"):
      wrapper.initial_state(B)

  def test_gradient_reaches_memory_only_through_valid_positions(self):
    rng = np.random.default_rng(3)
    core, module, _ = self._setup("bahdanau", rng)
    memory = tf.Variable(rng.normal(size=(B, TS, M)))
    with tf.GradientTape() as tape:
      wrapper = attention.AttentionWrapper(core, module, memory, LENGTHS)
      outputs, _ = unroll.static_unroll(wrapper, tf.constant(rng.normal(size=(B, 3, I))),
                                        wrapper.initial_state(B, tf.float64))
      loss = tf.reduce_sum(outputs)
    grad = tape.gradient(loss, memory).numpy()
    self.assertAllEqual(grad[1, 2:], np.zeros((3, M)))
    self.assertGreater(np.abs(grad[1, :2]).sum(), 0.0)


if __name__ == "__main__":
  tf.test.main()
