"""Embedding tables: device placement and pretrained (GloVe / word2vec text) initialisation."""
import collections
import contextlib

import numpy as np
import tensorflow as tf

from seq2seq.data.corpus import DataError
from seq2seq.data import vocab as vocab_lib

_DEVICES = {"cpu": "/cpu:0", "gpu": None}  # None: TensorFlow's default placement

PretrainedReport = collections.namedtuple(
    "PretrainedReport", ["path", "found", "vocab_size", "malformed_lines", "dimension"])


class Embedding(tf.Module):
  """A [V, E] table, created and looked up on `device` ("cpu" by default, or "gpu").

  Keeping a large table and its lookup on the host frees accelerator memory; `gpu` keeps
  everything on the accelerator.
  """

  def __init__(self, vocab_size, dim, device="cpu", initial_value=None, trainable=True,
               dtype=tf.float32, seed=0, name=None):
    super().__init__(name=name)
    self.device = _DEVICES[device]
    if initial_value is None:
      initial_value = tf.random.stateless_uniform(
          [vocab_size, dim], seed=[seed, 7], minval=-0.1, maxval=0.1, dtype=dtype)
    with self.name_scope, self.placed():
      self.table = tf.Variable(tf.cast(initial_value, dtype), trainable=trainable, name="table")

  @property
  def pinned_to_host(self):
    """Whether the table lives on the CPU whatever the accelerator (--embedding_device=cpu)."""
    return self.device is not None

  def placed(self):
    """A context that places ops on the table's device: the host when pinned, else wherever
    the enclosing scope places them (an accelerator by default)."""
    return tf.device(self.device) if self.pinned_to_host else contextlib.nullcontext()

  def __call__(self, ids):
    """ids [...] int -> [..., E]."""
    with self.placed():
      return tf.nn.embedding_lookup(self.table, ids)


def load_pretrained(path, vocabulary, dim, seed=0):
  """Builds a [V, dim] initial table from a GloVe or word2vec text file.

  Words of the vocabulary found in the file take its vectors; the others (the special tokens
  among them) get fresh uniform(-0.1, 0.1) vectors. A word2vec header line ("count dim") is
  skipped, and so are blank lines (counted as malformed). A line with more than `dim` values
  is a word with spaces in it (glove.840B has some): its last `dim` fields are the vector.

  Returns:
    (table np.ndarray [V, dim] float32, PretrainedReport).

  Raises:
    DataError: naming the file, line and word: a vector with fewer than `dim` values (or, on
      the first vector line, another count than `dim`), a value that is not a number, or a
      NaN/Inf value (it would make every loss that reads the word NaN); or no usable line.
  """
  rng = np.random.default_rng(seed)
  table = rng.uniform(-0.1, 0.1, size=(len(vocabulary), dim)).astype(np.float32)
  found = np.zeros(len(vocabulary), bool)
  malformed = usable = 0
  with open(path, encoding="utf-8", errors="replace") as f:
    for line_number, line in enumerate(f, 1):
      parts = line.rstrip().split(" ")
      if line_number == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
        continue  # word2vec header
      if len(parts) < 2:
        malformed += 1
        continue
      word, vector = _parse_vector(parts, dim, usable == 0, f"{path}:{line_number}")
      usable += 1
      index = vocabulary.id(word)
      if index != vocab_lib.UNK_ID or word == vocab_lib.UNK:
        table[index] = vector
        found[index] = True
  if usable == 0:
    raise DataError(f"{path}: no usable vector lines ({malformed} malformed)")
  return table, PretrainedReport(path, int(found.sum()), len(vocabulary), malformed, dim)


def _parse_vector(parts, dim, first, where):
  """(word, float32 vector [dim]) of a line split on spaces; `where` is "file:line".

  Raises:
    DataError: see `load_pretrained`.
  """
  values = len(parts) - 1
  if values < dim or (first and values != dim):
    raise DataError(f"{where}: vectors have {values} values but --embedding_size is {dim} "
                    f"(the word {parts[0]!r}); every vector of the file must have "
                    "--embedding_size values (a truncated file ends in a short line)")
  word = " ".join(parts[:-dim])
  try:
    vector = np.asarray(parts[-dim:], np.float32)
  except ValueError:
    raise DataError(f"{where}: the vector of {word!r} holds a value that is not a number; "
                    "fix or delete that line") from None
  if not np.all(np.isfinite(vector)):
    raise DataError(f"{where}: the vector of {word!r} holds NaN or Inf values, which would "
                    "make the loss of every batch with that word NaN; fix or delete that line")
  return word, vector
