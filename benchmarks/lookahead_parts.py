"""Where a step with its tables on the host spends its time: each part of the split step
alone, waited for, and whole steps over fresh batches with and without the lookahead.

    python -m benchmarks.lookahead_parts --workloads=seed_b256 --variants=engine_xla_bf16
    python -m benchmarks.lookahead_parts --workloads=cpu_small --variants=engine_xla \
        --override=batch=8,hidden=32,embed=32,vocab=300                       # CPU smoke test

For each compiled engine variant with its tables on the host (`benchmarks.train_step`'s
flags and workloads), one JSON line: the distinct rows of each table in a batch and how many
the next batch also reads; the medians of 10 calls of `look_up_moved_ms` (the lookup, its
rows moved to the device: what a call without a batch ahead does), `look_up_in_place_ms`
(the lookup of a batch ahead, rows left on the host), `dense_ms` (the compiled part),
`update_all_ms` (every row's update and the step counter) and `update_read_next_ms` (the
update of the rows the next batch reads, the rest set aside, the next batch's rows moved and
those read again); then `lookahead_ms` and `in_order_ms`, a step back to back over 30 fresh
batches with and without the next batch given (`train_step.lookahead_step_time`).
"""
import json
import statistics
import time

from absl import app
import tensorflow as tf

from benchmarks import train_step as bench
from seq2seq.data import batches
from seq2seq.step import lookahead as lookahead_lib

FLAGS = bench.FLAGS


def _waited_ms(fn, calls=10):
  """Median ms of `fn()`, each call waited for on every device. Its tensors are not read
  back: a copy of the rows to NumPy (and from the GPU) would add to the part's time."""
  times = []
  for _ in range(calls):
    tf.test.experimental.sync_devices()
    start = time.perf_counter()
    fn()
    tf.test.experimental.sync_devices()
    times.append(time.perf_counter() - start)
  return 1e3 * statistics.median(times)


def parts(workload, variant):
  """The JSON row of `workload` and `variant` (None where its step has no lookahead)."""
  kind, batch, steps, _, _, vocab, _ = bench.workload_sizes(workload)
  step = bench.engine_step(workload, variant)
  if not isinstance(step, lookahead_lib.LookaheadStep):
    return None
  inputs = [batches.Batch(*x) for x in bench.host_inputs(kind, batch, steps, vocab)]
  for number in range(6):  # traces: each part, and the update's relaxed shapes
    step(inputs[number % 4], inputs[(number + 1) % 4])
  step.flush()
  this = step._looked_up(inputs[0], step._look_up)  # pylint: disable=protected-access
  ahead = step._looked_up(inputs[1], step._look_up_in_place)  # pylint: disable=protected-access
  ids = [lookup.ids for lookup in this.looked_up]
  next_ids = [lookup.ids for lookup in ahead.looked_up]

  def dense():
    return step._dense_on_device(this.inputs, [lookup.rows for lookup in this.looked_up],  # pylint: disable=protected-access
                                 this.positions)[:4]

  gradients = dense()[3]
  row = {"workload": workload, "variant": variant, "distinct_rows": [int(i.shape[0]) for i in ids],
         "read_by_next": [len(set(a.numpy()) & set(b.numpy())) for a, b in zip(ids, next_ids)],
         # pylint: disable=protected-access
         "look_up_moved_ms": _waited_ms(lambda: step._looked_up(inputs[0], step._look_up).looked_up),
         "look_up_in_place_ms": _waited_ms(
             lambda: step._looked_up(inputs[0], step._look_up_in_place).looked_up),
         "dense_ms": _waited_ms(dense),
         "update_all_ms": _waited_ms(lambda: step._update_rows(gradients, ids, True)),
         "update_read_next_ms": _waited_ms(lambda: step._update_read_next(
             gradients, ids, ahead.looked_up, ahead.positions, True)[:2])}
  FLAGS.steps = 30
  for name, given in (("lookahead_ms", True), ("in_order_ms", False)):
    row[name] = 1e3 * bench.lookahead_step_time(step, bench.host_inputs(kind, batch, steps, vocab),
                                                ahead=given)
  row["device"] = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
  return row


def main(argv):
  del argv
  bench.start_process()
  bench.ENGINE_VARIANTS.update(bench.default_variants())
  for workload in FLAGS.workloads:
    for variant in FLAGS.variants:
      row = parts(workload, variant)
      if row is not None:
        bench.emit({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()})


if __name__ == "__main__":
  app.run(main)
