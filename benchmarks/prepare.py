"""Benchmark of --mode=prepare on synthetic Reddit dumps: MB/s, pairs/s and peak RSS.

    python benchmarks/prepare.py --size_mb=200 --formats=zst,bz2
    python benchmarks/prepare.py --size_mb=2000 --formats=zst --dir=/big/disk

Generation (not timed) writes a dump of about --size_mb decompressed bytes with realistic
fields: ~20 keys a record, int or string created_utc, replies whose parent comes before or
after them, deleted bodies, bots, URLs, low scores, long comments. Each prepare then runs in a
fresh subprocess, so its peak RSS (resource.getrusage) is its own; the subprocess also reports
its RSS right after the imports, so the growth due to the data is visible, and the largest
peak RSS of its parse workers (RUSAGE_CHILDREN). Prints one JSON line per run, then a table.
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


def generate(path, size_mb, seed=0):
  """Writes a synthetic RC dump of about size_mb decompressed MB; returns (bytes, records)."""
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
  next_id = 36 ** 5
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
  return written, records


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


def run_one(path, output_dir, parse_workers=-1):
  """Runs prepare in this process and prints one JSON line of measurements."""
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  from seq2seq import config as config_lib  # pylint: disable=import-outside-toplevel
  from seq2seq.data.prepare import pipeline  # pylint: disable=import-outside-toplevel
  rss_after_imports = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  start = time.perf_counter()
  report = pipeline.prepare(
      config_lib.PrepareConfig(input=path, input_format="reddit", output_dir=output_dir,
                               progress_seconds=30, parse_workers=parse_workers),
      config_lib.DataConfig(), log=lambda m: print(m, file=sys.stderr, flush=True))
  seconds = time.perf_counter() - start
  pairs = sum(report["pairs_written"].values())
  print(json.dumps({
      "file": os.path.basename(path), "compressed_mb": round(os.path.getsize(path) / 2 ** 20, 1),
      "decompressed_mb": round(report["decompressed_bytes"] / 2 ** 20, 1),
      "lines": report["lines_read"], "pairs": pairs, "seconds": round(seconds, 2),
      "mb_per_s": round(report["decompressed_bytes"] / 2 ** 20 / seconds, 2),
      "pairs_per_s": round(pairs / seconds, 1),
      "rss_after_imports_mb": round(rss_after_imports, 1),
      "parse_workers": pipeline.parse_workers(parse_workers),
      "cpu_main_s": round(_cpu_seconds(resource.RUSAGE_SELF), 2),
      "cpu_workers_s": round(_cpu_seconds(resource.RUSAGE_CHILDREN), 2),
      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
      "worker_peak_rss_mb": round(
          resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)}),
        flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--size_mb", type=int, nargs="+", default=[200],
                      help="decompressed size(s) of the synthetic dump")
  parser.add_argument("--formats", default="zst,bz2", help="comma-separated: zst, bz2, plain")
  parser.add_argument("--dir", default="/tmp/seq2seq_prepare_bench")
  parser.add_argument("--parse_workers", type=int, default=-1,
                      help="prepare's --parse_workers (-1 = one per core, at most 4)")
  parser.add_argument("--run_one", nargs=2, metavar=("INPUT", "OUTPUT_DIR"), help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.run_one:
    run_one(*args.run_one, parse_workers=args.parse_workers)
    return
  os.makedirs(args.dir, exist_ok=True)
  results = []
  for size in args.size_mb:
    for fmt in args.formats.split(","):
      suffix = "" if fmt == "plain" else "." + fmt
      path = os.path.join(args.dir, f"RC_synthetic-{size}MB{suffix}")
      if not os.path.exists(path):
        start = time.perf_counter()
        written, records = generate(path, size)
        print(f"generated {path}: {records:,} records, {written / 2**20:.0f} MB in "
              f"{time.perf_counter() - start:.0f}s", file=sys.stderr, flush=True)
      out = subprocess.run([sys.executable, os.path.abspath(__file__), "--run_one", path,
                            os.path.join(args.dir, "prepared"),
                            f"--parse_workers={args.parse_workers}"],
                           check=True, stdout=subprocess.PIPE, text=True)
      line = out.stdout.strip().splitlines()[-1]
      print(line, flush=True)
      results.append(json.loads(line))
  print(f"\n{'file':<28} {'MB in':>7} {'MB/s':>6} {'pairs':>9} {'pairs/s':>8} "
        f"{'RSS@import':>10} {'peak RSS':>9} {'worker RSS':>10}")
  for r in results:
    print(f"{r['file']:<28} {r['decompressed_mb']:>7.0f} {r['mb_per_s']:>6.1f} {r['pairs']:>9,} "
          f"{r['pairs_per_s']:>8.0f} {r['rss_after_imports_mb']:>8.0f}MB {r['peak_rss_mb']:>7.0f}MB "
          f"{r['worker_peak_rss_mb']:>8.0f}MB")


if __name__ == "__main__":
  main()
