"""Times the first step of every bucket (tracing and XLA compilation, or loading from the XLA
cache): a cold cache, then warm, each in its own process, as a run and its rerun meet them.

    python -m benchmarks.compile_buckets                                 # m30k_attention
    python -m benchmarks.compile_buckets --workload=seed_b256 --buckets=20 --variant=engine_default
    python -m benchmarks.compile_buckets --ahead=0,4        # one at a time, then 4 compiled ahead

The buckets default to configs/multi30k_attention.flags's (12,16,22,32; the batch is the
workload's), the variant to `engine_default` (the step the defaults choose on this machine:
on a GPU compiled with the dynamic unroll x5). One JSON line per process ("cold", "warm"):
seconds of each bucket's first step and their sum, of the step after it (`next_step_s`: the
step's own run, a large share on a CPU), the first steps' sum less those, and the compiled
steps the cache held before and gained. The engine's step is
`benchmarks.train_step.engine_step`, traced and compiled per padded length as in training
(`train_step.BucketedFunction`). Each `--ahead` count is a pair of processes with a cache of
its own: 0 compiles each bucket at its first step; N > 0 first compiles every bucket N at a
time as the training loop does (`compile_ahead.compile_buckets`, `compile_ahead_s`), and
`all_buckets_s` then counts that too.
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
flags.DEFINE_list("ahead", ["0"], "buckets compiled at once before the first steps, one "
                  "cold and warm pair of processes each; 0: each at its first step")
flags.DEFINE_string("cache", "", "with --phase: the XLA cache folder of that process")
flags.DEFINE_enum("phase", "", ["", "cold", "warm"], "internal: time one process's buckets")
FLAGS = flags.FLAGS


def time_buckets(ahead):
  """(seconds compiling ahead `ahead` buckets at a time (0: none), {bucket: seconds of its
  first step}, {bucket: seconds of the step after it}), in this process."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from benchmarks import train_step as bench  # pylint: disable=import-outside-toplevel
  from seq2seq.step import compile_ahead  # pylint: disable=import-outside-toplevel
  bench.FLAGS.override = FLAGS.sizes
  bench.ENGINE_VARIANTS.update(bench.default_variants())
  kind, batch, _, _, _, vocab, _ = bench.workload_sizes(FLAGS.workload)
  if kind == "lm":
    raise app.UsageError("--workload: an LM has one window shape; give a seq2seq workload")
  step = bench.engine_step(FLAGS.workload, FLAGS.variant)
  lengths = [int(b) for b in FLAGS.buckets]
  ahead_s = compile_ahead.compile_buckets(step, lengths, batch, threads=ahead) if ahead else 0.0
  first, next_step = {}, {}
  for length in lengths:
    inputs = bench.batches.Batch(*(tf.constant(x)
                                   for x in bench.synthetic_batch(batch, length, vocab)))
    for seconds in (first, next_step):
      start = time.perf_counter()
      float(step(inputs)[0])
      seconds[length] = time.perf_counter() - start
  return ahead_s, first, next_step


def run_phase():
  """One process: the cache set before TensorFlow starts, the buckets timed, a JSON line."""
  from seq2seq.runtime import xla_cache  # pylint: disable=import-outside-toplevel
  from seq2seq.runtime import xla_flags  # pylint: disable=import-outside-toplevel
  xla_flags.configure()
  xla_cache.enable(FLAGS.cache)
  before = len(xla_cache.cached_executables(FLAGS.cache))
  ahead = int(FLAGS.ahead[0])
  ahead_s, seconds, next_step = time_buckets(ahead)
  total = ahead_s + sum(seconds.values())
  print(json.dumps({"phase": FLAGS.phase, "workload": FLAGS.workload,
                    "variant": FLAGS.variant, "ahead": ahead, "compile_ahead_s": ahead_s,
                    "first_step_s": seconds, "all_buckets_s": total, "next_step_s": next_step,
                    # Less a step's own run per bucket: tracing and compiling or loading.
                    "all_buckets_less_steps_s": total - sum(next_step.values()),
                    "xla_cache": {"before": before, "written": len(
                        xla_cache.cached_executables(FLAGS.cache)) - before}}), flush=True)


def main(argv):
  del argv
  if FLAGS.phase:
    run_phase()
    return
  for ahead in FLAGS.ahead:
    cache = tempfile.mkdtemp(prefix="xla_cache_")
    for phase in ("cold", "warm"):
      subprocess.run([sys.executable, "-m", "benchmarks.compile_buckets", f"--phase={phase}",
                      f"--cache={cache}", f"--workload={FLAGS.workload}",
                      f"--buckets={','.join(FLAGS.buckets)}", f"--variant={FLAGS.variant}",
                      f"--sizes={','.join(FLAGS.sizes)}", f"--ahead={ahead}"],
                     check=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


if __name__ == "__main__":
  app.run(main)
