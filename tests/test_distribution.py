"""tf.distribute: mirrored and multi-worker runs equal one device on the same global batches."""
import json
import os
import re
import socket
import subprocess
import sys
import tempfile

from absl.testing import absltest
import pytest

from seq2seq import config as config_lib
from seq2seq import distribution

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(args, env=None, timeout=240):
  env = dict(os.environ if env is None else env, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
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


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _losses(output):
  """{step: loss} from train.py's progress lines."""
  return {int(m.group(1)): float(m.group(2))
          for m in re.finditer(r"^(?:\[worker \d\] )?(\d+)/\d+ .* loss=([0-9.]+)", output, re.M)}


def _run_workers(flags, num_workers=2):
  """Runs train.py as `num_workers` multi_worker processes on localhost; [(returncode, output)]."""
  cluster = {"worker": [f"127.0.0.1:{_free_port()}" for _ in range(num_workers)]}
  workers = []
  for index in range(num_workers):
    tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT, TF_CONFIG=tf_config)
    workers.append(subprocess.Popen(
        [sys.executable, "train.py", *flags, "--strategy=multi_worker"], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
  outputs = []
  for worker in workers:
    try:
      outputs.append(worker.communicate(timeout=240)[0])
    finally:
      worker.kill()
  return [(worker.returncode, output) for worker, output in zip(workers, outputs)]


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

if __name__ == "__main__":
  absltest.main()
