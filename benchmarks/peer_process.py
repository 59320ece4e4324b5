"""Runs the PyTorch peers (`benchmarks.torch_peers`) in a process of their own and reads back
their rows, for a benchmark that measures the engine in this process.

TensorFlow keeps the GPU memory it takes until its process ends, and PyTorch's caching
allocator does the same, so the two cannot time one GPU from one process. The peers run
first, in a child process that has ended (its memory freed) before TensorFlow touches the
GPU.
"""
import importlib.util
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MISSING = "PyTorch is not installed (pip install torch, a CUDA build on a GPU machine)"


def torch_rows(workload_names, variants, steps, warmup, keep_prob, override=()):
  """{(workload, variant): row} of every pair, timed by `python -m benchmarks.torch_peers`.

  A row is the JSON line the peer printed, or {"workload", "variant", "skipped": why} when
  PyTorch is missing or the peer process failed (its error output then goes to stderr).
  """
  pairs = [(w, v) for w in workload_names for v in variants]
  if not pairs:
    return {}
  if importlib.util.find_spec("torch") is None:
    return {pair: skipped(pair, MISSING) for pair in pairs}
  command = [sys.executable, "-m", "benchmarks.torch_peers",
             f"--workloads={','.join(workload_names)}", f"--variants={','.join(variants)}",
             f"--steps={steps}", f"--warmup={warmup}", f"--keep_prob={keep_prob}",
             f"--override={','.join(override)}"]
  result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
  rows = {(row["workload"], row["variant"]): row
          for row in (json.loads(line) for line in result.stdout.splitlines()
                      if line.startswith("{"))}
  if result.returncode != 0:
    sys.stderr.write(result.stderr[-5000:])
    last = (result.stderr.strip().splitlines() or ["no error output"])[-1]
    reason = f"the PyTorch peer exited with status {result.returncode}: {last[:200]}"
    rows.update({pair: skipped(pair, reason) for pair in pairs if pair not in rows})
  return rows


def skipped(pair, reason):
  workload, variant = pair
  return {"workload": workload, "variant": variant, "skipped": reason}
