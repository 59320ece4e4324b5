"""What `benchmarks.train_loop` runs and reads: a generated corpus, train.py's step flags, and
the pace read from train.py's log lines. No flags and no TensorFlow, so tests import it."""
import os
import re
import subprocess
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOG_LINE = re.compile(r"^(\d+)/\d+ .* tok/s=(\d+) time/batch=([0-9.]+)s ")


def write_corpus(path, kind, steps, vocab, pairs, seed=0):
  """Writes `pairs` random tab-separated pairs (LM: `pairs` lines) of words w4 .. w{V-1}, each
  side of a length uniform in [T/2, T - 1], so that the vocabulary fills V entries with the
  4 special tokens. Words are drawn uniformly: every one is frequent enough to be kept."""
  rng = np.random.default_rng(seed)
  words = np.array([f"w{i}" for i in range(vocab)])
  low, high = max(steps // 2, 1), max(steps - 1, 1)

  def sentence():
    return " ".join(words[rng.integers(4, vocab, rng.integers(low, high + 1))])
  with open(path, "w", encoding="utf-8") as f:
    for _ in range(pairs):
      f.write(sentence() + "\n" if kind == "lm" else f"{sentence()}\t{sentence()}\n")


def step_flags(jit_compile, precision, embedding_device, unroll, per_gate=False):
  """train.py's flags for the step options of an engine variant (`benchmarks.train_step`'s
  ENGINE_VARIANTS: unroll "static", "dynamic" or "dynamicK")."""
  unroll_steps = unroll[len("dynamic"):] if unroll.startswith("dynamic") else ""
  return ([f"--jit_compile={str(jit_compile).lower()}", f"--precision={precision}",
           f"--embedding_device={embedding_device}", f"--unroll={unroll.rstrip('0123456789')}"]
          + ([f"--unroll_steps={unroll_steps}"] if unroll_steps else [])
          + (["--per_gate_hidden_gradient"] if per_gate else []))


def loop_figures(timed_lines, warmup):
  """(tokens/s, steps/s, measured steps) over the log windows that start at or after step
  `warmup`. `timed_lines` are (time read, line) of train.py's output: a window's time is the
  time between its log line and the one before (train.py reads the step back before it logs;
  its own time/batch has 1 ms steps), its tokens the loop's tok/s over that time."""
  windows, previous = [], None
  for read_at, line in timed_lines:
    match = LOG_LINE.match(line)
    if not match:
      continue
    step, tokens_per_sec = int(match[1]), float(match[2])
    if previous is not None and previous[0] >= warmup:
      seconds = read_at - previous[1]
      windows.append((tokens_per_sec * seconds, step - previous[0], seconds))
    previous = (step, read_at)
  if not windows:
    return None
  tokens, steps, seconds = (sum(column) for column in zip(*windows))
  return tokens / seconds, steps / seconds, steps


def timed_output(command, stderr):
  """Runs `command` (unbuffered) -> (exit status, [(time read, line)] of its stdout)."""
  with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr, text=True,
                        env=dict(os.environ, PYTHONUNBUFFERED="1")) as process:
    lines = [(time.perf_counter(), line) for line in process.stdout]
  return process.returncode, lines
