"""LM mode: windows of running text, state carried across batches, reset at each epoch; the
LM step is the engine's (clipping, sparse rows, NaN/Inf gating, XLA, bf16)."""
from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from ops import losses
from seq2seq import config as config_lib
from seq2seq.models import language_model as lm
from seq2seq.step import optimizers
from seq2seq.step import train_step
from seq2seq.train import loop

V = 12


def _model(dtype=tf.float64, hidden=8):
  config = config_lib.ModelConfig(num_layers=2, hidden_size=hidden, embedding_size=6)
  return lm.LanguageModel(config, V, seed=3, dtype=dtype)


class WindowsTest(tf.test.TestCase):

  def test_rows_are_contiguous_and_targets_shifted(self):
    ids = np.arange(50)
    windows = lm.lm_windows(ids, batch_size=3, num_steps=4)
    self.assertLen(windows, (50 // 3 - 1) // 4)  # 16 tokens a row -> 3 windows
    rows = np.concatenate([x for x, _ in windows], axis=1)
    self.assertAllEqual(rows, [np.arange(r * 16, r * 16 + 12) for r in range(3)])
    for x, y in windows:
      self.assertAllEqual(y, x + 1)

  def test_too_short(self):
    with self.assertRaisesRegex(ValueError, "too few for one window"):
      lm.lm_windows(range(10), batch_size=4, num_steps=5)


class StateCarryingTest(tf.test.TestCase):

  def test_carried_state_equals_one_long_unroll(self):
    model = _model()
    ids = np.random.default_rng(0).integers(0, V, (2, 12))
    whole, _ = model(ids, model.initial_state(2))
    state = model.initial_state(2)
    pieces = []
    for start in range(0, 12, 4):
      logits, state = model(ids[:, start:start + 4], state)
      pieces.append(logits)
    self.assertAllClose(tf.concat(pieces, 1), whole, atol=1e-12)
    # Without the carried state the later windows differ.
    fresh, _ = model(ids[:, 4:8], model.initial_state(2))
    self.assertGreater(float(tf.reduce_max(tf.abs(fresh - whole[:, 4:8]))), 1e-6)

  def test_run_epoch_feeds_each_final_state_to_the_next_window(self):
    model = _model()
    windows = lm.lm_windows(np.arange(60) % V, batch_size=2, num_steps=5)
    seen = []

    def step(inputs, targets, state):
      seen.append(state)
      logits, final = model(inputs, state)
      return tf.reduce_mean(logits), final

    zeros = model.initial_state(2)
    _, _, last = loop.run_epoch(step, windows, zeros)
    tf.nest.map_structure(self.assertAllEqual, seen[0], zeros)
    expected = zeros
    for (inputs, _), state in zip(windows, seen):
      tf.nest.map_structure(self.assertAllEqual, state, expected)
      _, expected = model(inputs, expected)
    tf.nest.map_structure(self.assertAllEqual, last, expected)

  def test_gradient_is_truncated_at_the_window(self):
    model = _model()
    ids = np.random.default_rng(1).integers(0, V, (2, 4))
    state = tf.nest.map_structure(tf.Variable, model.initial_state(2))
    with tf.GradientTape() as tape:
      logits, _ = model(ids, state)
      loss = tf.reduce_sum(logits)
    grads = tape.gradient(loss, tf.nest.flatten(state))
    self.assertTrue(all(g is not None for g in grads))  # it reads the carried state ...
    step = train_step.make_lm_train_step(model, optimizers.SGD(0.1), 5.0)
    loss, norm, finite, _ = step(ids, ids, model.initial_state(2))  # ... which is an input
    self.assertTrue(np.isfinite(float(loss)) and np.isfinite(float(norm)) and bool(finite))

  def test_loss_drops_on_periodic_text(self):
    """A period-7 text can only be predicted past its first token with the carried state."""
    model = _model(tf.float32, hidden=32)
    text = np.tile([4, 5, 6, 7, 8, 9, 10], 60)
    history = loop.train_lm(model, optimizers.Adam(0.02), text, batch_size=4, num_steps=5, num_epochs=15,
                          log=lambda _: None)
    self.assertLess(history[-1], 0.1)
    self.assertLess(history[-1], history[0] / 10)


def _lm(compute_dtype=None, keep_prob=1.0, embedding_device="cpu"):
  """A built float32 LM, the same weights whatever the compute dtype (fixed seed)."""
  config = config_lib.ModelConfig(num_layers=2, hidden_size=16, embedding_size=8,
                                  keep_prob=keep_prob, embedding_device=embedding_device)
  model = lm.LanguageModel(config, V, seed=5, compute_dtype=compute_dtype)
  model.build()
  return model


def _window(seed=0, batch=3, steps=4):
  rng = np.random.default_rng(seed)
  ids = rng.integers(0, V, (batch, steps + 1)).astype(np.int32)
  return tf.constant(ids[:, :-1]), tf.constant(ids[:, 1:])


def _start_state(model, batch=3, seed=1):
  """A non-zero carried state, as in the middle of an epoch."""
  rng = np.random.default_rng(seed)
  return tf.nest.map_structure(
      lambda z: tf.constant(rng.uniform(-0.5, 0.5, z.shape), model.dtype),
      model.initial_state(batch))


def _one_sgd_step(model, jit_compile, max_grad_norm=5.0):
  """(loss, grad_norm, final state, {variable name: change after one SGD step of rate 1})."""
  optimizer = optimizers.SGD(1.0)
  step = train_step.make_lm_train_step(model, optimizer, max_grad_norm, jit_compile=jit_compile)
  before = {v.name: v.numpy() for v in model.trainable_variables}
  inputs, targets = _window()
  loss, norm, finite, final = step(inputs, targets, _start_state(model))
  assert bool(finite)
  final = [tf.cast(x, tf.float32).numpy() for x in tf.nest.flatten(final)]
  return (float(loss), float(norm), final,
          {v.name: before[v.name] - v.numpy() for v in model.trainable_variables})


class LMTrainStepTest(tf.test.TestCase, parameterized.TestCase):

  def test_plain_step_matches_a_plain_tape(self):
    """Loss, norm, clipped gradients (SGD at rate 1: the change of each variable, embedding
    rows included) and the final state equal a plain GradientTape over the whole model."""
    model = _lm()
    inputs, targets = _window()
    with tf.GradientTape() as tape:
      logits, final = model(inputs, _start_state(model))
      loss = losses.sequence_loss(logits, targets, tf.ones(targets.shape))
    variables = model.trainable_variables
    grads = [tf.convert_to_tensor(g) for g in tape.gradient(loss, variables)]
    clipped, norm = tf.clip_by_global_norm(grads, 0.05)
    actual = _one_sgd_step(_lm(), jit_compile=False, max_grad_norm=0.05)
    self.assertAllClose(float(loss), actual[0], rtol=1e-6)
    self.assertAllClose(float(norm), actual[1], rtol=1e-5)
    self.assertAllClose([x.numpy() for x in tf.nest.flatten(final)], actual[2], atol=1e-6)
    for v, g in zip(variables, clipped):
      self.assertAllClose(g, actual[3][v.name], atol=1e-6, rtol=1e-4, msg=v.name)

  @parameterized.parameters((True, None, "cpu"), (False, tf.bfloat16, "cpu"),
                            (True, tf.bfloat16, "cpu"), (True, None, "gpu"),
                            (True, tf.bfloat16, "gpu"))
  def test_xla_and_bf16_steps_match_the_plain_fp32_step(self, jit_compile, compute_dtype,
                                                        embedding_device):
    # "gpu" (the table not pinned to the host) with XLA: the whole step is one compiled
    # function, the embedding rows updated inside it.
    full = _one_sgd_step(_lm(), jit_compile=False, max_grad_norm=0)
    other = _one_sgd_step(_lm(compute_dtype, embedding_device=embedding_device),
                          jit_compile=jit_compile, max_grad_norm=0)
    exact = compute_dtype is None
    self.assertAllClose(full[0], other[0], rtol=1e-5 if exact else 2e-2)
    self.assertAllClose(full[1], other[1], rtol=1e-5 if exact else 5e-2)
    self.assertAllClose(full[2], other[2], atol=1e-5 if exact else 3e-2)
    for name, delta in full[3].items():
      self.assertEqual(other[3][name].dtype, np.float32, msg=name)  # float32 master weights
      scale = np.abs(delta).max() + 1e-6
      self.assertLess(np.abs(delta - other[3][name]).max() / scale, 1e-4 if exact else 0.1,
                      msg=name)

  def test_non_finite_step_changes_nothing_and_resets_the_carried_state(self):
    model = _lm()
    optimizer = optimizers.Adam(0.1)
    carried = lm.CarriedState(model, 3)
    carried.assign(_start_state(model))
    step = train_step.make_carried_step(train_step.make_lm_train_step(model, optimizer, 5.0), carried)
    model.cells[0].bias.assign(tf.fill(model.cells[0].bias.shape, np.nan))  # NaN state, loss
    before = [v.numpy() for v in model.trainable_variables]
    slots = [v.numpy() for v in tf.nest.flatten(optimizer.slots)]
    loss, _, finite = step(*_window())
    self.assertFalse(bool(finite))
    self.assertTrue(np.isnan(float(loss)))
    for old, v in zip(before, model.trainable_variables):
      self.assertAllEqual(old, v.numpy())
    for old, v in zip(slots, tf.nest.flatten(optimizer.slots)):
      self.assertAllEqual(old, v.numpy())
    self.assertEqual(int(optimizer.iterations.numpy()), 0)
    for v in carried.values:  # the NaN final state is not carried on
      self.assertAllEqual(v, tf.zeros_like(v))

  def test_carried_step_carries_the_final_state(self):
    model = _lm()
    carried = lm.CarriedState(model, 3)
    step = train_step.make_lm_train_step(model, optimizers.SGD(0.0), 5.0)
    carrying = train_step.make_carried_step(step, carried)
    inputs, targets = _window()
    _, _, _, expected = step(inputs, targets, model.initial_state(3))
    carrying(inputs, targets)
    self.assertAllClose([x.numpy() for x in tf.nest.flatten(expected)],
                        [v.numpy() for v in carried.values])
    carried.reset()
    self.assertAllEqual(carried.values[0], tf.zeros_like(carried.values[0]))


if __name__ == "__main__":
  tf.test.main()
