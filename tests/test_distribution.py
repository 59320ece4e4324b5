"""tf.distribute: mirrored and multi-worker runs equal one device on the same global batches."""
import json
import os
import re
import subprocess
import sys
import tempfile

import types
from unittest import mock

from absl.testing import absltest
import numpy as np
import pytest
import tensorflow as tf

from seq2seq import config as config_lib
from seq2seq.data import batches as batches_lib
from seq2seq.distributed import distributed_step
from seq2seq.distributed import distribution
from seq2seq.distributed import supervisor
from seq2seq.models import encoder_decoder as model_lib
from seq2seq.runtime import interrupts
from seq2seq.step import optimizers
from seq2seq.step import train_step as train_step_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python_path(env):
  """PYTHONPATH for a child: the repository first, then what `env` already has (where
  TensorFlow may come from, as on the device machine)."""
  return os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)


def _run(args, env=None, timeout=240):
  env = dict(os.environ if env is None else env)
  env.update(TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=_python_path(env))
  return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=timeout, check=False)


class ReplicaRowsTest(absltest.TestCase):

  def test_slices_cover_the_batch_in_order(self):
    for batch_size in range(0, 12):
      for replicas in (1, 2, 3, 4):
        rows = [distribution.replica_rows(batch_size, r, replicas) for r in range(replicas)]
        covered = [i for start, end in rows for i in range(start, end)]
        self.assertEqual(covered, list(range(batch_size)), (batch_size, replicas))

  def test_uneven_batch(self):
    self.assertEqual([distribution.replica_rows(15, r, 2) for r in range(2)], [(0, 8), (8, 15)])


class ConfigTest(absltest.TestCase):

  def test_strategy_options_are_checked(self):
    with self.assertRaisesRegex(config_lib.ConfigError, "strategy: must be one of"):
      config_lib.TrainConfig(strategy="parameter_server")
    with self.assertRaisesRegex(config_lib.ConfigError, "devices: is only used with"):
      config_lib.TrainConfig(devices="/gpu:0")
    config_lib.TrainConfig(strategy="mirrored", jit_compile=True)  # supported (mirrored_check)

  def test_tpu_without_a_tpu_is_a_clear_error(self):
    with self.assertRaisesRegex(distribution.StrategyError, "--strategy=tpu: no TPU"):
      distribution.make_strategy("tpu")

  def test_default_strategy_is_one_chief_replica(self):
    strategy = distribution.make_strategy("default")
    self.assertEqual(strategy.num_replicas_in_sync, 1)
    self.assertTrue(distribution.is_chief(strategy))


@pytest.mark.slow
class MirroredTest(absltest.TestCase):

  @pytest.mark.slow
  def test_two_logical_cpus_match_one_device_resume_and_jit_compile(self):
    with tempfile.TemporaryDirectory() as tmp:
      result = _run(["-m", "tests.mirrored_check", tmp])
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    report = json.loads(result.stdout.strip().splitlines()[-1])
    for run, differences in report.items():
      self.assertNotEmpty(differences)
      for key, difference in differences.items():
        self.assertLess(difference, 1e-5, f"{run}: {key}")


@pytest.mark.slow
class AllReduceInXlaTest(absltest.TestCase):

  @staticmethod
  def _strategy(devices, replicas):
    return types.SimpleNamespace(extended=types.SimpleNamespace(worker_devices=devices),
                                 num_replicas_in_sync=replicas)

  def test_only_when_every_replica_of_the_worker_is_a_gpu(self):
    gpus = ["/job:localhost/replica:0/task:0/device:GPU:0",
            "/job:localhost/replica:0/task:0/device:GPU:1"]
    self.assertTrue(distributed_step.all_reduce_in_xla_possible(self._strategy(gpus, 2)))
    # XLA compiles no collective for CPUs.
    cpus = ["/job:localhost/replica:0/task:0/device:CPU:0", "/device:CPU:1"]
    self.assertFalse(distributed_step.all_reduce_in_xla_possible(self._strategy(cpus, 2)))
    self.assertFalse(distributed_step.all_reduce_in_xla_possible(
        self._strategy([gpus[0], cpus[0]], 2)))
    # Two workers of two GPUs each: XLA's all-reduce reaches the other worker's too.
    self.assertTrue(distributed_step.all_reduce_in_xla_possible(self._strategy(gpus, 4)))
    self.assertFalse(distributed_step.all_reduce_in_xla_possible(
        tf.distribute.MirroredStrategy(["/cpu:0"])))

  def test_rows_in_slots_add_up_to_every_replicas_rows(self):
    """The all-gather by all-reduce of the tables' rows: uneven replicas (3 and 2 rows in
    slots of 3), added up as the all-reduce does, give the gradient and lookup counts of all
    rows together."""
    rng = np.random.default_rng(0)
    values = [rng.normal(size=[3, 4]), rng.normal(size=[2, 4])]
    ids = [np.array([1, 4, 1]), np.array([4, 0])]
    slotted = [distributed_step._rows_in_slot(tf.constant(v), tf.constant(i), replica, 2, 3)
               for replica, (v, i) in enumerate(zip(values, ids))]
    summed = [a + b for a, b in zip(*slotted)]
    self.assertEqual(summed[0].shape, [6, 4])
    gradient, lookups = optimizers.summed_rows(*summed[:2], 6, summed[2])
    expected = np.zeros([6, 4])
    np.add.at(expected, np.concatenate(ids), np.concatenate(values))
    np.testing.assert_allclose(gradient, expected, atol=1e-12)
    np.testing.assert_array_equal(lookups, [1, 2, 0, 0, 2, 0])  # the empty slot row: no lookup

  def test_gathers_rows_only_when_fewer_than_the_table(self):
    self.assertTrue(distributed_step.gathers_rows(2, 5376, 20000))  # seed_b256, 2 GPUs
    self.assertFalse(distributed_step.gathers_rows(4, 5376, 20000))
    self.assertFalse(distributed_step.gathers_rows(2, 50, 100))

  def test_one_program_step_matches_the_two_program_step(self):
    """On one CPU (one replica: the all-reduce is the identity, so the program compiles), the
    step as one XLA program, with the tables' row sums or their rows, its all-reduce in
    stages or at the end, against the step whose all-reduce sits between two programs: the
    same losses and variables after 3 steps. The learning rate decays every step and is
    scaled by a variable that changes between steps (the one program computes it itself).
    Both steps also take the batch with int64 ids (`train_step.device_batch`) alike."""
    batches = [batches_lib.Batch(*(tf.constant(x) for x in _synthetic_batch(seed)))
               for seed in range(3)]

    def train(all_reduce_in_xla, gather_rows=None, placed=False, **options):
      strategy = distribution.mirrored_strategy(["/cpu:0"])
      with strategy.scope():
        model = model_lib.Seq2Seq(config_lib.ModelConfig(
            hidden_size=8, embedding_size=6, share_embeddings=False, keep_prob=1.0), 30, seed=0)
        model.build()
        scale = tf.Variable(1.0, trainable=False)
        optimizer = optimizers.make_optimizer(
            config_lib.TrainConfig(learning_rate=0.01, decay_steps=1, decay_rate=0.5),
            model.trainable_variables, learning_rate_scale=scale)
      step = distributed_step.make_distributed_train_step(
          model, optimizer, 0.5, strategy, jit_compile=True,
          all_reduce_in_xla=all_reduce_in_xla, batch_size=5, **options)
      votes = tf.zeros([len(interrupts.SIGNALS)])
      losses = []
      with mock.patch.object(distributed_step, "gathers_rows",
                             (lambda *_: gather_rows) if gather_rows is not None else
                             distributed_step.gathers_rows):
        for number, b in enumerate(batches):
          if placed:  # ids as int64 on the device (`train_step.device_batch`)
            b = train_step_lib.device_batch(b, "/cpu:0")
          scale.assign(4.0 ** number)
          losses.append(float(step(b, votes)[0]))
      return losses, [v.numpy() for v in model.trainable_variables + optimizer.variables]

    def assert_same(actual_run, expected_run):
      (losses, actual), (expected_losses, expected) = actual_run, expected_run
      np.testing.assert_allclose(losses, expected_losses, rtol=1e-6)
      self.assertLen(actual, len(expected))
      for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-6)

    expected = train(False)
    for gather_rows in (False, True):
      for staged in (True, False):
        assert_same(train(True, gather_rows, staged_all_reduce=staged), expected)
    for all_reduce_in_xla in (True, False):
      assert_same(train(all_reduce_in_xla, placed=True), expected)

  @pytest.mark.slow
  def test_two_gpus_one_program_per_replica_match_one_device(self):
    if len(tf.config.list_physical_devices("GPU")) < 2:
      self.skipTest("needs 2 GPUs (run on the device machine, see BUILD.md)")
    with tempfile.TemporaryDirectory() as tmp:
      result = _run(["-m", "tests.mirrored_check", tmp, "gpus"], timeout=600)
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    report = json.loads(result.stdout.strip().splitlines()[-1])
    self.assertEqual(sorted(report), ["mirrored_jit", "mirrored_jit_rows", "resumed_jit"])
    for run, differences in report.items():
      self.assertNotEmpty(differences)
      for key, difference in differences.items():
        self.assertLess(difference, 1e-5, f"{run}: {key}")


def _synthetic_batch(seed, rows=5, length=4, vocab=30):
  """A seq2seq batch of `rows` (NumPy), some target positions weighted 0."""
  rng = np.random.default_rng(seed)
  source = rng.integers(4, vocab, [rows, length]).astype(np.int32)
  target = rng.integers(4, vocab, [rows, length + 1]).astype(np.int32)
  weight = (rng.random([rows, length + 1]) < 0.8).astype(np.float32)
  return batches_lib.Batch(source=source, source_length=np.full([rows], length, np.int32),
                       decoder_input=np.roll(target, 1, axis=1), target=target,
                       target_weight=weight)


def _losses(output):
  """{step: loss} from train.py's progress lines."""
  return {int(m.group(1)): float(m.group(2))
          for m in re.finditer(r"^(?:\[worker \d\] )?(\d+)/\d+ .* loss=([0-9.]+)", output, re.M)}


def _run_workers(flags, num_workers=2, env=None, gpu_each=False):
  """Runs train.py as `num_workers` multi_worker processes on localhost; [(returncode, output)].
  With `gpu_each`, worker i sees only GPU i."""
  addresses = [f"127.0.0.1:{supervisor.free_port()}" for _ in range(num_workers)]
  env = dict(os.environ if env is None else env)
  env.update(TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=_python_path(env))
  group = supervisor.WorkerGroup(  # as launch.py gives its workers TF_CONFIG and GPUs
      [], num_workers, env, gpus_per_worker=1 if gpu_each else 0)
  workers = []
  for index in range(num_workers):
    workers.append(subprocess.Popen(
        [sys.executable, "train.py", *flags, "--strategy=multi_worker"], cwd=ROOT,
        env=group.worker_env(addresses, index), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True))
  outputs = []
  for worker in workers:
    try:
      outputs.append(worker.communicate(timeout=240)[0])
    finally:
      worker.kill()
  return [(worker.returncode, output) for worker, output in zip(workers, outputs)]


@pytest.mark.slow
class MultiWorkerTest(absltest.TestCase):

  @pytest.mark.slow
  def test_two_local_workers_match_one_process_and_resume(self):
    with tempfile.TemporaryDirectory() as tmp:
      from tests import helpers  # pylint: disable=import-outside-toplevel
      data = helpers.write_reverse_task(os.path.join(tmp, "reverse.tsv"), num_pairs=100)
      flags = [f"--data={data}", "--num_layers=1", "--hidden_size=32", "--embedding_size=16",
               "--max_length=6", "--num_buckets=1", "--max_vocab=50", "--learning_rate=0.01",
               "--seed=3", "--batch_size=15", "--log_every=1", "--max_grad_norm=0.2"]
      workdir = os.path.join(tmp, "multi")
      # Steps 1-2, then a restart of both workers that resumes from the chief's checkpoint.
      first = _run_workers(flags + [f"--workdir={workdir}", "--max_steps=2"])
      second = _run_workers(flags + [f"--workdir={workdir}", "--max_steps=3"])
      single = _run(["train.py", *flags, f"--workdir={os.path.join(tmp, 'single')}",
                     "--max_steps=3"])
      self.assertEqual(single.returncode, 0, single.stderr[-3000:])
      for round_, results in (("first", first), ("second", second)):
        for index, (returncode, output) in enumerate(results):
          self.assertEqual(returncode, 0, f"{round_} run, worker {index}:\n{output[-3000:]}")
      self.assertIn("2 replicas in sync", first[0][1])
      self.assertTrue(os.path.exists(os.path.join(workdir, "checkpoints", "ckpt-2.index")))
      self.assertTrue(os.path.exists(os.path.join(workdir, "checkpoints", "ckpt-3.index")))
      for _, output in second:
        self.assertIn("Resuming from", output)
      # The non-chief wrote its checkpoints to a temporary folder, deleted when it finished.
      for _, output in (first[1], second[1]):
        temporary = re.search(r"\[worker 1\] done at step \d; saved (\S+)", output).group(1)
        self.assertFalse(os.path.exists(os.path.dirname(temporary)))
      expected = _losses(single.stdout)
      self.assertEqual(sorted(expected), [1, 2, 3])
      for index in range(2):
        actual = {**_losses(first[index][1]), **_losses(second[index][1])}
        self.assertEqual(sorted(actual), [1, 2, 3])
        for step, loss in expected.items():
          self.assertAlmostEqual(actual[step], loss, delta=2e-4, msg=f"worker {index} step {step}")

  @pytest.mark.slow
  def test_two_gpu_workers_one_program_each_match_one_process(self):
    """One GPU per worker process, --jit_compile: each replica's step is one XLA program whose
    NCCL all-reduce spans the two processes; its losses are those of one process on one GPU.
    Both take their batches moved onto the GPU ahead of the step (`device_prefetch`)."""
    if len(tf.config.list_physical_devices("GPU")) < 2:
      self.skipTest("needs 2 GPUs (run on the device machine, see BUILD.md)")
    with tempfile.TemporaryDirectory() as tmp:
      from tests import helpers  # pylint: disable=import-outside-toplevel
      data = helpers.write_reverse_task(os.path.join(tmp, "reverse.tsv"), num_pairs=100)
      flags = [f"--data={data}", "--num_layers=1", "--hidden_size=32", "--embedding_size=16",
               "--max_length=6", "--num_buckets=1", "--max_vocab=50", "--learning_rate=0.01",
               "--seed=3", "--batch_size=15", "--log_every=1", "--max_grad_norm=0.2",
               "--jit_compile", "--embedding_device=gpu", "--max_steps=4"]
      env = dict(os.environ, NVIDIA_TF32_OVERRIDE="0")  # fp32 GEMMs, as on one device
      workers = _run_workers(flags + [f"--workdir={os.path.join(tmp, 'multi')}"], env=env,
                             gpu_each=True)
      single = _run(["train.py", *flags, f"--workdir={os.path.join(tmp, 'single')}"],
                    env=dict(env, CUDA_VISIBLE_DEVICES="0"))
    self.assertEqual(single.returncode, 0, single.stderr[-3000:])
    expected = _losses(single.stdout)
    self.assertEqual(sorted(expected), [1, 2, 3, 4])
    for index, (returncode, output) in enumerate(workers):
      self.assertEqual(returncode, 0, f"worker {index}:\n{output[-3000:]}")
      actual = _losses(output)
      self.assertEqual(sorted(actual), [1, 2, 3, 4])
      for step, loss in expected.items():
        self.assertAlmostEqual(actual[step], loss, delta=2e-4, msg=f"worker {index} step {step}")


if __name__ == "__main__":
  absltest.main()
