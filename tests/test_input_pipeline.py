"""The tf.data pipeline over a prepared split: shapes, weights, order, and training on it."""
import dataclasses
import os
import random

import numpy as np
import pytest
import tensorflow as tf

from seq2seq import config as config_lib
from seq2seq.data import batches as batches_lib
from seq2seq.data import datasets
from seq2seq.data import input_pipeline
from seq2seq.data.prepare import pipeline
from seq2seq.data import vocab as vocab_lib
from seq2seq.train import loop

WORDS = [f"w{i}" for i in range(40)]
BOUNDARIES = (5, 10, 15, 20)


@pytest.fixture(name="split_file")
def _split_file(tmp_path):
  rng = random.Random(0)
  lines = []
  for _ in range(300):
    a, b = rng.randint(1, 22), rng.randint(1, 22)  # some outside 3..20, dropped
    lines.append(" ".join(rng.choices(WORDS, k=a)) + "\t" + " ".join(rng.choices(WORDS, k=b)))
  path = tmp_path / "train.tsv"
  path.write_text("\n".join(lines) + "\n", encoding="utf-8")
  return str(path), lines


def _schedule(path, seed=7, batch_size=8):
  vocabulary = vocab_lib.Vocabulary(list(vocab_lib.SPECIAL_TOKENS) + WORDS[:30])  # w30.. -> UNK
  return input_pipeline.DatasetSchedule(path, vocabulary, batch_size, BOUNDARIES, seed,
                                        min_length=3, max_length=20, shuffle_buffer=50), vocabulary


def test_bucketing_shapes_and_weights_match_pad_batch(split_file):
  path, lines = split_file
  schedule, vocabulary = _schedule(path)
  batches = list(schedule.batches(0))
  assert len(batches) == schedule.batches_per_epoch
  kept = [tuple(l.split("\t")) for l in lines
          if 3 <= min(len(l.split("\t")[0].split()), len(l.split("\t")[1].split()))
          and max(len(l.split("\t")[0].split()), len(l.split("\t")[1].split())) <= 20]
  assert sum(len(b.source) for b in batches) == len(kept)
  examples = {}
  for s, t in kept:
    examples.setdefault(tuple(vocabulary.encode(s.split())), []).append(vocabulary.encode(t.split()))
  for batch in batches:
    assert isinstance(batch, batches_lib.Batch)
    length = batch.source.shape[1]
    assert length in BOUNDARIES
    assert batch.decoder_input.shape == batch.target.shape == batch.target_weight.shape == (
        len(batch.source), length + 1)
    assert batch.source.dtype == np.int32 and batch.target_weight.dtype == np.float32
    assert len(batch.source) <= 8
    for row in range(len(batch.source)):
      n = batch.source_length[row]
      source = tuple(batch.source[row, :n])
      assert not batch.source[row, n:].any()
      longest = max(n, int(batch.target_weight[row].sum()) - 1)
      assert next(b for b in BOUNDARIES if longest <= b) == length  # the smallest bucket fits
      target = examples[source][0]
      expected = batches_lib.pad_batch([(list(source), target)], length)  # the in-memory path
      for name in batches_lib.Batch._fields:
        np.testing.assert_array_equal(getattr(batch, name)[row], getattr(expected, name)[0])


def test_order_is_deterministic_per_seed_and_epoch(split_file):
  path, _ = split_file
  first, _ = _schedule(path)
  again, _ = _schedule(path)

  def sources(schedule, epoch, start=0):
    return [b.source.tolist() for b in schedule.batches(epoch, start)]

  epoch0 = sources(first, 0)
  assert epoch0 == sources(again, 0)
  assert sources(again, 0, start=5) == epoch0[5:]  # a resumed run sees the same batches
  assert sources(first, 1) != epoch0
  other_seed, _ = _schedule(path, seed=8)
  assert sources(other_seed, 0) != epoch0


def _tiny_run_config(data_dir, workdir):
  return config_lib.RunConfig(
      model=config_lib.ModelConfig(num_layers=1, hidden_size=16, embedding_size=8, keep_prob=1.0),
      data=config_lib.DataConfig(data=data_dir, max_length=8, bucket_boundaries="4,8"),
      train=config_lib.TrainConfig(workdir=workdir, batch_size=4, num_epochs=1, max_steps=3,
                                   save_every=100, log_every=1, seed=3))


def _prepared(tmp_path):
  lines = [f"what is {i % 5} plus one\tit is {i % 5 + 1}" for i in range(60)]
  source = tmp_path / "raw.tsv"
  source.write_text("\n".join(lines) + "\n", encoding="utf-8")
  out = str(tmp_path / "prepared")
  pipeline.prepare(config_lib.PrepareConfig(input=str(source), input_format="pairs",
                                           output_dir=out, val_fraction=0.2, test_fraction=0.0,
                                           progress_seconds=0),
                  config_lib.DataConfig(max_length=8), log=lambda m: None)
  return out


def test_prepared_folder_feeds_training_with_tf_data(tmp_path):
  out = _prepared(tmp_path)
  run_config = _tiny_run_config(out, str(tmp_path / "work"))
  training_data = datasets.load_training_data(run_config, log=lambda m: None)
  assert isinstance(training_data.train, input_pipeline.DatasetSchedule)
  assert isinstance(training_data.val, input_pipeline.DatasetSchedule)
  assert training_data.vocabulary == vocab_lib.Vocabulary.load(os.path.join(out, "vocab.txt"))
  result = loop.train(run_config, log=lambda m: None)
  assert result.step == 3 and np.isfinite(result.last_loss)
  memory = datasets.load_training_data(
      config_lib.replace(run_config, input_pipeline="memory"), log=lambda m: None)
  assert isinstance(memory.train, batches_lib.BatchSchedule)
  assert memory.train.batches_per_epoch == training_data.train.batches_per_epoch
  assert datasets.eval_spec(run_config.data) == os.path.join(out, "val.tsv")


def test_prepared_folder_with_other_tokenisation_is_refused(tmp_path):
  out = _prepared(tmp_path)
  run_config = config_lib.replace(_tiny_run_config(out, str(tmp_path / "work")), lowercase=False)
  with pytest.raises(pipeline.DataError, match="prepared with --lowercase=True"):
    datasets.load_training_data(run_config, log=lambda m: None)


def test_tfdata_needs_a_prepared_folder(tmp_path):
  raw = tmp_path / "raw.tsv"
  raw.write_text("a b c\td e f\n", encoding="utf-8")
  run_config = config_lib.replace(_tiny_run_config(str(raw), str(tmp_path / "w")),
                                  input_pipeline="tfdata")
  with pytest.raises(pipeline.DataError, match="--input_pipeline=tfdata reads a folder"):
    datasets.load_training_data(run_config, log=lambda m: None)


def _epoch_pairs(schedule):
  """The (source ids, target ids) pairs of one epoch, unpadded, sorted (order aside)."""
  pairs = []
  for batch in schedule.batches(0):
    for row in range(len(batch.source)):
      if not batch.target_weight[row].any():
        continue  # a zero-weight padding row
      source = batch.source[row, :batch.source_length[row]].tolist()
      target = batch.target[row, :int(batch.target_weight[row].sum())].tolist()
      pairs.append((source, target))
  return sorted(pairs)


def test_memory_and_tf_data_read_a_subword_folder_alike(tmp_path):
  """In memory, a SentencePiece folder's pieces are read as they are, not cut again."""
  pytest.importorskip("sentencepiece")
  rng = random.Random(1)
  nouns = ["hausboot", "schutzhelm", "spielhaus", "fahrrad", "strandkorb", "baum"]
  lines = [f"{' '.join(rng.choices(nouns, k=rng.randint(2, 6)))}\t"
           f"ein {' '.join(rng.choices(nouns, k=rng.randint(2, 6)))} ." for _ in range(200)]
  source = tmp_path / "raw.tsv"
  source.write_text("\n".join(lines) + "\n", encoding="utf-8")
  out = str(tmp_path / "pieces")
  data_config = config_lib.DataConfig(max_length=30, max_vocab=40, bucket_boundaries="10,20,30")
  pipeline.prepare(config_lib.PrepareConfig(input=str(source), input_format="pairs",
                                           output_dir=out, val_fraction=0.2, test_fraction=0.0,
                                           tokenizer="sentencepiece", progress_seconds=0),
                  data_config, log=lambda m: None)
  run_config = config_lib.RunConfig(
      data=dataclasses.replace(data_config, data=out),
      train=config_lib.TrainConfig(workdir=str(tmp_path / "work"), batch_size=8, seed=3))
  streamed = datasets.load_training_data(run_config, log=lambda m: None)
  memory = datasets.load_training_data(config_lib.replace(run_config, input_pipeline="memory"),
                                       log=lambda m: None)
  assert isinstance(memory.train, batches_lib.BatchSchedule)
  assert _epoch_pairs(memory.train) == _epoch_pairs(streamed.train)
  assert _epoch_pairs(memory.val) == _epoch_pairs(streamed.val)
  # Eval mode reads the prepared val split the same way.
  spec = datasets.eval_spec(run_config.data)
  assert datasets.is_prepared_text(spec) and datasets.is_prepared_text(out)
  words = datasets.read_examples(spec, run_config.data, lambda m: None, "eval data")
  with open(spec, encoding="utf-8") as f:
    assert words == [tuple(side.split() for side in line.rstrip("\n").split("\t")) for line in f]
  assert not datasets.is_prepared_text(str(source))
