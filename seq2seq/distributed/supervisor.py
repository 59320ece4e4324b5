"""Runs a group of local multi_worker processes and restarts all of them when one dies.

A synchronous all-reduce cannot go on without every worker, and MultiWorkerMirroredStrategy
cannot take a replacement into a running cluster, so a lost worker means a new cluster: the
supervisor stops the survivors and starts every worker again, with fresh ports, and each one
resumes from the chief's latest checkpoint (steps since that checkpoint are trained again).

Exit statuses decide (train.py's): 0 done; 1 a permanent error (bad flags, data or workdir,
a failed checkpoint write, divergence) that a restart would only repeat; anything else (killed
by a signal, 143 / 130 stopped by a signal after saving, 129 lost a peer) is retried.
No TensorFlow here: the supervisor only starts, watches and signals processes.
"""
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time

from seq2seq.runtime import interrupts

PERMANENT_FAILURE = 1  # train.py's status for errors that a restart would repeat
_POLL_S = 0.2
_PR_SET_PDEATHSIG = 1


def free_port(host="127.0.0.1"):
  """A TCP port that was free a moment ago (another process may still take it)."""
  with socket.socket() as s:
    s.bind((host, 0))
    return s.getsockname()[1]


def tf_config(addresses, index):
  """The TF_CONFIG of worker `index` in a cluster of `addresses` (worker 0 is the chief)."""
  return json.dumps({"cluster": {"worker": list(addresses)},
                     "task": {"type": "worker", "index": index}})


class TooFewGpus(ValueError):
  """--gpus_per_worker asks for more GPUs than are visible; the message says how many."""


def visible_gpus(env):
  """The GPUs workers can be given: `env`'s CUDA_VISIBLE_DEVICES list, else the indices of
  `nvidia-smi -L`'s GPUs (none without nvidia-smi)."""
  listed = env.get("CUDA_VISIBLE_DEVICES")
  if listed is not None:
    return [gpu.strip() for gpu in listed.split(",") if gpu.strip()]
  try:
    output = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60,
                            check=True).stdout
  except (OSError, subprocess.SubprocessError):
    return []
  return [str(i) for i in range(sum(line.startswith("GPU ") for line in output.splitlines()))]


def describe(returncode):
  """'exit 1', 'exit 143', 'killed by SIGKILL': a Popen returncode in words."""
  if returncode < 0:
    try:
      return f"killed by {signal.Signals(-returncode).name}"
    except ValueError:
      return f"killed by signal {-returncode}"
  return f"exit {returncode}"


def _die_with_parent():
  """In the child: SIGTERM when the supervisor dies, so workers never outlive it unseen."""
  if sys.platform.startswith("linux"):
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class WorkerGroup:
  """`num_workers` processes of `command`, each with the TF_CONFIG of a localhost cluster.

  They inherit stdout and stderr, and run in their own session, so that a Ctrl-C at the
  terminal reaches the supervisor only (which forwards it once: a second SIGINT would make
  train.py quit without saving).
  """

  def __init__(self, command, num_workers, env=None, gpus_per_worker=0):
    self.command = list(command)
    self.num_workers = num_workers
    self.env = dict(os.environ if env is None else env)
    self.processes = []
    self.gpus_per_worker = gpus_per_worker
    self.gpus = visible_gpus(self.env) if gpus_per_worker else []
    needed = num_workers * gpus_per_worker
    if len(self.gpus) < needed:
      raise TooFewGpus(f"gpus_per_worker={gpus_per_worker}: {num_workers} workers need "
                       f"{needed} GPUs, and {len(self.gpus)} are visible "
                       f"({', '.join(self.gpus) or 'none'})")

  def worker_env(self, addresses, index):
    """Worker `index`'s environment: the cluster's TF_CONFIG, and with `gpus_per_worker` its
    own GPUs in CUDA_VISIBLE_DEVICES."""
    env = dict(self.env, TF_CONFIG=tf_config(addresses, index))
    if self.gpus_per_worker:
      first = index * self.gpus_per_worker
      env["CUDA_VISIBLE_DEVICES"] = ",".join(self.gpus[first:first + self.gpus_per_worker])
    return env

  def start(self):
    addresses = [f"127.0.0.1:{free_port()}" for _ in range(self.num_workers)]
    self.processes = []
    for index in range(self.num_workers):
      env = self.worker_env(addresses, index)
      self.processes.append(subprocess.Popen(self.command, env=env, start_new_session=True,
                                             preexec_fn=_die_with_parent))
    return addresses

  def returncodes(self):
    return [p.poll() for p in self.processes]

  def signal_all(self, signum):
    for process in self.processes:
      if process.poll() is None:
        try:
          process.send_signal(signum)
        except ProcessLookupError:
          pass

  def stop(self, grace_s, signum=signal.SIGTERM):
    """Sends `signum` to the live workers, waits up to `grace_s`, then SIGKILLs the rest."""
    self.signal_all(signum)
    deadline = time.monotonic() + grace_s
    while any(code is None for code in self.returncodes()) and time.monotonic() < deadline:
      time.sleep(_POLL_S)
    self.signal_all(signal.SIGKILL)
    for process in self.processes:
      process.wait()


def supervise(command, launch_config, log=print, env=None):
  """Runs `command` as `launch_config.num_workers` local workers until they all exit 0.

  When a worker fails, the others get SIGTERM (SIGKILL after `grace_s`) and, unless the
  failure is permanent or `max_restarts` group restarts were already made, all of them start
  again. SIGINT / SIGTERM to the supervisor are forwarded once to the workers (which save
  and stop together), and nothing restarts.

  Returns:
    The exit status for the supervisor: 0 when every worker finished; else the status of
    the failure it stopped on (128 + n for a worker killed by signal n).
  """
  group = WorkerGroup(command, launch_config.num_workers, env, launch_config.gpus_per_worker)
  restarts = 0
  # Signals to the supervisor are recorded, to be forwarded to the workers, not to kill it.
  with interrupts.StopOnSignal(second_sigint_interrupts=False) as received:
    while True:
      addresses = group.start()
      log(f"launch: started {len(addresses)} workers on {', '.join(addresses)}: "
          + ", ".join(f"worker {i} pid {p.pid}" for i, p in enumerate(group.processes))
          + " (worker 0 is the chief)")
      failed = _wait_for_failure(group, received)
      if received.requested is not None:
        log(f"launch: got signal {received.requested}; passing it on to the workers")
        group.stop(launch_config.grace_s, signum=received.requested)
        return 128 + received.requested
      if not failed:
        log("launch: every worker finished")
        return 0
      index, returncode = failed
      status = 128 - returncode if returncode < 0 else returncode
      log(f"launch: worker {index} (pid {group.processes[index].pid}) stopped: "
          f"{describe(returncode)}; stopping the others")
      group.stop(launch_config.grace_s)
      if returncode == PERMANENT_FAILURE:
        log("launch: not restarting: exit 1 is an error that a restart would repeat "
            "(see the worker's message)")
        return status
      if restarts >= launch_config.max_restarts:
        log(f"launch: giving up after {restarts} restarts (--max_restarts)")
        return status
      restarts += 1
      log(f"launch: restart {restarts} of at most {launch_config.max_restarts}: starting all "
          f"{launch_config.num_workers} workers again; they resume from the chief's latest "
          "checkpoint")


def _wait_for_failure(group, received):
  """(index, returncode) of the first worker to fail; None when all exit 0 or on a signal.

  Of failures seen in the same poll, a retryable one is reported before exit 1: when one
  worker is killed, the others fail because of it.
  """
  while received.requested is None:
    codes = group.returncodes()
    failures = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
    if failures:
      failures.sort(key=lambda failure: failure[1] == PERMANENT_FAILURE)
      return failures[0]
    if all(code == 0 for code in codes):
      return None
    time.sleep(_POLL_S)
  return None
