"""Times the first step of every bucket (tracing and XLA compilation, or loading from the XLA
cache): a cold cache, then warm, each in its own process, as a run and its rerun meet them.

    python -m benchmarks.compile_buckets                                 # m30k_attention
    python -m benchmarks.compile_buckets --workload=seed_b256 --buckets=20 --variant=engine_default

The buckets default to configs/multi30k_attention.flags's (12,16,22,32; the batch is the
workload's), the variant to `engine_default` (the step the defaults choose on this machine:
on a GPU compiled with the dynamic unroll x5). One JSON line per process ("cold", "warm"):
seconds of each bucket's first step and their sum, of the step after it (`next_step_s`: the
step's own run, a large share on a CPU), the first steps' sum less those, and the compiled
steps the cache held before and gained. The engine's step is `benchmarks.train_step.engine_step`, one trace and
compilation per padded length as in training (`train_step.BucketedFunction`).
"""
import json
import os
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

flags.DEFINE_string("workload", "m30k_attention", "a seq2seq or attention workload of "
                    "benchmarks.train_step")
flags.DEFINE_list("buckets", ["12", "16", "22", "32"], "padded source lengths, one step each")
flags.DEFINE_string("variant", "engine_default", "an engine variant of benchmarks.train_step")
flags.DEFINE_list("sizes", [], "benchmarks.train_step's --override, e.g. batch=4,hidden=32 "
                  "for a CPU smoke test")
flags.DEFINE_string("cache", "", "with --phase: the XLA cache folder of that process")
flags.DEFINE_enum("phase", "", ["", "cold", "warm"], "internal: time one process's buckets")
FLAGS = flags.FLAGS


def time_buckets():
  """({bucket: seconds of its first step}, {bucket: seconds of the step after it}), in this
  process."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from benchmarks import train_step as bench  # pylint: disable=import-outside-toplevel
  bench.FLAGS.override = FLAGS.sizes
  bench.ENGINE_VARIANTS.update(bench.default_variants())
  kind, batch, _, _, _, vocab, _ = bench.workload_sizes(FLAGS.workload)
  if kind == "lm":
    raise app.UsageError("--workload: an LM has one window shape; give a seq2seq workload")
  step = bench.engine_step(FLAGS.workload, FLAGS.variant)
  first, next_step = {}, {}
  for length in (int(b) for b in FLAGS.buckets):
    inputs = bench.batches.Batch(*(tf.constant(x)
                                   for x in bench.synthetic_batch(batch, length, vocab)))
    for seconds in (first, next_step):
      start = time.perf_counter()
      float(step(inputs)[0])
      seconds[length] = time.perf_counter() - start
  return first, next_step


def run_phase():
  """One process: the cache set before TensorFlow starts, the buckets timed, a JSON line."""
  from seq2seq.runtime import xla_cache  # pylint: disable=import-outside-toplevel
  from seq2seq.runtime import xla_flags  # pylint: disable=import-outside-toplevel
  xla_flags.configure()
  xla_cache.enable(FLAGS.cache)
  before = len(xla_cache.cached_executables(FLAGS.cache))
  seconds, next_step = time_buckets()
  print(json.dumps({"phase": FLAGS.phase, "workload": FLAGS.workload,
                    "variant": FLAGS.variant, "first_step_s": seconds,
                    "all_buckets_s": sum(seconds.values()), "next_step_s": next_step,
                    # The first steps less a step's own run: tracing and compiling or loading.
                    "all_buckets_less_steps_s": sum(seconds.values()) - sum(next_step.values()),
                    "xla_cache": {"before": before, "written": len(
                        xla_cache.cached_executables(FLAGS.cache)) - before}}), flush=True)


def main(argv):
  del argv
  if FLAGS.phase:
    run_phase()
    return
  cache = tempfile.mkdtemp(prefix="xla_cache_")
  for phase in ("cold", "warm"):
    subprocess.run([sys.executable, "-m", "benchmarks.compile_buckets", f"--phase={phase}",
                    f"--cache={cache}", f"--workload={FLAGS.workload}",
                    f"--buckets={','.join(FLAGS.buckets)}", f"--variant={FLAGS.variant}",
                    f"--sizes={','.join(FLAGS.sizes)}"],
                   check=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


if __name__ == "__main__":
  app.run(main)
