"""Tests of the pure ops (loss, clipping, update rules) and the optimizers, against NumPy."""
import dataclasses

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from ops import clipping
from ops import losses
from ops import optim
from seq2seq import config
from seq2seq.step import optimizers

BOTH_FLAGS = [(True, True), (True, False), (False, True), (False, False)]


# --- NumPy float64 references ---

def np_log_softmax(logits):
  shifted = logits - logits.max(axis=-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def np_sequence_loss(logits, targets, weights, across_timesteps, across_batch):
  logp = np_log_softmax(logits.astype(np.float64))
  xent = -np.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]  # [B, T]
  weighted = xent * weights

  def divide(num, den):
    return np.where(den == 0, 0.0, num / np.where(den == 0, 1.0, den))

  if across_timesteps and across_batch:
    return divide(weighted.sum(), weights.sum())
  if across_timesteps:
    return divide(weighted.sum(axis=1), weights.sum(axis=1))
  if across_batch:
    return divide(weighted.sum(axis=0), weights.sum(axis=0))
  return weighted


def np_adam(param, grad, m, v, lr, t, beta1=0.9, beta2=0.999, eps=1e-8):
  m = beta1 * m + (1 - beta1) * grad
  v = beta2 * v + (1 - beta2) * grad * grad
  m_hat = m / (1 - beta1 ** t)
  v_hat = v / (1 - beta2 ** t)
  return param - lr * m_hat / (np.sqrt(v_hat) + eps), m, v


def np_rmsprop(param, grad, ms, lr, rho=0.9, eps=1e-7):
  ms = rho * ms + (1 - rho) * grad * grad
  return param - lr * grad / (np.sqrt(ms) + eps), ms


def np_sgd(param, grad, lr):
  return param - lr * grad


class SequenceLossTest(tf.test.TestCase, parameterized.TestCase):

  def _data(self, seed=0, b=3, t=5, v=7):
    rng = np.random.RandomState(seed)
    logits = rng.normal(scale=2.0, size=(b, t, v))
    targets = rng.randint(0, v, size=(b, t)).astype(np.int32)
    weights = rng.uniform(0.2, 1.5, size=(b, t)) * (rng.uniform(size=(b, t)) > 0.3)
    weights[0, :] = 0.0  # a sequence with no real token
    weights[:, 1] = 0.0  # a time step with no real token
    weights[2, 3] = 1.0
    return logits, targets, weights

  @parameterized.parameters(BOTH_FLAGS)
  def test_matches_numpy(self, across_timesteps, across_batch):
    logits, targets, weights = self._data()
    loss = losses.sequence_loss(tf.constant(logits), tf.constant(targets), tf.constant(weights),
                                average_across_timesteps=across_timesteps,
                                average_across_batch=across_batch)
    expected = np_sequence_loss(logits, targets, weights, across_timesteps, across_batch)
    self.assertEqual(loss.dtype, tf.float64)
    self.assertEqual(tuple(loss.shape), np.shape(expected))
    self.assertAllClose(expected, loss, rtol=1e-10, atol=1e-12)
    self.assertTrue(np.all(np.isfinite(loss.numpy())))

  @parameterized.parameters(BOTH_FLAGS)
  def test_in_tf_function_float32(self, across_timesteps, across_batch):
    logits, targets, weights = self._data(seed=1)
    fn = tf.function(lambda l, t, w: losses.sequence_loss(l, t, w, across_timesteps,
                                                          across_batch))
    loss = fn(tf.constant(logits, tf.float32), tf.constant(targets),
              tf.constant(weights, tf.float32))
    expected = np_sequence_loss(logits.astype(np.float32), targets,
                                weights.astype(np.float32).astype(np.float64),
                                across_timesteps, across_batch)
    self.assertEqual(loss.dtype, tf.float32)
    self.assertAllClose(expected, loss, rtol=1e-5, atol=1e-6)

  @parameterized.parameters(BOTH_FLAGS)
  def test_all_zero_weights(self, across_timesteps, across_batch):
    logits, targets, _ = self._data(seed=2)
    weights = np.zeros(targets.shape)
    loss = losses.sequence_loss(tf.constant(logits), tf.constant(targets), tf.constant(weights),
                                across_timesteps, across_batch).numpy()
    self.assertFalse(np.any(np.isnan(loss)))
    self.assertAllEqual(np.zeros(np.shape(loss)), loss)

  def test_label_smoothing_is_xent_against_the_smoothed_distribution(self):
    logits, targets, weights = self._data(seed=4)
    eps, vocab = 0.1, logits.shape[-1]
    smoothed = np.full(logits.shape, eps / vocab)
    np.put_along_axis(smoothed, targets[..., None], 1.0 - eps + eps / vocab, axis=-1)
    per_token = -(smoothed * np_log_softmax(logits)).sum(-1)  # [B, T]
    expected = (per_token * weights).sum() / weights.sum()
    loss = losses.sequence_loss(tf.constant(logits), tf.constant(targets), tf.constant(weights),
                                label_smoothing=eps)
    self.assertAllClose(expected, loss, rtol=1e-10, atol=0)
    plain = losses.sequence_loss(tf.constant(logits), tf.constant(targets), tf.constant(weights))
    self.assertGreater(abs(float(loss) - float(plain)), 1e-3)

  def test_label_smoothing_config_is_checked(self):
    with self.assertRaisesRegex(config.ConfigError, r"label_smoothing: must be in \[0, 1\)"):
      config.TrainConfig(label_smoothing=1.0)
    with self.assertRaisesRegex(config.ConfigError, "label_smoothing: .*--num_sampled"):
      config.TrainConfig(label_smoothing=0.1, num_sampled=10)

  def test_uniform_weights_are_mean_xent(self):
    logits, targets, _ = self._data(seed=3)
    weights = np.ones(targets.shape)
    loss = losses.sequence_loss(tf.constant(logits), tf.constant(targets), tf.constant(weights))
    logp = np_log_softmax(logits)
    expected = -np.mean(np.take_along_axis(logp, targets[..., None], axis=-1))
    self.assertAllClose(expected, loss, rtol=1e-10, atol=0)

  @parameterized.parameters(tf.bfloat16, tf.float16)
  def test_half_precision_logits_computed_in_float32(self, dtype):
    logits, targets, weights = self._data(seed=4, v=50)
    half_logits = tf.cast(tf.constant(logits, tf.float32), dtype)
    loss = losses.sequence_loss(half_logits, tf.constant(targets), tf.constant(weights))
    self.assertEqual(loss.dtype, tf.float32)
    # Reference: the rounded logits, in float64.
    rounded = tf.cast(half_logits, tf.float64).numpy()
    expected = np_sequence_loss(rounded, targets, weights.astype(np.float32).astype(np.float64),
                                True, True)
    # Computing the softmax in bf16 itself would be off by ~1e-2; float32 is ~1e-6.
    self.assertAllClose(expected, loss, rtol=1e-5, atol=1e-6)

  @parameterized.product(dtype=[tf.bfloat16, tf.float16], eps=[0.0, 0.1], jit_compile=[False, True])
  def test_half_precision_gradient_is_softmax_minus_target_in_their_dtype(self, dtype, eps,
                                                                          jit_compile):
    """The low-precision path (`low_precision_cross_entropy`): loss and gradient of the
    rounded logits against NumPy float64, label smoothing included, eagerly and under XLA;
    the gradient comes back in the logits' dtype."""
    logits, targets, weights = self._data(seed=6, v=50)
    half_logits = tf.cast(tf.constant(logits, tf.float32), dtype)

    def loss_and_gradient(half_logits):
      with tf.GradientTape() as tape:
        tape.watch(half_logits)
        loss = losses.sequence_loss(half_logits, tf.constant(targets),
                                    tf.constant(weights, tf.float32), label_smoothing=eps)
      return loss, tape.gradient(loss, half_logits)

    if jit_compile:
      loss_and_gradient = tf.function(loss_and_gradient, jit_compile=True)
    loss, grad = loss_and_gradient(half_logits)
    rounded = tf.cast(half_logits, tf.float64).numpy()
    vocab = logits.shape[-1]
    target = (1.0 - eps) * np.eye(vocab)[targets] + eps / vocab
    log_probs = np_log_softmax(rounded)
    w = weights.astype(np.float32).astype(np.float64)
    expected_loss = (-(target * log_probs).sum(-1) * w).sum() / w.sum()
    expected_grad = (np.exp(log_probs) - target) * w[..., None] / w.sum()
    self.assertEqual(loss.dtype, tf.float32)
    self.assertEqual(grad.dtype, dtype)
    self.assertAllClose(expected_loss, loss, rtol=1e-5, atol=1e-6)
    # Rounding to the half dtype: 8 (bf16) or 11 (fp16) bits of mantissa.
    tolerance = 1e-2 if dtype == tf.bfloat16 else 2e-3
    self.assertAllClose(expected_grad, tf.cast(grad, tf.float64), rtol=tolerance,
                        atol=tolerance * np.abs(expected_grad).max())

  def test_gradient_is_softmax_minus_onehot(self):
    logits, targets, weights = self._data(seed=5)
    logits_t = tf.constant(logits)
    with tf.GradientTape() as tape:
      tape.watch(logits_t)
      loss = losses.sequence_loss(logits_t, tf.constant(targets), tf.constant(weights))
    grad = tape.gradient(loss, logits_t)
    probs = np.exp(np_log_softmax(logits))
    onehot = np.eye(logits.shape[-1])[targets]
    expected = (probs - onehot) * weights[..., None] / weights.sum()
    self.assertAllClose(expected, grad, rtol=1e-10, atol=1e-12)


class ClipGradientsTest(tf.test.TestCase, parameterized.TestCase):

  def _grads(self, scale, seed=0):
    rng = np.random.RandomState(seed)
    return [rng.normal(size=(3, 4)).astype(np.float32) * scale,
            rng.normal(size=(5,)).astype(np.float32) * scale]

  def _np_norm(self, arrays):
    return np.sqrt(sum(np.sum(np.square(a.astype(np.float64))) for a in arrays))

  @parameterized.parameters(False, True)
  def test_below_max_norm_untouched(self, use_function):
    grads = self._grads(scale=0.1)
    norm = self._np_norm(grads)
    self.assertLess(norm, 5.0)
    fn = tf.function(clipping.clip_gradients) if use_function else clipping.clip_gradients
    clipped, global_norm = fn([tf.constant(g) for g in grads], 5.0)
    self.assertEqual(global_norm.dtype, tf.float32)
    self.assertEqual(global_norm.shape, ())
    self.assertAllClose(norm, global_norm, rtol=1e-6, atol=0)
    for g, c in zip(grads, clipped):
      self.assertAllClose(g, c, rtol=1e-6, atol=0)

  @parameterized.parameters(False, True)
  def test_above_max_norm_scaled(self, use_function):
    grads = self._grads(scale=10.0, seed=1)
    norm = self._np_norm(grads)
    self.assertGreater(norm, 5.0)
    fn = tf.function(clipping.clip_gradients) if use_function else clipping.clip_gradients
    clipped, global_norm = fn([tf.constant(g) for g in grads], 5.0)
    # The returned norm is the one before clipping.
    self.assertAllClose(norm, global_norm, rtol=1e-6, atol=0)
    for g, c in zip(grads, clipped):
      self.assertAllClose(g * (5.0 / norm), c, rtol=1e-5, atol=1e-7)
    self.assertAllClose(5.0, self._np_norm([c.numpy() for c in clipped]), rtol=1e-5)

  @parameterized.parameters(0, 0.0, None)
  def test_zero_max_norm_disables_clipping(self, max_norm):
    grads = self._grads(scale=100.0, seed=2)
    clipped, global_norm = clipping.clip_gradients([tf.constant(g) for g in grads], max_norm)
    self.assertAllClose(self._np_norm(grads), global_norm, rtol=1e-6, atol=0)
    self.assertLen(clipped, 2)
    for g, c in zip(grads, clipped):
      self.assertAllEqual(g, c)

  @parameterized.parameters(0.0, 1.0, 1000.0)
  def test_indexed_slices_and_none(self, max_norm):
    rng = np.random.RandomState(3)
    dense = rng.normal(size=(2, 3)).astype(np.float32)
    values = rng.normal(size=(2, 4)).astype(np.float32)
    indices = np.array([4, 1], np.int64)
    slices = tf.IndexedSlices(tf.constant(values), tf.constant(indices),
                              dense_shape=tf.constant([6, 4], tf.int64))
    clipped, global_norm = clipping.clip_gradients([tf.constant(dense), None, slices], max_norm)
    norm = self._np_norm([dense, values])
    self.assertAllClose(norm, global_norm, rtol=1e-6, atol=0)
    self.assertLen(clipped, 3)
    self.assertIsNone(clipped[1])
    scale = max_norm / norm if max_norm and norm > max_norm else 1.0
    self.assertAllClose(dense * scale, clipped[0], rtol=1e-5, atol=1e-7)
    self.assertIsInstance(clipped[2], tf.IndexedSlices)
    self.assertAllEqual(indices, clipped[2].indices)
    expected_dense = np.zeros((6, 4), np.float32)
    expected_dense[indices] = values * scale
    self.assertAllClose(expected_dense, tf.convert_to_tensor(clipped[2]), rtol=1e-5, atol=1e-7)

  def test_gradient_from_gather(self):
    table = tf.Variable(np.arange(12, dtype=np.float32).reshape(4, 3))
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(tf.gather(table, [0, 2]) * [[10.0], [20.0]])
    grad = tape.gradient(loss, table)
    self.assertIsInstance(grad, tf.IndexedSlices)
    clipped, global_norm = clipping.clip_gradients([grad], 1.0)
    dense = np.zeros((4, 3))
    dense[0] = 10.0
    dense[2] = 20.0
    norm = np.sqrt(np.sum(dense ** 2))
    self.assertAllClose(norm, global_norm, rtol=1e-6)
    self.assertAllClose(dense / norm, tf.convert_to_tensor(clipped[0]), rtol=1e-5, atol=1e-7)


class UpdateRuleTest(tf.test.TestCase, parameterized.TestCase):

  def _data(self, seed=0, steps=4):
    rng = np.random.RandomState(seed)
    param = rng.normal(size=(3, 2))
    grads = [rng.normal(size=(3, 2)) for _ in range(steps)]
    return param, grads

  # float64 runs use betas that float32 represents exactly: adam_update rounds them through
  # float32 (tf.cast of a Python float), which would show up at 1e-7 against NumPy.
  @parameterized.parameters(
      dict(dtype=np.float32, lr=0.01, rtol=1e-5),
      dict(dtype=np.float32, lr=0.1, rtol=1e-5, beta1=0.5, beta2=0.9, epsilon=1e-3),
      dict(dtype=np.float64, lr=0.01, rtol=1e-12, beta1=0.75, beta2=0.875),
      dict(dtype=np.float64, lr=0.1, rtol=1e-12, beta1=0.5, beta2=0.9375, epsilon=1e-3))
  def test_adam(self, dtype, lr, rtol, **kwargs):
    param, grads = self._data()
    np_kwargs = {"beta1": kwargs.get("beta1", 0.9), "beta2": kwargs.get("beta2", 0.999),
                 "eps": kwargs.get("epsilon", 1e-8)}
    p = tf.constant(param.astype(dtype))
    m, v = tf.zeros_like(p), tf.zeros_like(p)
    np_p = param.astype(dtype).astype(np.float64)
    np_m, np_v = np.zeros_like(param), np.zeros_like(param)
    for t, grad in enumerate(grads, start=1):
      grad = grad.astype(dtype)
      p, m, v = optim.adam_update(p, tf.constant(grad), m, v, lr,
                                  tf.constant(float(t), p.dtype), **kwargs)
      np_p, np_m, np_v = np_adam(np_p, grad.astype(np.float64), np_m, np_v, lr, t, **np_kwargs)
      self.assertEqual(p.dtype, dtype)
      self.assertAllClose(np_p, p, rtol=rtol, atol=rtol)
      self.assertAllClose(np_m, m, rtol=rtol, atol=rtol)
      self.assertAllClose(np_v, v, rtol=rtol, atol=rtol)

  def test_adam_first_step_is_lr_times_sign(self):
    # With bias correction the first step is lr * g / (|g| + eps) ~ lr * sign(g).
    param, grads = self._data(seed=1)
    param, grad = param.astype(np.float32), grads[0].astype(np.float32)
    p, _, _ = optim.adam_update(tf.constant(param), tf.constant(grad), tf.zeros_like(param),
                                tf.zeros_like(param), 0.01, tf.constant(1.0))
    self.assertAllClose(param - 0.01 * np.sign(grad), p, rtol=0, atol=1e-6)

  @parameterized.parameters(dict(lr=0.01), dict(lr=0.05, rho=0.5, epsilon=1e-2))
  def test_rmsprop(self, lr, **kwargs):
    param, grads = self._data(seed=2)
    np_kwargs = {"rho": kwargs.get("rho", 0.9), "eps": kwargs.get("epsilon", 1e-7)}
    p, ms = tf.constant(param), tf.zeros_like(param)
    np_p, np_ms = param, np.zeros_like(param)
    for grad in grads:
      p, ms = optim.rmsprop_update(p, tf.constant(grad), ms, lr, **kwargs)
      np_p, np_ms = np_rmsprop(np_p, grad, np_ms, lr, **np_kwargs)
      self.assertAllClose(np_p, p, rtol=1e-12, atol=1e-12)
      self.assertAllClose(np_ms, ms, rtol=1e-12, atol=1e-12)

  def test_sgd(self):
    param, grads = self._data(seed=3)
    p, np_p = tf.constant(param), param
    for grad in grads:
      p = optim.sgd_update(p, tf.constant(grad), 0.3)
      np_p = np_sgd(np_p, grad, 0.3)
    self.assertAllClose(np_p, p, rtol=1e-12, atol=1e-12)

  @parameterized.parameters(False, True)
  def test_exponential_decay(self, staircase):
    for step in (0, 1, 99, 100, 101, 250, 1000):
      lr = optim.exponential_decay(0.5, tf.constant(step, tf.int64), decay_steps=100,
                                   decay_rate=0.9, staircase=staircase)
      exponent = step // 100 if staircase else step / 100.0
      self.assertAllClose(0.5 * 0.9 ** exponent, lr, rtol=1e-6, atol=0, msg=f"step {step}")


class OptimizerTest(tf.test.TestCase, parameterized.TestCase):

  def _problem(self, seed=0, steps=5):
    rng = np.random.RandomState(seed)
    params = [rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=(4,)).astype(np.float32)]
    grads = [[rng.normal(size=p.shape).astype(np.float32) for p in params] for _ in range(steps)]
    return params, grads

  def _np_run(self, kind, params, grads, lr_fn, **kwargs):
    params = [p.astype(np.float64) for p in params]
    slots = [[np.zeros_like(p) for p in params] for _ in range(2)]
    for step, step_grads in enumerate(grads):
      lr = lr_fn(step)
      for i, (p, g) in enumerate(zip(params, step_grads)):
        g = g.astype(np.float64)
        if kind == "adam":
          params[i], slots[0][i], slots[1][i] = np_adam(p, g, slots[0][i], slots[1][i], lr,
                                                        step + 1, **kwargs)
        elif kind == "rmsprop":
          params[i], slots[0][i] = np_rmsprop(p, g, slots[0][i], lr, **kwargs)
        else:
          params[i] = np_sgd(p, g, lr)
    return params, slots

  @parameterized.product(kind=["adam", "rmsprop", "sgd"], use_function=[False, True])
  def test_matches_numpy(self, kind, use_function):
    params, grads = self._problem()
    variables = [tf.Variable(p) for p in params]
    optimizer = {"adam": optimizers.Adam, "rmsprop": optimizers.RMSProp,
                 "sgd": optimizers.SGD}[kind](0.05)
    apply = tf.function(optimizer.apply) if use_function else optimizer.apply
    for step, step_grads in enumerate(grads):
      apply([tf.constant(g) for g in step_grads], variables)
      self.assertEqual(step + 1, int(optimizer.iterations.numpy()))
    expected, expected_slots = self._np_run(kind, params, grads, lambda step: 0.05)
    for e, v in zip(expected, variables):
      self.assertAllClose(e, v, rtol=1e-5, atol=1e-6)
    # The slots hold the moments of the rule.
    for n, name in enumerate(optimizer.slot_names):
      for e, slot in zip(expected_slots[n], optimizer.slots[name]):
        self.assertAllClose(e, slot, rtol=1e-5, atol=1e-7)
    self.assertEqual({"adam": 2, "rmsprop": 1, "sgd": 0}[kind], len(optimizer.slot_names))

  def test_adam_hyperparameters(self):
    params, grads = self._problem(seed=1, steps=3)
    variables = [tf.Variable(p) for p in params]
    optimizer = optimizers.Adam(0.02, beta1=0.5, beta2=0.8, epsilon=1e-3)
    for step_grads in grads:
      optimizer.apply([tf.constant(g) for g in step_grads], variables)
    expected, _ = self._np_run("adam", params, grads, lambda step: 0.02, beta1=0.5, beta2=0.8,
                               eps=1e-3)
    for e, v in zip(expected, variables):
      self.assertAllClose(e, v, rtol=1e-5, atol=1e-6)

  def test_rmsprop_hyperparameters(self):
    params, grads = self._problem(seed=2, steps=3)
    variables = [tf.Variable(p) for p in params]
    optimizer = optimizers.RMSProp(0.02, rho=0.5, epsilon=1e-2)
    for step_grads in grads:
      optimizer.apply([tf.constant(g) for g in step_grads], variables)
    expected, _ = self._np_run("rmsprop", params, grads, lambda step: 0.02, rho=0.5, eps=1e-2)
    for e, v in zip(expected, variables):
      self.assertAllClose(e, v, rtol=1e-5, atol=1e-6)

  @parameterized.parameters("adam", "rmsprop", "sgd")
  def test_callable_learning_rate(self, kind):
    params, grads = self._problem(seed=3, steps=4)
    variables = [tf.Variable(p) for p in params]
    seen_steps = []

    def schedule(step):
      seen_steps.append(int(step.numpy()))
      return 0.1 / (1.0 + tf.cast(step, tf.float32))

    optimizer = {"adam": optimizers.Adam, "rmsprop": optimizers.RMSProp,
                 "sgd": optimizers.SGD}[kind](schedule)
    for step_grads in grads:
      optimizer.apply([tf.constant(g) for g in step_grads], variables)
    self.assertEqual([0, 1, 2, 3], seen_steps)
    expected, _ = self._np_run(kind, params, grads, lambda step: 0.1 / (1.0 + step))
    for e, v in zip(expected, variables):
      self.assertAllClose(e, v, rtol=1e-5, atol=1e-6)

  @parameterized.product(kind=["adam", "rmsprop", "sgd"],
                         form=["indexed_slices", "touched_rows", "touched_rows_xla"])
  def test_indexed_slices_from_gather_update_only_their_rows(self, kind, form):
    """Sparse (lazy) rule: the rows a batch touches get the dense rule with duplicate ids
    summed; other rows, and their slots, stay as they were. The same with the gradient given
    as TouchedRows (dense, as the compiled whole step gives it), eagerly and under XLA; a
    row looked up with a zero gradient is still touched (its moments decay, Adam moves it)."""
    rng = np.random.RandomState(4)
    table_init = rng.normal(size=(6, 3)).astype(np.float32)
    table = tf.Variable(table_init)
    optimizer = {"adam": optimizers.Adam, "rmsprop": optimizers.RMSProp,
                 "sgd": optimizers.SGD}[kind](0.1)
    optimizer.build([table])

    def apply_touched(values, indices):
      optimizer.apply([optimizers.touched_rows(values, indices, 6)], [table])

    if form == "touched_rows_xla":
      apply_touched = tf.function(apply_touched, jit_compile=True)
    ids_per_step = [np.array([0, 2, 2]), np.array([5, 0]), np.array([1, 1, 1, 3])]
    expected = table_init.astype(np.float64)
    slots = [np.zeros_like(expected), np.zeros_like(expected)]
    for step, ids in enumerate(ids_per_step):
      upstream = rng.normal(size=(len(ids), 3)).astype(np.float32)
      if step == 1:
        upstream[-1] = 0.0  # row 0 looked up again, with a zero gradient
      with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.gather(table, ids) * upstream)
      grad = tape.gradient(loss, table)
      self.assertIsInstance(grad, tf.IndexedSlices)
      if form == "indexed_slices":
        optimizer.apply([grad], [table])
      else:
        apply_touched(grad.values, tf.constant(ids, tf.int32))
      dense = np.zeros((6, 3))
      np.add.at(dense, ids, upstream.astype(np.float64))  # repeated ids add up
      rows = np.unique(ids)
      if kind == "adam":
        p, m, v = np_adam(expected[rows], dense[rows], slots[0][rows], slots[1][rows], 0.1,
                          step + 1)
        expected[rows], slots[0][rows], slots[1][rows] = p, m, v
      elif kind == "rmsprop":
        expected[rows], slots[0][rows] = np_rmsprop(expected[rows], dense[rows],
                                                    slots[0][rows], 0.1)
      else:
        expected[rows] = np_sgd(expected[rows], dense[rows], 0.1)
    self.assertAllClose(expected, table, rtol=1e-5, atol=1e-6)
    self.assertAllEqual(table_init[4], table.numpy()[4])  # never looked up
    self.assertEqual(3, int(optimizer.iterations.numpy()))

  def test_clip_norm_of_repeated_rows_is_the_dense_norm(self):
    slices = tf.IndexedSlices(tf.ones([2, 1]), tf.constant([0, 0]), tf.constant([3, 1]))
    _, norm = clipping.clip_gradients([slices], 0)
    self.assertAllClose(2.0, norm)  # the dense gradient is [[2], [0], [0]]

  def test_none_gradient_skipped(self):
    params, grads = self._problem(seed=5, steps=2)
    variables = [tf.Variable(p) for p in params]
    optimizer = optimizers.Adam(0.05)
    for step_grads in grads:
      optimizer.apply([tf.constant(step_grads[0]), None], variables)
    self.assertAllEqual(params[1], variables[1])
    self.assertAllEqual(np.zeros(4), optimizer.slots["m"][1])
    expected, _ = self._np_run("adam", params[:1], [g[:1] for g in grads], lambda step: 0.05)
    self.assertAllClose(expected[0], variables[0], rtol=1e-5, atol=1e-6)
    self.assertEqual(2, int(optimizer.iterations.numpy()))

  def test_slots_and_counter_checkpointed(self):
    variables = [tf.Variable(np.ones(3, np.float32))]
    optimizer = optimizers.Adam(0.1)
    optimizer.apply([tf.constant([1.0, 2.0, 3.0])], variables)
    tracked = {v.ref() for v in optimizer.variables}
    self.assertIn(optimizer.iterations.ref(), tracked)
    for name in ("m", "v"):
      self.assertIn(optimizer.slots[name][0].ref(), tracked)
    self.assertEmpty(optimizer.trainable_variables)

  @parameterized.parameters(("adam", optimizers.Adam), ("rmsprop", optimizers.RMSProp),
                            ("sgd", optimizers.SGD))
  def test_make_optimizer(self, name, cls):
    train_config = dataclasses.replace(config.TrainConfig(), optimizer=name, learning_rate=0.4,
                                       decay_steps=10, decay_rate=0.5, staircase=True)
    optimizer = optimizers.make_optimizer(train_config)
    self.assertIsInstance(optimizer, cls)
    self.assertTrue(callable(optimizer.learning_rate))
    self.assertAllClose(0.4, optimizer.current_learning_rate(), rtol=1e-6)
    optimizer.iterations.assign(15)
    self.assertAllClose(0.2, optimizer.current_learning_rate(), rtol=1e-6)  # staircase: 0.5^1
    optimizer.iterations.assign(20)
    self.assertAllClose(0.1, optimizer.current_learning_rate(), rtol=1e-6)

  def test_make_optimizer_smooth_decay(self):
    train_config = dataclasses.replace(config.TrainConfig(), optimizer="sgd", learning_rate=0.4,
                                       decay_steps=10, decay_rate=0.5, staircase=False)
    optimizer = optimizers.make_optimizer(train_config)
    optimizer.iterations.assign(15)
    self.assertAllClose(0.4 * 0.5 ** 1.5, optimizer.current_learning_rate(), rtol=1e-6)
    variables = [tf.Variable([1.0, 1.0])]
    optimizer.apply([tf.constant([1.0, -2.0])], variables)
    lr = 0.4 * 0.5 ** 1.5
    self.assertAllClose([1.0 - lr, 1.0 + 2.0 * lr], variables[0], rtol=1e-6)


if __name__ == "__main__":
  tf.test.main()
