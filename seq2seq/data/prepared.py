"""The files of a prepared data folder (written by --mode=prepare, read by --data=DIR).

    DIR/train.tsv, val.tsv, test.tsv   one pair a line: source tokens TAB target tokens,
                                       tokens separated by single spaces; or, sharded (the
                                       Beam runner), train-00000-of-00004.tsv, ...
    DIR/vocab.txt                      one token a line, id = line number - 1
    DIR/report.json                    counts, skips by reason, vocabulary figures, settings
    DIR/sentencepiece.model            with --tokenizer=sentencepiece only

Tokens never contain whitespace, so the split files are the tokenised text itself: reading
them again with the same word tokenizer gives the same tokens.
"""
import glob
import json
import os

SPLITS = ("train", "val", "test")
MARKER = "seq2seq-prepared-v1"


def split_path(directory, split):
  return os.path.join(directory, f"{split}.tsv")


def shard_name(split, shard, shards):
  """The file name of shard `shard` (from 0) of `shards` of a split: "train.tsv" when there
  is one, else "train-00003-of-00016.tsv"."""
  return f"{split}.tsv" if shards == 1 else f"{split}-{shard:05d}-of-{shards:05d}.tsv"


def split_spec(directory, split):
  """The split's file, or for a sharded split the glob matching its shards."""
  path = split_path(directory, split)
  if os.path.exists(path):
    return path
  return os.path.join(glob.escape(directory), f"{split}-[0-9]*-of-[0-9]*.tsv")


def split_files(directory, split):
  """The split's files: [train.tsv], or its shards in order (empty if it has none)."""
  spec = split_spec(directory, split)
  return [spec] if spec == split_path(directory, split) else sorted(glob.glob(spec))


def vocab_path(directory):
  return os.path.join(directory, "vocab.txt")


def report_path(directory):
  return os.path.join(directory, "report.json")


def sentencepiece_path(directory):
  return os.path.join(directory, "sentencepiece.model")


def is_prepared(path):
  """True if `path` is a folder written by --mode=prepare."""
  return os.path.isdir(path) and os.path.isfile(report_path(path))


def load_report(directory):
  """The report.json of a prepared folder, as a dict."""
  with open(report_path(directory), encoding="utf-8") as f:
    report = json.load(f)
  if report.get("format") != MARKER:
    raise ValueError(f"{report_path(directory)}: not a prepared-data report "
                     f"(format {report.get('format')!r}, expected {MARKER!r})")
  return report
