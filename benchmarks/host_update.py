"""Times, alone, the Adam update of a table pinned to the host (--embedding_device=cpu).

    python -m benchmarks.host_update --workloads=seed_b20,seed_b256 --steps=10
    python -m benchmarks.host_update --workloads=seed_b256 --intra_op_threads=1   # one core

For one batch of a workload (`train_step.synthetic_batch`, a table shared by source and
target), three ways of updating the table's looked-up rows on the CPU, each in one
`tf.function`, median of --steps:
  rows       the engine's: `Optimizer.update_rows` on the distinct ids, one gradient row each
             (the split step's, `seq2seq.step.unique_rows`): on the CPU, the engine's kernel
             (`ops/kernels/sparse_adam_rows.cc`, in place, one pass);
  reference  the same update in TensorFlow's ops, which `rows` runs where the kernel cannot
             be built (`seq2seq.step.fused_adam.reference_adam_rows`);
  rows_bf16, reference_bf16
             the two with bfloat16 gradients, as a --precision=bf16 step returns them (the
             kernel reads them as they come; the reference casts them first);
  slices     `Optimizer.update` of every looked-up row as an IndexedSlices, repeated rows
             merged on the host first (tf.unique and a segment sum);
  stages     `reference` op by op: the three gathers (table, m, v), the rule (one pass of
             TensorFlow's fused Adam kernel, `seq2seq.step.fused_adam.rule`), the three
             scatters; `ops` is the rule as separate element-wise ops (`ops.optim`).
One JSON line per workload: ms an update and distinct rows a second of each way.
"""
import json
import statistics
import time

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from benchmarks import train_step as train_step_bench
from ops import optim
from seq2seq.step import fused_adam
from seq2seq.step import optimizers

flags.DEFINE_integer("intra_op_threads", 0, "TensorFlow's intra-op threads (0: one per core)")
FLAGS = flags.FLAGS


def median_ms(function, *args):
  """Median ms of `function(*args)` over --steps calls, after one untimed call."""
  function(*args)
  times = []
  for _ in range(FLAGS.steps):
    start = time.perf_counter()
    function(*args)
    times.append(time.perf_counter() - start)
  return 1e3 * statistics.median(times)


def measure(workload):
  """{way: ms} and the row counts of one workload's update (module docstring)."""
  _, batch, steps, embed, _, vocab, _ = train_step_bench.workload_sizes(workload)
  padded = train_step_bench.synthetic_batch(batch, steps, vocab)
  ids = tf.constant(np.concatenate([padded.source.ravel(), padded.decoder_input.ravel()]))
  distinct, _ = tf.unique(ids)
  table = tf.Variable(tf.random.uniform([vocab, embed], -0.1, 0.1))
  optimizer = optimizers.Adam(1e-3)
  optimizer.build([table])
  moments = [optimizer.slots[name][0] for name in ("m", "v")]
  finite = tf.constant(True)
  all_rows = tf.random.normal([ids.shape[0], embed])
  rows = tf.random.normal([distinct.shape[0], embed])
  lr, step = tf.constant(1e-3), tf.constant(2.0)

  update_rows = tf.function(lambda g, i: optimizer.update_rows(
      g, i, table, condition=finite, read_condition=True), autograph=False)
  reference = tf.function(lambda g, i: fused_adam.reference_adam_rows(
      tf.cast(g, tf.float32), i, table, *moments, lr, step, 0.9, 0.999, 1e-8), autograph=False)
  rows_bf16 = tf.cast(rows, tf.bfloat16)
  update_slices = tf.function(lambda g, i: optimizer.update(
      [tf.IndexedSlices(g, i, table.shape)], [table], condition=finite), autograph=False)
  gathers = tf.function(lambda i: [tf.gather(t, i) for t in [table, *moments]],
                        autograph=False)
  rule = tf.function(lambda p, g, m, v: fused_adam.rule(p, m, v, g, lr, step, 0.9, 0.999,
                                                        1e-8), autograph=False)
  rule_ops = tf.function(lambda p, g, m, v: optim.adam_update(p, g, m, v, lr, step),
                         autograph=False)
  def scatter_all(values, i):
    for target, value in zip([table, *moments], values):
      target.scatter_update(tf.IndexedSlices(value, i))
  scatters = tf.function(scatter_all, autograph=False)

  gathered = gathers(distinct)
  ms = {"rows": median_ms(update_rows, rows, distinct),
        "reference": median_ms(reference, rows, distinct),
        "rows_bf16": median_ms(update_rows, rows_bf16, distinct),
        "reference_bf16": median_ms(reference, rows_bf16, distinct),
        "slices": median_ms(update_slices, all_rows, ids),
        "gathers": median_ms(gathers, distinct),
        "rule": median_ms(rule, gathered[0], rows, *gathered[1:]),
        "ops": median_ms(rule_ops, gathered[0], rows, *gathered[1:]),
        "scatters": median_ms(scatters, gathered, distinct)}
  return {"workload": workload, "looked_up": int(ids.shape[0]),
          "distinct": int(distinct.shape[0]), "embed": embed,
          "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
          "ms": ms, "distinct_rows_per_sec": {way: 1e3 * int(distinct.shape[0]) / value
                                              for way, value in ms.items()}}


def main(argv):
  del argv
  if FLAGS.intra_op_threads:
    tf.config.threading.set_intra_op_parallelism_threads(FLAGS.intra_op_threads)
  for workload in FLAGS.workloads:
    if workload not in train_step_bench.WORKLOADS:
      raise app.UsageError(f"--workloads: unknown workload {workload!r}")
    if train_step_bench.WORKLOADS[workload][0] == "lm":
      raise app.UsageError(f"--workloads: {workload} is an LM workload; the seq2seq and "
                           "attention ones have a shared table to time")
  for workload in FLAGS.workloads:
    row = measure(workload)
    train_step_bench.emit(row)
    print(f"{workload}: {row['distinct']} distinct of {row['looked_up']} looked-up rows of "
          f"{row['embed']}: " + ", ".join(f"{way} {ms:.1f} ms"
                                          for way, ms in row["ms"].items()), flush=True)


if __name__ == "__main__":
  app.run(main)
