"""--mode=prepare: raw input -> train/val/test splits, a vocabulary and a JSON report.

Stages, all streaming (memory does not grow with the input):
  1. read the input format into raw (question, answer) pairs; for Reddit this goes through an
     on-disk comment index (seq2seq.data.prepare.pairing), since a parent may come after its reply;
  2. tokenise (lowercase, punctuation filter), keep pairs with min..max tokens a side, and
     route each to a split by a stable hash of the tokenised pair, so a pair's split never
     changes when the data grows;
  3. count the training split's words (seq2seq.data.wordcount) and cut the vocabulary; or, with
     --tokenizer=sentencepiece, train a subword model on the training split and re-encode.

Everything is written to OUTPUT_DIR.partial/ and renamed to OUTPUT_DIR at the end, so an
interrupted run never leaves a half-written folder that training could read. Re-running
resumes a Reddit index file by file when the inputs and filters are unchanged, and starts
over cleanly otherwise.
"""
import collections
import csv
import dataclasses
import fnmatch
import glob
import hashlib
import json
import logging
import os
import shutil
import time

from seq2seq import config as config_lib
from seq2seq.data import corpus
from seq2seq.data.prepare import pairing
from seq2seq.data.prepare import reddit
from seq2seq.data import prepared
from seq2seq.data import streams
from seq2seq.data import vocab as vocab_lib
from seq2seq.data import wordcount
from seq2seq.runtime import outputs

DataError = corpus.DataError
MAX_EXAMPLES = 5
LENGTH = "length"


class PrepareReport:
  """Counters of one prepare run; `skip` records a reason and its first file:line places."""

  def __init__(self):
    self.files = []
    self.lines_read = 0
    self.records_parsed = 0
    self.skipped = collections.Counter()
    self.examples = []
    self.truncated = []  # messages naming a file and its last good line
    self.compressed_bytes = 0
    self.decompressed_bytes = 0
    self.extra = {}  # format-specific figures (e.g. Reddit replies without a parent)

  def skip(self, path, line, reason):
    self.skipped[reason] += 1
    if len(self.examples) < MAX_EXAMPLES:
      self.examples.append(f"{path}:{line}: {reason}")

  def add_block(self, lines, records, skipped, examples):
    """Adds the counters of one parsed block (see `BlockParser`)."""
    self.lines_read += lines
    self.records_parsed += records
    self.skipped.update(skipped)
    self.examples = (self.examples + examples)[:MAX_EXAMPLES]

  def merge(self, stats):
    """Adds the counters of a file indexed by an earlier run (see file_stats)."""
    self.lines_read += stats["lines_read"]
    self.records_parsed += stats["records_parsed"]
    self.skipped.update(stats["skipped"])
    self.examples = (self.examples + stats["examples"])[:MAX_EXAMPLES]
    self.truncated.extend(stats["truncated"])
    self.decompressed_bytes += stats["decompressed_bytes"]

  def snapshot(self):
    return {"lines_read": self.lines_read, "records_parsed": self.records_parsed,
            "skipped": dict(self.skipped), "examples": list(self.examples),
            "truncated": list(self.truncated), "decompressed_bytes": self.decompressed_bytes}


class Progress:
  """Prints bytes read, MB/s of decompressed input, pairs, and ETA from compressed bytes."""

  def __init__(self, total_bytes, log, every_seconds):
    self.total_bytes = total_bytes
    self.log = log
    self.every = every_seconds
    self.start = self._last = time.perf_counter()
    self.compressed = self.decompressed = 0
    self.pairs = 0
    self.stage = "reading"

  def on_read(self, compressed, decompressed):
    self.compressed += compressed
    self.decompressed += decompressed
    if self.every and time.perf_counter() - self._last >= self.every:
      self.report()

  def tick(self):
    if self.every and time.perf_counter() - self._last >= self.every:
      self.report()

  def report(self):
    now = time.perf_counter()
    self._last = now
    elapsed = max(now - self.start, 1e-9)
    line = (f"prepare [{self.stage}]: {self.compressed / 2**20:,.1f} MB read, "
            f"{self.decompressed / 2**20:,.1f} MB decompressed "
            f"({self.decompressed / 2**20 / elapsed:.1f} MB/s), {self.pairs:,} pairs")
    if self.total_bytes and self.stage == "reading" and self.compressed:
      fraction = min(self.compressed / self.total_bytes, 1.0)
      eta = elapsed * (1 - fraction) / max(fraction, 1e-9)
      line += f", {100 * fraction:.0f}% ETA {int(eta) // 60}:{int(eta) % 60:02d}"
    self.log(line)


def input_files(spec, what="input"):
  """Sorted files matching GLOB[,GLOB]. Raises DataError naming a glob that matches nothing."""
  files = []
  for pattern in config_lib.split_list(spec):
    matches = sorted(p for p in glob.glob(pattern) if os.path.isfile(p))
    if not matches:
      raise DataError(f"--{what}={spec}: no file matches {pattern!r}")
    files.extend(m for m in matches if m not in files)
  if not files:
    raise DataError(f"--{what}: no input files given")
  return files


def split_of(source_words, target_words, val_fraction, test_fraction):
  """'train', 'val' or 'test' from a stable hash of the tokenised pair (not Python's hash())."""
  key = (" ".join(source_words) + "\t" + " ".join(target_words)).encode("utf-8")
  value = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") / 2.0 ** 64
  if value < val_fraction:
    return "val"
  if value < val_fraction + test_fraction:
    return "test"
  return "train"


# ---- Readers: each yields raw (question, answer) text pairs and counts into the report. ----

def _decoded_lines(path, report, progress):
  """(line number, str without the line end) of a plain/compressed text file; bad ones skipped."""
  try:
    for number, raw in streams.read_lines(path, progress.on_read):
      report.lines_read += 1
      try:
        yield number, raw.decode("utf-8").rstrip("\r")
      except UnicodeDecodeError:
        report.skip(path, number, reddit.INVALID_UTF8)
  except streams.TruncatedStream as e:
    report.truncated.append(str(e))


def _read_pairs_file(path, header, report, progress):
  """TSV (two tab-separated columns) or, for *.csv, CSV with the first two columns."""
  if ".csv" in os.path.basename(path).lower():
    yield from _read_csv_pairs(path, header, report, progress)
    return
  for number, line in _decoded_lines(path, report, progress):
    if header and number == 1:
      continue
    fields = line.split("\t")
    if len(fields) != 2 or not fields[0].strip() or not fields[1].strip():
      report.skip(path, number, "not two non-empty tab-separated fields")
      continue
    report.records_parsed += 1
    yield fields[0], fields[1]


def _read_csv_pairs(path, header, report, progress):
  """CSV records (RFC 4180: a quoted field may hold commas, doubled quotes and newlines), so one
  record may span several lines; a skipped record is reported at its first line. A field over
  csv.field_size_limit() (an unclosed quote, say) is skipped, which bounds memory."""
  place = {"line": 0}

  def text_lines():
    for number, line in _decoded_lines(path, report, progress):
      place["line"] = number
      yield line + "\n"

  reader = csv.reader(text_lines())
  first_record = True
  while True:
    start = place["line"] + 1
    try:
      fields = next(reader)
    except StopIteration:
      return
    except csv.Error as e:
      report.skip(path, start, f"bad CSV record ({e})")
      continue
    if first_record and header:
      first_record = False
      continue
    first_record = False
    if len(fields) < 2 or not fields[0].strip() or not fields[1].strip():
      report.skip(path, start, "not two non-empty CSV fields")
      continue
    report.records_parsed += 1
    yield fields[0], fields[1]


def _read_parallel(sources, targets, report, progress):
  """Line i of each source file with line i of the matching target file."""
  if len(sources) != len(targets):
    raise DataError(f"--input matches {len(sources)} file(s) but --target_input "
                    f"{len(targets)}; they must pair up one to one (in sorted order)")
  for source, target in zip(sources, targets):
    report.files.append(target)
    source_lines = streams.read_lines(source, progress.on_read)
    target_lines = streams.read_lines(target, progress.on_read)
    number = 0
    try:
      while True:
        a, b = next(source_lines, None), next(target_lines, None)
        if a is None or b is None:
          if a is not b:
            longer, shorter = (source, target) if b is None else (target, source)
            raise DataError(f"{shorter}: ends at line {number} but {longer} goes on to line "
                            f"{number + 1}: the parallel files are not aligned")
          break
        number += 1
        report.lines_read += 1
        try:
          pair = a[1].decode("utf-8").rstrip("\r"), b[1].decode("utf-8").rstrip("\r")
        except UnicodeDecodeError:
          report.skip(f"{source}|{target}", number, reddit.INVALID_UTF8)
          continue
        if not pair[0].strip() or not pair[1].strip():
          report.skip(f"{source}|{target}", number, "empty line")
          continue
        report.records_parsed += 1
        yield pair
    except streams.TruncatedStream as e:
      report.truncated.append(str(e) + "; the rest of this parallel pair of files is skipped")


def _read_text(path, report, progress):
  """Running text: consecutive non-empty lines become pairs; a blank line ends a passage."""
  previous = None
  for _, line in _decoded_lines(path, report, progress):
    line = line.strip()
    if not line:
      previous = None
      continue
    report.records_parsed += 1
    if previous is not None:
      yield previous, line
    previous = line


def _read_chatterbot(path, report):
  pairs = corpus._read_yaml(path, report)  # pylint: disable=protected-access
  report.records_parsed += len(pairs)
  return pairs


def _chatterbot_files(spec):
  if not spec:
    spec = corpus.EMBEDDED_CORPUS
  files = []
  for item in config_lib.split_list(spec):
    files.extend(f for f in corpus._expand(item)  # pylint: disable=protected-access
                 if f not in files)
  return files


# ---- Reddit: index every usable comment on disk, then join replies with parents. ----

def _reddit_fingerprint(files, prepare_config, data_config):
  settings = {f.name: getattr(prepare_config, f.name) for f in dataclasses.fields(prepare_config)
              if f.name in ("skip_authors", "min_score", "subreddits", "skip_subreddits",
                            "skip_urls", "tokenizer")}
  settings.update(lowercase=data_config.lowercase, filters=data_config.filters,
                  min_length=data_config.min_length, max_length=data_config.max_length)
  inputs = [(os.path.abspath(p), os.path.getsize(p), int(os.path.getmtime(p))) for p in files]
  return json.dumps({"settings": settings, "inputs": inputs}, sort_keys=True)


class BlockParser:
  """Dump lines -> index rows and counters: JSON, filters, normalisation, tokenisation and the
  length filter. Runs in the main process, one instance each in the parse workers, or in the
  Beam pipeline's parse step."""

  def __init__(self, prepare_config, data_config):
    self.comment_filter = reddit.CommentFilter(prepare_config)
    self.tokenize = vocab_lib.Tokenizer(lowercase=data_config.lowercase,
                                        filters=data_config.filters)
    if prepare_config.tokenizer == "word":
      self.min_length, self.max_length = data_config.min_length, data_config.max_length
    else:  # subword lengths are only known after the SentencePiece model is trained
      self.min_length, self.max_length = 1, float("inf")

  def __call__(self, path, first_line, block):
    """One block of whole lines (streams.read_blocks) -> (lines, records parsed,
    {reason: count}, [first "file:line: reason" examples], [(id, parent, score, body)])."""
    parse, tokenize = self.comment_filter.parse, self.tokenize
    min_length, max_length = self.min_length, self.max_length
    skipped = collections.Counter()
    examples = []
    rows = []
    records = 0
    lines = block.split(b"\n")
    for line_number, line in enumerate(lines, first_line):
      if not line.strip():
        continue
      comment, outcome = parse(line)
      if comment is None:
        if outcome not in (reddit.MALFORMED_JSON, reddit.INVALID_UTF8):
          records += 1
        reason = outcome
      else:
        records += 1
        words = tokenize(comment.body)
        if min_length <= len(words) <= max_length:
          if comment.parent is not None and not outcome:
            skipped[reddit.SCORE] += 1  # kept as a possible parent, not as a reply
          rows.append((comment.id, comment.parent if outcome else None, comment.score,
                       " ".join(words)))
          continue
        reason = LENGTH
      skipped[reason] += 1
      if len(examples) < MAX_EXAMPLES:
        examples.append(f"{path}:{line_number}: {reason}")
    return len(lines), records, skipped, examples, rows


_worker_parser = None


def _init_worker(prepare_config, data_config):
  global _worker_parser  # pylint: disable=global-statement
  _worker_parser = BlockParser(prepare_config, data_config)


def _parse_in_worker(path, first_line, block):
  return _worker_parser(path, first_line, block)


def parse_workers(setting):
  """--parse_workers: -1 = one per core, at most 4 (the main process, which decompresses and
  writes the index, keeps up with about 4); none on a single core; 0 = none."""
  if setting >= 0:
    return setting
  cores = os.cpu_count() or 1
  return 0 if cores < 2 else min(cores, 4)


class _ParsePool:
  """Parses blocks in worker processes, results in input order, at most `depth` blocks in
  flight per worker (so memory stays bounded whatever the input size); with no worker,
  parses in this process."""

  def __init__(self, workers, prepare_config, data_config, depth=4):
    self.parser = BlockParser(prepare_config, data_config)
    self.pool = None
    self.limit = workers * depth
    if workers:
      import multiprocessing  # pylint: disable=import-outside-toplevel
      # spawn, not fork: the workers import only this module (no TensorFlow, no SQLite handle)
      self.pool = multiprocessing.get_context("spawn").Pool(
          workers, initializer=_init_worker, initargs=(prepare_config, data_config))

  def map(self, path, blocks):
    """Yields the parser's result for each (first_line, block) of `blocks`, in order."""
    if self.pool is None:
      for first_line, block in blocks:
        yield self.parser(path, first_line, block)
      return
    in_flight = collections.deque()
    try:
      for first_line, block in blocks:
        in_flight.append(self.pool.apply_async(_parse_in_worker, (path, first_line, block)))
        while len(in_flight) >= self.limit or (in_flight and in_flight[0].ready()):
          yield in_flight.popleft().get()
    except streams.TruncatedStream:
      while in_flight:  # the blocks read before the damage still count
        yield in_flight.popleft().get()
      raise
    while in_flight:
      yield in_flight.popleft().get()

  def close(self):
    if self.pool is not None:
      self.pool.terminate()
      self.pool.join()
      self.pool = None


def _index_reddit_file(index, number, path, parse_pool, progress):
  """Indexes one dump file; returns its counters (a PrepareReport snapshot)."""
  report = PrepareReport()
  index.begin_file(number, path)
  before = progress.decompressed
  try:
    for lines, records, skipped, examples, rows in parse_pool.map(
        path, streams.read_blocks(path, progress.on_read)):
      report.add_block(lines, records, skipped, examples)
      index.add_rows(rows)
  except streams.TruncatedStream as e:
    report.truncated.append(str(e))
  report.decompressed_bytes = progress.decompressed - before
  index.end_file(report.snapshot())
  return report


def _read_reddit(files, prepare_config, data_config, tokenizer, report, progress, work_dir, log):
  index_path = os.path.join(work_dir, "index.sqlite")
  index = pairing.CommentIndex(index_path, _reddit_fingerprint(files, prepare_config, data_config))
  try:
    done = index.done_files() if index.resumed else {}
    if done:
      log(f"prepare: resuming; {len(done)} of {len(files)} file(s) already indexed in {index_path}")
    workers = parse_workers(prepare_config.parse_workers)
    todo = [p for p in files if p not in done]
    parse_pool = _ParsePool(workers if todo else 0, prepare_config, data_config)
    try:
      for number, path in enumerate(files):
        report.files.append(path)
        if path in done:
          report.merge(done[path])
          progress.compressed += os.path.getsize(path)
          continue
        file_report = _index_reddit_file(index, number, path, parse_pool, progress)
        report.merge(file_report.snapshot())
    finally:
      parse_pool.close()
    progress.stage = "pairing"
    replies, orphans = index.count_replies()
    report.extra.update(usable_replies=replies, replies_without_parent=orphans,
                        duplicate_ids=index.duplicates)
    for pair in index.pairs(prepare_config.best_reply_only):
      yield pair
  finally:
    index.close()


def _raw_pairs(prepare_config, data_config, tokenizer, report, progress, work_dir, log):
  fmt = prepare_config.input_format
  if fmt == "reddit":
    files = input_files(prepare_config.input)
    progress.total_bytes = streams.total_size(files)
    yield from _read_reddit(files, prepare_config, data_config, tokenizer, report, progress,
                            work_dir, log)
    return
  if fmt == "chatterbot":
    for path in _chatterbot_files(prepare_config.input):
      report.files.append(path)
      yield from _read_chatterbot(path, report)
    return
  files = input_files(prepare_config.input)
  progress.total_bytes = streams.total_size(files)
  if fmt == "parallel":
    targets = input_files(prepare_config.target_input, "target_input")
    progress.total_bytes += streams.total_size(targets)
    report.files.extend(files)
    yield from _read_parallel(files, targets, report, progress)
    return
  for path in files:
    report.files.append(path)
    if fmt == "pairs":
      yield from _read_pairs_file(path, prepare_config.pairs_header, report, progress)
    else:
      yield from _read_text(path, report, progress)


# ---- Splits and vocabulary. ----

class _SplitWriter:
  """Writes tokenised pairs to the three split files; counts the training split's tokens."""

  def __init__(self, directory, suffix, counter):
    self.files = {s: open(os.path.join(directory, f"{s}{suffix}"), "w", encoding="utf-8")
                  for s in prepared.SPLITS}
    self.counts = collections.Counter()
    self.counter = counter

  def write(self, split, source, target):
    self.files[split].write(" ".join(source) + "\t" + " ".join(target) + "\n")
    self.counts[split] += 1
    if split == "train" and self.counter is not None:
      self.counter.update(source)
      self.counter.update(target)

  def close(self):
    for f in self.files.values():
      f.close()


def _word_sentences(words_path):
  """Each side of each pair of a word split file, as a sentence."""
  with open(words_path, encoding="utf-8") as f:
    for line in f:
      yield from line.rstrip("\n").split("\t")


def train_sentencepiece(sentences, model_prefix, prepare_config, data_config, log):
  """Trains the subword model on `sentences` (an iterable of str; at most a million are
  sampled) into MODEL_PREFIX.model; returns its processor."""
  try:
    import sentencepiece as spm  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise DataError("--tokenizer=sentencepiece needs the sentencepiece package: "
                    "pip install sentencepiece (or pip install 'seq2seq-engine[subwords]')"
                    ) from None

  pad, go, eos, unk = vocab_lib.SPECIAL_TOKENS
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(sentences), model_prefix=model_prefix,
      model_type=prepare_config.sentencepiece_type, vocab_size=data_config.max_vocab,
      hard_vocab_limit=False, pad_id=0, bos_id=1, eos_id=2, unk_id=3, pad_piece=pad,
      bos_piece=go, eos_piece=eos, unk_piece=unk, input_sentence_size=1000000,
      shuffle_input_sentence=True, character_coverage=1.0, minloglevel=2,
      num_threads=os.cpu_count() or 1)
  processor = spm.SentencePieceProcessor(model_file=model_prefix + ".model")
  if os.path.exists(model_prefix + ".vocab"):
    os.remove(model_prefix + ".vocab")  # the pieces are in vocab.txt
  log(f"prepare: trained a {prepare_config.sentencepiece_type} SentencePiece model of "
      f"{processor.get_piece_size()} pieces on the training split")
  return processor


def _encode_subwords(processor, work_dir, out_dir, data_config, report, counter):
  """Re-encodes the word splits as pieces, applying the length filter in pieces."""
  writer = _SplitWriter(out_dir, ".tsv", counter)
  try:
    for split in prepared.SPLITS:
      with open(os.path.join(work_dir, f"{split}.words.tsv"), encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
          source, target = line.rstrip("\n").split("\t")
          source, target = processor.encode(source, out_type=str), processor.encode(
              target, out_type=str)
          shortest, longest = min(len(source), len(target)), max(len(source), len(target))
          if shortest < data_config.min_length or longest > data_config.max_length:
            report.skip(f"{split} split", number, LENGTH)
            continue
          writer.write(split, source, target)
  finally:
    writer.close()
  return writer.counts


# What --mode=prepare writes: in OUTPUT_DIR (see seq2seq.data.prepared), and in its work folder
# OUTPUT_DIR.partial (the Reddit index, the word counts, SentencePiece's word splits, out/,
# the Beam runner's results in beam/).
_OUTPUT_NAMES = ("train.tsv", "val.tsv", "test.tsv", "vocab.txt", "vocab.txt.sha256",
                 "report.json", "sentencepiece.model", "train-*-of-*.tsv", "val-*-of-*.tsv",
                 "test-*-of-*.tsv")
_WORK_NAMES = ("out", "old", "beam", "*.sqlite", "*.sqlite-*", "*.words.tsv")


def _foreign_output(path):
  """What the folder `path` holds besides a complete prepared output, or None if nothing."""
  names = set(os.listdir(path))
  if names & {"checkpoints", "config.json", "best"}:
    return "is a training workdir (it holds checkpoints/ or config.json)"
  try:
    prepared.load_report(path)
  except (OSError, ValueError):
    return f"was not written by --mode=prepare (it has no {prepared.report_path('')} from it)"
  others = sorted(n for n in names if not any(fnmatch.fnmatch(n, p) for p in _OUTPUT_NAMES))
  if others:
    return f"holds files --mode=prepare does not write: {', '.join(others[:5])}"
  return None


def _foreign_work(path):
  """What the folder `path` holds that --mode=prepare's work folder never does, or None."""
  others = sorted(n for n in os.listdir(path)
                  if not any(fnmatch.fnmatch(n, p) for p in _WORK_NAMES))
  return (f"holds files --mode=prepare does not write: {', '.join(others[:5])}" if others
          else None)


def check_output_dir(prepare_config):
  """Raises outputs.OutputError unless --output_dir may be replaced by prepare's output.

  It may be absent, empty or a folder prepare wrote (its report.json and files only); never
  one that is or holds an input file, the current, home or root folder, or the program's own.
  The work folder OUTPUT_DIR.partial beside it obeys the same rules. Raises DataError if an
  input glob matches nothing.
  """
  output_dir = prepare_config.output_dir
  inputs = []
  for flag, spec in (("input", prepare_config.input),
                     ("target_input", prepare_config.target_input)):
    if spec:
      inputs.extend((f"the --{flag} file", path) for path in input_files(spec, flag))
  outputs.check_folder("output_dir", output_dir, inputs, _foreign_output)
  work_dir = os.path.realpath(output_dir) + ".partial"
  outputs.check_folder("output_dir", work_dir, inputs, _foreign_work)


def _finish_output(work_dir, work_out, output_dir, log):
  """Renames the finished folder into place; an older prepared folder is moved into
  `work_dir` (deleted with it after)."""
  if outputs.replace_folder(work_out, output_dir, os.path.join(work_dir, "old")):
    log(f"prepare: replaced the earlier contents of {output_dir}")


def prepare(prepare_config, data_config, log=print):
  """Runs --mode=prepare. Returns the report dict also saved as OUTPUT_DIR/report.json.

  With --prepare_runner=beam the Reddit stages run as an Apache Beam pipeline
  (seq2seq.data.prepare.beam_pipeline), with the same rules and the same output.

  Raises:
    DataError: no input file, or no usable pair (the message carries the skip counts).
    config.ConfigError: settings that do not fit together.
    outputs.OutputError: --output_dir may not be replaced (`check_output_dir`); nothing written.
  """
  prepare_config.check_ready()
  if prepare_config.tokenizer == "sentencepiece" and data_config.vocab_coverage:
    raise config_lib.ConfigError("vocab_coverage", "cannot be used with --tokenizer="
                                 "sentencepiece (the subword model has exactly --max_vocab pieces)")
  check_output_dir(prepare_config)
  if prepare_config.prepare_runner == "beam":
    return _beam_pipeline().prepare(prepare_config, data_config, log)
  return _prepare_locally(prepare_config, data_config, log)


def _beam_pipeline():
  """The Beam runner's module, imported only when asked for: the local runner needs no Beam."""
  # Beam logs each worker's start and stop at INFO, and its GCP modules warn on import about
  # client libraries that only the Dataflow runner uses.
  logging.getLogger("apache_beam").setLevel(logging.WARNING)
  logging.getLogger("apache_beam.io.gcp").setLevel(logging.ERROR)
  try:
    from seq2seq.data.prepare import beam_pipeline  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    if not (e.name or "").startswith("apache_beam"):
      raise
    raise DataError("--prepare_runner=beam needs the Apache Beam package, which is not "
                    "installed: pip install -e \".[beam]\" (or leave --prepare_runner at local, "
                    "which needs none)") from None
  return beam_pipeline


def work_folders(prepare_config, resumable):
  """(OUTPUT_DIR, its work folder OUTPUT_DIR.partial, the fresh folder the output is written
  to before it is renamed into place). A work folder that cannot be resumed is emptied."""
  output_dir = os.path.realpath(prepare_config.output_dir)  # through a symlink, to its folder
  work_dir = output_dir + ".partial"
  if not resumable:
    shutil.rmtree(work_dir, ignore_errors=True)  # nothing worth resuming: start over
  work_out = os.path.join(work_dir, "out")
  shutil.rmtree(work_out, ignore_errors=True)  # a partial output is never reused
  os.makedirs(work_out)
  return output_dir, work_dir, work_out


def _prepare_locally(prepare_config, data_config, log):
  start = time.perf_counter()
  output_dir, work_dir, work_out = work_folders(prepare_config,
                                                prepare_config.input_format == "reddit")
  tokenizer = vocab_lib.Tokenizer(lowercase=data_config.lowercase, filters=data_config.filters)
  report = PrepareReport()
  progress = Progress(0, log, prepare_config.progress_seconds)
  subwords = prepare_config.tokenizer == "sentencepiece"
  counter = wordcount.WordCounter(os.path.join(work_dir, "wordcount.sqlite"),
                                  prepare_config.max_words_in_memory)
  writer = _SplitWriter(work_dir if subwords else work_out, ".words.tsv" if subwords else ".tsv",
                        None if subwords else counter)
  pairs = _raw_pairs(prepare_config, data_config, tokenizer, report, progress, work_dir, log)
  split_counts = _write_pairs(pairs, tokenizer, writer, prepare_config, data_config, report,
                              progress)
  processor = None
  if subwords and split_counts["train"]:
    processor = train_sentencepiece(_word_sentences(os.path.join(work_dir, "train.words.tsv")),
                                    os.path.join(work_out, "sentencepiece"), prepare_config,
                                    data_config, log)
    split_counts = _encode_subwords(processor, work_dir, work_out, data_config, report, counter)
  progress.stage = "vocabulary"
  try:
    vocabulary, vocab_report = final_vocabulary(prepare_config, data_config, report,
                                                split_counts, counter, processor)
  finally:
    counter.close()
  vocabulary.save(prepared.vocab_path(work_out))
  result = build_report(prepare_config, data_config, report, split_counts, vocabulary, vocab_report,
                   counter.total, counter.spills, progress.decompressed,
                   time.perf_counter() - start)
  return finish(result, work_dir, work_out, output_dir, log)


def final_vocabulary(prepare_config, data_config, report, split_counts, counter, processor):
  """(Vocabulary, VocabularyReport) from the training split's counts: the top words, or the
  SentencePiece model's pieces. Raises DataError (with the skip counts) if no training pair
  was kept."""
  if not split_counts["train"]:
    raise _no_pair_error(prepare_config, report, split_counts)
  if processor is not None:
    return _subword_vocabulary(processor, counter)
  return vocab_lib.select_vocabulary(counter.ranked(), counter.total, counter.unique(),
                                     data_config.max_vocab, data_config.vocab_coverage)


def finish(result, work_dir, work_out, output_dir, log):
  """Saves `result` as report.json, renames the finished folder into place, deletes the work
  folder and logs the summary. Returns `result`."""
  with open(prepared.report_path(work_out), "w", encoding="utf-8") as f:
    json.dump(result, f, indent=2)
  _finish_output(work_dir, work_out, output_dir, log)
  shutil.rmtree(work_dir, ignore_errors=True)
  for line in summary_lines(result):
    log(line)
  return result


def tokenised_pair(question, answer, tokenizer, subwords, data_config):
  """(source words, target words, None) of a raw pair the length filter keeps, else
  (None, None, "short" or "long"). With subwords only an empty side is too short: pieces are
  counted after the SentencePiece model is trained."""
  source, target = tokenizer(question), tokenizer(answer)
  shortest, longest = min(len(source), len(target)), max(len(source), len(target))
  if shortest == 0 or (not subwords and shortest < data_config.min_length):
    return None, None, "short"
  if not subwords and longest > data_config.max_length:
    return None, None, "long"
  return source, target, None


def count_length_skips(report, too_short, too_long):
  """Records in `report` the pairs the length filter dropped (`tokenised_pair`)."""
  if too_short or too_long:
    report.skipped[LENGTH] += too_short + too_long
    report.extra.update(pairs_too_short=too_short, pairs_too_long=too_long)


def _write_pairs(pairs, tokenizer, writer, prepare_config, data_config, report, progress):
  """Tokenises each raw (question, answer) of `pairs`, counts in `report` those outside the
  length limits (`tokenised_pair`) and writes the rest to their split; closes `writer`.
  -> {split: pairs written}."""
  subwords = prepare_config.tokenizer == "sentencepiece"
  dropped = collections.Counter()
  try:
    for question, answer in pairs:
      source, target, reason = tokenised_pair(question, answer, tokenizer, subwords, data_config)
      if reason:
        dropped[reason] += 1
        continue
      writer.write(split_of(source, target, prepare_config.val_fraction,
                            prepare_config.test_fraction), source, target)
      progress.pairs += 1
      progress.tick()
  finally:
    writer.close()
  count_length_skips(report, dropped["short"], dropped["long"])
  return writer.counts


def _no_pair_error(prepare_config, report, split_counts):
  """The DataError of a prepare that kept no training pair, with the skip counts."""
  text = "; ".join(f"{n} {r}" for r, n in sorted(report.skipped.items())) or "nothing skipped"
  examples = "".join(f"\n  e.g. {e}" for e in report.examples)
  truncated = "".join(f"\n  {t}" for t in report.truncated)
  return DataError(f"--input={prepare_config.input}: no usable pair for the training split "
                   f"({len(report.files)} file(s), {report.lines_read} lines read, "
                   f"{sum(split_counts.values())} pairs in all; skipped: {text}){examples}"
                   f"{truncated}")


def _subword_vocabulary(processor, counter):
  """(Vocabulary of the SentencePiece model's pieces, its VocabularyReport over the pieces
  counted in training)."""
  vocabulary = vocab_lib.Vocabulary(
      [processor.id_to_piece(i) for i in range(processor.get_piece_size())])
  unique = counter.unique()
  kept_types = kept_tokens = 0  # the pieces seen in training that have an id, and their count
  for piece, n in counter.ranked():
    if vocabulary.id(piece) != vocab_lib.UNK_ID:
      kept_types += 1
      kept_tokens += n
  return vocabulary, vocab_lib.VocabularyReport(
      unique_words=unique, kept_words=kept_types,
      type_share=kept_types / unique if unique else 0.0,
      token_coverage=kept_tokens / counter.total if counter.total else 0.0)


def build_report(prepare_config, data_config, report, split_counts, vocabulary, vocab_report,
            training_tokens, spilled, decompressed, seconds):
  """The dict saved as OUTPUT_DIR/report.json."""
  return {
      "format": prepared.MARKER,
      "input_format": prepare_config.input_format,
      "files": report.files,
      "lines_read": report.lines_read,
      "records_parsed": report.records_parsed,
      "pairs_written": {s: split_counts[s] for s in prepared.SPLITS},
      "skipped": dict(sorted(report.skipped.items())),
      "skipped_examples": report.examples,
      "truncated_files": report.truncated,
      **report.extra,
      "vocabulary": {"size": len(vocabulary), **vocab_report._asdict(),
                     "training_tokens": training_tokens, "word_count_spills": spilled},
      "tokenization": {"tokenizer": prepare_config.tokenizer, "lowercase": data_config.lowercase,
                       "filters": data_config.filters, "min_length": data_config.min_length,
                       "max_length": data_config.max_length},
      "settings": dataclasses.asdict(prepare_config),
      "decompressed_bytes": decompressed,
      "seconds": round(seconds, 3),
  }


def summary_lines(result):
  """The end-of-run report as printable lines."""
  pairs = result["pairs_written"]
  lines = [f"prepare: {len(result['files'])} file(s), {result['lines_read']:,} lines read, "
           f"{result['records_parsed']:,} records parsed, {sum(pairs.values()):,} pairs written "
           f"(train {pairs['train']:,}, val {pairs['val']:,}, test {pairs['test']:,}) "
           f"in {result['seconds']:.1f}s"]
  if result["skipped"]:
    lines.append("prepare: skipped " + ", ".join(f"{n:,} {r}" for r, n in result["skipped"].items()))
    lines.extend(f"  e.g. {e}" for e in result["skipped_examples"])
  if "replies_without_parent" in result:
    lines.append(f"prepare: {result['usable_replies']:,} usable replies, "
                 f"{result['replies_without_parent']:,} without their parent in the input")
  lines.extend(f"prepare: warning: {t}" for t in result["truncated_files"])
  v = result["vocabulary"]
  lines.append(f"prepare: vocabulary of {v['size']:,} tokens: kept {v['kept_words']:,} of "
               f"{v['unique_words']:,} word types ({100 * v['type_share']:.1f}%), covering "
               f"{100 * v['token_coverage']:.1f}% of {v['training_tokens']:,} training tokens")
  return lines
