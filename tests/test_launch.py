"""launch.py and seq2seq.distributed.supervisor: a dead worker restarts the whole group, which resumes.

The supervisor tests run small Python commands as the "workers" (no TensorFlow, about a
second each); `LaunchTrainTest` runs train.py under launch.py and stops workers with SIGTERM
and SIGKILL.
"""
import json
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import types
from unittest import mock

from absl.testing import absltest
import pytest

from seq2seq import config as config_lib
from seq2seq.distributed import supervisor
from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A worker: records its start (TF_CONFIG) in DIR, then runs BODY (index = its task index).
_WORKER = """
import json, os, signal, sys, time
directory, body = sys.argv[1], sys.argv[2]
index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
starts = len([n for n in os.listdir(directory) if n.startswith(f"start-{index}-")])
with open(os.path.join(directory, f"start-{index}-{starts}"), "w") as f:
  f.write(os.environ["TF_CONFIG"])
exec(body)
"""


def _supervise(tmp, body, max_restarts=2, grace_s=5.0):
  """Runs 2 workers of `body` under `supervisor.supervise`; (status, starts, log lines).

  starts names each recorded start, "start-INDEX-N". A worker stopped by the supervisor
  before its Python started records none.
  """
  lines = []
  status = supervisor.supervise(
      [sys.executable, "-c", _WORKER, tmp, body],
      config_lib.LaunchConfig(num_workers=2, max_restarts=max_restarts, grace_s=grace_s),
      log=lines.append)
  starts = sorted(n for n in os.listdir(tmp) if n.startswith("start-"))
  return status, starts, lines


class SupervisorTest(absltest.TestCase):

  def test_workers_get_the_tf_config_of_one_cluster(self):
    tmp = self.enter_context(tempfile.TemporaryDirectory())
    status, starts, _ = _supervise(tmp, "pass")
    self.assertEqual(status, 0)
    self.assertEqual(starts, ["start-0-0", "start-1-0"])
    configs = []
    for index in range(2):
      with open(os.path.join(tmp, f"start-{index}-0"), encoding="utf-8") as f:
        configs.append(json.load(f))
    self.assertEqual(configs[0]["cluster"], configs[1]["cluster"])
    self.assertLen(set(configs[0]["cluster"]["worker"]), 2)
    self.assertEqual([c["task"] for c in configs],
                     [{"type": "worker", "index": 0}, {"type": "worker", "index": 1}])

  def test_gpus_per_worker_gives_each_worker_its_own_visible_gpus(self):
    group = supervisor.WorkerGroup(["true"], 2, env={"CUDA_VISIBLE_DEVICES": "3,5,6,7"},
                                   gpus_per_worker=2)
    envs = [group.worker_env(["a:1", "b:2"], index) for index in range(2)]
    self.assertEqual([e["CUDA_VISIBLE_DEVICES"] for e in envs], ["3,5", "6,7"])
    self.assertEqual(json.loads(envs[1]["TF_CONFIG"])["task"]["index"], 1)
    every = supervisor.WorkerGroup(["true"], 2, env={"CUDA_VISIBLE_DEVICES": "3"})
    self.assertEqual(every.worker_env(["a:1", "b:2"], 1)["CUDA_VISIBLE_DEVICES"], "3")
    with self.assertRaisesRegex(supervisor.TooFewGpus, "2 workers need 2 GPUs, and 1 are"):
      supervisor.WorkerGroup(["true"], 2, env={"CUDA_VISIBLE_DEVICES": "0"}, gpus_per_worker=1)

  def test_visible_gpus_from_nvidia_smi_without_cuda_visible_devices(self):
    listing = "GPU 0: NVIDIA H200 (UUID: GPU-a)\nGPU 1: NVIDIA H200 (UUID: GPU-b)\n"
    with mock.patch.object(supervisor.subprocess, "run",
                           return_value=types.SimpleNamespace(stdout=listing)):
      self.assertEqual(supervisor.visible_gpus({}), ["0", "1"])
    with mock.patch.object(supervisor.subprocess, "run", side_effect=FileNotFoundError):
      self.assertEqual(supervisor.visible_gpus({}), [])
    self.assertEqual(supervisor.visible_gpus({"CUDA_VISIBLE_DEVICES": ""}), [])
    with self.assertRaisesRegex(config_lib.ConfigError, "gpus_per_worker"):
      config_lib.LaunchConfig(gpus_per_worker=-1)

  def test_launch_refuses_more_gpus_than_visible_before_starting(self):
    result = subprocess.run(
        [sys.executable, "launch.py", "--num_workers=2", "--gpus_per_worker=1", "--",
         "--workdir=/nonexistent/never"], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env=dict(os.environ, CUDA_VISIBLE_DEVICES="0"))
    self.assertNotEqual(result.returncode, 0)
    self.assertIn("--gpus_per_worker=1: 2 workers need 2 GPUs, and 1 are visible (0)",
                  result.stderr)
    self.assertNotIn("launch: started", result.stdout)

  def test_a_killed_worker_restarts_every_worker(self):
    # First start: worker 1 dies of SIGKILL and worker 0 waits (SIGTERM ends it); then both
    # finish. A worker that is still running is stopped, not left behind.
    body = ("if starts == 0 and index == 1:\n"
            "  while not os.path.exists(os.path.join(directory, 'start-0-0')): time.sleep(0.05)\n"
            "  os.kill(os.getpid(), signal.SIGKILL)\n"
            "if starts == 0: time.sleep(60)")
    tmp = self.enter_context(tempfile.TemporaryDirectory())
    start = time.monotonic()
    status, starts, lines = _supervise(tmp, body)
    self.assertLess(time.monotonic() - start, 30)
    self.assertEqual(status, 0, lines)
    self.assertEqual(starts, ["start-0-0", "start-0-1", "start-1-0", "start-1-1"])
    self.assertTrue(any("worker 1" in m and "killed by SIGKILL" in m for m in lines), lines)
    self.assertTrue(any(m.startswith("launch: restart 1 of at most 2") for m in lines), lines)

  def test_exit_1_is_permanent_and_not_restarted(self):
    tmp = self.enter_context(tempfile.TemporaryDirectory())
    status, starts, lines = _supervise(tmp, "sys.exit(1 if index == 0 else 0)")
    self.assertEqual(status, 1)
    self.assertEqual([s for s in starts if s.startswith("start-0-")], ["start-0-0"])
    self.assertTrue(any("not restarting" in m for m in lines), lines)

  def test_a_crash_loop_ends_after_max_restarts(self):
    tmp = self.enter_context(tempfile.TemporaryDirectory())
    status, starts, lines = _supervise(tmp, "sys.exit(129)", max_restarts=2)
    self.assertEqual(status, 129)
    # The first start and 2 restarts (worker 1 may be stopped before it records a start).
    self.assertEqual([s for s in starts if s.startswith("start-0-")],
                     ["start-0-0", "start-0-1", "start-0-2"])
    self.assertTrue(any("giving up after 2 restarts" in m for m in lines), lines)

  def test_sigterm_to_the_supervisor_is_passed_on_and_nothing_restarts(self):
    body = ("signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))\n"
            "time.sleep(60)")
    tmp = self.enter_context(tempfile.TemporaryDirectory())
    def terminate_when_both_started():
      while not all(os.path.exists(os.path.join(tmp, f"start-{i}-0")) for i in range(2)):
        time.sleep(0.05)
      time.sleep(0.5)  # and their handlers are installed
      os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=terminate_when_both_started, daemon=True).start()
    status, starts, lines = _supervise(tmp, body)
    self.assertEqual(status, 143)
    self.assertEqual(starts, ["start-0-0", "start-1-0"])
    self.assertTrue(any("passing it on to the workers" in m for m in lines), lines)

  def test_describe(self):
    self.assertEqual(supervisor.describe(-9), "killed by SIGKILL")
    self.assertEqual(supervisor.describe(143), "exit 143")


def _read_lines(stream, lines):
  for line in stream:
    lines.put(line)
  lines.put(None)


def _checkpoint_step(workdir):
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  reader = tf.train.load_checkpoint(os.path.join(workdir, "checkpoints"))
  return int(reader.get_tensor("progress/step/.ATTRIBUTES/VARIABLE_VALUE"))


@pytest.mark.slow
class LaunchTrainTest(absltest.TestCase):
  """Two train.py workers under launch.py: stopped by SIGTERM, then the chief SIGKILLed."""

  MAX_STEPS = 40
  SAVE_EVERY = 4

  @pytest.mark.slow
  def test_killed_workers_restart_and_resume_from_the_chiefs_checkpoint(self):
    with tempfile.TemporaryDirectory() as tmp:
      data = helpers.write_reverse_task(os.path.join(tmp, "reverse.tsv"), num_pairs=100)
      workdir = os.path.join(tmp, "run")
      flags = [f"--data={data}", f"--workdir={workdir}", "--num_layers=1", "--hidden_size=32",
               "--embedding_size=16", "--max_length=6", "--num_buckets=1", "--max_vocab=50",
               "--batch_size=15", "--log_every=1", f"--save_every={self.SAVE_EVERY}",
               f"--max_steps={self.MAX_STEPS}"]
      # Buffered output: each flushed log line is one write, whole in the shared pipe.
      env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
      env.pop("PYTHONUNBUFFERED", None)
      launcher = subprocess.Popen(
          [sys.executable, "launch.py", "--num_workers=2", "--max_restarts=2", "--grace_s=10",
           "--", *flags], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
          text=True)
      lines = queue.Queue()
      threading.Thread(target=_read_lines, args=(launcher.stdout, lines), daemon=True).start()
      output, pids, resumed = [], [], []
      stopped_at = killed_after = None
      terminated = False
      deadline = time.monotonic() + 240
      try:
        while True:
          line = lines.get(timeout=max(deadline - time.monotonic(), 0.1))
          if line is None:
            break
          output.append(line)
          match = re.match(r"launch: started .*: worker 0 pid (\d+), worker 1 pid (\d+)", line)
          if match:
            pids.append((int(match.group(1)), int(match.group(2))))
          match = re.match(r"Resuming from \S+ at step (\d+)", line)
          if match:
            resumed.append(int(match.group(1)))
          match = re.match(r"stopped by signal 15 \(received by another worker\) at step (\d+)",
                           line)
          if match:
            stopped_at = int(match.group(1))
          match = re.match(rf"(\d+)/{self.MAX_STEPS} ", line)  # the chief's progress
          if not match:
            continue
          step = int(match.group(1))
          if len(pids) == 1 and step >= 3 and not terminated:
            os.kill(pids[0][1], signal.SIGTERM)  # preempt worker 1: the group saves and stops
            terminated = True
          elif (len(pids) == 2 and resumed and step >= resumed[0] + self.SAVE_EVERY + 1
                and killed_after is None):
            os.kill(pids[1][0], signal.SIGKILL)  # the chief dies between checkpoints
            killed_after = step
        launcher.wait(timeout=60)
      finally:
        launcher.kill()
        for pid in (pid for pair in pids for pid in pair):
          try:
            os.kill(pid, signal.SIGKILL)
          except ProcessLookupError:
            pass
      text = "".join(output)
      self.assertEqual(launcher.returncode, 0, text[-5000:])
      self.assertNotIn("Traceback", text)
      self.assertLen(pids, 3, text[-5000:])
      # The SIGTERM'd group saved and stopped (143); then the chief was SIGKILLed.
      self.assertRegex(text, r"launch: worker \d \(pid \d+\) stopped: exit 143")
      self.assertIn(f"launch: worker 0 (pid {pids[1][0]}) stopped: killed by SIGKILL", text)
      # Both workers stopped at the same step; the restart resumed exactly there.
      self.assertRegex(text, rf"\[worker 1\] stopped by signal 15 at step {stopped_at};")
      self.assertIsNotNone(killed_after)
      self.assertEqual(resumed[0], stopped_at)
      # After the SIGKILL, from the chief's last checkpoint: later than the first resume,
      # not step 0, at most --save_every steps lost.
      self.assertLen(resumed, 2)
      self.assertGreater(resumed[1], resumed[0])
      self.assertEqual(resumed[1] % self.SAVE_EVERY, 0)
      self.assertGreaterEqual(resumed[1], killed_after - self.SAVE_EVERY)
      self.assertEqual(_checkpoint_step(workdir), self.MAX_STEPS)
      self.assertIn("launch: every worker finished", text)
      for pair in pids:  # no worker outlives the launcher
        for pid in pair:
          with self.assertRaises(ProcessLookupError):
            os.kill(pid, 0)


if __name__ == "__main__":
  absltest.main()
