"""--prepare_runner=beam: the Reddit prepare as an Apache Beam pipeline.

The stages of the local prepare (seq2seq.data.prepare.pipeline), with its functions for every
rule, spread over Beam workers:

  1. each dump file is one element: a worker streams it (plain, .bz2, .xz, .gz, long-window
     .zst) through `pipeline.BlockParser`; the file's counters go to a side output;
  2. GroupByKey on comment id keeps the first copy of a duplicated id in input order (file,
     then line), as the local index does;
  3. GroupByKey on parent id joins each parent with its replies; `pairing.kept_replies`
     applies the tie rule, `pipeline.tokenised_pair` the length filter and `pipeline.split_of`
     the stable hash split;
  4. GroupByKey on (split, shard) writes each shard sorted by (parent id, reply id), so with
     --output_shards=1 the files equal the local runner's line for line; the training split's
     words are counted per shard and summed by a combiner (Top-K for the vocabulary);
  5. with --tokenizer=sentencepiece the model is trained on a bounded sample of the training
     split (at most a million sentences, as the local runner) and the shards are encoded with
     it, a side input.

The small results (per-file counters, skip counts, the top words) come back to this process
as JSON lines in OUTPUT_DIR.partial/beam/, which builds vocab.txt and report.json with the
local runner's code. Workers read the inputs and write the shards by path, so on a cluster
both must be on a file system every worker mounts (BUILD.md).
"""
import collections
import json
import logging
import os
import shlex
import tempfile
import time

import apache_beam as beam
from apache_beam.options import pipeline_options
from apache_beam.transforms import window

from seq2seq import config as config_lib
from seq2seq.data import prepared
from seq2seq.data import streams
from seq2seq.data import vocab as vocab_lib
from seq2seq.data import wordcount
from seq2seq.data.prepare import pairing
from seq2seq.data.prepare import pipeline

_SHARD_BYTES = 256 * 2 ** 20  # compressed input bytes per output shard when not given
_SAMPLE_PAIRS = 500000  # pairs sampled for SentencePiece: a million sentences, as locally
_COUNTS, _FILES, _EXAMPLES, _WORDS = "counts", "files", "examples", "words"


def output_shards(prepare_config, files):
  """--output_shards, or one shard per 256 MB of compressed input (at least one)."""
  if prepare_config.output_shards:
    return prepare_config.output_shards
  return max(1, -(-streams.total_size(files) // _SHARD_BYTES))


def options_of(beam_options):
  """PipelineOptions from the --beam_options string (workers log warnings and errors unless
  it says otherwise). Raises ConfigError on a stray word."""
  try:
    words = shlex.split(beam_options)
  except ValueError as e:
    raise config_lib.ConfigError("beam_options", f"cannot be split into options ({e})") from None
  stray = [w for w in words if not w.startswith("--")]
  if stray:
    raise config_lib.ConfigError(
        "beam_options", f"{stray[0]!r} is not an option; write each as --name=value, e.g. "
        "\"--direct_num_workers=2 --direct_running_mode=multi_processing\"")
  if not any(w.startswith("--default_sdk_harness_log_level") for w in words):
    words.append("--default_sdk_harness_log_level=WARNING")  # not each worker's start and stop
  return pipeline_options.PipelineOptions(words)


class _CountingDoFn(beam.DoFn):
  """A DoFn that adds to named counters, emitted once per bundle to the COUNTS output."""

  def start_bundle(self):
    self.counts = collections.Counter()

  def finish_bundle(self):
    for name, n in self.counts.items():
      yield beam.pvalue.TaggedOutput(_COUNTS, window.GlobalWindows.windowed_value((name, n)))


class ParseFile(beam.DoFn):
  """(file number, path) -> (comment id, (file number, row number, parent, score, body)) of
  each usable comment; the file's PrepareReport snapshot to the FILES output."""

  def __init__(self, prepare_config, data_config):
    self.configs = prepare_config, data_config

  def setup(self):
    self.parser = pipeline.BlockParser(*self.configs)

  def process(self, numbered):
    number, path = numbered
    report = pipeline.PrepareReport()
    sizes = collections.Counter()
    row_number = 0
    try:
      for first_line, block in streams.read_blocks(
          path, lambda compressed, decompressed: sizes.update(out=decompressed)):
        lines, records, skipped, examples, rows = self.parser(path, first_line, block)
        report.add_block(lines, records, skipped, examples)
        for comment_id, parent, score, body in rows:
          yield comment_id, (number, row_number, parent, score, body)
          row_number += 1
    except streams.TruncatedStream as e:
      report.truncated.append(str(e))
    report.decompressed_bytes = sizes["out"]
    yield beam.pvalue.TaggedOutput(_FILES, (number, report.snapshot()))


class FirstCopy(_CountingDoFn):
  """(id, copies) -> the first copy in input order, keyed for the join: (id, (body,)) as a
  parent and, for a usable reply, (parent id, (id, score, body))."""

  def process(self, element):
    comment_id, copies = element
    copies = list(copies)
    _, _, parent, score, body = min(copies, key=lambda copy: copy[:2])
    self.counts["duplicate_ids"] += len(copies) - 1
    yield comment_id, (body,)
    if parent is not None:
      yield parent, (comment_id, score, body)


class JoinReplies(_CountingDoFn):
  """(parent id, [its body and its replies]) -> ((split, shard), (parent id, reply id,
  source, target)) for each kept pair."""

  def __init__(self, prepare_config, data_config, shards):
    self.prepare_config, self.data_config, self.shards = prepare_config, data_config, shards

  def setup(self):
    self.tokenize = vocab_lib.Tokenizer(lowercase=self.data_config.lowercase,
                                        filters=self.data_config.filters)

  def process(self, element):
    parent_id, values = element
    parent_body, replies = None, []
    for value in values:
      if len(value) == 1:
        parent_body = value[0]
      else:
        replies.append(value)
    self.counts["usable_replies"] += len(replies)
    if parent_body is None:
      self.counts["replies_without_parent"] += len(replies)
      return
    config = self.prepare_config
    subwords = config.tokenizer == "sentencepiece"
    for reply_id, answer in pairing.kept_replies(replies, config.best_reply_only) if replies else ():
      source, target, reason = pipeline.tokenised_pair(parent_body, answer, self.tokenize,
                                                       subwords, self.data_config)
      if reason:
        self.counts[f"pairs_too_{reason}"] += 1
        continue
      split = pipeline.split_of(source, target, config.val_fraction, config.test_fraction)
      yield (split, parent_id % self.shards), (parent_id, reply_id, source, target)


def _train_on_sample(sample, model_path, prepare_config, data_config):
  """Trains SentencePiece on the sampled training pairs, (parent id, reply id, source text,
  target text), in their output order; writes the model to `model_path` and returns its
  bytes (b"" when there is no training pair)."""
  if not sample:
    return b""
  sentences = (side for *_, source, target in sorted(sample, key=lambda pair: pair[:2])
               for side in (source, target))
  with tempfile.TemporaryDirectory() as folder:
    prefix = os.path.join(folder, "sentencepiece")
    pipeline.train_sentencepiece(sentences, prefix, prepare_config, data_config, logging.info)
    with open(prefix + ".model", "rb") as f:
      model = f.read()
  with open(model_path, "wb") as f:
    f.write(model)
  return model


class WriteShard(_CountingDoFn):
  """((split, shard), pairs) -> the shard file, sorted by (parent id, reply id); with a
  SentencePiece model, pairs are encoded and length-filtered in pieces first. Emits (split,
  pairs written) and, for the training split, (token, count) to the WORDS output."""

  def __init__(self, out_dir, shards, data_config):
    self.out_dir, self.shards, self.data_config = out_dir, shards, data_config

  def setup(self):
    self.processor, self.model = None, None

  def _encoder(self, model):
    if model and model != self.model:
      import sentencepiece as spm  # pylint: disable=import-outside-toplevel
      self.processor, self.model = spm.SentencePieceProcessor(model_proto=model), model
    return self.processor

  def process(self, element, model=b""):
    (split, shard), pairs = element
    processor = self._encoder(model)
    words, written, dropped = collections.Counter(), 0, 0
    name = prepared.shard_name(split, shard, self.shards)
    with open(os.path.join(self.out_dir, name), "w", encoding="utf-8") as f:
      for number, (*_, source, target) in enumerate(sorted(pairs, key=lambda p: p[:2]), 1):
        if processor is not None:
          source, target = (processor.encode(" ".join(source), out_type=str),
                            processor.encode(" ".join(target), out_type=str))
          if (min(len(source), len(target)) < self.data_config.min_length
              or max(len(source), len(target)) > self.data_config.max_length):
            self.counts[pipeline.LENGTH] += 1
            dropped += 1
            if dropped <= pipeline.MAX_EXAMPLES:  # the report lists the first few
              yield beam.pvalue.TaggedOutput(_EXAMPLES, (split, shard, number))
            continue
        f.write(" ".join(source) + "\t" + " ".join(target) + "\n")
        written += 1
        if split == "train":
          words.update(source)
          words.update(target)
    yield split, written
    for word, n in words.items():
      yield beam.pvalue.TaggedOutput(_WORDS, (word, n))


def _rank_key(word_count):
  """Orders (word, count) as the local ranking does: by count, then a word before the words
  it precedes alphabetically (code points negated; the 1 puts a prefix first)."""
  word, count = word_count
  return count, tuple(-ord(c) for c in word) + (1,)


def _results(p, files, prepare_config, data_config, shards, work_dir, work_out):
  """Builds the pipeline on `p`; returns the PCollection of JSON result lines."""
  subwords = prepare_config.tokenizer == "sentencepiece"
  parsed = (p | "Files" >> beam.Create(list(enumerate(files))) | beam.Reshuffle()
            | "Parse" >> beam.ParDo(ParseFile(prepare_config, data_config)).with_outputs(
                _FILES, main="rows"))
  nodes = (parsed.rows | "ById" >> beam.GroupByKey()
           | "FirstCopy" >> beam.ParDo(FirstCopy()).with_outputs(_COUNTS, main="nodes"))
  joined = (nodes.nodes | "ByParent" >> beam.GroupByKey()
            | "Join" >> beam.ParDo(JoinReplies(prepare_config, data_config, shards)).with_outputs(
                _COUNTS, main="pairs"))
  if not subwords:
    model = beam.pvalue.AsSingleton(p | "NoModel" >> beam.Create([b""]))
  else:
    model_path = prepared.sentencepiece_path(work_out)
    model = beam.pvalue.AsSingleton(
        joined.pairs | beam.Filter(lambda kv: kv[0][0] == "train")
        | beam.MapTuple(lambda _, v: (v[0], v[1], " ".join(v[2]), " ".join(v[3])))  # compact
        | beam.combiners.Sample.FixedSizeGlobally(_SAMPLE_PAIRS)
        | "TrainSentencePiece" >> beam.Map(_train_on_sample, model_path, prepare_config,
                                           data_config))
  written = (joined.pairs | "ByShard" >> beam.GroupByKey()
             | "Write" >> beam.ParDo(WriteShard(work_out, shards, data_config), model).with_outputs(
                 _COUNTS, _EXAMPLES, _WORDS, main="splits"))
  words = written[_WORDS] | "SumWords" >> beam.CombinePerKey(sum)
  counts = ((nodes[_COUNTS], joined[_COUNTS], written[_COUNTS],
             words | beam.Map(lambda kv: ("training_tokens", kv[1])),
             words | beam.Map(lambda kv: ("unique_words", 1)))
            | "AllCounts" >> beam.Flatten() | "SumCounts" >> beam.CombinePerKey(sum))
  lines = [counts | "CountLines" >> beam.Map(lambda kv: ["count", *kv]),
           parsed[_FILES] | "FileLines" >> beam.Map(lambda kv: ["file", *kv]),
           written[_EXAMPLES] | "ExampleLines" >> beam.Map(lambda e: ["example", *e]),
           written.splits | "SumSplits" >> beam.CombinePerKey(sum)
           | "SplitLines" >> beam.Map(lambda kv: ["split", *kv])]
  if subwords or data_config.vocab_coverage:  # every count: the cut needs the whole ranking
    words | "AllWords" >> beam.Map(json.dumps) | "WriteWords" >> beam.io.WriteToText(
        os.path.join(work_dir, "beam", "words"), file_name_suffix=".jsonl")
  else:
    limit = max(0, data_config.max_vocab - len(vocab_lib.SPECIAL_TOKENS))
    lines.append(words | beam.combiners.Top.Of(limit + len(vocab_lib.SPECIAL_TOKENS),
                                               key=_rank_key)
                 | "TopLine" >> beam.Map(lambda top: ["top", top]))
  return tuple(lines) | "AllLines" >> beam.Flatten() | beam.Map(json.dumps)


def _run_pipeline(options, files, prepare_config, data_config, shards, work_dir, work_out, log):
  """Runs the pipeline to the end; returns its result lines, parsed."""
  results = os.path.join(work_dir, "beam", "results.jsonl")
  _let_workers_import_this_package()
  log(f"prepare: running the Beam pipeline ({prepare_config.beam_options or 'DirectRunner'}) on "
      f"{len(files)} file(s), {shards} shard(s) a split")
  with beam.Pipeline(options=options) as p:
    _ = (_results(p, files, prepare_config, data_config, shards, work_dir, work_out)
         | beam.io.WriteToText(results, shard_name_template="", num_shards=1))
  with open(results, encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def _let_workers_import_this_package():
  """Puts this package's folder first on the PYTHONPATH that worker processes inherit, so a
  multi-process DirectRunner runs this code, not another installed copy."""
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__)))))
  paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
  if root not in paths:
    os.environ["PYTHONPATH"] = os.pathsep.join([root] + [p for p in paths if p])


def _report_of(lines, files, shards):
  """(PrepareReport, {split: pairs}, {count name: n}) from the pipeline's result lines."""
  report = pipeline.PrepareReport()
  report.files = list(files)
  by_kind = collections.defaultdict(list)
  for kind, *value in lines:
    by_kind[kind].append(value)
  for _, stats in sorted(by_kind["file"], key=lambda item: item[0]):
    report.merge(stats)
  counts = collections.Counter(dict(by_kind["count"]))
  order = {split: i for i, split in enumerate(prepared.SPLITS)}
  for split, shard, number in sorted(by_kind["example"], key=lambda e: (order[e[0]], *e[1:])):
    report.skip(f"{split} split" + (f" shard {shard}" if shards > 1 else ""), number,
                pipeline.LENGTH)
  unlisted = counts[pipeline.LENGTH] - len(by_kind["example"])
  if unlisted:
    report.skipped[pipeline.LENGTH] += unlisted
  report.extra.update(usable_replies=counts["usable_replies"],
                      replies_without_parent=counts["replies_without_parent"],
                      duplicate_ids=counts["duplicate_ids"])
  pipeline.count_length_skips(report, counts["pairs_too_short"], counts["pairs_too_long"])
  split_counts = collections.Counter(dict(by_kind["split"]))
  top = by_kind["top"][0][0] if by_kind["top"] else None
  return report, {s: split_counts[s] for s in prepared.SPLITS}, counts, top


class _TopWords:
  """The ranking interface of wordcount.WordCounter over the pipeline's top words."""

  def __init__(self, top, total, unique):
    self._ranked = sorted(((w, n) for w, n in top), key=lambda wn: (-wn[1], wn[0]))
    self.total, self._unique, self.spills = total, unique, 0

  def ranked(self):
    return iter(self._ranked)

  def unique(self):
    return self._unique

  def close(self):
    pass


def _word_counts(top, counts, work_dir, prepare_config):
  """The training split's counts: the top words, or every word read back from the pipeline's
  word files into a bounded-memory WordCounter."""
  if top is not None:
    return _TopWords(top, counts["training_tokens"], counts["unique_words"])
  counter = wordcount.WordCounter(os.path.join(work_dir, "wordcount.sqlite"),
                                  prepare_config.max_words_in_memory)
  folder = os.path.join(work_dir, "beam")
  for name in sorted(os.listdir(folder)):
    if name.startswith("words"):
      with open(os.path.join(folder, name), encoding="utf-8") as f:
        for line in f:
          counter.add(*json.loads(line))
  return counter


def _complete_shards(work_out, shards):
  """Creates the shard files the pipeline wrote no pair to, so every split has all its shards."""
  for split in prepared.SPLITS:
    for shard in range(shards):
      path = os.path.join(work_out, prepared.shard_name(split, shard, shards))
      if not os.path.exists(path):
        open(path, "w", encoding="utf-8").close()


def prepare(prepare_config, data_config, log):
  """pipeline.prepare's work, as a Beam pipeline (the settings are checked by the caller)."""
  start = time.perf_counter()
  options = options_of(prepare_config.beam_options)
  files = pipeline.input_files(prepare_config.input)
  shards = output_shards(prepare_config, files)
  output_dir, work_dir, work_out = pipeline.work_folders(prepare_config, resumable=False)
  lines = _run_pipeline(options, files, prepare_config, data_config, shards, work_dir, work_out, log)
  report, split_counts, counts, top = _report_of(lines, files, shards)
  _complete_shards(work_out, shards)
  processor = None
  model_path = prepared.sentencepiece_path(work_out)
  if os.path.exists(model_path) and os.path.getsize(model_path):
    import sentencepiece as spm  # pylint: disable=import-outside-toplevel
    processor = spm.SentencePieceProcessor(model_file=model_path)
  counter = _word_counts(top, counts, work_dir, prepare_config)
  try:
    vocabulary, vocab_report = pipeline.final_vocabulary(prepare_config, data_config, report,
                                                         split_counts, counter, processor)
  finally:
    counter.close()
  vocabulary.save(prepared.vocab_path(work_out))
  result = pipeline.build_report(
      prepare_config, data_config, report, split_counts, vocabulary, vocab_report,
      counter.total, counter.spills, report.decompressed_bytes, time.perf_counter() - start)
  return pipeline.finish(result, work_dir, work_out, output_dir, log)
