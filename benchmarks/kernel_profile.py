"""Where a traced step spends its device time: a summary of a TensorFlow profiler trace.

    with kernel_profile.trace(logdir):
      for _ in range(steps):
        step(batch)
    summary = kernel_profile.summarize(logdir, steps)

`summarize` reads the XSpace protobuf (`*.xplane.pb`) that `tf.profiler.experimental` writes and
adds up, per GPU, the kernels of every stream line: the busy time (the union of the kernel
intervals over all streams, so overlapping kernels count once), the time in matrix-multiply
kernels (cuBLAS, CUTLASS and XLA's GEMM fusions) and in everything else, the
kernel count, and the kernels that take the most time, grouped by name with XLA's numeric
suffixes removed (`loop_add_fusion_12` and `loop_add_fusion_7` are one group). All times are
per step. On a machine without a GPU the summary says so and carries no figures.
"""
import contextlib
import glob
import os
import re

import tensorflow as tf
from tensorflow.tsl.profiler.protobuf import xplane_pb2

GPU_PLANE = re.compile(r"^/device:GPU:(\d+)$")
# cuBLAS (sm90_xmma_gemm_*, nvjet_* on Hopper), CUTLASS, and XLA's GEMM fusions (gemm_fusion_dot_*).
GEMM_KERNEL = re.compile(r"gemm|cutlass|xmma|cublas|matmul|nvjet|(^|_)dot(_|$)", re.IGNORECASE)
_NUMERIC_SUFFIX = re.compile(r"([._]\d+)+$")
# Idle gaps between kernels up to this long count as launch gaps: the device moving from one
# kernel to the next. Longer ones are waits (on the host, a copy, or the next step).
SHORT_GAP_PS = 20 * 10**6  # 20 us


@contextlib.contextmanager
def trace(logdir):
  """Profiles the enclosed work into `logdir` (host and device trace)."""
  tf.profiler.experimental.start(logdir)
  try:
    yield
  finally:
    tf.profiler.experimental.stop()


def is_gemm(kernel_name):
  """Whether a kernel is a matrix multiply (library GEMM or an XLA dot fusion)."""
  return bool(GEMM_KERNEL.search(kernel_name))


def kernel_group(kernel_name):
  """`loop_add_fusion_12` -> `loop_add_fusion`: one group for the copies XLA numbers apart."""
  return _NUMERIC_SUFFIX.sub("", kernel_name.split("(")[0].strip()) or kernel_name


def _event_names(plane):
  """{event metadata id: the event's name} of an XPlane."""
  return {key: (meta.display_name or meta.name) for key, meta in plane.event_metadata.items()}


def _merged(intervals):
  """[start, end) intervals -> the disjoint, sorted intervals covering the same points."""
  merged = []
  for start, end in sorted(intervals):
    if merged and start <= merged[-1][1]:
      merged[-1][1] = max(merged[-1][1], end)
    else:
      merged.append([start, end])
  return merged


def _intersection(a, b):
  """The intersection of two disjoint, sorted interval lists (`_merged`), as such a list."""
  out, i, j = [], 0, 0
  while i < len(a) and j < len(b):
    start, end = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
    if start < end:
      out.append([start, end])
    if a[i][1] < b[j][1]:
      i += 1
    else:
      j += 1
  return out


def _union_length(intervals):
  """Total length covered by [start, end) intervals, overlaps counted once."""
  return sum(end - start for start, end in _merged(intervals))


def _gaps(merged):
  """(sum of the short gaps, their count, sum of the longer ones) between disjoint, sorted
  intervals (`_merged`), in the intervals' unit; short: at most SHORT_GAP_PS."""
  gaps = [start - end for (_, end), (start, _) in zip(merged, merged[1:])]
  short = [gap for gap in gaps if gap <= SHORT_GAP_PS]
  return sum(short), len(short), sum(gaps) - sum(short)


def summarize_space(space, steps, top=12):
  """{"gpus": [per-GPU summary]} of an XSpace over `steps` steps; times in ms per step.

  Each per-GPU summary: device, kernels (launched per step), busy_ms (union over streams),
  gemm_ms and other_ms (summed kernel durations, so they may exceed busy_ms when streams
  overlap), span_ms (first kernel start to last kernel end, per step), the idle time inside
  the span split by gap length: launch_gap_ms (gaps of at most SHORT_GAP_PS, the device
  moving between kernels; launch_gaps of them) and wait_ms (longer gaps: the host, copies,
  the time between steps), and top: the `top` kernel groups by time, each [name, ms per step,
  launches per step]. With two GPUs or more, "all_busy_ms" is the time per step during which
  every GPU runs a kernel: data-parallel replicas that run side by side have it close to each
  one's busy_ms; replicas that take turns have it near zero.
  """
  gpus, busy_by_gpu = [], []
  for plane in space.planes:
    match = GPU_PLANE.match(plane.name)
    if not match:
      continue
    names = _event_names(plane)
    intervals, groups = [], {}
    gemm_ps = other_ps = 0
    for line in plane.lines:
      if not line.name.startswith("Stream"):
        continue  # the derived lines ("XLA Ops", "TensorFlow Ops", ...) repeat the kernels
      line_start_ps = line.timestamp_ns * 1000
      for event in line.events:
        name = names.get(event.metadata_id, "?")
        start = line_start_ps + event.offset_ps
        intervals.append((start, start + event.duration_ps))
        if is_gemm(name):
          gemm_ps += event.duration_ps
        else:
          other_ps += event.duration_ps
        group = groups.setdefault(kernel_group(name), [0, 0])
        group[0] += event.duration_ps
        group[1] += 1
    if not intervals:
      continue
    busy = _merged(intervals)
    busy_by_gpu.append(busy)
    short_gap_ps, short_gaps, wait_ps = _gaps(busy)
    per_step_ms = lambda ps: ps / 1e9 / steps
    span = max(end for _, end in intervals) - min(start for start, _ in intervals)
    ranked = sorted(groups.items(), key=lambda item: -item[1][0])[:top]
    gpus.append({
        "device": int(match.group(1)),
        "kernels": len(intervals) / steps,
        "busy_ms": per_step_ms(_union_length(intervals)),
        "gemm_ms": per_step_ms(gemm_ps),
        "other_ms": per_step_ms(other_ps),
        "span_ms": per_step_ms(span),
        "launch_gap_ms": per_step_ms(short_gap_ps),
        "launch_gaps": short_gaps / steps,
        "wait_ms": per_step_ms(wait_ps),
        "top": [[name, per_step_ms(ps), count / steps] for name, (ps, count) in ranked],
    })
  summary = {"gpus": gpus}
  if len(busy_by_gpu) > 1:
    common = busy_by_gpu[0]
    for busy in busy_by_gpu[1:]:
      common = _intersection(common, busy)
    summary["all_busy_ms"] = sum(end - start for start, end in common) / 1e9 / steps
  return summary


def host_activities(space, top=25):
  """The host's traced activities with the most time, each [name, total s, count].

  Times are inclusive (an activity's nested ones count in it too), summed over threads. For
  a traced first step this shows where tracing and XLA compilation go (the compiler's passes,
  autotuning, LLVM and PTX code generation are named activities).
  """
  totals = {}
  for plane in space.planes:
    if not plane.name.startswith("/host:"):
      continue
    names = _event_names(plane)
    for line in plane.lines:
      for event in line.events:
        entry = totals.setdefault(kernel_group(names.get(event.metadata_id, "?")), [0, 0])
        entry[0] += event.duration_ps
        entry[1] += 1
  ranked = sorted(totals.items(), key=lambda item: -item[1][0])[:top]
  return [[name, ps / 1e12, count] for name, (ps, count) in ranked]


def read_space(logdir):
  """The XSpace of the newest trace the profiler wrote under `logdir`."""
  paths = glob.glob(os.path.join(logdir, "plugins", "profile", "*", "*.xplane.pb"))
  if not paths:
    raise FileNotFoundError(f"{logdir}: no profiler trace (plugins/profile/*/*.xplane.pb)")
  space = xplane_pb2.XSpace()
  with open(max(paths, key=os.path.getmtime), "rb") as f:
    space.ParseFromString(f.read())
  return space


def summarize(logdir, steps, top=12):
  """`summarize_space` of the newest trace the profiler wrote under `logdir`."""
  summary = summarize_space(read_space(logdir), steps, top)
  if not summary["gpus"]:
    summary["note"] = "no GPU kernels in the trace (no GPU, or its tracer did not load)"
  return summary
