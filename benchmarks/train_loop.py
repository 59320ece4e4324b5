"""The training loop's own pace: `train.py` on generated data of a workload's shape, read from
its log, beside the isolated step of `benchmarks.train_step`.

    python -m benchmarks.train_loop --workloads=seed_b256 \
        --variants=defaults,engine_xla_bf16_gpuemb --peers=keras,torch_bf16
    python -m benchmarks.train_loop --workloads=cpu_small --variants=engine --loop_steps=30 \
        --loop_warmup=10 --log_every=10 --pairs=2000 --override=batch=8,hidden=32,embed=32

For each workload and variant it writes a corpus of `--pairs` random pairs (or, for the LM
workloads, lines of running text) whose lengths and vocabulary are the workload's, runs
`python train.py` on it in a fresh workdir with the workload's sizes and the variant's step
flags for `--loop_warmup` + `--loop_steps` steps, and reads the log lines train.py prints every
`--log_every` steps (`tok/s=... time/batch=...`). The figure counts only the log windows that
start at or after step `--loop_warmup`, so the compilation of the step and the first steps are
left out; checkpoints are written at the end only. Variant `defaults` passes no step flags:
what `python train.py` does with only data and size flags.

Then, with `--isolated` (default), it times the same step in this process as
`benchmarks.train_step` does (its flags apply here too), so the table shows what the loop adds
to the step: `loop ms` against `pipe ms`, the step issued back to back. `--peers=keras,torch_bf16`
also times those peers' steps (the PyTorch ones in a process of their own, after the loops) and
prints each loop's pace against theirs.
"""
import json
import os
import sys
import tempfile
import time

from absl import app
from absl import flags

from benchmarks import loop_log
from benchmarks import peer_process
from benchmarks import train_step as bench
from benchmarks import workloads

flags.DEFINE_integer("loop_steps", 500, "steps measured, after --loop_warmup")
flags.DEFINE_integer("loop_warmup", 100, "steps before the measured ones (compilation, the "
                     "first steps); a multiple of --log_every")
flags.DEFINE_integer("log_every", 50, "train.py --log_every: the log windows the figure is read "
                     "from")
flags.DEFINE_integer("pairs", 50000, "generated training pairs (LM: lines) per workload")
flags.DEFINE_list("peers", [], f"among {', '.join(bench.PEERS)}: also time these peers' steps "
                  "(benchmarks.train_step) and print each loop's pace against theirs")
flags.DEFINE_bool("isolated", True, "also time the isolated step in this process "
                  "(benchmarks.train_step.measure) after the loops have run")
FLAGS = flags.FLAGS
DEFAULTS = "defaults"  # the variant that passes train.py no step flags
FLAGS.set_default("variants", [DEFAULTS])  # train_step's flag; its "keras" is a --peers here


def variant_flags(variant):
  """train.py's step flags for an engine variant of `benchmarks.train_step`; none for
  `defaults`."""
  if variant == DEFAULTS:
    return []
  return loop_log.step_flags(*bench.ENGINE_VARIANTS[variant],
                             per_gate=variant.endswith(bench.PER_GATE_SUFFIX))


def model_flags(workload):
  """train.py's flags for the workload's model, sizes and loss."""
  kind, batch, steps, embed, hidden, vocab, layers = bench.workload_sizes(workload)
  sizes = [f"--batch_size={batch}", f"--hidden_size={hidden}", f"--embedding_size={embed}",
           f"--num_layers={layers}", f"--max_vocab={vocab}", f"--keep_prob={FLAGS.keep_prob}"]
  if kind == "lm":
    return sizes + ["--model=lm", f"--num_steps={steps}"]
  sampled = bench.workload_num_sampled(workload)
  return sizes + ([f"--num_sampled={sampled}"] if sampled else []) + (
      ["--encoder=bi", "--attention=luong"] if kind == "attention" else []) + [
          f"--max_length={steps}", "--num_buckets=1", "--min_length=1"]


def run_loop(workload, variant, folder):
  """Runs train.py for `workload` under `variant`; -> the row of the loop's figures."""
  kind, batch, steps, _, _, vocab, _ = bench.workload_sizes(workload)
  data = os.path.join(folder, f"{workload}.txt")
  loop_log.write_corpus(data, kind, steps, vocab, FLAGS.pairs)
  total = FLAGS.loop_warmup + FLAGS.loop_steps
  command = [sys.executable, "train.py", f"--data={data}",
             f"--workdir={os.path.join(folder, f'{workload}-{variant}')}",
             f"--max_steps={total}", f"--log_every={FLAGS.log_every}",
             f"--save_every={total + 1}", "--num_epochs=100000",
             *model_flags(workload), *variant_flags(variant)]
  start = time.perf_counter()
  with tempfile.TemporaryFile("w+") as stderr:
    status, lines = loop_log.timed_output(command, stderr)
    stderr.seek(0)
    errors = stderr.read()
  row = {"workload": workload, "variant": variant, "loop_command": " ".join(command[1:]),
         "loop_wall_s": time.perf_counter() - start}
  figures = loop_log.loop_figures(lines, FLAGS.loop_warmup)
  if status != 0 or figures is None:
    sys.stderr.write("".join(line for _, line in lines)[-3000:] + errors[-5000:])
    why = "no log line after the warm-up" if figures is None else "its output is above"
    return dict(row, skipped=f"train.py exited with status {status} ({why})")
  tokens_per_sec, steps_per_sec, measured = figures
  return dict(row, loop_tokens_per_sec=tokens_per_sec, loop_steps_per_sec=steps_per_sec,
              loop_step_ms=1e3 / steps_per_sec,
              loop_positions_per_sec=batch * steps * steps_per_sec, loop_measured_steps=measured)


def main(argv):
  del argv
  for name in FLAGS.workloads:
    if name not in workloads.WORKLOADS:
      raise app.UsageError(f"--workloads: unknown workload {name!r}")
  for name in FLAGS.variants:
    if name not in bench.ENGINE_VARIANTS and name != DEFAULTS:
      raise app.UsageError(f"--variants: {name!r} is not an engine variant of "
                           f"benchmarks.train_step nor {DEFAULTS!r}")
  if FLAGS.loop_steps < 1 or FLAGS.loop_warmup < 0 or FLAGS.log_every < 1 or (
      FLAGS.loop_warmup % FLAGS.log_every) or FLAGS.loop_steps < FLAGS.log_every:
    raise app.UsageError("--loop_warmup must be a multiple of --log_every, and --loop_steps at "
                         "least --log_every")
  for name in FLAGS.peers:
    if name not in bench.PEERS:
      raise app.UsageError(f"--peers: {name!r} is not among {', '.join(bench.PEERS)}")
  bench.parse_override(FLAGS.override)
  with tempfile.TemporaryDirectory(prefix="train_loop_") as folder:
    rows = [run_loop(w, v, folder) for w in FLAGS.workloads for v in FLAGS.variants]
  # The loops' processes have ended; the PyTorch peers' next, before TensorFlow takes the GPU.
  torch_peers = [p for p in FLAGS.peers if p in workloads.TORCH_VARIANTS]
  torch_rows = peer_process.torch_rows(FLAGS.workloads, torch_peers, FLAGS.steps, FLAGS.warmup,
                                       FLAGS.keep_prob, FLAGS.override)
  bench.xla_flags.configure(FLAGS.xla_autotune)
  ceiling = {"fp32": bench.matmul_ceiling(bench.tf.float32),
             "bf16": bench.matmul_ceiling(bench.tf.bfloat16)}
  if FLAGS.isolated:
    add_isolated(rows, ceiling)
  peers = [bench.with_ceiling(torch_rows[(w, p)], ceiling) if p in torch_peers
           else bench.measure(w, p, ceiling) for w in FLAGS.workloads for p in FLAGS.peers]
  for row in rows + peers:
    bench.emit(row)
  print_table(rows)
  print_against_peers(rows, peers)


def add_isolated(rows, ceiling):
  """Times each row's step alone (`benchmarks.train_step.measure`) and adds its figures."""
  for row in rows:
    if "skipped" in row or row["variant"] == DEFAULTS:
      continue
    step = bench.measure(row["workload"], row["variant"], ceiling)
    row.update({f"step_{key}": step.get(key) for key in
                ("step_ms", "pipelined_step_ms", "target_tokens_per_sec",
                 "positions_per_sec_pipelined", "first_step_s")})


def print_against_peers(rows, peers):
  """Each loop's ms a step against each peer's step issued back to back, same workload."""
  pairs = [(row, peer) for row in rows for peer in peers if "skipped" not in row
           and peer["workload"] == row["workload"]]
  if pairs:
    print("\nthe loop against the peers' steps in this run (the peer's back-to-back step time "
          "over the loop's time a step; > 1: the loop is faster):")
  for row, peer in pairs:
    if "skipped" in peer:
      print(f"  {row['workload']:16} {peer['variant']:10} skipped: {peer['skipped']}")
      continue
    print(f"  {row['workload']:16} {row['variant']:26} / {peer['variant']:10} "
          f"{peer['pipelined_step_ms'] / row['loop_step_ms']:5.2f}x "
          f"({row['loop_step_ms']:.2f} against {peer['pipelined_step_ms']:.2f} ms)")


def print_table(rows):
  print(f"\n{'workload':16} {'variant':26} {'loop tok/s':>10} {'steps/s':>8} {'loop ms':>8} "
        f"{'pipe ms':>8} {'step ms':>8} {'loop/pipe':>9}")
  for row in rows:
    if "skipped" in row:
      print(f"{row['workload']:16} {row['variant']:26} skipped: {row['skipped']}")
      continue
    pipe, waited = row.get("step_pipelined_step_ms"), row.get("step_step_ms")
    show = lambda value: f"{value:8.2f}" if value else f"{'':8}"
    print(f"{row['workload']:16} {row['variant']:26} {row['loop_tokens_per_sec']:10.0f} "
          f"{row['loop_steps_per_sec']:8.2f} {row['loop_step_ms']:8.2f} {show(pipe)} "
          f"{show(waited)} {row['loop_step_ms'] / pipe if pipe else float('nan'):9.2f}")


if __name__ == "__main__":
  app.run(main)
