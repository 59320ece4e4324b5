"""Counting words in one streaming pass with bounded memory.

Counts accumulate in a dict of at most `max_in_memory` distinct words; when it is full it is
merged into an SQLite table on disk (an upsert per word) and cleared. The ranking at the end
is an ORDER BY on disk, streamed. A corpus whose words fit in memory never touches the disk.
"""
import os
import sqlite3


class WordCounter:
  """Bounded-memory word counts.

  Args:
    spill_path: SQLite file used once the in-memory table is full (created on first spill).
    max_in_memory: distinct words held in memory before spilling.
  """

  def __init__(self, spill_path, max_in_memory=500000):
    self.spill_path = spill_path
    self.max_in_memory = int(max_in_memory)
    self.total = 0
    self.spills = 0
    self._counts = {}
    self._db = None

  def update(self, words):
    counts = self._counts
    for word in words:
      counts[word] = counts.get(word, 0) + 1
    self.total += len(words)
    if len(counts) > self.max_in_memory:
      self._spill()

  def add(self, word, count):
    """Counts `word` `count` more times."""
    self._counts[word] = self._counts.get(word, 0) + count
    self.total += count
    if len(self._counts) > self.max_in_memory:
      self._spill()

  def _spill(self):
    if self._db is None:
      if os.path.exists(self.spill_path):
        os.remove(self.spill_path)
      self._db = sqlite3.connect(self.spill_path, isolation_level=None)
      self._db.execute("PRAGMA journal_mode=WAL")
      self._db.execute("PRAGMA synchronous=OFF")
      self._db.execute("PRAGMA temp_store=FILE")
      self._db.execute("CREATE TABLE counts (word TEXT PRIMARY KEY, n INTEGER NOT NULL)")
    self._db.execute("BEGIN")
    self._db.executemany("INSERT INTO counts VALUES (?, ?) "
                         "ON CONFLICT(word) DO UPDATE SET n = n + excluded.n",
                         self._counts.items())
    self._db.execute("COMMIT")
    self._counts = {}
    self.spills += 1

  def unique(self):
    """The number of distinct words counted."""
    if self._db is None:
      return len(self._counts)
    self._spill()
    return self._db.execute("SELECT count(*) FROM counts").fetchone()[0]

  def ranked(self):
    """Yields (word, count), most frequent first, ties alphabetically (by code point)."""
    if self._db is None:
      yield from sorted(self._counts.items(), key=lambda kv: (-kv[1], kv[0]))
      return
    self._spill()
    yield from self._db.execute("SELECT word, n FROM counts ORDER BY n DESC, word")

  def close(self):
    if self._db is not None:
      self._db.close()
      self._db = None
      for suffix in ("", "-wal", "-shm"):
        if os.path.exists(self.spill_path + suffix):
          os.remove(self.spill_path + suffix)
