"""Sampled softmax (--num_sampled): the loss against NumPy, PAD masking, a toy task, the flag."""
import math
import os

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from ops import losses
from seq2seq import config as config_lib
from seq2seq.data import batches as batches_lib
from seq2seq.models import encoder_decoder as model_lib
from seq2seq.step import optimizers
from seq2seq.step import train_step as train_step_lib
from seq2seq.train import loop
from tests import helpers
from tests import test_cli


# --- NumPy float64 references ---

def np_log_uniform_probability(ids, vocab_size):
  ids = np.asarray(ids, np.float64)
  return np.log((ids + 2.0) / (ids + 1.0)) / np.log(vocab_size + 1.0)


def np_sampled_softmax(inputs, labels, kernel, bias, sampled, log_q_true, log_q_sampled):
  """Row by row: -o_y + log(exp(o_y) + sum_j exp(o_j)), accidental hits left out."""
  result = []
  for h, y, log_q in zip(inputs, labels, log_q_true):
    true_logit = h @ kernel[:, y] + bias[y] - log_q
    others = [h @ kernel[:, s] + bias[s] - q for s, q in zip(sampled, log_q_sampled) if s != y]
    scores = np.array([true_logit] + others)
    top = scores.max()
    result.append(top + np.log(np.exp(scores - top).sum()) - true_logit)
  return np.array(result)


def np_full_softmax(inputs, labels, kernel, bias):
  logits = inputs @ kernel + bias
  top = logits.max(axis=1, keepdims=True)
  log_z = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
  return log_z - logits[np.arange(len(labels)), labels]


def _problem(seed=0, n=7, h=5, v=12):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(n, h)), rng.integers(0, v, n), rng.normal(size=(h, v)),
          rng.normal(size=v))


class SampledSoftmaxCrossEntropyTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters((tf.float64, False, 1e-10), (tf.float32, True, 1e-5))
  def test_matches_numpy_given_the_candidates(self, dtype, in_function, rtol):
    inputs, labels, kernel, bias = _problem()
    # Duplicates (3 twice) and accidental hits (labels drawn from the same 12 ids).
    sampled = np.array([0, 3, 3, 1, labels[0], labels[1], 11, 6])
    log_q = lambda ids: np.log(len(sampled) * np_log_uniform_probability(ids, 12))
    fn = losses.sampled_softmax_cross_entropy
    if in_function:
      fn = tf.function(fn)
    actual = fn(tf.constant(inputs, dtype), tf.constant(labels), tf.constant(kernel, dtype),
                tf.constant(bias, dtype), tf.constant(sampled), tf.constant(log_q(labels)),
                tf.constant(log_q(sampled)))
    expected = np_sampled_softmax(inputs, labels, kernel, bias, sampled, log_q(labels),
                                  log_q(sampled))
    self.assertEqual(actual.dtype, dtype)
    self.assertAllClose(expected, actual, rtol=rtol, atol=rtol)

  def test_every_class_once_without_correction_is_the_full_softmax(self):
    # With each class sampled once and Q = 1, the label's hit is removed and the label
    # scored once: the sum runs over exactly the V classes, so the loss is exact.
    inputs, labels, kernel, bias = _problem(seed=1)
    actual = losses.sampled_softmax_cross_entropy(
        tf.constant(inputs), tf.constant(labels), tf.constant(kernel), tf.constant(bias),
        tf.range(12), tf.zeros([7], tf.float64), tf.zeros([12], tf.float64))
    self.assertAllClose(np_full_softmax(inputs, labels, kernel, bias), actual, rtol=1e-10)

  def test_gradient_reaches_only_the_scored_columns(self):
    inputs, labels, kernel, bias = _problem(seed=2, v=30)
    kernel = tf.Variable(kernel)
    sampled = tf.constant([0, 1, 5, 5])
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(losses.sampled_softmax_cross_entropy(
          tf.constant(inputs), tf.constant(labels), kernel, tf.constant(bias), sampled,
          tf.zeros([7], tf.float64), tf.zeros([4], tf.float64)))
    grad = tf.convert_to_tensor(tape.gradient(loss, kernel)).numpy()
    scored = set(labels) | {0, 1, 5}
    for column in range(30):
      self.assertEqual(bool(np.any(grad[:, column])), column in scored, msg=column)

  def test_log_uniform_sampler(self):
    vocab, draws = 200, 40000
    seed = tf.constant([4, 9], tf.int64)
    ids = losses.log_uniform_sample(draws, vocab, seed).numpy()
    self.assertAllEqual(ids, losses.log_uniform_sample(draws, vocab, seed))  # deterministic
    self.assertNotAllEqual(ids[:50], losses.log_uniform_sample(50, vocab, seed + 1))
    self.assertBetween(ids.min(), 0, vocab - 1)
    self.assertBetween(ids.max(), 0, vocab - 1)
    # Frequencies against P(k), over id ranges (each holding thousands of draws).
    probability = np_log_uniform_probability(np.arange(vocab), vocab)
    for low, high in ((0, 1), (1, 2), (2, 4), (4, 10), (10, 40), (40, 200)):
      expected = probability[low:high].sum()
      observed = np.mean((ids >= low) & (ids < high))
      self.assertAllClose(expected, observed, atol=4 * math.sqrt(expected / draws),
                          msg=(low, high))
    # The expected counts of all classes add up to the number of draws.
    log_q = losses.log_uniform_log_expected_count(tf.range(vocab), 20, vocab)
    self.assertAllClose(20.0, tf.reduce_sum(tf.exp(log_q)), rtol=1e-5)


class SampledSequenceLossTest(tf.test.TestCase):

  def _data(self, b=3, t=4, h=6, v=40, seed=0):
    rng = np.random.default_rng(seed)
    weights = np.ones([b, t])
    weights[0, 2:] = 0.0
    weights[2, 1:] = 0.0
    return (rng.normal(size=(b, t, h)), rng.integers(4, v, (b, t)).astype(np.int32), weights,
            rng.normal(size=(h, v)), rng.normal(size=v))

  def test_is_the_weighted_mean_of_the_per_token_formula(self):
    outputs, targets, weights, kernel, bias = self._data()
    seed = tf.constant([1, 2], tf.int64)
    loss = losses.sampled_sequence_loss(tf.constant(outputs), targets, weights,
                                        tf.constant(kernel), tf.constant(bias), 10, seed)
    sampled = losses.log_uniform_sample(10, 40, seed).numpy()
    log_q = lambda ids: np.log(10 * np_log_uniform_probability(ids, 40))
    flat_targets = targets.ravel()
    per_token = np_sampled_softmax(outputs.reshape(-1, 6), flat_targets, kernel, bias, sampled,
                                   log_q(flat_targets), log_q(sampled))
    expected = (per_token * weights.ravel()).sum() / weights.sum()
    self.assertAllClose(expected, loss, rtol=1e-6)

  def test_pad_positions_contribute_nothing(self):
    outputs, targets, weights, kernel, bias = self._data(seed=1)
    pad = weights == 0
    changed_outputs, changed_targets = outputs.copy(), targets.copy()
    changed_outputs[pad] = 100.0 * np.random.default_rng(5).normal(size=(pad.sum(), 6))
    changed_targets[pad] = 0  # <PAD>

    def loss_and_gradient(outputs, targets):
      outputs = tf.constant(outputs)
      with tf.GradientTape() as tape:
        tape.watch(outputs)
        loss = losses.sampled_sequence_loss(outputs, targets, weights, tf.constant(kernel),
                                            tf.constant(bias), 10, tf.constant([3, 0]))
      return loss.numpy(), tape.gradient(loss, outputs).numpy()

    loss, grad = loss_and_gradient(outputs, targets)
    changed_loss, changed_grad = loss_and_gradient(changed_outputs, changed_targets)
    self.assertAllClose(loss, changed_loss, rtol=1e-12)
    self.assertAllEqual(np.zeros_like(grad[pad]), grad[pad])
    self.assertAllClose(grad, changed_grad, rtol=1e-12)
    per_token = losses.sampled_sequence_loss(
        tf.constant(outputs), targets, weights, tf.constant(kernel), tf.constant(bias), 10,
        tf.constant([3, 0]), average_across_timesteps=False, average_across_batch=False)
    self.assertAllEqual(np.zeros(pad.sum()), per_token.numpy()[pad])

  def test_bfloat16_outputs_give_a_float32_loss(self):
    outputs, targets, weights, kernel, bias = self._data(seed=2)
    seed = tf.constant([7, 7])
    kernel, bias = tf.constant(kernel, tf.float32), tf.constant(bias, tf.float32)
    full = losses.sampled_sequence_loss(tf.constant(outputs, tf.float32), targets, weights,
                                        kernel, bias, 10, seed)
    mixed = losses.sampled_sequence_loss(tf.constant(outputs, tf.bfloat16), targets, weights,
                                         kernel, bias, 10, seed)
    self.assertEqual(mixed.dtype, tf.float32)
    self.assertAllClose(full, mixed, rtol=3e-2)

  def test_num_sampled_must_be_below_the_vocabulary(self):
    outputs, targets, weights, kernel, bias = self._data()
    with self.assertRaisesRegex(ValueError, r"num_sampled must be in \(0, 40\), got 40"):
      losses.sampled_sequence_loss(outputs, targets, weights, kernel, bias, 40, [0, 0])


class SampledTrainingTest(tf.test.TestCase):

  def test_step_matches_a_plain_tape_with_the_sampled_loss(self):
    # The gathers make the projection bias's gradient IndexedSlices with repeated ids; the
    # step must norm, clip and apply it as the dense gradient a plain tape sums it into.
    vocab, num_sampled, seed = 30, 8, 11
    rng = np.random.default_rng(0)
    batch = batches_lib.pad_batch([(list(rng.integers(4, 8, 3)), list(rng.integers(4, 8, 3)))
                            for _ in range(4)], 3)

    def model():
      built = model_lib.Seq2Seq(config_lib.ModelConfig(num_layers=1, hidden_size=8,
                                                       embedding_size=4), vocab, seed=2)
      built.build()
      return built

    reference = model()
    with tf.GradientTape() as tape:
      source_embedded, target_embedded = reference.embed(batch.source, batch.decoder_input)
      outputs = reference.outputs_from_embedded(source_embedded, batch.source_length,
                                                target_embedded, training=True)
      expected_loss = losses.sampled_sequence_loss(
          outputs, batch.target, batch.target_weight, reference.projection_kernel,
          reference.projection_bias, num_sampled, tf.constant([seed, 0], tf.int64))
    variables = reference.trainable_variables
    gradients = [tf.convert_to_tensor(g) for g in tape.gradient(expected_loss, variables)]
    clipped, expected_norm = tf.clip_by_global_norm(gradients, 0.1)

    actual = model()
    optimizer = optimizers.SGD(1.0)
    optimizer.build(actual.trainable_variables)
    step = train_step_lib.make_train_step(actual, optimizer, 0.1, num_sampled=num_sampled,
                                          seed=seed)
    loss, norm, _ = step(batch)
    self.assertAllClose(expected_loss, loss, rtol=1e-6)
    self.assertAllClose(expected_norm, norm, rtol=1e-5)
    for var, before, grad in zip(actual.trainable_variables, variables, clipped):
      self.assertAllClose(before - grad, var, atol=1e-6, rtol=1e-5, msg=var.name)

  def test_sampled_loss_converges_on_a_toy_task(self):
    # Copy 1..3 words of a 200-word vocabulary with 20 candidates a step; the EXACT
    # (full-softmax) loss of the eval step must fall from about ln(200) = 5.3 nats.
    vocab = 200
    rng = np.random.default_rng(0)
    pairs = []
    for _ in range(96):
      words = list(rng.integers(4, vocab, rng.integers(1, 4)))
      pairs.append((words, words))
    batches = [batches_lib.pad_batch(pairs[i:i + 32], 3) for i in range(0, len(pairs), 32)]
    config = config_lib.ModelConfig(num_layers=1, hidden_size=64, embedding_size=32)
    model = model_lib.Seq2Seq(config, vocab, seed=1)
    model.build()
    optimizer = optimizers.Adam(0.02)
    optimizer.build(model.trainable_variables)
    step = train_step_lib.make_train_step(model, optimizer, 5.0, num_sampled=20, seed=3)
    eval_step = train_step_lib.make_eval_step(model)

    def exact_loss():
      sums = np.array([[float(x) for x in eval_step(batch)] for batch in batches]).sum(axis=0)
      return sums[0] / sums[1]

    initial = exact_loss()
    self.assertGreater(initial, 5.0)
    for i in range(300):
      loss, _, finite = step(batches[i % len(batches)])
      self.assertTrue(bool(finite))
    self.assertEqual(loss.dtype, tf.float32)
    self.assertLess(exact_loss(), 1.0)  # about 0.4 after 300 steps

  def test_num_sampled_at_least_the_vocabulary_is_refused_naming_the_flag(self):
    tmp = self.get_temp_dir()
    reverse = helpers.write_reverse_task(os.path.join(tmp, "reverse.tsv"), num_pairs=50)
    # 8 letters + 4 specials: a 12-word vocabulary.
    config = helpers.tiny_config(os.path.join(tmp, "run"), reverse, num_sampled=12)
    with self.assertRaisesRegex(config_lib.ConfigError,
                                r"num_sampled: 12 candidates must be fewer than the "
                                r"vocabulary's 12 tokens"):
      loop.train(config, log=helpers.quiet)
    self.assertFalse(os.path.exists(os.path.join(tmp, "run", "checkpoints")))


class NumSampledFlagTest(tf.test.TestCase):

  def test_config_checks(self):
    self.assertEqual(config_lib.TrainConfig().num_sampled, 0)  # the full softmax by default
    with self.assertRaisesRegex(config_lib.ConfigError, r"num_sampled: must be >= 0"):
      config_lib.TrainConfig(num_sampled=-1)
    config_lib.TrainConfig(num_sampled=99).check_vocabulary_size(100)
    with self.assertRaisesRegex(config_lib.ConfigError, r"num_sampled: 100 candidates"):
      config_lib.TrainConfig(num_sampled=100).check_vocabulary_size(100)
    with self.assertRaisesRegex(config_lib.ConfigError, r"num_sampled: .*--model=lm"):
      config_lib.replace(config_lib.RunConfig(), model="lm", num_sampled=10)

  def test_negative_flag_is_refused_before_any_work(self):
    workdir = os.path.join(self.get_temp_dir(), "never_created")
    result = test_cli.run_train(f"--workdir={workdir}", "--num_sampled=-5")
    self.assertEqual(result.returncode, 1, result.stderr)
    self.assertIn("--num_sampled: must be >= 0 (0 = full softmax), got -5", result.stderr)
    self.assertNotIn("Traceback", result.stderr)
    self.assertFalse(os.path.exists(workdir))


if __name__ == "__main__":
  tf.test.main()
