"""Rows and units appended to align the fast unroll's per-step matmuls
(`seq2seq.fast.unroll.alignment_rows`, `alignment_units`) change no result."""
from unittest import mock

import pytest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from seq2seq import config as config_lib
from seq2seq.data import batches
from seq2seq.fast import cores as fast_cores
from seq2seq.fast import unroll as fast_unroll
from seq2seq.models import encoder_decoder as model_lib
from seq2seq.nn import attention
from seq2seq.nn import cells
from seq2seq.nn import unroll
from tests import helpers

B, T, I, H = 5, 6, 7, 8
LENGTHS = [6, 0, 3, 1, 6]


def _gpu(present):
  """Pretends (or denies) that TensorFlow sees a GPU: XLA's CPU backend does not align rows,
  so the tests turn the alignment on where they run."""
  return mock.patch.object(fast_unroll, "gpu_present", return_value=present)


def _stack(kind, units, seed=0):
  """Two dropout-wrapped layers of `kind` (float32 weights), sharing one dropout generator."""
  generator = tf.random.Generator.from_seed(seed)
  return [cells.DropoutWrapper(model_lib.make_cell(kind, units, seed=seed + i),
                               generator, input_keep_prob=0.8, output_keep_prob=0.7)
          for i in range(2)]


def _answer_when_traced(alignment, core, inputs, jit_compile):
  """`alignment(fast view of core, inputs)` (`fast_unroll.alignment_rows` or `_units`) asked
  while a function is traced, compiled with XLA or not."""
  seen = []

  @tf.function(jit_compile=jit_compile, autograph=False)
  def trace(x):
    seen.append(alignment(fast_cores.adapt(core), x))
    return x

  trace(inputs)
  return seen[0]


def _pad_ops(concrete_function):
  return [op for op in concrete_function.graph.get_operations() if op.type in ("Pad", "PadV2")]


@pytest.mark.slow
class AlignmentRowsTest(tf.test.TestCase, parameterized.TestCase):

  def _rows(self, core, inputs, jit_compile=True):
    return _answer_when_traced(fast_unroll.alignment_rows, core, inputs, jit_compile)

  def _units(self, core, inputs, jit_compile=True):
    return _answer_when_traced(fast_unroll.alignment_units, core, inputs, jit_compile)

  def test_when_rows_are_appended(self):
    core = model_lib.make_cell("lstm", H)
    bf16 = lambda rows: tf.zeros([rows, T, I], tf.bfloat16)
    with _gpu(True):
      self.assertEqual(self._rows(core, bf16(5)), 3)
      self.assertEqual(self._rows(core, bf16(20)), 4)
      self.assertEqual(self._rows(core, tf.zeros([5, T, I], tf.float16)), 3)
      self.assertEqual(self._rows(core, bf16(24)), 0)  # aligned already
      self.assertEqual(self._rows(core, tf.zeros([5, T, I], tf.float32)), 0)  # not 16-bit
      self.assertEqual(self._rows(core, bf16(5), jit_compile=False), 0)  # no XLA
      wrapped = attention.AttentionWrapper(core, attention.Attention("luong", H, H, H))
      self.assertFalse(fast_cores.adapt(wrapped).independent_rows)  # holds its memory's rows
      self.assertEqual(self._rows(wrapped, bf16(5)), 0)
    with _gpu(False):
      self.assertEqual(self._rows(core, bf16(5)), 0)

  def test_wrappers_and_stacks_take_their_cores_answer(self):
    lstm = model_lib.make_cell("lstm", H)
    rows = lambda core: fast_cores.adapt(core).independent_rows
    self.assertTrue(rows(cells.DropoutWrapper(lstm, tf.random.Generator.from_seed(0))))
    self.assertTrue(rows(cells.ResidualWrapper(lstm)))
    self.assertTrue(rows(cells.StackedCells([lstm, model_lib.make_cell("gru", H)])))
    wrapped = attention.AttentionWrapper(lstm, attention.Attention("luong", H, H, H))
    self.assertFalse(rows(cells.StackedCells([lstm, wrapped])))
    self.assertFalse(rows(cells.DropoutWrapper(wrapped, tf.random.Generator.from_seed(0))))

  def test_when_units_are_appended(self):
    bf16 = tf.zeros([B, T, I], tf.bfloat16)
    with _gpu(True):
      for units, extra in ((12, 4), (1500, 4), (13, 3), (16, 0)):
        self.assertEqual(self._units(model_lib.make_cell("lstm", units), bf16), extra)
      gru = cells.DropoutWrapper(model_lib.make_cell("gru", 12), tf.random.Generator.from_seed(0))
      self.assertEqual(self._units(gru, bf16), 4)
      self.assertEqual(self._units(cells.ResidualWrapper(model_lib.make_cell("lstm", 12)), bf16),
                       0)  # cannot pad its units
      self.assertEqual(self._units(model_lib.make_cell("lstm", 12), tf.zeros([B, T, I])), 0)
      self.assertEqual(self._units(model_lib.make_cell("lstm", 12), bf16, jit_compile=False), 0)
    with _gpu(False):
      self.assertEqual(self._units(model_lib.make_cell("lstm", 12), bf16), 0)

  @parameterized.parameters("lstm", "gru")
  def test_padded_units_are_zero_and_the_others_unchanged(self, kind):
    """float64, exact: inside `padded_units(3)` a fast cell's precompute and steps give the
    unpadded outputs and state in the first H units and zeros in the 3 appended."""
    units, extra = 5, 3
    rng = np.random.default_rng(2)
    reference = model_lib.make_cell(kind, units, dtype=tf.float64, seed=3)
    cell = fast_cores.adapt(reference)
    inputs = tf.constant(rng.normal(size=(B, T, I)))
    reference.build(I)
    for v in reference.trainable_variables:  # nonzero biases too
      v.assign(rng.normal(0, 0.5, v.shape))
    state = tf.nest.map_structure(lambda x: tf.constant(rng.normal(size=x.shape)),
                                  reference.initial_state(B))

    def run():
      precomputed = cell.precompute(inputs)
      s, outputs = state, []
      if cell.output_size != units:
        s = tf.nest.map_structure(lambda x: tf.pad(x, [[0, 0], [0, extra]]), s)
      for t in range(T):
        output, s = cell.step(precomputed[:, t], s)
        outputs.append(output)
      return tf.stack(outputs, 1), s

    plain_outputs, plain_state = run()
    with cell.padded_units(extra):
      self.assertEqual(cell.output_size, units + extra)
      padded_outputs, padded_state = run()
    self.assertEqual(cell.output_size, units)  # restored on leaving
    self.assertEqual(padded_outputs.shape, (B, T, units + extra))
    self.assertAllClose(padded_outputs[..., :units], plain_outputs, atol=1e-12, rtol=0)
    self.assertAllEqual(padded_outputs[..., units:], np.zeros([B, T, extra]))
    for padded, plain in zip(tf.nest.flatten(padded_state), tf.nest.flatten(plain_state)):
      self.assertAllClose(padded[:, :units], plain, atol=1e-12, rtol=0)
      self.assertAllEqual(padded[:, units:], np.zeros([B, extra]))

  @parameterized.product(kind=["lstm", "gru"], lengths=[None, LENGTHS],
                         rows_units=[(B, H), (8, 12), (B, 12)])
  def test_aligned_unroll_matches_the_unaligned_one(self, kind, lengths, rows_units):
    """Outputs, final states and gradients (inputs and weights) are those of the unaligned
    unroll, with rows appended (B = 5), units (H = 12), or both; the traced step pads."""
    rows, units = rows_units
    lengths = None if lengths is None else (lengths + [2, 4, 5])[:rows]
    rng = np.random.default_rng(0)
    inputs = tf.constant(rng.uniform(-1, 1, (rows, T, I)), tf.bfloat16)
    weights = tf.constant(rng.normal(size=(rows, T, units)), tf.float32)

    def run(gpu):
      cores = _stack(kind, units)  # the same seeds each run: the same weights and masks
      states = tuple(core.initial_state(rows, tf.bfloat16) for core in cores)

      @tf.function(jit_compile=True, autograph=False)
      def forward_backward(x):
        with tf.GradientTape() as tape:
          tape.watch(x)
          outputs, finals = unroll.layerwise_unroll(cores, x, states, lengths,
                                                    unroll=fast_unroll.static_unroll)
          loss = tf.reduce_sum(tf.cast(outputs, tf.float32) * weights)
          for final in tf.nest.flatten(finals):
            loss += tf.reduce_sum(tf.cast(final, tf.float32)) * 0.5
        variables = [v for core in cores for v in core.trainable_variables]
        return (outputs, finals) + tuple(tape.gradient(loss, [x] + variables))

      with _gpu(gpu):
        concrete = forward_backward.get_concrete_function(inputs)
        return len(_pad_ops(concrete)), forward_backward(inputs)

    aligned_pads, aligned = run(gpu=True)
    plain_pads, plain = run(gpu=False)
    self.assertGreater(aligned_pads, plain_pads)
    for a, p in zip(tf.nest.flatten(aligned), tf.nest.flatten(plain)):
      self.assertEqual(a.shape, p.shape)
      self.assertAllClose(tf.cast(a, tf.float32), tf.cast(p, tf.float32), atol=1e-2, rtol=1e-2)


@pytest.mark.slow
class AlignedTrainStepTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(("lstm", 5, 16), ("gru", 5, 16), ("lstm", 8, 12), ("gru", 5, 12),
                            ("lstm", 5, 12, "bi", "luong"))
  def test_bf16_xla_step_with_aligned_matmuls_matches(self, cell, rows, hidden, encoder="uni",
                                                      attention_score="none"):
    """The compiled bf16 train step (dropout on): the same loss, norm and update with the
    unroll's rows and units aligned to 8 as without (with attention: the bidirectional
    encoder aligned, the attention decoder not)."""
    rng = np.random.default_rng(1)
    examples = [(list(rng.integers(4, 40, rng.integers(1, 6))),
                 list(rng.integers(4, 40, rng.integers(1, 6)))) for _ in range(rows)]
    batch = batches.pad_batch(examples, 5)
    results = []
    for gpu in (True, False):
      config = config_lib.ModelConfig(cell=cell, num_layers=2, hidden_size=hidden,
                                      embedding_size=8, keep_prob=0.8, encoder=encoder,
                                      attention=attention_score)
      model = model_lib.Seq2Seq(config, 40, seed=5, compute_dtype=tf.bfloat16)
      model.build()
      answers = []

      def recording(alignment):
        def answer(core, inputs):
          answers.append(alignment(core, inputs))
          return answers[-1]
        return answer

      with _gpu(gpu), \
           mock.patch.object(fast_unroll, "alignment_rows",
                             recording(fast_unroll.alignment_rows)), \
           mock.patch.object(fast_unroll, "alignment_units",
                             recording(fast_unroll.alignment_units)):
        results.append(helpers.one_sgd_step(model, batch, jit_compile=True,
                                            batch_size=rows))  # static, as training has it
      # Rows (B = 5) or units (H = 12) were appended where the GPU is pretended, never else.
      self.assertEqual(any(answers), gpu)
    (loss, norm, deltas), (plain_loss, plain_norm, plain_deltas) = results
    self.assertTrue(np.isfinite([loss, norm]).all())
    self.assertAllClose(loss, plain_loss, rtol=1e-3)
    self.assertAllClose(norm, plain_norm, rtol=1e-2)
    for name, delta in deltas.items():
      scale = np.abs(plain_deltas[name]).max() + 1e-6
      self.assertLess(np.abs(delta - plain_deltas[name]).max() / scale, 2e-2, msg=name)


if __name__ == "__main__":
  tf.test.main()
