"""Train with N local multi_worker processes; when one dies, restart them all.

    python launch.py --num_workers=2 -- --workdir=runs/two --batch_size=64   # train.py flags
    python launch.py --num_workers=2 --gpus_per_worker=1 -- --jit_compile ...  # a GPU each

Starts `train.py --strategy=multi_worker` N times with the TF_CONFIG of a localhost cluster
(worker 0 is the chief). When a worker dies (killed, crashed, preempted), the others are
stopped and all N start again; they resume from the chief's latest checkpoint. Exit 1 from a
worker (bad flags, data or workdir) is not retried. SIGINT / SIGTERM are passed on to the
workers, which save and stop together. See BUILD.md, "Distributed training".

Exit status: 0 every worker finished; otherwise the status of the failure it stopped on (1
permanent, 128 + n killed by or stopped for signal n, after --max_restarts restarts).
"""
import dataclasses
import os
import sys

from absl import app
from absl import flags

from seq2seq import config as config_lib

_HELP = {
    "num_workers": "training processes (multi_worker tasks) on this host",
    "max_restarts": "restarts of the whole group before giving up",
    "grace_s": "seconds workers get to exit after SIGTERM before SIGKILL",
    "gpus_per_worker": "N: worker i sees only the visible GPUs i*N .. i*N+N-1 (one process per "
                       "GPU with 1: the quickest layout measured); 0: every worker sees all",
}
_DEFAULTS = config_lib.LaunchConfig()
flags.DEFINE_integer("num_workers", _DEFAULTS.num_workers, _HELP["num_workers"])
flags.DEFINE_integer("max_restarts", _DEFAULTS.max_restarts, _HELP["max_restarts"])
flags.DEFINE_float("grace_s", _DEFAULTS.grace_s, _HELP["grace_s"])
flags.DEFINE_integer("gpus_per_worker", _DEFAULTS.gpus_per_worker, _HELP["gpus_per_worker"])
FLAGS = flags.FLAGS
TRAIN_PY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train.py")


def main(argv):
  train_flags = argv[1:]
  try:
    launch_config = config_lib.LaunchConfig(
        **{f.name: FLAGS[f.name].value for f in dataclasses.fields(config_lib.LaunchConfig)})
  except config_lib.ConfigError as e:
    raise app.UsageError(f"--{e}") from None
  for flag in train_flags:
    if flag.startswith("--strategy=") and flag != "--strategy=multi_worker":
      raise app.UsageError(f"{flag}: launch.py runs --strategy=multi_worker workers")
    if flag.startswith("--mode=") and flag != "--mode=train":
      raise app.UsageError(f"{flag}: launch.py runs --mode=train")
    if not flag.startswith("--"):
      raise app.UsageError(f"{flag}: train.py flags after -- take --name=value")
  command = [sys.executable, TRAIN_PY, *train_flags, "--strategy=multi_worker"]
  from seq2seq.distributed import supervisor  # pylint: disable=import-outside-toplevel
  try:
    return supervisor.supervise(command, launch_config,
                                log=lambda message: print(message, flush=True))
  except supervisor.TooFewGpus as e:
    raise app.UsageError(f"--{e}") from None


if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # workers inherit it
  app.run(main)
