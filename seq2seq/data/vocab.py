"""Tokenisation and the vocabulary: special tokens, top-K cut, a plain-text file format."""
import collections
import hashlib
import os

from seq2seq.config import DEFAULT_FILTERS  # pylint: disable=unused-import (re-exported)
from seq2seq.data.corpus import DataError
from seq2seq.runtime import outputs

PAD, GO, EOS, UNK = "<PAD>", "<GO>", "<EOS>", "<UNK>"
SPECIAL_TOKENS = (PAD, GO, EOS, UNK)  # ids 0, 1, 2, 3, in this order
PAD_ID, GO_ID, EOS_ID, UNK_ID = range(4)


class Tokenizer:
  """Lowercases (optionally), replaces filtered characters with spaces, splits on whitespace."""

  def __init__(self, lowercase=True, filters=DEFAULT_FILTERS):
    self.lowercase = lowercase
    self.filters = filters
    self._table = str.maketrans(filters, " " * len(filters)) if filters else None

  def __call__(self, text):
    if self.lowercase:
      text = text.lower()
    if self._table is not None:
      text = text.translate(self._table)
    return text.split()


class Vocabulary:
  """A bijection between tokens and ids; ids 0..3 are the special tokens."""

  def __init__(self, tokens):
    tokens = list(tokens)
    if tuple(tokens[:len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
      raise ValueError(f"a vocabulary must start with {SPECIAL_TOKENS}, got {tokens[:4]}")
    if len(set(tokens)) != len(tokens):
      dup = [t for t, n in collections.Counter(tokens).items() if n > 1][0]
      raise ValueError(f"duplicate token in vocabulary: {dup!r}")
    self.tokens = tokens
    self._ids = {token: i for i, token in enumerate(tokens)}

  def __len__(self):
    return len(self.tokens)

  def __eq__(self, other):
    return isinstance(other, Vocabulary) and self.tokens == other.tokens

  def id(self, token):
    return self._ids.get(token, UNK_ID)

  def encode(self, words):
    return [self._ids.get(w, UNK_ID) for w in words]

  def decode(self, ids, stop_at_eos=True):
    """ids -> words, dropping <PAD> and <GO> and stopping at the first <EOS>."""
    words = []
    for i in ids:
      i = int(i)
      if i == EOS_ID and stop_at_eos:
        break
      if i in (PAD_ID, GO_ID):
        continue
      words.append(self.tokens[i] if 0 <= i < len(self.tokens) else UNK)
    return words

  def save(self, path):
    """Writes one token a line (UTF-8), atomically, and its SHA-256 beside it (PATH.sha256)."""
    text = "\n".join(self.tokens) + "\n"
    outputs.write_atomic(path, text)
    outputs.write_atomic(path + ".sha256", _sha256(text) + "\n")

  @classmethod
  def load(cls, path):
    """Reads a file written by `save`.

    Raises:
      DataError: the file is not a vocabulary, or it changed since it was saved (a checkpoint
        trained with it would map its ids to other words).
    """
    with open(path, encoding="utf-8") as f:
      text = f.read()
    checksum_path = path + ".sha256"
    if os.path.exists(checksum_path):
      with open(checksum_path, encoding="utf-8") as f:
        expected = f.read().strip()
      if expected != _sha256(text):
        raise DataError(f"{path}: changed since it was saved (its SHA-256 no longer matches "
                        f"{checksum_path}); a checkpoint trained with it would read its ids as "
                        f"other words. Restore the file, or start a new --workdir.")
    tokens = text.split("\n")
    while tokens and not tokens[-1]:
      tokens.pop()
    try:
      return cls(tokens)
    except ValueError as e:
      raise DataError(f"{path}: {e}") from None


def _sha256(text):
  return hashlib.sha256(text.encode("utf-8")).hexdigest()


VocabularyReport = collections.namedtuple(
    "VocabularyReport", ["unique_words", "kept_words", "type_share", "token_coverage"])


def select_vocabulary(ranked, total_tokens, unique_words, max_vocab, coverage=0.0):
  """Cuts a ranked word list into a vocabulary.

  Args:
    ranked: iterable of (word, count), most frequent first (ties alphabetically); may stream.
    total_tokens: the sum of all counts.
    unique_words: the number of word types.
    max_vocab: total size including the 4 special tokens (used when coverage is 0).
    coverage: if > 0, keep the smallest prefix whose counts reach this share of total_tokens
      (max_vocab is then ignored).

  Returns:
    (Vocabulary, VocabularyReport).
  """
  limit = max(0, max_vocab - len(SPECIAL_TOKENS))
  kept, covered = [], 0
  for word, count in ranked:
    if word in SPECIAL_TOKENS:
      continue
    if coverage > 0:
      if total_tokens and covered >= coverage * total_tokens:
        break
    elif len(kept) >= limit:
      break
    kept.append(word)
    covered += count
  report = VocabularyReport(
      unique_words=unique_words, kept_words=len(kept),
      type_share=len(kept) / unique_words if unique_words else 0.0,
      token_coverage=covered / total_tokens if total_tokens else 0.0)
  return Vocabulary(list(SPECIAL_TOKENS) + kept), report


def build_vocabulary(token_lists, max_vocab, coverage=0.0):
  """Top-K words by frequency (ties broken alphabetically, so the result is deterministic).

  Args:
    token_lists: iterable of lists of words.
    max_vocab: total size including the 4 special tokens.
    coverage: if > 0, the smallest vocabulary covering this share of tokens instead.

  Returns:
    (Vocabulary, VocabularyReport) where the report gives how many word types exist, how many
    were kept, and the share of types kept and of tokens covered.
  """
  counts = collections.Counter()
  for tokens in token_lists:
    counts.update(tokens)
  for special in SPECIAL_TOKENS:
    counts.pop(special, None)
  ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
  return select_vocabulary(ranked, sum(counts.values()), len(counts), max_vocab, coverage)
