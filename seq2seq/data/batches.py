"""From text pairs to padded, bucketed batches in a reproducible order.

The order of an epoch depends only on (seed, epoch), so a run resumed at batch k of an epoch
sees the same batches as an uninterrupted run.
"""
import collections
import math

import numpy as np

from seq2seq.data import vocab as vocab_lib

Batch = collections.namedtuple(
    "Batch", ["source", "source_length", "decoder_input", "target", "target_weight"])
Batch.__doc__ = """A post-padded batch (PAD = 0).

  source:         [B, Ts] int32 ids.
  source_length:  [B] int32.
  decoder_input:  [B, Tt] int32, <GO> y1 .. yn, Tt = Ts + 1.
  target:         [B, Tt] int32, y1 .. yn <EOS>.
  target_weight:  [B, Tt] float32, 1 on real target tokens (EOS included), 0 on PAD.
"""

FilterReport = collections.namedtuple("FilterReport", ["kept", "too_short", "too_long"])


def tokenize_pairs(pairs, tokenizer, min_length, max_length):
  """Tokenises pairs and keeps those whose both sides have min..max tokens.

  Returns:
    (list of (source_words, target_words), FilterReport).
  """
  kept, too_short, too_long = [], 0, 0
  for question, answer in pairs:
    source, target = tokenizer(question), tokenizer(answer)
    shortest, longest = min(len(source), len(target)), max(len(source), len(target))
    if shortest < min_length:
      too_short += 1
    elif longest > max_length:
      too_long += 1
    else:
      kept.append((source, target))
  return kept, FilterReport(len(kept), too_short, too_long)


def encode_pairs(word_pairs, vocabulary):
  """Word pairs -> list of (source_ids, target_ids), no special tokens added."""
  return [(vocabulary.encode(s), vocabulary.encode(t)) for s, t in word_pairs]


def bucket_boundaries(max_length, num_buckets):
  """Evenly spaced padded lengths up to max_length, e.g. (5, 10, 15, 20) for 20 and 4."""
  num_buckets = max(1, min(num_buckets, max_length))
  return tuple(sorted({math.ceil(max_length * (k + 1) / num_buckets) for k in range(num_buckets)}))


def pad_batch(examples, length):
  """Pads encoded (source_ids, target_ids) examples to source length `length`."""
  size = len(examples)
  source = np.zeros([size, length], np.int32)
  decoder_input = np.zeros([size, length + 1], np.int32)
  target = np.zeros([size, length + 1], np.int32)
  source_length = np.zeros([size], np.int32)
  for row, (src, tgt) in enumerate(examples):
    if len(src) > length or len(tgt) > length:
      raise ValueError(f"example {row} is longer than the padded length {length}")
    source[row, :len(src)] = src
    source_length[row] = len(src)
    decoder_input[row, :len(tgt) + 1] = [vocab_lib.GO_ID] + list(tgt)
    target[row, :len(tgt) + 1] = list(tgt) + [vocab_lib.EOS_ID]
  target_lengths = np.array([len(t) + 1 for _, t in examples])  # y1 .. yn <EOS>
  target_weight = (np.arange(length + 1)[None, :] < target_lengths[:, None]).astype(np.float32)
  return Batch(source, source_length, decoder_input, target, target_weight)


class BatchSchedule:
  """Deterministic bucketed batches for each epoch.

  Each epoch: shuffle the examples with a generator seeded by (seed, epoch), bucket them by
  the longer side (keeping the shuffled order), cut each bucket into batches of `batch_size`
  (the last may be smaller), and shuffle the batches.
  """

  def __init__(self, examples, batch_size, boundaries, seed):
    if not examples:
      raise ValueError("no examples to batch")
    self.examples = list(examples)
    self.batch_size = int(batch_size)
    self.boundaries = tuple(boundaries)
    self.seed = int(seed)
    self._bucket_of = [self._bucket(max(len(s), len(t))) for s, t in self.examples]
    self.batches_per_epoch = sum(
        math.ceil(n / self.batch_size) for n in collections.Counter(self._bucket_of).values())

  @property
  def bucket_of(self):
    """The padded length (bucket) of each example, in the order of `examples`."""
    return tuple(self._bucket_of)

  def _bucket(self, length):
    for boundary in self.boundaries:
      if length <= boundary:
        return boundary
    raise ValueError(f"example of length {length} exceeds the largest bucket {self.boundaries[-1]}")

  def epoch_plan(self, epoch):
    """[(padded_length, [example indices])] for `epoch`, in the order they are trained on."""
    rng = np.random.default_rng([self.seed, epoch])
    by_bucket = collections.defaultdict(list)
    for index in rng.permutation(len(self.examples)):
      by_bucket[self._bucket_of[index]].append(int(index))
    plan = []
    for length in sorted(by_bucket):
      indices = by_bucket[length]
      plan.extend((length, indices[i:i + self.batch_size])
                  for i in range(0, len(indices), self.batch_size))
    order = rng.permutation(len(plan))
    return [plan[i] for i in order]

  def batches(self, epoch, start=0):
    """Yields the padded batches of `epoch`, skipping the first `start` of them."""
    for length, indices in self.epoch_plan(epoch)[start:]:
      yield pad_batch([self.examples[i] for i in indices], length)
