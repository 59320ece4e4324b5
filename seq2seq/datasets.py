"""Everything between a DataConfig and batches: read, tokenise, filter, vocabulary, encode."""
import collections
import os

from seq2seq import corpus
from seq2seq import data
from seq2seq import vocab as vocab_lib
from seq2seq import workdir as workdir_lib

TrainingData = collections.namedtuple("TrainingData", ["vocabulary", "train", "val"])


def tokenizer_for(data_config):
  return vocab_lib.Tokenizer(lowercase=data_config.lowercase)


def read_examples(spec, data_config, log, what):
  """Reads, tokenises and length-filters pairs; returns word pairs. Logs what was kept."""
  pairs, report = corpus.load_pairs(spec)
  log(f"{what}: {report.summary()}")
  word_pairs, kept = data.tokenize_pairs(pairs, tokenizer_for(data_config),
                                         data_config.min_length, data_config.max_length)
  log(f"{what}: kept {kept.kept} pairs with {data_config.min_length}..{data_config.max_length} "
      f"tokens a side ({kept.too_short} too short, {kept.too_long} too long)")
  if not word_pairs:
    raise corpus.DataError(f"{spec}: no pair has {data_config.min_length}.."
                           f"{data_config.max_length} tokens on both sides")
  return word_pairs


def load_or_build_vocabulary(word_pairs, data_config, workdir, log):
  """Reuses WORKDIR/vocab.txt when present; otherwise builds the top-K vocabulary and saves it."""
  path = workdir_lib.vocab_path(workdir)
  if os.path.exists(path):
    vocabulary = vocab_lib.Vocabulary.load(path)
    log(f"vocabulary: reusing {path} ({len(vocabulary)} tokens)")
    return vocabulary
  vocabulary, report = vocab_lib.build_vocabulary(
      (words for pair in word_pairs for words in pair), data_config.max_vocab)
  vocabulary.save(path)
  log(f"vocabulary: {len(vocabulary)} tokens saved to {path}; kept {report.kept_words} of "
      f"{report.unique_words} word types ({100 * report.type_share:.1f}%), covering "
      f"{100 * report.token_coverage:.1f}% of tokens")
  return vocabulary


def load_training_data(run_config, log=print):
  """Train (and optional val) batch schedules over a vocabulary stored in the workdir."""
  data_config, train_config = run_config.data, run_config.train
  word_pairs = read_examples(data_config.data, data_config, log, "train data")
  vocabulary = load_or_build_vocabulary(word_pairs, data_config, train_config.workdir, log)
  boundaries = data.bucket_boundaries(data_config.max_length, data_config.num_buckets)

  def schedule(pairs):
    return data.BatchSchedule(data.encode_pairs(pairs, vocabulary), train_config.batch_size,
                              boundaries, train_config.seed)

  val = None
  if data_config.val_data:
    val = schedule(read_examples(data_config.val_data, data_config, log, "val data"))
  return TrainingData(vocabulary, schedule(word_pairs), val)
