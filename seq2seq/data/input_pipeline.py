"""A tf.data input pipeline over a prepared split file, for corpora too large for memory.

    lines -> shuffle (seeded by seed and epoch) -> encode -> length filter
          -> bucket by the longer side and post-pad to the bucket's length -> batch
          -> shuffle batches (seeded) -> prefetch

It yields the same `seq2seq.data.batches.Batch` structure as `batches_lib.BatchSchedule` (NumPy arrays, PAD=0,
weights 0 on PAD), and the same interface (`batches(epoch, start)`, `batches_per_epoch`,
`seed`), so the training loop takes either. The order of an epoch depends only on
(seed, epoch): each epoch builds its own dataset with fixed shuffle seeds and deterministic
maps, so a run resumed at batch k skips k batches and sees what an uninterrupted run saw.
"""
import collections
import math

import tensorflow as tf

from seq2seq.data import batches as batches_lib
from seq2seq.data import vocab as vocab_lib

_BATCH_SHUFFLE_BUFFER = 64  # whole batches mixed, so buckets interleave


def _epoch_seed(seed, epoch, salt):
  """An op seed for (seed, epoch): a fixed arithmetic mix, not Python's randomised hash()."""
  return (int(seed) * 1000003 + int(epoch) * 7919 + salt) % (2 ** 31 - 1)


def _files(path):
  """A split file, or the list of a sharded split's files, as a list."""
  return [path] if isinstance(path, str) else list(path)


def count_batches(path, batch_size, boundaries, min_length, max_length):
  """Batches an epoch of `path` (a file or a list of shard files) makes, from one streaming
  pass over the lengths."""
  per_bucket = collections.Counter()
  for name in _files(path):
    with open(name, encoding="utf-8") as f:
      for line in f:
        fields = line.rstrip("\n").split("\t")
        if len(fields) != 2:
          continue
        source, target = len(fields[0].split()), len(fields[1].split())
        if min(source, target) < min_length or max(source, target) > max_length:
          continue
        longest = max(source, target)
        per_bucket[next(b for b in boundaries if longest <= b)] += 1
  return sum(math.ceil(n / batch_size) for n in per_bucket.values())


class DatasetSchedule:
  """Bucketed, deterministic batches streamed from a split file with tf.data.

  Args:
    path: a prepared split file (one "source tokens<TAB>target tokens" pair a line), or the
      list of a sharded split's files.
    vocabulary: a vocab.Vocabulary; unknown tokens map to <UNK>.
    batch_size: pairs per batch (a bucket's last batch of an epoch may be smaller).
    boundaries: ascending padded source lengths; a pair goes to the first bucket >= its longer
      side. The largest must be >= max_length.
    seed: data-order seed (the training loop overwrites it with a resumed run's seed).
    min_length, max_length: tokens a side; other pairs are dropped.
    shuffle_buffer: pairs in the example shuffle buffer.
  """

  def __init__(self, path, vocabulary, batch_size, boundaries, seed, min_length, max_length,
               shuffle_buffer=10000):
    if boundaries[-1] < max_length:
      raise ValueError(f"the largest bucket {boundaries[-1]} is below max_length {max_length}")
    self.path = path
    self.batch_size = int(batch_size)
    self.boundaries = tuple(boundaries)
    self.seed = int(seed)
    self.min_length, self.max_length = int(min_length), int(max_length)
    self.shuffle_buffer = int(shuffle_buffer)
    self._table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(vocabulary.tokens), tf.range(len(vocabulary), dtype=tf.int32)),
        default_value=vocab_lib.UNK_ID)
    self.batches_per_epoch = count_batches(path, batch_size, self.boundaries, min_length,
                                           max_length)
    if not self.batches_per_epoch:
      raise ValueError(f"{path}: no pair with {min_length}..{max_length} tokens a side")

  def _encode(self, line):
    """A line -> one unpadded Batch row: source [n], decoder_input/target/weight [m + 1]."""
    fields = tf.strings.split(line, "\t")
    source = self._table.lookup(tf.strings.split(fields[0]))
    target = self._table.lookup(tf.strings.split(fields[1]))
    target_length = tf.size(target) + 1
    return batches_lib.Batch(
        source=source,
        source_length=tf.size(source),
        decoder_input=tf.concat([[vocab_lib.GO_ID], target], 0),
        target=tf.concat([target, [vocab_lib.EOS_ID]], 0),
        target_weight=tf.ones([target_length], tf.float32))

  def _keep(self, row):
    source_length = row.source_length
    target_length = tf.size(row.target) - 1
    shortest = tf.minimum(source_length, target_length)
    longest = tf.maximum(source_length, target_length)
    return (shortest >= self.min_length) & (longest <= self.max_length)

  def dataset(self, epoch):
    """The tf.data.Dataset of `epoch`'s batches (Batch of tensors), in training order."""
    boundaries = tf.constant(self.boundaries, tf.int64)

    def bucket(row):
      longest = tf.maximum(row.source_length, tf.size(row.target) - 1)
      return tf.reduce_sum(tf.cast(boundaries < tf.cast(longest, tf.int64), tf.int64))

    def pad(key, rows):
      length = tf.gather(boundaries, key)
      return rows.padded_batch(self.batch_size, padded_shapes=batches_lib.Batch(
          source=tf.reshape(length, [1]), source_length=tf.constant([], tf.int64),
          decoder_input=tf.reshape(length + 1, [1]), target=tf.reshape(length + 1, [1]),
          target_weight=tf.reshape(length + 1, [1])))

    lines = tf.data.TextLineDataset(_files(self.path))
    lines = lines.filter(lambda line: tf.size(tf.strings.split(line, "\t")) == 2)
    lines = lines.shuffle(self.shuffle_buffer, seed=_epoch_seed(self.seed, epoch, 1),
                          reshuffle_each_iteration=False)
    rows = lines.map(self._encode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    rows = rows.filter(self._keep)
    batches = rows.group_by_window(key_func=bucket, reduce_func=pad, window_size=self.batch_size)
    batches = batches.shuffle(_BATCH_SHUFFLE_BUFFER, seed=_epoch_seed(self.seed, epoch, 2),
                              reshuffle_each_iteration=False)
    options = tf.data.Options()
    options.deterministic = True
    return batches.prefetch(tf.data.AUTOTUNE).with_options(options)

  def batches(self, epoch, start=0):
    """Yields `epoch`'s padded batches as NumPy `batches_lib.Batch`es, skipping the first `start`."""
    for batch in self.dataset(epoch).skip(start).as_numpy_iterator():
      yield batches_lib.Batch(*batch)
