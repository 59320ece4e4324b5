"""Benchmark of --mode=prepare on synthetic Reddit dumps: MB/s, pairs/s and peak RSS.

    python benchmarks/prepare.py --size_mb=200 --formats=zst,bz2
    python benchmarks/prepare.py --size_mb=2000 --formats=zst --dir=/big/disk
    python benchmarks/prepare.py --size_mb=200 --formats=zst --files=4 --runners=local,beam

Generation (not timed) writes a dump of about --size_mb decompressed bytes with realistic
fields: ~20 keys a record, int or string created_utc, replies whose parent comes before or
after them, deleted bodies, bots, URLs, low scores, long comments. Each prepare then runs in a
fresh subprocess, so its peak RSS (resource.getrusage) is its own; the subprocess also reports
its RSS right after the imports, so the growth due to the data is visible, and the largest
peak RSS of its parse workers (RUSAGE_CHILDREN). `--files=N` cuts the dump into N consecutive "monthly"
files (parents may be in the previous file), which the Beam runner parses in parallel;
`--runners=local,beam` times both runners on the same files (Beam: the DirectRunner with
--beam_workers processes). Prints one JSON line per run, then a table.
"""
import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time

_WORDS = ("the a i you it to and of is that in this what do not for was be on have with but "
          "just like so my are they if me your can get would think people one all no about "
          "know there good more really yes time out don't up at or we as an how why when "
          "because well make thing even right want see much also way go first year new "
          "game work love car money music food dog cat book movie city water problem idea "
          "question answer reddit post comment vote point sense friend school job home").split()
_SUBREDDITS = ("AskReddit", "funny", "pics", "gaming", "worldnews", "todayilearned", "movies")


def _body(rng):
  kind = rng.random()
  if kind < 0.04:
    return rng.choice(("[deleted]", "[removed]"))
  n = rng.randint(3, 18) if kind < 0.6 else rng.randint(19, 120)
  words = rng.choices(_WORDS, k=n)
  text = " ".join(words).capitalize() + rng.choice((".", "?", "!", ""))
  if rng.random() < 0.05:
    text += " https://example.com/" + rng.choice(_WORDS)
  if rng.random() < 0.05:
    text = "&gt; " + " ".join(rng.choices(_WORDS, k=6)) + "\n\n" + text
  return text


def generate(path, size_mb, seed=0, first_id=36 ** 5):
  """Writes a synthetic RC dump of about size_mb decompressed MB, comment ids from
  first_id + 1 on; returns (bytes, records, the last id)."""
  import bz2  # pylint: disable=import-outside-toplevel
  import orjson  # pylint: disable=import-outside-toplevel
  rng = random.Random(seed)
  target = size_mb * 2 ** 20
  if path.endswith(".zst"):
    import zstandard  # pylint: disable=import-outside-toplevel
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=27)  # long window
    raw = open(path, "wb")  # pylint: disable=consider-using-with
    out = zstandard.ZstdCompressor(compression_params=params).stream_writer(raw)
  elif path.endswith(".bz2"):
    out = bz2.open(path, "wb", compresslevel=9)
  else:
    out = open(path, "wb")  # pylint: disable=consider-using-with
  written = records = 0
  next_id = first_id
  while written < target:
    next_id += 1
    cid = next_id
    if rng.random() < 0.3:
      parent = "t3_" + _b36(rng.randint(36 ** 4, 36 ** 5))
    else:  # a parent up to 2000 comments back or 500 ahead (replies before their parents)
      parent = "t1_" + _b36(cid + rng.randint(-2000, 500))
    score = int(rng.paretovariate(1.2)) - rng.randint(0, 2)
    created = 1420070400 + records // 10
    record = {
        "author": "AutoModerator" if rng.random() < 0.01 else f"user{rng.randint(0, 10 ** 6)}",
        "author_flair_css_class": None, "author_flair_text": None, "body": _body(rng),
        "controversiality": 0, "created_utc": str(created) if records % 2 else created,
        "distinguished": None, "edited": False, "gilded": 0, "id": _b36(cid),
        "link_id": "t3_" + _b36(rng.randint(36 ** 4, 36 ** 5)), "parent_id": parent,
        "retrieved_on": created + 86400, "score": score, "stickied": False,
        "subreddit": rng.choice(_SUBREDDITS), "subreddit_id": "t5_2qh1i", "ups": score}
    if records % 7 == 0:  # old schema: no score
      del record["score"]
    line = orjson.dumps(record) + b"\n"
    out.write(line)
    written += len(line)
    records += 1
  out.close()
  if path.endswith(".zst"):
    raw.close()
  return written, records, next_id


def _b36(number):
  digits = "0123456789abcdefghijklmnopqrstuvwxyz"
  text = ""
  while number:
    number, rest = divmod(number, 36)
    text = digits[rest] + text
  return text or "0"


def _cpu_seconds(who):
  usage = resource.getrusage(who)
  return usage.ru_utime + usage.ru_stime


def run_one(spec, output_dir, parse_workers=-1, runner="local", beam_workers=2):
  """Runs prepare in this process and prints one JSON line of measurements."""
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  from seq2seq import config as config_lib  # pylint: disable=import-outside-toplevel
  from seq2seq.data.prepare import pipeline  # pylint: disable=import-outside-toplevel
  rss_after_imports = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  beam_options = (f"--direct_num_workers={beam_workers} --direct_running_mode=multi_processing"
                  if runner == "beam" else "")
  start = time.perf_counter()
  report = pipeline.prepare(
      config_lib.PrepareConfig(input=spec, input_format="reddit", output_dir=output_dir,
                               progress_seconds=30, parse_workers=parse_workers,
                               prepare_runner=runner, beam_options=beam_options),
      config_lib.DataConfig(), log=lambda m: print(m, file=sys.stderr, flush=True))
  seconds = time.perf_counter() - start
  pairs = sum(report["pairs_written"].values())
  files = report["files"]
  cores = os.cpu_count() or 1
  print(json.dumps({
      "file": os.path.basename(files[0]) + (f" +{len(files) - 1}" if len(files) > 1 else ""),
      "runner": runner, "cores": cores,
      "compressed_mb": round(sum(map(os.path.getsize, files)) / 2 ** 20, 1),
      "decompressed_mb": round(report["decompressed_bytes"] / 2 ** 20, 1),
      "lines": report["lines_read"], "pairs": pairs, "seconds": round(seconds, 2),
      "mb_per_s": round(report["decompressed_bytes"] / 2 ** 20 / seconds, 2),
      "pairs_per_s": round(pairs / seconds, 1),
      "comments_per_s_per_core": round(report["lines_read"] / seconds / cores, 1),
      "rss_after_imports_mb": round(rss_after_imports, 1),
      "workers": beam_workers if runner == "beam" else pipeline.parse_workers(parse_workers),
      "cpu_main_s": round(_cpu_seconds(resource.RUSAGE_SELF), 2),
      "cpu_workers_s": round(_cpu_seconds(resource.RUSAGE_CHILDREN), 2),
      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
      "worker_peak_rss_mb": round(
          resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)}),
        flush=True)


def _inputs(directory, size, fmt, files):
  """The glob of the synthetic dump of `size` MB in `files` parts, generated if missing."""
  suffix = "" if fmt == "plain" else "." + fmt
  if files == 1:
    names = [f"RC_synthetic-{size}MB{suffix}"]
  else:
    names = [f"RC_synthetic-{size}MB-part{i + 1}of{files}{suffix}" for i in range(files)]
  last_id = 36 ** 5
  for number, name in enumerate(names):
    path = os.path.join(directory, name)
    if os.path.exists(path):
      continue
    start = time.perf_counter()
    written, records, last_id = generate(path, size / files, seed=number, first_id=last_id)
    print(f"generated {path}: {records:,} records, {written / 2**20:.0f} MB in "
          f"{time.perf_counter() - start:.0f}s", file=sys.stderr, flush=True)
  return os.path.join(directory, names[0] if files == 1 else
                      f"RC_synthetic-{size}MB-part*of{files}{suffix}")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--size_mb", type=int, nargs="+", default=[200],
                      help="decompressed size(s) of the synthetic dump")
  parser.add_argument("--formats", default="zst,bz2", help="comma-separated: zst, bz2, plain")
  parser.add_argument("--dir", default="/tmp/seq2seq_prepare_bench")
  parser.add_argument("--parse_workers", type=int, default=-1,
                      help="prepare's --parse_workers (-1 = one per core, at most 4)")
  parser.add_argument("--files", type=int, default=1,
                      help="cut each dump into this many consecutive files")
  parser.add_argument("--runners", default="local", help="comma-separated: local, beam")
  parser.add_argument("--beam_workers", type=int, default=2,
                      help="DirectRunner worker processes (multi_processing mode)")
  parser.add_argument("--run_one", nargs=3, metavar=("INPUT", "OUTPUT_DIR", "RUNNER"),
                      help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.run_one:
    spec, output_dir, runner = args.run_one
    run_one(spec, output_dir, args.parse_workers, runner, args.beam_workers)
    return
  os.makedirs(args.dir, exist_ok=True)
  results = []
  for size in args.size_mb:
    for fmt in args.formats.split(","):
      spec = _inputs(args.dir, size, fmt, args.files)
      for runner in args.runners.split(","):
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "--run_one", spec,
                              os.path.join(args.dir, "prepared"), runner,
                              f"--parse_workers={args.parse_workers}",
                              f"--beam_workers={args.beam_workers}"],
                             check=True, stdout=subprocess.PIPE, text=True)
        line = out.stdout.strip().splitlines()[-1]
        print(line, flush=True)
        results.append(json.loads(line))
  print(f"\n{'file':<36} {'runner':>6} {'MB in':>7} {'MB/s':>6} {'pairs':>9} {'seconds':>8} "
        f"{'comments/s/core':>15} {'RSS@import':>10} {'peak RSS':>9} {'worker RSS':>10}")
  for r in results:
    print(f"{r['file']:<36} {r['runner']:>6} {r['decompressed_mb']:>7.0f} {r['mb_per_s']:>6.1f} "
          f"{r['pairs']:>9,} {r['seconds']:>8.1f} {r['comments_per_s_per_core']:>15,.0f} "
          f"{r['rss_after_imports_mb']:>8.0f}MB {r['peak_rss_mb']:>7.0f}MB "
          f"{r['worker_peak_rss_mb']:>8.0f}MB")


if __name__ == "__main__":
  main()
