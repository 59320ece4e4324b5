"""The tables pinned to the host (--embedding_device=cpu): distinct rows looked up and moved
once, their gradients applied on the host to those rows only, trained to the accelerator
placement's parameters."""
import json
import os
import subprocess
import sys
from unittest import mock

import pytest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from seq2seq import config as config_lib
from seq2seq.models import encoder_decoder as model_lib
from seq2seq.nn import embeddings
from seq2seq.step import fused_adam
from seq2seq.step import optimizers
from seq2seq.step import train_step as train_step_lib
from seq2seq.step import unique_rows
from tests import test_ops
from tests import test_train_step

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class LookUpTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(tf.float32, tf.bfloat16)
  def test_each_row_once_and_the_lookups_rebuilt_from_them(self, rows_dtype):
    shared = embeddings.Embedding(12, 3, seed=1)
    other = embeddings.Embedding(12, 3, seed=2)
    source = tf.constant([[5, 7, 5], [1, 5, 7]])
    target = tf.constant([[7, 9], [9, 9]])
    lookups = [(shared, lambda x: x[0]), (shared, lambda x: x[1]), (other, lambda x: x[1])]
    looked_up, positions = unique_rows.look_up(lookups, (source, target), rows_dtype)
    self.assertAllEqual(looked_up[0].ids, [5, 7, 1, 9])  # the shared table: both lookups
    self.assertAllEqual(looked_up[1].ids, [7, 9])
    self.assertEqual(looked_up[0].rows.shape, [10, 3])  # padded to its 10 lookups
    self.assertEqual(looked_up[0].rows.dtype, rows_dtype)
    self.assertAllEqual(looked_up[0].rows[4:], tf.zeros([6, 3], rows_dtype))
    tables = unique_rows.distinct_tables(lookups)
    vectors = unique_rows.embedded(lookups, tables, [x.rows for x in looked_up], positions)
    for (embedding, ids_fn), vector in zip(lookups, vectors):
      self.assertAllEqual(vector, tf.cast(embedding(ids_fn((source, target))), rows_dtype))


class UpdateRowsTest(tf.test.TestCase, parameterized.TestCase):

  def _adam_and_table(self):
    table = tf.Variable(tf.random.stateless_uniform([10, 4], [1, 2]))
    optimizer = optimizers.Adam(0.1)
    optimizer.build([table])
    for slot in ("m", "v"):  # non-zero moments, so that untouched rows would show
      optimizer.slots[slot][0].assign(tf.random.stateless_uniform([10, 4], [3, len(slot)]))
    optimizer.iterations.assign(3)
    return table, optimizer

  def _state(self, table, optimizer):
    return [table.numpy()] + [optimizer.slots[s][0].numpy() for s in ("m", "v")]

  @parameterized.parameters(tf.float32, tf.bfloat16)
  def test_distinct_rows_update_as_the_lazy_rule_does(self, dtype):
    """`update_rows` on distinct ids equals `update` of the same IndexedSlices (the engine's
    lazy Adam: the touched rows only, bias corrected by the global step); a bfloat16
    gradient is applied in float32."""
    rows = tf.constant([7, 2, 5])
    gradient = tf.cast(tf.random.stateless_normal([3, 4], [5, 6]), dtype)
    expected_table, expected = self._adam_and_table()
    expected.update([tf.IndexedSlices(tf.cast(gradient, tf.float32), rows, [10, 4])],
                    [expected_table])
    table, optimizer = self._adam_and_table()
    before = self._state(table, optimizer)
    optimizer.update_rows(gradient, rows, table)
    for want, got, old in zip(self._state(expected_table, expected),
                              self._state(table, optimizer), before):
      self.assertAllClose(want, got, rtol=1e-6, atol=1e-7)
      self.assertAllEqual(got[[0, 1, 3, 4, 6, 8, 9]], old[[0, 1, 3, 4, 6, 8, 9]])

  @parameterized.parameters(True, False)
  def test_a_false_condition_writes_nothing(self, read_condition):
    table, optimizer = self._adam_and_table()
    before = self._state(table, optimizer)
    optimizer.update_rows(tf.fill([2, 4], np.nan), tf.constant([1, 4]), table,
                          condition=tf.constant(False), read_condition=read_condition)
    for want, got in zip(before, self._state(table, optimizer)):
      self.assertAllEqual(want, got)

  @parameterized.parameters(dict(read_condition=True), dict(read_condition=False),
                            dict(read_condition=False, beta2=0.875),
                            dict(read_condition=True, kernel=False),
                            dict(read_condition=True, kernel=False, beta2=0.875))
  def test_rows_follow_adam_in_float64(self, read_condition, beta2=0.999, kernel=True):
    """Six steps of `update_rows` on overlapping sets of distinct rows, with gradients from
    1e-5 to 10 (eps matters for the small ones), equal a NumPy float64 lazy Adam to float32
    rounding, per row: on the host with no condition left, the engine's kernel or (without
    `kernel`) its reference in TensorFlow's fused kernel; the rule op by op with a condition
    kept by `tf.where`."""
    if not kernel:
      self.enter_context(mock.patch.object(fused_adam, "kernel_applies", lambda _: False))
    rng = np.random.RandomState(0)
    initial = rng.uniform(-0.1, 0.1, (50, 64)).astype(np.float32)
    table = tf.Variable(initial)
    optimizer = optimizers.Adam(0.01, beta2=beta2)
    optimizer.build([table])
    want = [initial.astype(np.float64), np.zeros((50, 64)), np.zeros((50, 64))]
    touched = np.zeros(50, bool)
    for t in range(1, 7):
      rows = rng.choice(50, 20, replace=False)
      touched[rows] = True
      gradient = (rng.normal(size=(20, 64)) * np.exp(rng.uniform(-12, 2, (20, 1))))
      optimizer.update_rows(tf.constant(gradient, tf.float32), tf.constant(rows), table,
                            condition=tf.constant(True), read_condition=read_condition)
      optimizer.finish_step()
      updated = test_ops.np_adam(*[w[rows] for w in want[:1]], gradient.astype(np.float32),
                                 *[w[rows] for w in want[1:]], 0.01, t, beta2=beta2)
      for w, new in zip(want, updated):
        w[rows] = new
    want[0] -= initial  # the parameter's change: its own rounding would hide the step's
    got = self._state(table, optimizer)
    got[0] = got[0] - initial
    for name, w, g in zip(("param", "m", "v"), want, got):
      self.assertAllEqual(g[~touched], w[~touched])
      w, g = w[touched], g[touched]
      error = np.max(np.abs(g - w), 1) / np.max(np.abs(w), 1)
      self.assertLess(np.max(error), 3e-5 if name == "param" else 1e-6, name)

  def test_v_scale(self):
    """r = (1 - float32(b2)) / (1 - b2): 1 where b2 is exact, about 1 - 1.3e-5 for 0.999."""
    self.assertEqual(fused_adam.v_scale(0.875, np.float32), 1.0)
    self.assertEqual(fused_adam.v_scale(1.0, np.float32), 1.0)
    self.assertAllClose(fused_adam.v_scale(0.999, np.float32), 1 - 1.2874e-5, rtol=1e-8)
    self.assertEqual(fused_adam.v_scale(0.999, np.float64), 1.0)


def _adam_run(batches, save_after=None, directory=None):
  """Trains a fresh pinned-table model with Adam on `batches`; with `save_after`, saves a
  checkpoint after that many and trains the rest in a fresh model restored from it. Returns
  the trained variables, Adam slots and step counter."""
  def build():
    model = test_train_step._model(share=False)
    optimizer = optimizers.Adam(0.01)
    optimizer.build(model.trainable_variables)
    step = train_step_lib.make_train_step(model, optimizer, 0.5)
    return model, optimizer, step, tf.train.Checkpoint(model=model, optimizer=optimizer)

  model, optimizer, step, checkpoint = build()
  for number, batch in enumerate(batches):
    if number == save_after:
      path = checkpoint.save(os.path.join(directory, "ckpt"))
      model, optimizer, step, checkpoint = build()
      checkpoint.restore(path).assert_consumed()
    step(batch)
  return ([v.numpy() for v in model.trainable_variables]
          + [s.numpy() for name in ("m", "v") for s in optimizer.slots[name]]
          + [optimizer.iterations.numpy()])


class CheckpointTest(tf.test.TestCase):

  def test_resumed_training_continues_with_the_host_slots(self):
    """The host tables' Adam slots are saved and restored: 2 steps, a checkpoint, a fresh
    model restored from it and 2 more steps end where 4 steps in a row end."""
    batches = [test_train_step._batch(seed=seed) for seed in (1, 2, 3, 4)]
    straight = _adam_run(batches)
    resumed = _adam_run(batches, save_after=2, directory=self.get_temp_dir())
    for want, got in zip(straight, resumed):
      self.assertAllClose(want, got, rtol=1e-6, atol=1e-7)


@pytest.mark.slow
class TwoDeviceTest(tf.test.TestCase):

  def test_pinned_tables_train_as_tables_on_the_accelerator(self):
    """Host CPU:0 and a stand-in accelerator CPU:1 (`host_embedding_check`): every model,
    precision and step ends with the parameters of the accelerator placement."""
    result = subprocess.run([sys.executable, "-m", "tests.host_embedding_check"], cwd=ROOT,
                            capture_output=True, text=True, timeout=1200, check=False)
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    report = json.loads(result.stdout.strip().splitlines()[-1])
    data = report.pop("data")
    self.assertEqual(data, {kind: {"repeats": True, "shared": True} for kind in ("seq2seq", "lm")})
    self.assertLen(report, 20)
    for case, outcome in report.items():
      self.assertEqual(outcome["devices"], ["CPU:0", "CPU:1", "CPU:1", "CPU:1"], msg=case)
      # bfloat16 rows and row gradients: rounded to 8 bits on the way (a few steps of 0.01).
      self.assertLess(outcome["max_diff"], 1e-3 if "bf16" in case else 1e-6, msg=case)
      if "lookahead" in case:  # the same ops as the step part after part, in another order
        self.assertEqual(outcome["max_diff_split"], 0.0, msg=case)
      elif "fp32" in case:  # the plain step too against the compiled whole step (XLA's rounding)
        self.assertLess(outcome["max_diff_whole"], 2e-5, msg=case)
