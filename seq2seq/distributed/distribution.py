"""tf.distribute strategies: which one `--strategy` names, who is chief, how a batch is split.

Placement under a multi-replica strategy (mirrored, multi_worker, tpu): every variable, the
embedding tables included, is MIRRORED: one copy on each replica's device, created under
`strategy.scope()`, looked up locally, and updated identically on every replica from the
all-reduced gradients (see `distributed_step`). `--embedding_device` is then ignored: a table
pinned to the host CPU would be one copy that every replica reads and writes, the
parameter-server layout these strategies are not built for.

Data: every worker reads the same deterministic sequence of GLOBAL batches (`--batch_size`
rows; the order is fixed by the seed, epoch and position, so resume works as on one device)
and each replica trains on its contiguous slice of rows (`replica_rows`). Nothing is
auto-sharded, so no auto-shard policy applies; reading all the data on each worker is the
price of identical batches and exact resume.
"""
import contextlib
import itertools
import shutil
import tempfile

import tensorflow as tf

from seq2seq import errors

# Exit status of a worker whose step failed because a peer worker is gone: retryable, like
# 137 (SIGKILL) and 143 (SIGTERM). Cluster managers that read exit codes (Kubeflow's
# `restartPolicy: ExitCode`) retry codes of 128 and more, and fail the job on 1.
EXIT_PEER_LOST = 129
# What a collective raises when a peer worker died or cannot be reached.
_PEER_ERRORS = (tf.errors.UnavailableError, tf.errors.AbortedError,
                tf.errors.DeadlineExceededError, tf.errors.CancelledError)


class StrategyError(errors.UserError, ValueError):
  """A strategy that cannot be made here (no TPU, a bad TF_CONFIG); the message says why."""


class PeerLost(RuntimeError):
  """A multi-worker step failed because a peer worker is gone: every worker must restart."""


def make_strategy(name, devices=""):
  """The `tf.distribute.Strategy` that `--strategy=name` asks for.

  Make it before any other TensorFlow op in the process: `multi_worker` starts this task's
  gRPC server and configures collectives, which must happen before the runtime initialises.

  Args:
    name: default (the no-op strategy of one device), mirrored, multi_worker or tpu.
    devices: mirrored only: comma-separated device names; "" = every visible GPU, or the CPU.

  Raises:
    StrategyError: tpu without a reachable TPU; multi_worker with a TF_CONFIG that is not JSON.
  """
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "mirrored":
    names = [d.strip() for d in devices.split(",") if d.strip()]
    check_devices(names)
    return mirrored_strategy(names or None)
  if name == "multi_worker":
    # On GPUs, NCCL: with the default (AUTO) a worker's gradients went through a ring of host
    # copies over gRPC (seed_b256, 2 one-GPU workers on one host: 1.12 s a step).
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.NCCL
        if tf.config.list_physical_devices("GPU") else
        tf.distribute.experimental.CommunicationImplementation.AUTO)
    try:
      with _own_collective_keys(tf.distribute.MultiWorkerMirroredStrategy):
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    except ValueError as e:
      raise StrategyError(f"--strategy=multi_worker: bad TF_CONFIG ({e})") from None
  if name == "tpu":
    try:
      resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
      tf.config.experimental_connect_to_cluster(resolver)
      tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as e:
      first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
      raise StrategyError(f"--strategy=tpu: no TPU is available here ({first_line}); use "
                          "--strategy=default, mirrored or multi_worker") from None
    return tf.distribute.TPUStrategy(resolver)
  raise StrategyError(f"unknown strategy {name!r}")


def check_devices(names):
  """Checks that each of `names` (--devices) is a device of this process, once each.

  MirroredStrategy takes a device that does not exist without a word and places the work
  on the CPU instead, so a typo or a GPU of another host would train on the CPU unnoticed.

  Raises:
    StrategyError: naming the entry and listing the devices that exist.
  """
  local = [tf.DeviceSpec.from_string(d.name) for d in tf.config.list_logical_devices()]
  known = {(d.device_type, d.device_index) for d in local}
  listing = ", ".join(f"/{t.lower()}:{i}" for t, i in sorted(known))
  seen = set()
  for name in names:
    try:
      spec = tf.DeviceSpec.from_string(name)
    except ValueError:
      spec = None
    key = None if spec is None else ((spec.device_type or "").upper(), spec.device_index)
    if key not in known or spec.job not in (None, "localhost"):
      raise StrategyError(
          f"--devices: {name!r} is not a device of this host; the devices here are "
          f"{listing}. Name some of them (e.g. --devices=/gpu:0,/gpu:1), or leave --devices "
          "empty for every GPU (the CPU if there is none)")
    if key in seen:
      raise StrategyError(f"--devices: {name!r} is named twice; name each device once")
    seen.add(key)


def mirrored_strategy(devices=None):
  """`tf.distribute.MirroredStrategy(devices)` with collective keys no earlier strategy of
  this process used (see `_own_collective_keys`)."""
  with _own_collective_keys(tf.distribute.MirroredStrategy):
    return tf.distribute.MirroredStrategy(devices=devices)


_strategies_made = itertools.count()


@contextlib.contextmanager
def _own_collective_keys(strategy_class):
  """Makes the strategy built inside number its collective groups apart from every earlier
  strategy of this process.

  Each strategy numbers its collectives from the same start, and TF keeps the shape of a
  collective instance for the life of the process: a second strategy whose first all-reduce
  has another size fails with "Shape mismatch in the collective instance 100"
  (tensorflow/tensorflow#62790), e.g. two trainings, or two benchmark variants, in one
  process. The group keys start at `_collective_key_base` + 1, a class attribute read when
  the strategy is built; it is set here for that build only. Workers of a multi-worker job
  each build their strategies in the same order, so they agree on the keys.
  """
  # pylint: disable=protected-access
  saved = strategy_class._collective_key_base
  strategy_class._collective_key_base = 10000 * next(_strategies_made)
  try:
    yield
  finally:
    strategy_class._collective_key_base = saved


def task(strategy):
  """(task_type, task_id) of this process; (None, None) outside a multi-worker cluster."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.cluster_spec().as_dict():
    return None, None
  return resolver.task_type, resolver.task_id


def is_chief(strategy):
  """Whether this process writes checkpoints and summaries.

  The chief is task "chief" if the cluster has one, else worker 0; a single process is chief.
  """
  task_type, task_id = task(strategy)
  if task_type is None:
    return True
  if task_type == "chief":
    return True
  cluster = strategy.cluster_resolver.cluster_spec().as_dict()
  return task_type == "worker" and task_id == 0 and "chief" not in cluster


class WorkerDir:
  """The workdir this process writes to: the real one for the chief, else a temporary one.

  Under multi_worker every worker must take part in saving a checkpoint (the save is a
  collective over mirrored variables), but only the chief's copy is kept: the others write
  to a temporary folder that is deleted at `cleanup` (and after every save, by the caller).
  """

  def __init__(self, workdir, strategy):
    self.chief = is_chief(strategy)
    task_type, task_id = task(strategy)
    self.path = workdir if self.chief else tempfile.mkdtemp(
        prefix=f"seq2seq-{task_type}{task_id}-")

  def cleanup(self):
    if not self.chief:
      shutil.rmtree(self.path, ignore_errors=True)


@contextlib.contextmanager
def peer_loss_raises(strategy):
  """Within: a collective failing because a peer worker is gone raises `PeerLost`.

  A synchronous all-reduce cannot go on without every worker, and the state after a step
  that failed part-way is not trusted, so nothing is saved: all workers restart and resume
  from the chief's latest checkpoint. Outside a multi-worker cluster errors pass unchanged.
  """
  try:
    yield
  except _PEER_ERRORS as e:
    if task(strategy)[0] is None:
      raise
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    reason = next((line for line in lines if "aborted by" in line), lines[0] if lines else "")
    raise PeerLost(
        f"lost a peer worker ({type(e).__name__}: {reason}). A synchronous step needs every "
        "worker: restart all of them (launch.py does so for local workers); they resume "
        "from the chief's latest checkpoint.") from None


def replica_rows(batch_size, replica_id, num_replicas):
  """[start, end) rows of a global batch of `batch_size` that replica `replica_id` trains on.

  Contiguous slices of ceil(B / R) rows, in replica order; the last replicas get fewer rows
  (possibly none) when B is not a multiple of R. Works on Python ints and int32 tensors.
  """
  per_replica = (batch_size + num_replicas - 1) // num_replicas
  start = _minimum(replica_id * per_replica, batch_size)
  return start, _minimum(start + per_replica, batch_size)


def _minimum(a, b):
  if isinstance(a, int) and isinstance(b, int):
    return min(a, b)
  return tf.minimum(a, b)


def worker_log(log, strategy):
  """`log`, with messages of non-chief workers prefixed by their task."""
  if is_chief(strategy):
    return log
  task_type, task_id = task(strategy)
  return lambda message: log(f"[{task_type} {task_id}] {message}")

