"""Host tensors in page-locked memory for a table on the CPU (`seq2seq.runtime.host_memory`):
set before TensorFlow starts its devices, and only where it applies."""
import subprocess
import sys

import tensorflow as tf
from tensorflow.python.eager import context

from seq2seq import config as config_lib
from seq2seq.modes import run as run_lib
from seq2seq.runtime import host_memory

REPO = __file__.rsplit("/tests/", 1)[0]


def host_tensors_pinned():
  """Whether this process's TensorFlow is set to allocate host tensors page-locked."""
  config = context.context()._config  # pylint: disable=protected-access
  return bool(config is not None and config.gpu_options.force_gpu_compatible)


FRESH_PROCESS = """
import numpy as np
from seq2seq.runtime import host_memory
from tests.test_host_memory import host_tensors_pinned
assert not host_tensors_pinned()
assert host_memory.pin_host_tensors()
assert host_tensors_pinned()
import tensorflow as tf
from tensorflow.python.eager import context
assert context.context().config.gpu_options.force_gpu_compatible
with tf.device("/cpu:0"):
  table = tf.Variable(np.arange(12, dtype=np.float32).reshape(4, 3))
  rows = tf.gather(table, [3, 1])
np.testing.assert_array_equal(rows.numpy(), [[9, 10, 11], [3, 4, 5]])
assert not host_memory.pin_host_tensors()  # started: too late, and said so
assert host_tensors_pinned()
print("ok")
"""


def test_set_before_tensorflow_starts_and_refused_after():
  result = subprocess.run([sys.executable, "-c", FRESH_PROCESS], capture_output=True,
                          text=True, timeout=300, cwd=REPO)
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip().endswith("ok")


def test_too_late_in_a_started_process_changes_nothing():
  tf.constant(1.0).numpy()  # this process's TensorFlow has started
  pinned = host_tensors_pinned()
  assert not host_memory.pin_host_tensors()
  assert host_tensors_pinned() == pinned


MODEL_FIELDS = ("embedding_device", "tie_embeddings", "share_embeddings", "model",
                "embedding_size", "hidden_size")


def run_config_of(pinned_host_memory=True, **changes):
  model = {k: v for k, v in changes.items() if k in MODEL_FIELDS}
  train = {k: v for k, v in changes.items() if k not in MODEL_FIELDS}
  train["pinned_host_memory"] = pinned_host_memory
  return config_lib.RunConfig(model=config_lib.ModelConfig(**model),
                              train=config_lib.TrainConfig(**train))


def _pinned_by_run(monkeypatch, run_config, gpus):
  """(pin_host_tensors called, log lines) of `run.pin_host_memory` on a host with `gpus`."""
  calls, lines = [], []
  monkeypatch.setattr(tf.config, "list_physical_devices",
                      lambda kind=None: list(gpus) if kind == "GPU" else [])
  monkeypatch.setattr(host_memory, "pin_host_tensors", lambda: calls.append(1) or True)
  run_lib.pin_host_memory(run_config, lines.append)
  return bool(calls), lines


def test_training_pins_host_memory_only_for_a_table_on_the_cpu_beside_a_gpu(monkeypatch):
  gpu = ["GPU:0"]
  pinned, lines = _pinned_by_run(monkeypatch, run_config_of(), gpu)
  assert pinned and "page-locked" in lines[0] and "--nopinned_host_memory" in lines[0]
  assert _pinned_by_run(monkeypatch, run_config_of(), []) == (False, [])  # CPU only
  assert _pinned_by_run(monkeypatch, run_config_of(embedding_device="gpu"), gpu) == (False, [])
  assert _pinned_by_run(monkeypatch, run_config_of(pinned_host_memory=False), gpu) == (False, [])
  tied = dict(tie_embeddings=True, embedding_size=256, hidden_size=256)
  # One table, tied to the projection: it lives on the GPU, none on the host.
  assert _pinned_by_run(monkeypatch, run_config_of(**tied), gpu) == (False, [])
  assert _pinned_by_run(monkeypatch, run_config_of(model="lm", **tied), gpu) == (False, [])
  # The source's own table stays on the host.
  assert _pinned_by_run(monkeypatch, run_config_of(share_embeddings=False, **tied), gpu)[0]
