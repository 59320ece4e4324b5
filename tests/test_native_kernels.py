"""The engine's C++ kernels (`ops/native.py`): built once into a cache, equal to their
references, refusing bad input with a message, and replaced by the reference where no
compiler can build them."""
import os
import shutil
import subprocess
import sys
import tempfile

import pytest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from ops import native
from seq2seq.modes import run as run_lib
from seq2seq.step import fused_adam
from tests import test_host_memory
from tests import test_ops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_compiler = pytest.mark.skipif(shutil.which(native.compiler()) is None,
                                    reason=f"no C++ compiler {native.compiler()!r}")


def _kernel():
  kernel = native.load("sparse_adam_rows")
  assert kernel is not None, "the kernel did not build: see the warning logged"
  return kernel


def _variables(rng, vocab, width, dtype):
  """A table and its m and v slots, [vocab, width], v >= 0."""
  values = [rng.uniform(-0.1, 0.1, (vocab, width)), rng.normal(size=(vocab, width)) * 0.1,
            rng.uniform(0, 0.01, (vocab, width))]
  return [tf.Variable(value.astype(dtype)) for value in values]


def _apply(variables, rows, gradient, lr, step, beta2=0.999):
  """One update of `variables` (table, m, v) through `fused_adam.adam_rows`, on the kernel."""
  _kernel()
  assert fused_adam.kernel_applies(variables[0])
  dtype = variables[0].dtype
  fused_adam.adam_rows(tf.constant(gradient, dtype), tf.constant(rows, tf.int32), *variables,
                       tf.constant(lr, dtype), tf.constant(step, dtype), 0.9, beta2, 1e-8)


@needs_compiler
class SparseAdamRowsTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters((np.float32, 3e-6, 1e-6), (np.float64, 1e-12, 1e-14))
  def test_steps_equal_numpy_adam_in_float64(self, dtype, param_tolerance, slot_tolerance):
    """Five steps on overlapping sets of distinct rows, gradients from 1e-6 to 10, on many
    threads' worth of rows: every touched row equals NumPy float64 Adam to the dtype's
    rounding (per row, relative to its largest value; for the parameter, to its change), and
    no other row changes."""
    rng = np.random.default_rng(0)
    variables = _variables(rng, 900, 48, dtype)
    want = [v.numpy().astype(np.float64) for v in variables]
    before = [w.copy() for w in want]
    touched = np.zeros(900, bool)
    for step in range(1, 6):
      rows = rng.choice(900, 600, replace=False)
      touched[rows] = True
      gradient = (rng.normal(size=(600, 48)) * np.exp(rng.uniform(-14, 2, (600, 1))))
      gradient = gradient.astype(dtype)
      _apply(variables, rows, gradient, 0.01, float(step), beta2=0.98)
      new = test_ops.np_adam(want[0][rows], gradient.astype(np.float64), want[1][rows],
                             want[2][rows], 0.01, step, beta2=0.98)
      for w, value in zip(want, new):
        w[rows] = value
    for name, w, variable, start in zip(("param", "m", "v"), want, variables, before):
      got = variable.numpy().astype(np.float64)
      self.assertAllEqual(got[~touched], start[~touched])
      if name == "param":  # its change: the parameter's own rounding would hide the step's
        got, w = got - start, w - start
      error = np.max(np.abs(got - w)[touched], 1) / np.max(np.abs(w)[touched], 1)
      self.assertLess(np.max(error), param_tolerance if name == "param" else slot_tolerance,
                      name)

  def test_equals_the_reference_rows_update(self):
    """`fused_adam.adam_rows` with the kernel and with its reference, one float32 step with
    beta2 = 0.999 (whose 1 - b2 float32 cannot hold): the same values to float32 rounding."""
    rng = np.random.default_rng(1)
    kernel_side = _variables(rng, 64, 16, np.float32)
    reference_side = [tf.Variable(v) for v in kernel_side]
    rows = tf.constant(rng.choice(64, 40, replace=False), tf.int32)
    gradient = tf.constant(rng.normal(size=(40, 16)), tf.float32)
    lr, step = tf.constant(0.003), tf.constant(4.0)
    self.assertTrue(fused_adam.kernel_applies(kernel_side[0]))
    fused_adam.adam_rows(gradient, rows, *kernel_side, lr, step, 0.9, 0.999, 1e-8)
    fused_adam.reference_adam_rows(gradient, rows, *reference_side, lr, step, 0.9, 0.999,
                                   1e-8)
    for got, want in zip(kernel_side, reference_side):
      self.assertAllClose(got, want, rtol=2e-6, atol=1e-7)

  def test_reads_a_bfloat16_gradient_as_its_float32_cast(self):
    """A bf16 step's row gradients, given as they come, update the rows bit for bit as the
    same gradients cast to float32 first (the cast is exact)."""
    rng = np.random.default_rng(5)
    as_bf16 = _variables(rng, 30, 8, np.float32)
    as_f32 = [tf.Variable(v) for v in as_bf16]
    rows = tf.constant([4, 17, 2], tf.int32)
    gradient = tf.cast(tf.constant(rng.normal(size=(3, 8)), tf.float32), tf.bfloat16)
    for variables, given in ((as_bf16, gradient), (as_f32, tf.cast(gradient, tf.float32))):
      fused_adam.adam_rows(given, rows, *variables, tf.constant(0.01), tf.constant(2.0), 0.9,
                           0.999, 1e-8)
    for got, want in zip(as_bf16, as_f32):
      self.assertAllEqual(got, want)
    self.assertNotAllEqual(as_f32[0], _variables(np.random.default_rng(5), 30, 8, np.float32)[0])

  @parameterized.parameters(
      ([1, 70], "row 70 is outside the table's 8 rows"),
      ([-1], "row -1 is outside"),
      ([2, 5, 2], "row 2 is given twice; rows must be distinct"))
  def test_refuses_rows_it_cannot_update(self, rows, message):
    variables = _variables(np.random.default_rng(2), 8, 4, np.float32)
    before = [v.numpy() for v in variables]
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError, message):
      _apply(variables, rows, np.ones((len(rows), 4), np.float32), 0.1, 1.0)
    for variable, value in zip(variables, before):
      self.assertAllEqual(variable, value)

  def test_refuses_shapes_that_do_not_match(self):
    variables = _variables(np.random.default_rng(3), 8, 4, np.float32)
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                r"grad \[U, E\] for a table of \[8,4\]"):
      _apply(variables, [1, 2], np.ones((2, 5), np.float32), 0.1, 1.0)
    variables[2] = tf.Variable(tf.zeros([8, 3]))
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError, "one \\[V, E\\] shape"):
      _apply(variables, [1], np.ones((1, 4), np.float32), 0.1, 1.0)

  def test_applies_in_a_function_and_only_on_a_cpu(self):
    """Traced into a `tf.function` as the split step calls it; a bfloat16 table, which the
    kernel has no type for, runs the reference."""
    variables = _variables(np.random.default_rng(4), 10, 4, np.float32)
    update = tf.function(lambda: fused_adam.adam_rows(
        tf.ones([2, 4]), tf.constant([3, 7]), *variables, tf.constant(0.1),
        tf.constant(1.0), 0.9, 0.999, 1e-8))
    before = variables[0].numpy()
    update()
    changed = np.any(variables[0].numpy() != before, axis=1)
    self.assertAllEqual(np.flatnonzero(changed), [3, 7])
    self.assertFalse(fused_adam.kernel_applies(tf.Variable(tf.zeros([2, 2], tf.bfloat16))))


class BuildTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.cache = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, self.cache)
    self.enter_context(pytest.MonkeyPatch.context()).setenv("SEQ2SEQ_KERNEL_CACHE", self.cache)

  def test_without_a_compiler_the_reference_runs(self):
    """No compiler: `build` says which and what to install; in a fresh process `load` logs
    it and returns None, and `adam_rows` runs the reference, correctly."""
    with pytest.MonkeyPatch.context() as patch:
      patch.setenv("CXX", "no-such-compiler-x")
      with self.assertRaisesRegex(native.BuildError, "no C\\+\\+ compiler 'no-such-compiler-x'"
                                  ".*install g\\+\\+"):
        native.build("sparse_adam_rows")
    script = (
        "import numpy as np, tensorflow as tf\n"
        "from ops import native\n"
        "from seq2seq.step import fused_adam\n"
        "print('loaded', native.load('sparse_adam_rows'))\n"
        "v = [tf.Variable(tf.fill([4, 2], float(x))) for x in (1, 0, 0)]\n"
        "fused_adam.adam_rows(tf.ones([1, 2]), tf.constant([2]), *v, tf.constant(0.5),\n"
        "                     tf.constant(1.0), 0.9, 0.999, 1e-8)\n"
        "print('rows', np.round(v[0].numpy()[:, 0], 4).tolist())\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                            text=True, timeout=300,
                            env=dict(os.environ, CXX="no-such-compiler-x",
                                     TF_CPP_MIN_LOG_LEVEL="2"))
    self.assertEqual(result.returncode, 0, result.stderr)
    self.assertIn("loaded None", result.stdout)
    self.assertIn("rows [1.0, 1.0, 0.5, 1.0]", result.stdout)  # Adam's first step: lr
    self.assertIn("no C++ compiler 'no-such-compiler-x'", result.stderr)
    self.assertEqual(os.listdir(self.cache), [])

  def test_a_failed_build_shows_the_compiler_and_leaves_nothing(self):
    with pytest.MonkeyPatch.context() as patch:
      patch.setenv("CXX", "false")  # a "compiler" that fails
      with self.assertRaisesRegex(native.BuildError, "kernel sparse_adam_rows: `false"):
        native.build("sparse_adam_rows")
    self.assertEqual(os.listdir(self.cache), [])

  @needs_compiler
  def test_builds_once_into_the_cache(self):
    path = native.build("sparse_adam_rows")
    self.assertEqual(os.path.dirname(path), self.cache)
    self.assertIn(f"tf{tf.__version__}", os.path.basename(path))
    self.assertEqual(os.listdir(self.cache), [os.path.basename(path)])
    stamp = os.stat(path).st_mtime_ns
    with pytest.MonkeyPatch.context() as patch:  # a second build must not compile
      patch.setattr(native, "_compile", lambda *args: self.fail("compiled again"))
      self.assertEqual(native.build("sparse_adam_rows"), path)
    self.assertEqual(os.stat(path).st_mtime_ns, stamp)

  def test_an_unwritable_cache_is_named(self):
    blocker = os.path.join(self.cache, "file")
    open(blocker, "w", encoding="utf-8").close()
    with pytest.MonkeyPatch.context() as patch:
      patch.setenv("SEQ2SEQ_KERNEL_CACHE", os.path.join(blocker, "cache"))  # under a file
      with self.assertRaisesRegex(native.BuildError,
                                  "cannot write to .*file/cache.*set SEQ2SEQ_KERNEL_CACHE"):
        native.build("sparse_adam_rows")

  def test_a_library_that_does_not_load_falls_back_with_a_warning(self):
    """A damaged file where the library should be: `load` warns, naming it, and returns
    None; the caller runs the reference."""
    path, _ = native.library_path("sparse_adam_rows")
    with open(path, "wb") as f:
      f.write(b"not a shared library")
    with pytest.MonkeyPatch.context() as patch:
      patch.setattr(native, "_loaded", {})
      with self.assertLogs(level="WARNING") as logs:
        self.assertIsNone(native.load("sparse_adam_rows"))
      self.assertFalse(fused_adam.kernel_applies(tf.Variable(tf.zeros([2, 2]))))
    self.assertIn(path, logs.output[0])
    self.assertIn("delete the file to build it again", logs.output[0])


def _built_by_run(monkeypatch, run_config):
  """(kernels loaded, log lines) of `run.build_host_kernels` in a fresh state. The library
  is built but not loaded: a second library of the same ops in this process would register
  their kernels twice."""
  loads, lines = [], []
  real_load = native.load
  monkeypatch.setattr(native, "_loaded", {})
  monkeypatch.setattr(native, "load", lambda name: loads.append(name) or real_load(name))
  monkeypatch.setattr(tf, "load_op_library", lambda path: path)
  run_lib.build_host_kernels(run_config, lines.append)
  return loads, lines


@needs_compiler
def test_training_builds_the_kernel_first_and_says_so(monkeypatch, tmp_path):
  monkeypatch.setenv("SEQ2SEQ_KERNEL_CACHE", str(tmp_path))
  config = test_host_memory.run_config_of()
  loads, lines = _built_by_run(monkeypatch, config)
  assert loads == ["sparse_adam_rows"] and len(lines) == 1
  assert lines[0].startswith("host Adam kernel: built in ") and str(tmp_path) in lines[0]
  assert _built_by_run(monkeypatch, config) == (["sparse_adam_rows"], [])  # cached: quiet


def test_training_says_when_the_reference_updates_the_rows(monkeypatch, tmp_path):
  monkeypatch.setenv("CXX", "no-such-compiler-x")
  monkeypatch.setenv("SEQ2SEQ_KERNEL_CACHE", str(tmp_path))
  _, lines = _built_by_run(monkeypatch, test_host_memory.run_config_of())
  assert lines == ["host Adam kernel: not available (the warning above says why); the "
                   "embedding's rows are updated by TensorFlow's ops, slower"]


def test_training_builds_nothing_where_no_step_uses_the_kernel(monkeypatch):
  tied = dict(tie_embeddings=True, embedding_size=256, hidden_size=256)
  for changes in (dict(optimizer="sgd"), dict(embedding_device="gpu"), dict(model="lm", **tied),
                  dict(strategy="mirrored")):
    assert _built_by_run(monkeypatch, test_host_memory.run_config_of(**changes)) == ([], []), \
        changes

