"""Everything between a DataConfig and batches: read, tokenise, filter, vocabulary, encode.

Two paths give the same batches structure: small raw corpora are read into memory
(`batches.BatchSchedule`); a folder written by --mode=prepare is streamed with tf.data
(`input_pipeline.DatasetSchedule`) and brings its own vocabulary.
"""
import collections
import dataclasses
import os

from seq2seq.data import batches
from seq2seq.data import corpus
from seq2seq.data import prepared
from seq2seq.data import vocab as vocab_lib
from seq2seq.runtime import workdir as workdir_lib

TrainingData = collections.namedtuple("TrainingData", ["vocabulary", "train", "val"])


class SubwordTokenizer:
  """Word tokenisation, then SentencePiece pieces (for a folder prepared with subwords)."""

  def __init__(self, words, model_path):
    import sentencepiece as spm  # pylint: disable=import-outside-toplevel
    self._words = words
    self._processor = spm.SentencePieceProcessor(model_file=model_path)

  def __call__(self, text):
    return self._processor.encode(" ".join(self._words(text)), out_type=str)

  def detokenize(self, pieces):
    """Pieces -> text: "▁ein ▁haus boot" -> "ein hausboot"."""
    return self._processor.decode_pieces(list(pieces))


def uses_sentencepiece(data_config):
  """True if --data is a folder prepared with --tokenizer=sentencepiece."""
  return (prepared.is_prepared(data_config.data)
          and os.path.exists(prepared.sentencepiece_path(data_config.data)))


def tokenizer_for(data_config):
  """The tokenizer that made the training data: words, or pieces for a subword folder."""
  words = vocab_lib.Tokenizer(lowercase=data_config.lowercase, filters=data_config.filters)
  if uses_sentencepiece(data_config):
    return SubwordTokenizer(words, prepared.sentencepiece_path(data_config.data))
  return words


def eval_spec(data_config):
  """What eval mode reads: --val_data, else a prepared folder's val split, else --data."""
  if data_config.val_data:
    return data_config.val_data
  if prepared.is_prepared(data_config.data):
    return prepared.split_spec(data_config.data, "val")
  return data_config.data


def is_prepared_text(spec):
  """True if `spec` is a prepared folder or one of its split files, whose text is already
  tokenised: words or SentencePiece pieces, joined by spaces."""
  if prepared.is_prepared(spec):
    return True
  directory = os.path.dirname(spec)
  return (prepared.is_prepared(directory or ".")
          and spec in [prepared.split_spec(directory, split) for split in prepared.SPLITS])


def read_examples(spec, data_config, log, what):
  """Reads, tokenises and length-filters pairs; returns word pairs. Logs what was kept.

  Raw text is tokenised as the training data was (`tokenizer_for`); a prepared folder's text
  is already tokenised and is only split on spaces (cutting pieces into pieces again would
  change them).
  """
  pairs, report = corpus.load_pairs(spec)
  log(f"{what}: {report.summary()}")
  tokenizer = str.split if is_prepared_text(spec) else tokenizer_for(data_config)
  word_pairs, kept = batches.tokenize_pairs(pairs, tokenizer, data_config.min_length,
                                            data_config.max_length)
  log(f"{what}: kept {kept.kept} pairs with {data_config.min_length}..{data_config.max_length} "
      f"tokens a side ({kept.too_short} too short, {kept.too_long} too long)")
  if not word_pairs:
    raise corpus.DataError(f"{spec}: no pair has {data_config.min_length}.."
                           f"{data_config.max_length} tokens on both sides")
  return word_pairs


def load_or_build_vocabulary(sentences, data_config, workdir, log):
  """Reuses WORKDIR/vocab.txt when present; otherwise builds the top-K vocabulary of
  `sentences` (token lists: both sides of the pairs, or an LM's lines) and saves it.

  Raises:
    workdir.WorkdirError: vocab.txt is missing but checkpoints trained with it remain.
  """
  path = workdir_lib.vocab_path(workdir)
  if os.path.exists(path):
    vocabulary = vocab_lib.Vocabulary.load(path)
    log(f"vocabulary: reusing {path} ({len(vocabulary)} tokens)")
    return vocabulary
  workdir_lib.check_vocabulary_kept(workdir)
  vocabulary, report = vocab_lib.build_vocabulary(sentences, data_config.max_vocab,
                                                  data_config.vocab_coverage)
  vocabulary.save(path)
  log(f"vocabulary: {len(vocabulary)} tokens saved to {path}; kept {report.kept_words} of "
      f"{report.unique_words} word types ({100 * report.type_share:.1f}%), covering "
      f"{100 * report.token_coverage:.1f}% of tokens")
  return vocabulary


def check_prepared(directory, data_config):
  """The report of a prepared folder, after checking it was tokenised as data_config says.

  Raises:
    corpus.DataError: naming the flags to change.
  """
  try:
    report = prepared.load_report(directory)
  except ValueError as e:
    raise corpus.DataError(str(e)) from None
  made = report["tokenization"]
  differences = [f"--{name}={made[name]!r}" for name in ("lowercase", "filters")
                 if made[name] != getattr(data_config, name)]
  if differences and made["tokenizer"] == "word":
    raise corpus.DataError(f"{prepared.report_path(directory)}: this folder was prepared with "
                           f"{', '.join(differences)}; pass the same values (chat must tokenise "
                           "the same way), or prepare it again")
  return report


def _prepared_vocabulary(directory, workdir, log):
  """The prepared folder's vocabulary, copied into the workdir (which must agree with it)."""
  vocabulary = vocab_lib.Vocabulary.load(prepared.vocab_path(directory))
  path = workdir_lib.vocab_path(workdir)
  if os.path.exists(path):
    if vocab_lib.Vocabulary.load(path) != vocabulary:
      raise corpus.DataError(f"{path} differs from {prepared.vocab_path(directory)}: this "
                             "workdir was trained on other data; use a new --workdir")
  else:
    workdir_lib.check_vocabulary_kept(workdir)
    os.makedirs(workdir, exist_ok=True)
    vocabulary.save(path)
  log(f"vocabulary: {len(vocabulary)} tokens from {prepared.vocab_path(directory)}")
  return vocabulary


def fit_batch_size(run_config, pairs, log):
  """run_config with --batch_size lowered to `pairs` (the training pairs, or an upper bound of
  them) when it is larger, saying so; unchanged otherwise.

  A bucket is cut into batches of --batch_size pairs, so with more rows than pairs each bucket
  is one batch whatever the excess: the batches, their order and the loss (a mean over target
  tokens) stay those of the requested size. Only the padding changes: each step pads its batch
  to --batch_size rows (`train_step.BucketedFunction`), which for --batch_size=100000 would
  fill the memory with rows of zero weight.
  """
  batch_size = run_config.train.batch_size
  if batch_size <= pairs or pairs <= 0:  # no pairs: the readers say so
    return run_config
  log(f"--batch_size={batch_size} is more than the {pairs:,} training pairs: each bucket is "
      f"one batch of all its pairs, padded to {pairs:,} rows (not {batch_size})")
  return dataclasses.replace(run_config,
                             train=dataclasses.replace(run_config.train, batch_size=pairs))


def _streamed(path, vocabulary, run_config):
  from seq2seq.data import input_pipeline  # pylint: disable=import-outside-toplevel
  data_config = run_config.data
  return input_pipeline.DatasetSchedule(
      path, vocabulary, run_config.train.batch_size, data_config.boundaries(),
      run_config.train.seed, data_config.min_length, data_config.max_length,
      data_config.shuffle_buffer)


def load_training_data(run_config, log=print):
  """Train (and optional val) batch schedules over a vocabulary stored in the workdir."""
  data_config, train_config = run_config.data, run_config.train
  boundaries = data_config.boundaries()
  if prepared.is_prepared(data_config.data):
    return _load_prepared(run_config, log)
  if data_config.input_pipeline == "tfdata":
    raise corpus.DataError(f"--data={data_config.data}: --input_pipeline=tfdata reads a folder "
                           "written by --mode=prepare; prepare it first, or use "
                           "--input_pipeline=auto")
  word_pairs = read_examples(data_config.data, data_config, log, "train data")
  vocabulary = load_or_build_vocabulary((words for pair in word_pairs for words in pair),
                                        data_config, train_config.workdir, log)
  train_config = fit_batch_size(run_config, len(word_pairs), log).train

  def schedule(pairs):
    return batches.BatchSchedule(batches.encode_pairs(pairs, vocabulary), train_config.batch_size,
                                 boundaries, train_config.seed)

  val = None
  if data_config.val_data:
    val = schedule(read_examples(data_config.val_data, data_config, log, "val data"))
  return TrainingData(vocabulary, schedule(word_pairs), val)


def _load_prepared(run_config, log):
  """Training data from a prepared folder: tf.data by default, in memory on request."""
  directory = run_config.data.data
  report = check_prepared(directory, run_config.data)
  run_config = fit_batch_size(run_config, report["pairs_written"]["train"], log)
  data_config, train_config = run_config.data, run_config.train
  vocabulary = _prepared_vocabulary(directory, train_config.workdir, log)
  val_spec = eval_spec(data_config)
  has_val = bool(data_config.val_data) or report["pairs_written"]["val"] > 0
  if data_config.input_pipeline == "memory":
    def schedule(spec, what):
      pairs = read_examples(spec, data_config, log, what)
      return batches.BatchSchedule(batches.encode_pairs(pairs, vocabulary), train_config.batch_size,
                                   data_config.boundaries(), train_config.seed)
    return TrainingData(vocabulary, schedule(directory, "train data"),
                        schedule(val_spec, "val data") if has_val else None)
  train = _streamed(prepared.split_files(directory, "train"), vocabulary, run_config)
  log(f"train data: streaming {prepared.split_spec(directory, 'train')} with tf.data "
      f"({report['pairs_written']['train']:,} pairs prepared, {train.batches_per_epoch} batches "
      "an epoch)")
  val = None
  if data_config.val_data and not prepared.is_prepared(data_config.val_data):
    pairs = read_examples(val_spec, data_config, log, "val data")  # raw text, in memory
    val = batches.BatchSchedule(batches.encode_pairs(pairs, vocabulary), train_config.batch_size,
                                data_config.boundaries(), train_config.seed)
  elif has_val:  # a prepared val split: already tokenised, streamed like the training split
    try:
      val = _streamed(prepared.split_files(data_config.val_data or directory, "val"),
                      vocabulary, run_config)
    except ValueError as e:
      log(f"val data: {e}; no validation")
  return TrainingData(vocabulary, train, val)
