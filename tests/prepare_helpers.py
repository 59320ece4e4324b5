"""Small generated inputs for the prepare tests."""
import bz2
import json
import os

from seq2seq import config as config_lib
from seq2seq.data.prepare import pipeline


def comment(cid, parent, body, score=5, **extra):
  """A Reddit comment record; parent 't3_...' for a top-level comment."""
  record = {"id": cid, "parent_id": parent if "_" in parent else "t1_" + parent, "body": body,
            "score": score, "author": "someone", "subreddit": "AskReddit",
            "created_utc": 1420070400}
  record.update(extra)
  return record


def write_dump(path, records):
  """Writes records (dicts, or raw bytes lines) as a plain or compressed JSON-lines dump."""
  lines = b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n"
                   for r in records)
  if path.endswith(".bz2"):
    lines = bz2.compress(lines, compresslevel=1)  # 100 kB blocks
  elif path.endswith(".zst"):
    import zstandard  # pylint: disable=import-outside-toplevel
    lines = zstandard.ZstdCompressor(level=3).compress(lines)
  with open(path, "wb") as f:
    f.write(lines)
  return path


def run(tmp_path, input_spec, data_overrides=None, log=None, **prepare_overrides):
  """prepare() with test defaults (no val/test split, short lengths); returns (report, outdir)."""
  settings = dict(input=input_spec, output_dir=os.path.join(str(tmp_path), "out"),
                  val_fraction=0.0, test_fraction=0.0, min_score=2, progress_seconds=0)
  settings.update(prepare_overrides)
  data_config = config_lib.DataConfig(**dict(dict(min_length=1, max_length=20),
                                             **(data_overrides or {})))
  messages = []
  report = pipeline.prepare(config_lib.PrepareConfig(**settings), data_config,
                            log or messages.append)
  return report, settings["output_dir"]


def read_split(outdir, split="train"):
  with open(os.path.join(outdir, f"{split}.tsv"), encoding="utf-8") as f:
    return [tuple(line.rstrip("\n").split("\t")) for line in f]
