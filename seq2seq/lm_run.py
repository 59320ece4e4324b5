"""--model=lm --mode=train: a language model over running text files (one sentence a line).

Each line is tokenised like the pairs' text and ends with <EOS>; the lines are concatenated
into one stream that `language_model.lm_windows` cuts into windows of --num_steps tokens.
"""
import glob
import os

import numpy as np
import tensorflow as tf

from seq2seq import corpus
from seq2seq import language_model
from seq2seq import optimizers
from seq2seq import vocab as vocab_lib
from seq2seq import workdir as workdir_lib


def read_stream(spec, tokenizer):
  """Token lists of the non-empty lines of the files matching `spec` (comma-separated globs)."""
  files = sorted(f for pattern in spec.split(",") for f in glob.glob(pattern.strip()))
  if not files:
    raise corpus.DataError(f"{spec}: no such file")
  lines = []
  for path in files:
    with open(path, encoding="utf-8") as f:
      lines.extend(tokens for tokens in (tokenizer(line) for line in f) if tokens)
  return lines


def train(run_config, log=print):
  """Trains an LM for --num_epochs; saves the vocabulary and a final checkpoint.

  Returns:
    the per-epoch mean training losses.
  """
  data, train_config = run_config.data, run_config.train
  workdir_lib.check_or_save_config(run_config)
  lines = read_stream(data.data, vocab_lib.Tokenizer(data.lowercase, data.filters))
  vocabulary, _ = vocab_lib.build_vocabulary(lines, data.max_vocab, data.vocab_coverage)
  stream = [i for tokens in lines for i in vocabulary.encode(tokens) + [vocab_lib.EOS_ID]]
  log(f"language model: {len(lines)} lines, {len(stream)} tokens, vocabulary {len(vocabulary)}")
  vocabulary.save(workdir_lib.vocab_path(train_config.workdir))
  tf.random.set_seed(train_config.seed)
  model = language_model.LanguageModel(run_config.model, len(vocabulary), seed=train_config.seed)
  optimizer = optimizers.make_optimizer(train_config)
  history = language_model.train_lm(model, optimizer, np.array(stream), train_config.batch_size,
                                    data.num_steps, train_config.num_epochs,
                                    train_config.max_grad_norm, log)
  checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer).save(
      os.path.join(workdir_lib.checkpoint_dir(train_config.workdir), "lm"))
  log(f"done; saved {checkpoint}")
  return history
