"""Every variant of the train step computes what the plain float32 step computes."""
import os
import subprocess
import sys
import textwrap

import pytest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from ops import losses
from seq2seq import config as config_lib
from seq2seq.data import batches as batches_lib
from seq2seq.models import encoder_decoder as model_lib
from seq2seq.step import optimizers
from seq2seq.step import train_step as train_step_lib
from tests import helpers

VOCAB = 40


def _batch(size=6, length=5, seed=0):
  rng = np.random.default_rng(seed)
  examples = [(list(rng.integers(4, VOCAB, rng.integers(1, length + 1))),
               list(rng.integers(4, VOCAB, rng.integers(1, length + 1)))) for _ in range(size)]
  return batches_lib.pad_batch(examples, length)


def _model(share=True, compute_dtype=None, keep_prob=1.0, cell="lstm", embedding_device="cpu"):
  config = config_lib.ModelConfig(cell=cell, num_layers=2, hidden_size=16, embedding_size=8,
                                  keep_prob=keep_prob, share_embeddings=share,
                                  embedding_device=embedding_device)
  model = model_lib.Seq2Seq(config, VOCAB, seed=5, compute_dtype=compute_dtype)
  model.build()
  return model


def _traced_sgd_step(config, batch, batch_size=0):
  """The train step of a fresh `config` model (SGD, clipping at 5), traced by running `batch`."""
  model = model_lib.Seq2Seq(config, VOCAB, seed=5)
  model.build()
  optimizer = optimizers.SGD(1.0)
  optimizer.build(model.trainable_variables)
  step = train_step_lib.make_train_step(model, optimizer, 5.0, batch_size=batch_size)
  step(batch)
  return step


def _reference_gradients(model, batch, max_grad_norm):
  """Loss, norm and clipped dense gradients from a plain GradientTape over the whole model."""
  with tf.GradientTape() as tape:
    logits = model(batch.source, batch.source_length, batch.decoder_input, training=False)
    loss = losses.sequence_loss(logits, batch.target, batch.target_weight)
  variables = model.trainable_variables
  grads = [tf.convert_to_tensor(g) for g in tape.gradient(loss, variables)]
  clipped, norm = tf.clip_by_global_norm(grads, max_grad_norm)
  return float(loss), float(norm), {v.name: g.numpy() for v, g in zip(variables, clipped)}


class TrainStepTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters((True, 5.0, "lstm"), (False, 0.05, "lstm"), (True, 0.05, "gru"),
                            (False, 5.0, "gru"))
  def test_plain_step_matches_a_plain_tape(self, share, max_grad_norm, cell):
    batch = _batch()
    expected = _reference_gradients(_model(share, cell=cell), batch, max_grad_norm)
    actual = helpers.one_sgd_step(_model(share, cell=cell), batch, False, max_grad_norm)
    self.assertAllClose(expected[0], actual[0], rtol=1e-6)
    self.assertAllClose(expected[1], actual[1], rtol=1e-5)
    for name, grad in expected[2].items():
      self.assertAllClose(grad, actual[2][name], atol=1e-6, rtol=1e-4, msg=name)

  @parameterized.parameters(True, False)
  def test_xla_step_matches_plain_step(self, share):
    batch = _batch(seed=1)
    plain = helpers.one_sgd_step(_model(share), batch, jit_compile=False, max_grad_norm=0.05)
    compiled = helpers.one_sgd_step(_model(share), batch, jit_compile=True, max_grad_norm=0.05)
    self.assertAllClose(plain[0], compiled[0], rtol=1e-5)
    self.assertAllClose(plain[1], compiled[1], rtol=1e-5)
    for name, delta in plain[2].items():
      self.assertAllClose(delta, compiled[2][name], atol=1e-6, rtol=1e-4, msg=name)

  @parameterized.parameters(False, True)
  def test_bf16_step_is_close_to_fp32(self, jit_compile):
    batch = _batch(seed=2)
    full = helpers.one_sgd_step(_model(), batch, jit_compile=False, max_grad_norm=0)
    mixed = helpers.one_sgd_step(_model(compute_dtype=tf.bfloat16), batch,
                                 jit_compile=jit_compile, max_grad_norm=0)
    self.assertAllClose(full[0], mixed[0], rtol=2e-2)
    self.assertAllClose(full[1], mixed[1], rtol=5e-2)
    for name, delta in full[2].items():
      self.assertEqual(mixed[2][name].dtype, np.float32)  # master weights stay float32
      scale = np.abs(delta).max() + 1e-6
      self.assertLess(np.abs(delta - mixed[2][name]).max() / scale, 0.1, msg=name)

  def test_dropout_under_xla_is_active_and_reproducible(self):
    # XLA draws its own random stream (its Philox differs from the TF kernels'), so masks
    # are compared XLA with XLA: the same seed gives the same step; dropout changes it.
    batch = _batch(seed=3)
    first = helpers.one_sgd_step(_model(keep_prob=0.5), batch, jit_compile=True)
    second = helpers.one_sgd_step(_model(keep_prob=0.5), batch, jit_compile=True)
    no_dropout = helpers.one_sgd_step(_model(keep_prob=1.0), batch, jit_compile=True)
    for name, delta in first[2].items():
      self.assertAllEqual(delta, second[2][name], msg=name)
    self.assertNotAllClose(first[2][sorted(first[2])[-1]], no_dropout[2][sorted(first[2])[-1]])

  def test_one_trace_per_bucket_whatever_the_batch_size(self):
    traces = []
    model = _model()
    optimizer = optimizers.SGD(0.1)
    optimizer.build(model.trainable_variables)
    inner = train_step_lib.make_train_step(model, optimizer, 5.0)
    counting = train_step_lib.BucketedFunction(lambda b: (traces.append(b.source.shape), inner._fn(b))[1])
    for size, length in ((6, 5), (3, 5), (6, 7), (2, 5), (4, 7)):
      counting(_batch(size, length))
    self.assertLen(traces, 2)
    self.assertEqual(counting.traced_lengths, (5, 7))

  @parameterized.parameters(("uni", "none", True), ("bi", "luong", True), ("bi", "luong", False))
  def test_rows_padded_to_the_batch_size_change_nothing(self, encoder, attention, jit_compile):
    """A small last batch padded to the batch size (one static shape a bucket) gives the same
    loss, norm and update as the small batch itself."""
    def model():
      config = config_lib.ModelConfig(num_layers=1, hidden_size=16, embedding_size=8,
                                      encoder=encoder, attention=attention)
      built = model_lib.Seq2Seq(config, VOCAB, seed=5)
      built.build()
      return built

    batch = _batch(size=3, seed=6)
    padded = train_step_lib.pad_rows(batch, 8)
    self.assertEqual(padded.source.shape, (8, 5))
    self.assertAllEqual(padded.source_length[3:], [1] * 5)
    self.assertAllEqual(padded.target_weight[3:], np.zeros([5, 6]))
    self.assertIs(train_step_lib.pad_rows(batch, 3), batch)

    results = []
    for batch_size in (0, 8):
      m = model()
      optimizer = optimizers.SGD(1.0)
      optimizer.build(m.trainable_variables)
      step = train_step_lib.make_train_step(m, optimizer, 0.05, jit_compile=jit_compile,
                                            batch_size=batch_size)
      before = {v.name: v.numpy() for v in m.trainable_variables}
      loss, norm, finite = step(batch)
      self.assertTrue(bool(finite))
      results.append((float(loss), float(norm),
                      {v.name: before[v.name] - v.numpy() for v in m.trainable_variables}))
    (loss, norm, deltas), (padded_loss, padded_norm, padded_deltas) = results
    self.assertAllClose(loss, padded_loss, rtol=1e-5)
    self.assertAllClose(norm, padded_norm, rtol=1e-5)
    for name, delta in deltas.items():
      self.assertAllClose(delta, padded_deltas[name], atol=1e-6, rtol=1e-4, msg=name)

  def test_static_batch_size_drops_the_broadcast_shape_arithmetic(self):
    """Traced for a fixed number of rows, the gradient of the attention step needs no runtime
    shape arithmetic for broadcasting ops, which an unfused GPU step pays op by op."""
    def non_constant_ops(batch_size):
      config = config_lib.ModelConfig(num_layers=1, hidden_size=16, embedding_size=8,
                                      encoder="bi", attention="luong", keep_prob=0.7)
      step = _traced_sgd_step(config, _batch(size=3, seed=7), batch_size=batch_size)
      graph = step.traced(5).get_concrete_function().graph
      types = []
      def walk(g):
        types.extend(op.type for op in g.get_operations())
        for f in g._functions.values():  # pylint: disable=protected-access
          walk(f.graph)
      walk(graph)
      return len([t for t in types if t != "Const"]), types.count("BroadcastGradientArgs")

    free, free_broadcasts = non_constant_ops(0)
    fixed, fixed_broadcasts = non_constant_ops(8)
    self.assertGreater(free_broadcasts, 50)
    self.assertLess(fixed_broadcasts, free_broadcasts / 10)
    self.assertLess(fixed, 0.75 * free)

  def test_dropout_masks_drawn_once_per_batch_not_per_step(self):
    """The attention step (static unroll) draws each dropout mask once for all time steps:
    as many generator reads for a 6-token bucket as for a 3-token one."""
    def generator_reads(length):
      config = config_lib.ModelConfig(num_layers=2, hidden_size=8, embedding_size=6,
                                      encoder="bi", attention="luong", keep_prob=0.7)
      step = _traced_sgd_step(config, _batch(size=3, length=length, seed=7))
      graph_def = step.traced(length).get_concrete_function().graph.as_graph_def()
      ops = [node.op for node in graph_def.node]
      ops += [node.op for f in graph_def.library.function for node in f.node_def]
      return ops.count("RngReadAndSkip")

    # Encoder: 2 layers x 2 directions of output masks, and the two input masks; decoder: the
    # first layer's input mask, 2 output masks; the attentional vectors' mask.
    self.assertEqual(generator_reads(3), 4 + 2 + 3 + 1)
    self.assertEqual(generator_reads(6), 4 + 2 + 3 + 1)

  def test_a_batch_larger_than_the_step_was_built_for_is_refused(self):
    model = _model()
    optimizer = optimizers.SGD(1.0)
    optimizer.build(model.trainable_variables)
    step = train_step_lib.make_train_step(model, optimizer, 5.0, batch_size=4)
    with self.assertRaisesRegex(ValueError, "6 rows, more than the 4"):
      step(_batch(size=6))

  @parameterized.parameters(True, False)
  def test_whole_step_compiled_with_the_tables_on_the_accelerator(self, share):
    """--embedding_device=gpu with XLA: the lookups and the lazy Adam row updates are inside
    the one compiled function (no tf.unique, which needs the host). Three Adam steps land
    where the plain step's land: variables, moments (untouched rows' included), norms."""
    batches = [_batch(seed=seed) for seed in (5, 6, 7)]
    runs = {}
    for embedding_device, jit_compile in (("cpu", False), ("gpu", True)):
      model = _model(share, embedding_device=embedding_device)
      optimizer = optimizers.Adam(0.01)
      optimizer.build(model.trainable_variables)
      step = train_step_lib.make_train_step(model, optimizer, 0.5, jit_compile=jit_compile)
      norms = [float(step(b)[1]) for b in batches]
      graph = step.traced(5).get_concrete_function().graph.as_graph_def()
      op_types = {n.op for n in graph.node} | {n.op for f in graph.library.function
                                                for n in f.node_def}
      runs[embedding_device] = (norms, [v.numpy() for v in model.trainable_variables],
                                [s.numpy() for s in optimizer.slots["m"] + optimizer.slots["v"]],
                                int(optimizer.iterations.numpy()), op_types)
    plain, whole = runs["cpu"], runs["gpu"]
    self.assertIn("Unique", plain[4])  # the host-side row update (the check can fail)
    self.assertNotIn("Unique", whole[4])
    self.assertAllClose(plain[0], whole[0], rtol=1e-5)
    for expected, actual in zip(plain[1] + plain[2], whole[1] + whole[2]):
      self.assertAllClose(expected, actual, rtol=1e-4, atol=1e-6)
    self.assertEqual(plain[3], whole[3])
    self.assertEqual(whole[3], 3)

  @parameterized.parameters(("cpu", False), ("gpu", True))
  def test_a_batch_with_int64_ids_on_the_device_trains_alike(self, embedding_device,
                                                              jit_compile):
    """`device_batch` (ids and lengths as int64, on the step's device) gets its own trace and
    the losses, norms and parameters of the int32 NumPy batch. Compiled, the ids reach the
    XLA program as int64 (a GPU keeps int32 in host memory): no cast outside it."""
    batches = [_batch(seed=seed) for seed in (1, 2)]
    runs = []
    for placed in (False, True):
      model = _model(embedding_device=embedding_device)
      optimizer = optimizers.Adam(0.01)
      optimizer.build(model.trainable_variables)
      step = train_step_lib.make_train_step(model, optimizer, 0.5, jit_compile=jit_compile)
      given = [train_step_lib.device_batch(b, "/CPU:0") if placed else b for b in batches]
      runs.append(([step(b)[:2] for b in given], [v.numpy() for v in model.trainable_variables]))
    ids, lengths, weights = given[0].source, given[0].source_length, given[0].target_weight
    self.assertEqual((ids.dtype, lengths.dtype, weights.dtype),
                     (tf.int64, tf.int64, tf.float32))
    self.assertAllEqual(ids, batches[0].source)
    self.assertEqual(step.traced_lengths, (5,))
    outer = step.traced(5, tf.int64).get_concrete_function().graph.as_graph_def()
    if jit_compile:
      self.assertNotIn("Cast", {node.op for node in outer.node})
    with self.assertRaises(KeyError):
      step.traced(5, tf.int32)
    (plain_outputs, plain_variables), (placed_outputs, placed_variables) = runs
    self.assertAllClose(plain_outputs, placed_outputs, rtol=1e-6)
    for expected, actual in zip(plain_variables, placed_variables):
      self.assertAllClose(expected, actual, rtol=1e-6, atol=1e-7)

  def test_untouched_embedding_rows_do_not_move(self):
    model = _model()
    batch = _batch(size=2, length=3, seed=4)
    _, _, deltas = helpers.one_sgd_step(model, batch, jit_compile=False)
    table_delta = [d for n, d in deltas.items() if "embedding" in n][0]
    used = set(batch.source.ravel()) | set(batch.decoder_input.ravel())
    for row in range(VOCAB):
      if row not in used:
        self.assertAllEqual(table_delta[row], np.zeros(8))


@pytest.mark.slow
class DynamicUnrollTest(tf.test.TestCase, parameterized.TestCase):
  """The tf.while_loop unroll computes what the Python-loop unroll computes."""

  @parameterized.product(cell=["lstm", "gru"], steps_per_iteration=[1, 2, 3, 4, 7],
                         with_lengths=[True, False])
  def test_same_outputs_and_final_state_with_masking(self, cell, steps_per_iteration,
                                                     with_lengths):
    from seq2seq.nn import unroll  # pylint: disable=import-outside-toplevel
    core = model_lib.make_cell(cell, 6, dtype=tf.float64, seed=1)
    rng = np.random.default_rng(0)
    inputs = tf.constant(rng.normal(size=(4, 5, 3)))
    lengths = tf.constant([5, 2, 0, 3]) if with_lengths else None
    state = core.initial_state(4)
    static = unroll.static_unroll(core, inputs, state, lengths)
    dynamic = tf.function(lambda x: unroll.dynamic_unroll(
        core, x, state, lengths, steps_per_iteration=steps_per_iteration))(inputs)
    self.assertAllClose(static[0], dynamic[0])
    for a, b in zip(tf.nest.flatten(static[1]), tf.nest.flatten(dynamic[1])):
      self.assertAllClose(a, b)

  @parameterized.product(steps_per_iteration=[1, 2, 3], with_lengths=[True, False])
  def test_a_number_of_steps_unknown_when_tracing(self, steps_per_iteration, with_lengths):
    """Traced once for any T, the loop pads each T it is run for as a static T is padded."""
    from seq2seq.nn import unroll  # pylint: disable=import-outside-toplevel
    core = model_lib.make_cell("lstm", 6, dtype=tf.float64, seed=1)
    state = core.initial_state(4)
    lengths = tf.constant([5, 2, 0, 3]) if with_lengths else None
    dynamic = tf.function(
        lambda x: unroll.dynamic_unroll(core, x, state, lengths, steps_per_iteration),
        input_signature=[tf.TensorSpec([4, None, 3], tf.float64)])
    rng = np.random.default_rng(0)
    for steps in (5, 6, 7):
      inputs = tf.constant(rng.normal(size=(4, steps, 3)))
      static = unroll.static_unroll(core, inputs, state, lengths)
      outputs, final_state = dynamic(inputs)
      self.assertEqual(outputs.shape, (4, steps, 6))
      self.assertAllClose(static[0], outputs)
      for a, b in zip(tf.nest.flatten(static[1]), tf.nest.flatten(final_state)):
        self.assertAllClose(a, b)
    self.assertEqual(dynamic.experimental_get_tracing_count(), 1)

  def test_compiled_dynamic_unroll_step_traced_once_for_every_length(self):
    """The XLA step over the dynamic unroll traces its Python once for all buckets (XLA
    compiles each length), and trains as the step traced for each length does."""
    def train(any_length):
      config = config_lib.ModelConfig(num_layers=2, hidden_size=8, embedding_size=6,
                                      keep_prob=0.7, unroll="dynamic", unroll_steps=2,
                                      encoder="bi", attention="luong")
      model = model_lib.Seq2Seq(config, VOCAB, seed=5)
      model.build()
      optimizer = optimizers.make_optimizer(config_lib.TrainConfig(learning_rate=1e-2),
                                            model.trainable_variables)
      step = train_step_lib.make_train_step(model, optimizer, 5.0, jit_compile=True,
                                            batch_size=6)
      if not any_length:  # the step as it was traced before: once per length
        step._any_length = False  # pylint: disable=protected-access
      outputs = [step(_batch(size=6, length=length, seed=seed))
                 for seed, length in enumerate((5, 4, 5, 3))]
      return step, outputs, model.trainable_variables

    step, outputs, variables = train(any_length=True)  # as make_train_step chooses
    self.assertEqual(step.traced_lengths, (3, 4, 5))
    self.assertIs(step.traced(3), step.traced(5))
    self.assertEqual(step.traced(5).experimental_get_tracing_count(), 1)
    _, per_length_outputs, per_length_variables = train(any_length=False)
    # The two traces are different XLA programs, so float32 sums may round differently;
    # over 4 Adam steps at lr 1e-2 that stays near 1e-6, while a wrong step is off by ~1e-2.
    self.assertAllClose(per_length_outputs, outputs, rtol=1e-5)
    for expected, actual in zip(per_length_variables, variables):
      self.assertAllClose(expected, actual, rtol=1e-5, atol=1e-6, msg=expected.name)

  @parameterized.product(jit_compile=[False, True],
                         encoder_attention=[("uni", "none"), ("bi", "luong")])
  def test_step_with_dynamic_unroll_matches_static(self, jit_compile, encoder_attention):
    batch = _batch(seed=6)
    encoder, attention = encoder_attention

    def model(unroll):
      config = config_lib.ModelConfig(num_layers=2, hidden_size=16, embedding_size=8,
                                      keep_prob=1.0, unroll=unroll, unroll_steps=2,
                                      encoder=encoder, attention=attention)
      built = model_lib.Seq2Seq(config, VOCAB, seed=5)
      built.build()
      return built

    static = helpers.one_sgd_step(model("static"), batch, jit_compile=False)
    dynamic = helpers.one_sgd_step(model("dynamic"), batch, jit_compile=jit_compile)
    self.assertAllClose(static[0], dynamic[0], rtol=1e-5)
    for name, delta in static[2].items():
      self.assertAllClose(delta, dynamic[2][name], atol=1e-6, rtol=1e-4, msg=name)

  @parameterized.parameters(("uni", "none"), ("bi", "luong"))
  def test_dynamic_unroll_draws_the_static_unroll_dropout_masks(self, encoder, attention):
    """Both unrolls draw each layer's masks for all steps before the loop, in one order, so
    with dropout too (k = 2 pads the 5 source steps to 6) the plain steps agree."""
    def model(unroll, keep_prob=0.6):
      config = config_lib.ModelConfig(num_layers=2, hidden_size=16, embedding_size=8,
                                      keep_prob=keep_prob, unroll=unroll, unroll_steps=2,
                                      encoder=encoder, attention=attention)
      built = model_lib.Seq2Seq(config, VOCAB, seed=5)
      built.build()
      return built

    batch = _batch(seed=8)
    static = helpers.one_sgd_step(model("static"), batch, jit_compile=False)
    dynamic = helpers.one_sgd_step(model("dynamic"), batch, jit_compile=False)
    without = helpers.one_sgd_step(model("static", keep_prob=1.0), batch, jit_compile=False)
    self.assertAllClose(static[0], dynamic[0], rtol=1e-5)
    self.assertNotAllClose(static[0], without[0])
    for name, delta in static[2].items():
      self.assertAllClose(delta, dynamic[2][name], atol=1e-6, rtol=1e-4, msg=name)

  def test_xla_bf16_dynamic_attention_step_with_dropout_is_reproducible(self):
    def step_result():
      config = config_lib.ModelConfig(num_layers=2, hidden_size=8, embedding_size=6,
                                      keep_prob=0.6, unroll="dynamic", unroll_steps=2,
                                      encoder="bi", attention="luong")
      m = model_lib.Seq2Seq(config, VOCAB, seed=5, compute_dtype=tf.bfloat16)
      m.build()
      return helpers.one_sgd_step(m, _batch(seed=9), jit_compile=True)

    first, second = step_result(), step_result()
    self.assertTrue(np.isfinite(first[0]))
    self.assertEqual(first[0], second[0])
    for name, delta in first[2].items():
      self.assertAllEqual(delta, second[2][name], msg=name)

  def test_xla_step_with_steps_left_over_does_not_hang(self):
    # Two or more of the T % k steps used to run after the while loop, and tracing the XLA
    # step then hung forever (a graph mutex never released). A subprocess with a timeout turns
    # a hang into a failure. Source T = 3 < k = 4: no full iteration, three steps left over.
    script = textwrap.dedent("""
        import numpy as np
        from seq2seq import config
        from seq2seq.data import batches as batches_lib
        from seq2seq.models import encoder_decoder
        from seq2seq.step import optimizers
        from seq2seq.step import train_step
        rng = np.random.default_rng(0)
        batch = batches_lib.pad_batch([(list(rng.integers(4, 40, 3)), list(rng.integers(4, 40, 3)))
                                for _ in range(4)], 3)
        m = encoder_decoder.Seq2Seq(config.ModelConfig(num_layers=1, hidden_size=4, embedding_size=4,
                                             unroll="dynamic", unroll_steps=4), 40, seed=1)
        m.build()
        opt = optimizers.SGD(0.1)
        opt.build(m.trainable_variables)
        step = train_step.make_train_step(m, opt, 5.0, jit_compile=True)
        loss, _, finite = step(batch)
        assert bool(finite) and np.isfinite(float(loss)), loss
        print("OK")
        """)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
      result = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True,
                              text=True, timeout=120)
    except subprocess.TimeoutExpired:
      self.fail("tracing the XLA train step with --unroll_steps=4 hung")
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    self.assertIn("OK", result.stdout)


  @parameterized.parameters("lstm", "gru")
  def test_xla_compiles_the_step_once(self, cell):
    """Later calls with the same shapes reuse the compiled step. (The GRU's elementwise half
    as a nested `tf.function`, left out for this reason, made XLA compile the step again at
    every call.) XLA's dump folder gets one module per compilation."""
    script = textwrap.dedent(f"""
        import glob, os, sys
        import numpy as np
        from seq2seq import config
        from seq2seq.data import batches as batches_lib
        from seq2seq.models import encoder_decoder
        from seq2seq.step import optimizers
        from seq2seq.step import train_step
        rng = np.random.default_rng(0)
        batch = batches_lib.pad_batch([(list(rng.integers(4, 40, 3)), list(rng.integers(4, 40, 3)))
                                for _ in range(4)], 3)
        m = encoder_decoder.Seq2Seq(config.ModelConfig(cell="{cell}", num_layers=2, hidden_size=4,
                                             embedding_size=4, keep_prob=0.8), 40, seed=1)
        m.build()
        opt = optimizers.Adam(0.01)
        opt.build(m.trainable_variables)
        step = train_step.make_train_step(m, opt, 5.0, jit_compile=True)
        for _ in range(3):
          float(step(batch)[0])
        dumped = glob.glob(os.path.join(sys.argv[1], "*__dense_*before_optimizations.txt"))
        print(len(dumped))
        """)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    dump = self.get_temp_dir()
    env = dict(os.environ, XLA_FLAGS=f"--xla_dump_to={dump}", TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, "-c", script, dump], cwd=root, capture_output=True,
                            text=True, timeout=600, env=env)
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    self.assertEqual(result.stdout.split()[-1], "1")

if __name__ == "__main__":
  tf.test.main()
