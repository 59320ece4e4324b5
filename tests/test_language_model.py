"""LM mode: windows of running text, state carried across batches, reset at each epoch."""
import numpy as np
import tensorflow as tf

from seq2seq import config as config_lib
from seq2seq import language_model as lm
from seq2seq import optimizers

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
    _, _, last = lm.run_epoch(step, windows, zeros)
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
    step = lm.make_lm_train_step(model, optimizers.SGD(0.1), 5.0)
    loss, norm, final = step(ids, ids, model.initial_state(2))  # ... which is an input
    self.assertTrue(np.isfinite(float(loss)) and np.isfinite(float(norm)))

  def test_loss_drops_on_periodic_text(self):
    """A period-7 text can only be predicted past its first token with the carried state."""
    model = _model(tf.float32, hidden=32)
    text = np.tile([4, 5, 6, 7, 8, 9, 10], 60)
    history = lm.train_lm(model, optimizers.Adam(0.02), text, batch_size=4, num_steps=5, num_epochs=15,
                          log=lambda _: None)
    self.assertLess(history[-1], 0.1)
    self.assertLess(history[-1], history[0] / 10)


if __name__ == "__main__":
  tf.test.main()
