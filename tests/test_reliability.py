"""The engine's promises under faults (BUILD.md, "Reliability"). Each test tries to break one
promise."""
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from unittest import mock

from absl.testing import parameterized
import numpy as np
import pytest
import tensorflow as tf

from seq2seq.runtime import checkpoints
from seq2seq.runtime import workdir as workdir_lib
from seq2seq.runtime import workdir_lock
from seq2seq.step import optimizers
from seq2seq.step import train_step as train_step_lib
from seq2seq.train import loop
from tests import helpers
from tests import test_train_step

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--num_layers=1", "--hidden_size=32", "--embedding_size=16", "--num_buckets=1",
        "--batch_size=16", "--max_length=6", "--max_vocab=50"]


def _train_py(*flags, stdout=subprocess.PIPE, stderr=subprocess.PIPE):
  env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")
  return subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), *flags], cwd=ROOT,
                          stdout=stdout, stderr=stderr, text=True, env=env)


def _read(path):
  with open(path, encoding="utf-8", errors="replace") as f:
    return f.read()


def _dead_pid():
  process = subprocess.Popen([sys.executable, "-c", "pass"])
  process.wait()
  return process.pid


def _checkpoint_values(path, prefix="model/"):
  return helpers.checkpoint_values(path, (prefix,))


def _checkpoint_step(path):
  values = _checkpoint_values(path, prefix="progress/step")
  return int(list(values.values())[0])


def _infinite(weights):
  """Inf where a target token is real: the mean loss becomes Inf / Inf = NaN."""
  return np.where(weights > 0, np.float32(np.inf), np.float32(0.0))


def _poisoning(bad_steps):
  """A make_train_step whose step sees an Inf target weight at the 1-based `bad_steps`.

  The real compiled step runs on the poisoned batch: its loss is NaN (Inf / Inf), and so are
  its gradients. This is the test hook; production code has none.
  """
  real = train_step_lib.make_train_step
  calls = []

  def make(*args, **kwargs):
    step = real(*args, **kwargs)

    def poisoned(batch):
      calls.append(None)
      if bad_steps(len(calls)):
        batch = batch._replace(target_weight=_infinite(batch.target_weight))
      return step(batch)

    return poisoned

  return mock.patch.object(train_step_lib, "make_train_step", make)


class _ReadRecorder:
  """A step's `finite` output that notes when the training loop reads it."""

  def __init__(self, finite, number, events):
    self.finite, self.number, self.events = finite, number, events

  def __bool__(self):
    self.events.append(("read", self.number))
    return bool(self.finite)


def _recording(events):
  """A make_train_step whose step notes each call, and each read of its `finite`, in `events`."""
  real = train_step_lib.make_train_step

  def make(*args, **kwargs):
    step = real(*args, **kwargs)

    def recorded(batch):
      number = sum(1 for kind, _ in events if kind == "call") + 1
      events.append(("call", number))
      loss, norm, finite = step(batch)
      return loss, norm, _ReadRecorder(finite, number, events)

    return recorded

  return mock.patch.object(train_step_lib, "make_train_step", make)


class PipelinedLoopTest(tf.test.TestCase):
  """The loop reads a step's outputs only after later steps are queued (every
  `loop.SETTLE_EVERY` steps, and at once where it logs, saves or stops), and still counts
  every step."""

  def _events(self, max_steps):
    tmp = self.get_temp_dir()
    data = helpers.write_reverse_task(os.path.join(tmp, "reverse.tsv"), num_pairs=300)
    config = helpers.tiny_config(os.path.join(tmp, f"run_{max_steps}"), data,
                                 max_steps=max_steps)
    events = []
    with _recording(events):
      result = loop.train(config, log=helpers.quiet)
    self.assertEqual(result.step, max_steps)
    return events

  def test_outputs_are_read_after_later_steps_are_queued(self):
    # No log, save or epoch end before the last step (log_every and save_every are 1000):
    # once more than SETTLE_EVERY steps are unread, all but the latest are read; the last
    # step's are read at once.
    with mock.patch.object(loop, "SETTLE_EVERY", 2):
      events = self._events(7)
    self.assertEqual(events, [("call", 1), ("call", 2), ("call", 3), ("read", 1), ("read", 2),
                              ("call", 4), ("call", 5), ("read", 3), ("read", 4),
                              ("call", 6), ("call", 7), ("read", 5), ("read", 6), ("read", 7)])
    self.assertEqual(self._events(5), [("call", n) for n in range(1, 6)]
                     + [("read", n) for n in range(1, 6)])  # SETTLE_EVERY is 32

  def test_a_step_read_late_is_still_logged_counted_and_stops_the_run(self):
    tmp = self.get_temp_dir()
    data = helpers.write_reverse_task(os.path.join(tmp, "reverse.tsv"), num_pairs=300)
    config = helpers.tiny_config(os.path.join(tmp, "run"), data, max_steps=20, max_bad_steps=3)
    messages = []
    with _poisoning(lambda n: n >= 4):
      with self.assertRaisesRegex(loop.TrainingDiverged,
                                  r"stopped at step 6: 3 consecutive steps"):
        loop.train(config, log=messages.append)
    skipped = [m for m in messages if "non-finite" in m]
    self.assertLen(skipped, 3)
    self.assertRegex(skipped[0], r"^step 4: non-finite loss=nan .*\(1 in a row, 1 in this run\)")


@pytest.mark.slow
class WorkdirLockTest(tf.test.TestCase):
  """One run per workdir."""

  def test_second_train_py_is_refused_naming_the_live_holder(self):
    tmp = self.get_temp_dir()
    data = helpers.write_reverse_task(os.path.join(tmp, "reverse.tsv"), num_pairs=200)
    workdir = os.path.join(tmp, "run")
    flags = [f"--workdir={workdir}", f"--data={data}", "--log_every=1", "--max_steps=1000000",
             "--num_epochs=100000", *TINY]
    log_path = os.path.join(tmp, "first.log")
    with open(log_path, "w", encoding="utf-8") as log_file:
      first = _train_py(*flags, stdout=log_file, stderr=subprocess.STDOUT)
    try:
      deadline = time.monotonic() + 120
      while not re.search(r"^2/", _read(log_path), re.M) and time.monotonic() < deadline:
        time.sleep(0.2)
      second = _train_py(*flags)
      stdout, stderr = second.communicate(timeout=120)
      self.assertEqual(second.returncode, 1, stderr)
      self.assertIn(f"in use by pid {first.pid} on host {socket.gethostname()}", stderr)
      self.assertRegex(stderr, r"started \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC")
      self.assertNotIn("Traceback", stderr)
      self.assertNotIn("Resuming", stdout)
      first.send_signal(signal.SIGINT)
      first.wait(timeout=120)
    finally:
      first.kill()
    self.assertEqual(first.returncode, 130, _read(log_path)[-3000:])
    self.assertFalse(os.path.exists(workdir_lock.lock_path(workdir)), "lock not released")

  def test_held_lock_is_refused_in_process(self):
    workdir = os.path.join(self.get_temp_dir(), "run")
    with workdir_lock.WorkdirLock(workdir, log=helpers.quiet):
      with self.assertRaisesRegex(workdir_lock.WorkdirLocked, rf"pid {os.getpid()} on host"):
        workdir_lock.WorkdirLock(workdir, log=helpers.quiet).acquire()
    self.assertFalse(os.path.exists(workdir_lock.lock_path(workdir)))

  def test_stale_lock_of_a_dead_process_is_taken_over(self):
    tmp = self.get_temp_dir()
    data = helpers.write_reverse_task(os.path.join(tmp, "reverse.tsv"), num_pairs=50)
    workdir = os.path.join(tmp, "run")
    os.makedirs(workdir)
    dead = _dead_pid()
    with open(workdir_lock.lock_path(workdir), "w", encoding="utf-8") as f:
      json.dump({"pid": dead, "host": socket.gethostname(), "started": "then"}, f)
    messages = []
    result = loop.train(helpers.tiny_config(workdir, data, max_steps=2), log=messages.append)
    self.assertEqual(result.step, 2)
    self.assertTrue(any(f"stale lock" in m and f"pid {dead}" in m for m in messages), messages)
    self.assertFalse(os.path.exists(workdir_lock.lock_path(workdir)))

  def test_lock_of_an_earlier_process_with_our_pid_is_taken_over(self):
    # A restarted container often runs as the same pid (1) on the same hostname.
    workdir = os.path.join(self.get_temp_dir(), "run")
    os.makedirs(workdir)
    with open(workdir_lock.lock_path(workdir), "w", encoding="utf-8") as f:
      json.dump({"pid": os.getpid(), "host": socket.gethostname(), "started": "then"}, f)
    messages = []
    with workdir_lock.WorkdirLock(workdir, log=messages.append):
      self.assertTrue(any("stale lock" in m for m in messages), messages)
      with self.assertRaisesRegex(workdir_lock.WorkdirLocked, rf"pid {os.getpid()} on host"):
        workdir_lock.WorkdirLock(workdir, log=helpers.quiet).acquire()
    self.assertFalse(os.path.exists(workdir_lock.lock_path(workdir)))

  def test_lock_of_another_host_is_not_taken_over(self):
    workdir = os.path.join(self.get_temp_dir(), "run")
    os.makedirs(workdir)
    with open(workdir_lock.lock_path(workdir), "w", encoding="utf-8") as f:
      json.dump({"pid": _dead_pid(), "host": "elsewhere", "started": "then"}, f)
    with self.assertRaisesRegex(workdir_lock.WorkdirLocked, "on host elsewhere"):
      workdir_lock.WorkdirLock(workdir, log=helpers.quiet).acquire()

  def test_lock_is_released_when_the_run_fails(self):
    tmp = self.get_temp_dir()
    data = helpers.write_reverse_task(os.path.join(tmp, "reverse.tsv"), num_pairs=50)
    workdir = os.path.join(tmp, "run")
    loop.train(helpers.tiny_config(workdir, data, max_steps=1), log=helpers.quiet)
    with self.assertRaises(workdir_lib.WorkdirMismatch):
      loop.train(helpers.tiny_config(workdir, data, hidden_size=48), log=helpers.quiet)
    self.assertFalse(os.path.exists(workdir_lock.lock_path(workdir)))


@pytest.mark.slow
class NonFiniteTest(parameterized.TestCase, tf.test.TestCase):
  """A NaN or Inf never reaches the parameters, the optimizer or a checkpoint."""

  @parameterized.parameters((False, "cpu"), (True, "cpu"), (True, "gpu"))
  def test_non_finite_step_changes_no_variable_or_slot(self, jit_compile, embedding_device):
    # With the table on the accelerator (default placement) and XLA, the whole step, its
    # embedding rows and step counter included, is one compiled function.
    model = test_train_step._model(embedding_device=embedding_device)
    optimizer = optimizers.Adam(0.01)
    optimizer.build(model.trainable_variables)
    step = train_step_lib.make_train_step(model, optimizer, 5.0, jit_compile=jit_compile)
    good = test_train_step._batch(seed=1)
    step(good)  # non-zero Adam slots, so "unchanged" is not trivially zeros
    state = list(model.variables) + list(optimizer.variables)
    before = [v.numpy().copy() for v in state]
    bad = good._replace(target_weight=_infinite(good.target_weight))
    loss, norm, finite = step(bad)
    self.assertFalse(bool(finite))
    self.assertFalse(np.isfinite(float(loss)) and np.isfinite(float(norm)))
    for variable, value in zip(state, before):
      self.assertAllEqual(variable.numpy(), value, msg=variable.name)
    _, _, finite = step(good)  # and the next good batch trains again
    self.assertTrue(bool(finite))
    self.assertNotAllClose(model.trainable_variables[-1].numpy(), before[
        [v.ref() for v in state].index(model.trainable_variables[-1].ref())])

  @parameterized.parameters((False, "cpu"), (True, "cpu"), (True, "gpu"))
  def test_the_update_does_not_branch_on_finite(self, jit_compile, embedding_device):
    """Writes keep their old values on a bad step, with no branch: an XLA conditional or a
    tf.cond on a device value makes the host wait for the predicate."""
    model = test_train_step._model(embedding_device=embedding_device)
    optimizer = optimizers.Adam(0.01)
    optimizer.build(model.trainable_variables)
    step = train_step_lib.make_train_step(model, optimizer, 5.0, jit_compile=jit_compile)
    step(test_train_step._batch(seed=1))
    graph = step.traced(5).get_concrete_function().graph.as_graph_def()
    op_types = {n.op for n in graph.node} | {n.op for f in graph.library.function
                                              for n in f.node_def}
    self.assertIn("AssignVariableOp", op_types)  # the library's bodies are searched
    self.assertEmpty(op_types & {"If", "StatelessIf", "Switch", "Merge"})

  def test_bad_step_is_skipped_counted_and_never_saved(self):
    tmp = self.get_temp_dir()
    data = helpers.write_reverse_task(os.path.join(tmp, "reverse.tsv"), num_pairs=100)
    config = helpers.tiny_config(os.path.join(tmp, "run"), data, max_steps=6, save_every=1,
                                 keep_checkpoints=10)
    messages = []
    with _poisoning(lambda n: n == 3):
      result = loop.train(config, log=messages.append)
    self.assertEqual(result.step, 6)
    self.assertTrue(any(re.match(r"step 3: non-finite loss=nan .*skipped \(1 in a row, 1 in this "
                                 r"run\)", m) for m in messages), messages)
    directory = workdir_lib.checkpoint_dir(config.train.workdir)
    saved = tf.train.get_checkpoint_state(directory).all_model_checkpoint_paths
    self.assertEqual([int(p.rsplit("-", 1)[1]) for p in saved], [1, 2, 4, 5, 6])
    for path in saved:
      for key, value in _checkpoint_values(path, prefix="").items():
        if isinstance(value, np.ndarray) and value.dtype.kind == "f":
          self.assertTrue(np.all(np.isfinite(value)), f"{path}: {key}")

  def test_stops_after_max_bad_steps_and_keeps_the_last_good_checkpoint(self):
    tmp = self.get_temp_dir()
    data = helpers.write_reverse_task(os.path.join(tmp, "reverse.tsv"), num_pairs=100)
    config = helpers.tiny_config(os.path.join(tmp, "run"), data, max_steps=20, save_every=1,
                                 max_bad_steps=3)
    with _poisoning(lambda n: n >= 4):
      with self.assertRaisesRegex(loop.TrainingDiverged,
                                  r"stopped at step 6: 3 consecutive steps .*--max_bad_steps=3"
                                  r".*ckpt-3, holds the last good"):
        loop.train(config, log=helpers.quiet)
    latest = tf.train.latest_checkpoint(workdir_lib.checkpoint_dir(config.train.workdir))
    self.assertEqual(_checkpoint_step(latest), 3)
    for key, value in _checkpoint_values(latest).items():
      self.assertTrue(np.all(np.isfinite(value)), key)
    self.assertFalse(os.path.exists(workdir_lock.lock_path(config.train.workdir)))


@pytest.mark.slow
class CheckpointWriteFailureTest(parameterized.TestCase, tf.test.TestCase):
  """A failed checkpoint write stops the run clearly; earlier ones stay valid."""

  @parameterized.named_parameters(
      ("disk_full_os", OSError(28, "No space left on device")),
      ("disk_full_tf", tf.errors.ResourceExhaustedError(None, None, "No space left on device")))
  def test_failed_save_stops_clearly_and_training_resumes(self, error):
    tmp = self.get_temp_dir()
    data = helpers.write_reverse_task(os.path.join(tmp, "reverse.tsv"), num_pairs=100)
    workdir = os.path.join(tmp, "run")
    directory = workdir_lib.checkpoint_dir(workdir)
    real_save = tf.train.CheckpointManager.save

    def failing_save(manager, checkpoint_number=None, **kwargs):
      if checkpoint_number == 4:
        raise error
      return real_save(manager, checkpoint_number=checkpoint_number, **kwargs)

    config = helpers.tiny_config(workdir, data, max_steps=8, save_every=2)
    with mock.patch.object(tf.train.CheckpointManager, "save", failing_save):
      with self.assertRaisesRegex(checkpoints.CheckpointWriteError,
                                  rf"step 4 to {re.escape(directory)} .*No space left.*"
                                  r"earlier checkpoints are intact \(latest: .*ckpt-2\)"):
        loop.train(config, log=helpers.quiet)
    latest = tf.train.latest_checkpoint(directory)
    self.assertEqual(_checkpoint_step(latest), 2)  # loads, and is the one before the failure

    messages = []  # space is back: the same command resumes from step 2
    result = loop.train(config, log=messages.append)
    self.assertEqual(result.step, 8)
    self.assertTrue(any(m.startswith("Resuming from") and "at step 2" in m for m in messages))


class MismatchTest(tf.test.TestCase):
  """Mismatched flags, shapes and vocabularies (the rest is in test_training.py)."""

  def test_vocabulary_differing_from_the_checkpoint_is_named(self):
    tmp = self.get_temp_dir()
    data = helpers.write_reverse_task(os.path.join(tmp, "reverse.tsv"), num_pairs=50)
    workdir = os.path.join(tmp, "run")
    loop.train(helpers.tiny_config(workdir, data, max_steps=2), log=helpers.quiet)
    with open(workdir_lib.vocab_path(workdir), "a", encoding="utf-8") as f:
      f.write("zebra\nyak\n")  # 12 + 2 tokens: not the vocabulary the checkpoint learned
    # The file's own checksum would catch this first (test_data.VocabularyChecksumTest);
    # without it, the checkpoint's table size still must.
    os.remove(workdir_lib.vocab_path(workdir) + ".sha256")
    with self.assertRaisesRegex(
        checkpoints.CheckpointError,
        r"ckpt-2 was trained with a vocabulary of 12 tokens, but .*vocab.txt has 14"):
      loop.train(helpers.tiny_config(workdir, data, max_steps=4), log=helpers.quiet)


@pytest.mark.slow
@pytest.mark.slow
class KillNineTest(tf.test.TestCase):
  """Kill -9 at varying moments (around saves too), resume, same final parameters."""

  MAX_STEPS = 100
  SAVE_EVERY = 2

  def test_kill_nine_and_resume_equals_an_uninterrupted_run(self):
    tmp = self.get_temp_dir()
    data = helpers.write_reverse_task(os.path.join(tmp, "reverse.tsv"), num_pairs=100)
    flags = [f"--data={data}", "--deterministic", "--log_every=1", "--keep_prob=0.8",
             f"--save_every={self.SAVE_EVERY}", f"--max_steps={self.MAX_STEPS}", *TINY]
    straight = os.path.join(tmp, "straight")
    reference = _train_py(f"--workdir={straight}", *flags)  # runs beside the killed ones
    workdir = os.path.join(tmp, "killed")
    directory = workdir_lib.checkpoint_dir(workdir)
    rng = random.Random(7)
    kills = 0
    resumed_steps = []
    for attempt in range(13):
      process = _train_py(f"--workdir={workdir}", *flags)
      seen, resumed = 0, 0
      kill_after = None
      try:
        for line in process.stdout:
          match = re.match(r"Resuming from \S+ at step (\d+)", line)
          if match:
            resumed = int(match.group(1))
          match = re.match(r"(\d+)/", line)
          if match:
            seen = int(match.group(1))
            if kill_after is None:
              kill_after = seen + rng.randint(0, 4)
            if seen >= kill_after and attempt < 10:
              time.sleep(rng.choice([0.0, 0.0, 0.002, 0.005, 0.01]))
              process.send_signal(signal.SIGKILL)
              break
        process.wait(timeout=120)
      finally:
        process.kill()
      stderr = process.stderr.read()
      self.assertNotIn("Traceback", stderr)
      if attempt > 0:
        resumed_steps.append(resumed)
      if process.returncode == -signal.SIGKILL:
        kills += 1
        latest = tf.train.latest_checkpoint(directory)
        if latest is not None:  # the latest checkpoint always loads, and is recent
          step = _checkpoint_step(latest)
          self.assertGreaterEqual(step, seen - self.SAVE_EVERY, (attempt, seen, step))
        continue
      self.assertEqual(process.returncode, 0, stderr)
      break
    self.assertGreaterEqual(kills, 10)
    self.assertEqual(resumed_steps, sorted(resumed_steps), "a resume went backwards")
    reference.communicate(timeout=300)
    self.assertEqual(reference.returncode, 0)
    expected = _checkpoint_values(tf.train.latest_checkpoint(workdir_lib.checkpoint_dir(straight)))
    actual = _checkpoint_values(tf.train.latest_checkpoint(directory))
    self.assertEqual(_checkpoint_step(tf.train.latest_checkpoint(directory)), self.MAX_STEPS)
    self.assertEqual(sorted(expected), sorted(actual))
    for key in expected:
      self.assertAllClose(expected[key], actual[key], atol=1e-5, msg=key)


if __name__ == "__main__":
  tf.test.main()


@pytest.mark.slow
class SignalResumeTest(tf.test.TestCase):
  """Promises 2 and 8: SIGTERM saves and exits 143; a run cut into three pieces by SIGINT ends
  with the parameters of an uninterrupted run."""

  MAX_STEPS = 24

  def _flags(self, data):
    return [f"--data={data}", "--deterministic", "--log_every=1", "--keep_prob=0.8",
            "--save_every=1000", f"--max_steps={self.MAX_STEPS}", *TINY]

  def _run_until(self, workdir, flags, stop_at, signum):
    """Runs train.py until it logs step `stop_at`, then sends `signum`; returns (code, out)."""
    process = _train_py(f"--workdir={workdir}", *flags)
    try:
      for line in process.stdout:
        if line.startswith(f"{stop_at}/"):
          process.send_signal(signum)
          break
      out, err = process.communicate(timeout=120)
    finally:
      process.kill()
    return process.returncode, line + out, err

  def test_sigterm_saves_and_exits_143(self):
    tmp = self.get_temp_dir()
    data = helpers.write_reverse_task(os.path.join(tmp, "reverse.tsv"), num_pairs=100)
    workdir = os.path.join(tmp, "run")
    code, out, err = self._run_until(workdir, self._flags(data), 3, signal.SIGTERM)
    self.assertEqual(code, 143, err)
    self.assertIn("stopped by signal 15", out)
    latest = tf.train.latest_checkpoint(workdir_lib.checkpoint_dir(workdir))
    self.assertGreaterEqual(_checkpoint_step(latest), 3)

  def test_three_sigint_pieces_equal_one_run(self):
    tmp = self.get_temp_dir()
    data = helpers.write_reverse_task(os.path.join(tmp, "reverse.tsv"), num_pairs=100)
    flags = self._flags(data)
    straight = os.path.join(tmp, "straight")
    reference = _train_py(f"--workdir={straight}", *flags)  # runs beside the pieces
    pieces = os.path.join(tmp, "pieces")
    for stop_at in (5, 13):
      code, out, err = self._run_until(pieces, flags, stop_at, signal.SIGINT)
      self.assertEqual(code, 130, err)
    last = _train_py(f"--workdir={pieces}", *flags)
    out, err = last.communicate(timeout=180)
    self.assertEqual(last.returncode, 0, err)
    self.assertIn("Resuming from", out)
    reference_out, reference_err = reference.communicate(timeout=180)
    self.assertEqual(reference.returncode, 0, reference_err)
    expected = _checkpoint_values(tf.train.latest_checkpoint(
        workdir_lib.checkpoint_dir(straight)))
    actual = _checkpoint_values(tf.train.latest_checkpoint(workdir_lib.checkpoint_dir(pieces)))
    self.assertEqual(sorted(expected), sorted(actual))
    for key, value in expected.items():
      self.assertAllClose(value, actual[key], atol=1e-5, msg=key)
