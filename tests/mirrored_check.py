"""Run by test_distribution in a fresh process: 2 logical CPUs must be set before TF starts.

    python -m tests.mirrored_check TMPDIR
    python -m tests.mirrored_check TMPDIR gpus   # 2 GPUs, each replica's step one XLA program

Trains the same tiny run on one device, under MirroredStrategy over /cpu:0,/cpu:1, under
MirroredStrategy stopped and resumed, and under MirroredStrategy with jit_compile (each
replica's forward and backward pass XLA-compiled); and one device against MirroredStrategy
with a sampled softmax (--num_sampled). Prints one JSON line {run: {checkpoint key: max
|diff| against the one-device run}} for the model, optimizer and progress variables, and the
difference of the validation loss at the epoch end.

The runs share one process, as a notebook's would: the compiled run all-reduces the tables'
dense sums, a size the earlier runs' collectives did not have, so it also checks that each
strategy numbers its collectives apart (`distribution.mirrored_strategy`).

With `gpus`, over /gpu:0,/gpu:1 (TF32 off): one device with jit_compile against
MirroredStrategy with jit_compile, where each replica's whole step, all-reduce included, is one
XLA program (`distributed_step.all_reduce_in_xla_possible`), straight, stopped and resumed,
and all-reducing the tables' looked-up rows (`distributed_step.gathers_rows`).
"""
import json
import os
import sys

import tensorflow as tf


def _variables(workdir):
  reader = tf.train.load_checkpoint(os.path.join(workdir, "checkpoints"))
  return {key: reader.get_tensor(key) for key in reader.get_variable_to_shape_map()
          if key.startswith(("model/", "optimizer/", "progress/"))}


def _differences(tmp, pairs):
  """{run: {checkpoint key: max |diff| against its reference run}} for (run, reference)."""
  report = {}
  for run, reference in pairs:
    expected = _variables(os.path.join(tmp, reference))
    actual = _variables(os.path.join(tmp, run))
    assert sorted(actual) == sorted(expected), (sorted(actual), sorted(expected))
    report[run] = {key: float(abs(actual[key] - expected[key]).max()) for key in expected
                   if hasattr(expected[key], "dtype")}
  return report


def main(tmp, devices="cpus"):
  if devices == "cpus":
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu,
                                               [tf.config.LogicalDeviceConfiguration()] * 2)
  else:
    tf.config.experimental.enable_tensor_float_32_execution(False)
  from seq2seq.distributed import distributed_step  # pylint: disable=import-outside-toplevel
  from seq2seq.train import loop  # pylint: disable=import-outside-toplevel
  from tests import helpers  # pylint: disable=import-outside-toplevel
  data = helpers.write_reverse_task(os.path.join(tmp, "reverse.tsv"), num_pairs=60)
  # 15 rows a batch: replicas get 8 and 7 rows. A clip norm below the gradient norm, so the
  # norm must be that of the reduced gradients; two tables, so both get their rows. 4 batches
  # an epoch: the runs cross an epoch end, where validation runs on the mirrored model.
  def config(name, max_steps, **changes):
    return helpers.tiny_config(os.path.join(tmp, name), data, max_steps=max_steps, batch_size=15,
                               max_grad_norm=0.2, share_embeddings=False, val_data=data,
                               **changes)
  if devices == "gpus":
    mirrored = dict(strategy="mirrored", devices="/gpu:0,/gpu:1", jit_compile=True)
    loop.train(config("single_jit", 5, jit_compile=True), log=helpers.quiet)
    loop.train(config("mirrored_jit", 5, **mirrored), log=helpers.quiet)
    for stop in (3, 5):
      loop.train(config("resumed_jit", stop, **mirrored), log=helpers.quiet)
    # The tiny tables are smaller than the looked-up rows, so the runs above all-reduce their
    # dense row sums; this one all-reduces the rows themselves, in uneven slots (8 and 7 rows).
    distributed_step.gathers_rows = lambda replicas, slot, num_rows: True
    loop.train(config("mirrored_jit_rows", 5, **mirrored), log=helpers.quiet)
    print(json.dumps(_differences(tmp, [("mirrored_jit", "single_jit"),
                                        ("resumed_jit", "single_jit"),
                                        ("mirrored_jit_rows", "single_jit")])))
    return
  mirrored = dict(strategy="mirrored", devices="/cpu:0,/cpu:1")
  val_losses = {"single": loop.train(config("single", 5), log=helpers.quiet).val_loss,
                "mirrored": loop.train(config("mirrored", 5, **mirrored),
                                       log=helpers.quiet).val_loss}
  for stop in (3, 5):
    loop.train(config("resumed", stop, **mirrored), log=helpers.quiet)
  # Sampled softmax: every replica draws the step's candidates, so the sums still match.
  for name, changes in (("single_sampled", {}), ("mirrored_sampled", mirrored)):
    loop.train(config(name, 5, num_sampled=6, **changes), log=helpers.quiet)
  loop.train(config("mirrored_jit", 5, jit_compile=True, **mirrored), log=helpers.quiet)
  report = {"val_loss": {"mirrored": abs(val_losses["mirrored"] - val_losses["single"])}}
  report.update(_differences(tmp, [("mirrored", "single"), ("resumed", "single"),
                                   ("mirrored_jit", "single"),
                                   ("mirrored_sampled", "single_sampled")]))
  print(json.dumps(report))


if __name__ == "__main__":
  main(*sys.argv[1:])
