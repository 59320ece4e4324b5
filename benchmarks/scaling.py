"""Data-parallel scaling of the engine's distributed train step, 1 to N devices of one host.

    python -m benchmarks.scaling --workloads=seed_b256 --variants=engine_xla_bf16_gpuemb \
        --replicas=1,2
    python -m benchmarks.scaling --workloads=cpu_small --variants=engine --replicas=1,2 \
        --override=batch=4,hidden=16,embed=16,vocab=100 --steps=3   # 2 logical CPU devices

For each seq2seq workload and engine variant (their sizes and precision/XLA options are those
of `benchmarks.train_step`, whose flags this program shares), it times:
  - the one-device step (`train_step.make_train_step`, no strategy, the variant's embedding
    placement): the baseline a user has without distribution;
  - `distributed_step.make_distributed_train_step` under a `MirroredStrategy` over the first
    R devices for each R of --replicas, with R x B rows a step (B rows per replica, the
    workload's batch), every table mirrored.
With a compiled variant on GPUs each replica's whole step, all-reduce included, is one XLA
program (`distributed_step.all_reduce_in_xla_possible`); `--all_reduce=auto,between` also
times the all-reduce between two compiled programs, as on CPUs. In the one program the
gradients of more than one replica are all-reduced stage by stage under the backward pass
(`seq2seq.distributed.staged_backward`); `--staged=on,off` times them so and all at its end.
With `--processes=N` it also times N worker processes on this host, one device each (one
GPU each, or each its CPU), under `MultiWorkerMirroredStrategy` (`train.py
--strategy=multi_worker` with a localhost `TF_CONFIG`): every process launches only its own
replica's step.
Each line gives the step time (median of --steps), target tokens/s, and the speedup over the
same strategy on one replica and over the one-device step. Before timing, each strategy's
all-reduce is checked (replica ids summed); on GPUs MirroredStrategy reduces through NCCL.
Without GPUs the host CPU is split into max(--replicas) logical devices.
"""
import itertools
import json
import os
import subprocess
import sys
import tempfile

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from benchmarks import train_step as bench
from seq2seq import config as config_lib
from seq2seq.distributed import distributed_step
from seq2seq.distributed import distribution
from seq2seq.distributed import supervisor
from seq2seq.models import encoder_decoder as model_lib
from seq2seq.runtime import interrupts
from seq2seq.runtime import xla_flags
from seq2seq.step import optimizers

FLAGS = flags.FLAGS
flags.DEFINE_list("replicas", ["1", "2"], "replica counts to time (devices of this host); "
                  "none (--replicas=) with --processes times only the one-device step and "
                  "the worker processes")
flags.DEFINE_list("all_reduce", ["auto"],
                  "where a compiled step all-reduces, one or more of: auto (inside each "
                  "replica's XLA program where possible), xla (inside it: GPUs only), "
                  "between (between two programs)")
ALL_REDUCE_IN_XLA = {"auto": None, "xla": True, "between": False}
flags.DEFINE_list("staged", ["auto"],
                  "one or more of auto, on, off: a one-program step all-reduces each stage's "
                  "gradients under the next stage's backward pass (on), or all at the end "
                  "(off); auto: on with more than one replica")
STAGED = {"auto": None, "on": True, "off": False}
flags.DEFINE_integer("processes", 0, "also time this many worker processes of this host, one "
                     "device each, under MultiWorkerMirroredStrategy (0: none)")
flags.DEFINE_integer("worker", -1, "internal: this process is worker WORKER of --processes")


def devices(count):
  """The first `count` GPUs, or logical CPU devices when there is no GPU."""
  gpus = tf.config.list_logical_devices("GPU")
  found = gpus or tf.config.list_logical_devices("CPU")
  if len(found) < count:
    raise app.UsageError(f"--replicas={count}: only {len(found)} devices here "
                         f"({', '.join(d.name for d in found)})")
  return [d.name for d in found[:count]]


def check_all_reduce(strategy):
  """Sums 1 + replica id over the replicas; raises if the collective gets it wrong."""
  per_replica = strategy.run(lambda: tf.cast(
      tf.distribute.get_replica_context().replica_id_in_sync_group + 1, tf.float32))
  total = float(strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None))
  count = strategy.num_replicas_in_sync
  if total != count * (count + 1) / 2:
    raise RuntimeError(f"all-reduce over {count} replicas gave {total}, not "
                       f"{count * (count + 1) / 2}")
  return type(strategy.extended._cross_device_ops).__name__  # pylint: disable=protected-access


def mirrored_step(workload, variant, replicas, options=("auto", "auto")):
  """(step(batch) -> loss, cross-device ops name, whether the all-reduce is in XLA) of the
  mirrored step over `replicas`; `options`: one of --all_reduce and one of --staged."""
  return step_under(distribution.mirrored_strategy(devices(replicas)), workload, variant,
                    options)


def step_options():
  """Every combination of --all_reduce and --staged."""
  return list(itertools.product(FLAGS.all_reduce, FLAGS.staged))


def step_under(strategy, workload, variant, options=("auto", "auto")):
  """`mirrored_step` under any multi-replica `strategy`, B rows per replica."""
  placement, staged = options
  _, batch, _, _, _, vocab, _ = bench.workload_sizes(workload)
  jit_compile, precision, _, _ = bench.ENGINE_VARIANTS[variant]
  replicas = strategy.num_replicas_in_sync
  all_reduce = check_all_reduce(strategy)
  model_config = bench.engine_model_config(workload, variant, embedding_device="gpu")
  with strategy.scope():
    model = model_lib.Seq2Seq(model_config, vocab, seed=0,
                              compute_dtype=model_lib.COMPUTE_DTYPES[precision])
    model.build()
    optimizer = optimizers.make_optimizer(config_lib.TrainConfig(learning_rate=1e-3),
                                          model.trainable_variables)
  in_xla = ALL_REDUCE_IN_XLA[placement]
  if in_xla is None:
    in_xla = distributed_step.all_reduce_in_xla_possible(strategy)
  step = distributed_step.make_distributed_train_step(model, optimizer, 5.0, strategy,
                                                      jit_compile=jit_compile,
                                                      all_reduce_in_xla=in_xla,
                                                      batch_size=batch * replicas,
                                                      staged_all_reduce=STAGED[staged])
  votes = tf.zeros([len(interrupts.SIGNALS)], tf.float32)
  return (lambda b: step(b, votes)[0]), all_reduce, bool(jit_compile and in_xla)


def row(workload, variant, replicas, timing, tokens, **extra):
  """One JSON line; `timing` = (first step s, median step s, pipelined step s)."""
  first, median, pipelined = timing
  return {"workload": workload, "variant": variant, "replicas": replicas,
          "step_ms": 1e3 * median, "target_tokens_per_sec": tokens / median,
          "pipelined_step_ms": 1e3 * pipelined,
          "target_tokens_per_sec_pipelined": tokens / pipelined, "first_step_s": first,
          "device": "GPU" if tf.config.list_physical_devices("GPU") else "CPU",
          "tf_version": tf.__version__, "keep_prob": FLAGS.keep_prob, **extra}


def timed(loss_of_step, b):
  """(first step s, median s of steps each waited for, mean s of steps issued back to back)."""
  return (*bench.time_steps(loss_of_step, b), bench.pipelined_step_time(loss_of_step, b))


def worker_rows(workload, variant, count):
  """Runs `count` worker processes on localhost (this program with --worker=i) for one
  workload and variant; returns the chief's JSON lines."""
  addresses = [f"127.0.0.1:{supervisor.free_port()}" for _ in range(count)]
  # The cluster's TF_CONFIG, and with GPUs one each (CUDA_VISIBLE_DEVICES), as launch.py gives.
  gpus_each = 1 if tf.config.list_physical_devices("GPU") else 0
  group = supervisor.WorkerGroup([], count, gpus_per_worker=gpus_each)
  with tempfile.TemporaryDirectory() as tmp:
    flagfile = os.path.join(tmp, "flags")
    with open(flagfile, "w", encoding="utf-8") as f:
      f.write(FLAGS.flags_into_string())
    workers = []
    for index in range(count):
      workers.append(subprocess.Popen(
          [sys.executable, "-m", "benchmarks.scaling", f"--flagfile={flagfile}",
           f"--workloads={workload}", f"--variants={variant}", f"--worker={index}",
           "--output="], env=group.worker_env(addresses, index), stdout=subprocess.PIPE,
          stderr=subprocess.PIPE, text=True))
    outputs = [worker.communicate() for worker in workers]
  for index, (worker, (_, stderr)) in enumerate(zip(workers, outputs)):
    if worker.returncode:
      raise RuntimeError(f"worker {index} of {count} exited with {worker.returncode}:\n"
                         f"{stderr[-3000:]}")
  return [json.loads(line) for line in outputs[0][0].splitlines() if line.startswith("{")]


def run_worker():
  """--worker=i: one worker of a localhost MultiWorkerMirroredStrategy job; the chief prints
  each line (workers time the same synchronous steps)."""
  strategy = distribution.make_strategy("multi_worker")  # before any other TF op
  count = strategy.num_replicas_in_sync
  for workload, variant, options in itertools.product(FLAGS.workloads, FLAGS.variants,
                                                      step_options()):
    _, batch, steps, _, _, vocab, _ = bench.workload_sizes(workload)
    step, all_reduce, in_xla = step_under(strategy, workload, variant, options)
    b, tokens = bench.synthetic_input("seq2seq", batch * count, steps, vocab)
    b, on_device = bench.batch_on_device(b, None, strategy.extended.worker_devices[0])
    result = row(workload, variant, count, timed(step, b), tokens, all_reduce=all_reduce,
                 all_reduce_in_xla=in_xla, global_batch=batch * count, processes=count,
                 staged=options[1], device_batch=on_device)
    if distribution.is_chief(strategy):
      print(json.dumps(result), flush=True)


def main(argv):
  del argv
  counts = sorted({int(r) for r in FLAGS.replicas})
  if (not counts and not FLAGS.processes) or (counts and counts[0] < 1):
    raise app.UsageError(f"--replicas: positive counts (or none, with --processes), got "
                         f"{FLAGS.replicas}")
  seq2seq_workloads = [n for n, w in bench.WORKLOADS.items() if w[0] == "seq2seq"]
  for name in FLAGS.workloads:
    if name not in seq2seq_workloads:
      raise app.UsageError(f"--workloads: {name!r} is not a seq2seq workload "
                           f"({', '.join(seq2seq_workloads)})")
  for name in FLAGS.variants:
    if name not in bench.ENGINE_VARIANTS:
      raise app.UsageError(f"--variants: {name!r} is not an engine variant")
  for flag, choices in (("all_reduce", ALL_REDUCE_IN_XLA), ("staged", STAGED)):
    for name in FLAGS[flag].value:
      if name not in choices:
        raise app.UsageError(f"--{flag}: {name!r} is not one of {', '.join(choices)}")
  if FLAGS.processes == 1 or FLAGS.processes < 0:
    raise app.UsageError(f"--processes: 0 or at least 2, got {FLAGS.processes}")
  bench.parse_override(FLAGS.override)
  xla_flags.configure(FLAGS.xla_autotune)  # as train.py and benchmarks.train_step
  if FLAGS.worker >= 0:
    run_worker()
    return
  gpus = len(tf.config.list_physical_devices("GPU"))
  if gpus and FLAGS.processes > gpus:
    raise app.UsageError(f"--processes={FLAGS.processes}: only {gpus} GPUs here")
  if not gpus:  # before the runtime starts
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * max(counts, default=1))
  rows = []

  def emit(result):
    rows.append(result)
    bench.emit(result)

  for workload in FLAGS.workloads:
    _, batch, steps, _, _, vocab, _ = bench.workload_sizes(workload)
    for variant in FLAGS.variants:
      single = bench.engine_step(workload, variant)
      if single is not None:
        b, tokens = bench.synthetic_input("seq2seq", batch, steps, vocab)
        b, on_device = bench.batch_on_device(b, variant, devices(1)[0])
        emit(row(workload, variant, 0, timed(lambda b: single(b)[0], b), tokens,
                 device_batch=on_device))
      for replicas, options in itertools.product(counts, step_options()):
        step, all_reduce, in_xla = mirrored_step(workload, variant, replicas, options)
        b, tokens = bench.synthetic_input("seq2seq", batch * replicas, steps, vocab)
        timing = timed(step, b)
        profile = None
        if FLAGS.profile_steps:
          profile = bench.profile_steps(lambda b: (step(b),), b,
                                        f"{workload}-{variant}-{replicas}-{'-'.join(options)}")
        emit(row(workload, variant, replicas, timing, tokens, all_reduce=all_reduce,
                 all_reduce_in_xla=in_xla, global_batch=batch * replicas, staged=options[1],
                 **({"profile": profile} if profile else {})))
      if FLAGS.processes:
        for result in worker_rows(workload, variant, FLAGS.processes):
          emit(result)
  print(f"\n{'workload':12} {'variant':24} {'replicas':>8} {'in XLA':>6} {'staged':>6} "
        f"{'step ms':>8} "
        f"{'tok/s':>10} {'vs 1 replica':>12} {'vs 1 device':>11} {'pipe ms':>8} "
        f"{'tok/s pipe':>10} {'vs 1 device':>11}")
  key = lambda r: (r["workload"], r["variant"], r.get("all_reduce_in_xla"), r.get("staged"))
  for r in rows:
    same = [o for o in rows if key(o) == key(r) and o["replicas"] == 1]
    plain = [o for o in rows if (o["workload"], o["variant"], o["replicas"]) ==
             (r["workload"], r["variant"], 0)]
    ratio = lambda others, key="target_tokens_per_sec": (
        r[key] / others[0][key] if others else np.nan)
    label = f"{r['replicas']} proc" if r.get("processes") else (r["replicas"] or "none")
    in_xla = {None: "", True: "yes", False: "no"}[r.get("all_reduce_in_xla")]
    print(f"{r['workload']:12} {r['variant']:24} {label:>8} {in_xla:>6} {r.get('staged', ''):>6} "
          f"{r['step_ms']:8.2f} "
          f"{r['target_tokens_per_sec']:10.0f} {ratio(same):12.2f} {ratio(plain):11.2f} "
          f"{r['pipelined_step_ms']:8.2f} {r['target_tokens_per_sec_pipelined']:10.0f} "
          f"{ratio(plain, 'target_tokens_per_sec_pipelined'):11.2f}")
  bench.print_profiles(rows)


if __name__ == "__main__":
  app.run(main)
