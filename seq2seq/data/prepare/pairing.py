"""Pairing replies with their parent comments through an on-disk SQLite index.

A month of Reddit has tens of millions of comments and a parent may come after its reply, or
in another file, so every usable comment goes into one table on disk (WAL journal, batched
inserts, a bounded page cache) and the pairs come out of a join at the end. Memory stays
bounded whatever the input size.

The index also records which input files are fully indexed, so an interrupted run can
resume: rows of a file that was only partly indexed are deleted and that file is read again.
"""
import itertools
import json
import os
import sqlite3

_SCHEMA = """
CREATE TABLE IF NOT EXISTS comments (
  id INTEGER PRIMARY KEY,   -- base-36 comment id, decoded
  parent INTEGER,           -- parent comment id when this comment is a usable reply, else NULL
  score INTEGER NOT NULL,
  body TEXT NOT NULL,
  file INTEGER NOT NULL     -- index of the input file, to undo a partly indexed file
);
CREATE TABLE IF NOT EXISTS files (
  number INTEGER PRIMARY KEY,
  path TEXT NOT NULL,
  done INTEGER NOT NULL DEFAULT 0,
  stats TEXT                -- JSON counters of the file, once done
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class CommentIndex:
  """Comments on disk, keyed by id; `pairs()` joins replies with parents.

  Args:
    path: the SQLite file (created if absent).
    fingerprint: a string naming the input files and filters; an existing index with another
      fingerprint is emptied, so a partial index of other settings is never mixed in.
    batch_size: rows per executemany / commit.
    cache_mb: SQLite page cache, the bulk of this object's memory.
  """

  def __init__(self, path, fingerprint, batch_size=20000, cache_mb=64):
    self.path = path
    self._batch_size = batch_size
    self._pending = []
    self._db = sqlite3.connect(path, isolation_level=None)
    self._db.execute("PRAGMA journal_mode=WAL")
    self._db.execute("PRAGMA synchronous=OFF")  # a crash means re-running the file, not corruption
    self._db.execute(f"PRAGMA cache_size=-{cache_mb * 1024}")
    self._db.execute("PRAGMA temp_store=FILE")
    self._db.executescript(_SCHEMA)
    row = self._db.execute("SELECT value FROM meta WHERE key='fingerprint'").fetchone()
    self.resumed = row is not None and row[0] == fingerprint
    if not self.resumed:
      self._db.executescript("DELETE FROM comments; DELETE FROM files; DELETE FROM meta;")
      self._db.execute("INSERT INTO meta VALUES ('fingerprint', ?)", (fingerprint,))
    self.duplicates = 0

  def close(self):
    self._db.close()

  def done_files(self):
    """{path: stats dict} of the files indexed completely (by an earlier, interrupted run)."""
    return {path: json.loads(stats) for path, stats in
            self._db.execute("SELECT path, stats FROM files WHERE done=1")}

  def begin_file(self, number, path):
    """Starts indexing file `number`, removing anything a previous run left of it."""
    row = self._db.execute("SELECT done FROM files WHERE number=?", (number,)).fetchone()
    if row is not None:
      self._db.execute("DELETE FROM comments WHERE file=?", (number,))
    self._db.execute("INSERT OR REPLACE INTO files (number, path, done) VALUES (?, ?, 0)",
                     (number, path))
    self._file = number

  def add(self, comment, replyable):
    """Queues one usable comment (a reddit.Comment); `replyable` keeps its parent link."""
    self._pending.append((comment.id, comment.parent if replyable else None, comment.score,
                          comment.body, self._file))
    if len(self._pending) >= self._batch_size:
      self._flush()

  def add_rows(self, rows):
    """Queues usable comments given as (id, parent or None, score, body) rows."""
    file = self._file
    self._pending.extend((i, parent, score, body, file) for i, parent, score, body in rows)
    if len(self._pending) >= self._batch_size:
      self._flush()

  def _flush(self):
    if not self._pending:
      return
    before = self._db.total_changes
    self._db.execute("BEGIN")
    self._db.executemany("INSERT OR IGNORE INTO comments VALUES (?, ?, ?, ?, ?)", self._pending)
    self._db.execute("COMMIT")
    self.duplicates += len(self._pending) - (self._db.total_changes - before)
    self._pending = []

  def end_file(self, stats):
    """Marks the current file as completely indexed, with its counters (a JSON-able dict)."""
    self._flush()
    self._db.execute("UPDATE files SET done=1, stats=? WHERE number=?",
                     (json.dumps(stats), self._file))

  def pairs(self, best_reply_only):
    """Yields (parent body, reply body) for every reply whose parent is in the index.

    Each parent's replies go through `kept_replies`. The order is by parent id, then reply
    id, so the result does not depend on input file order.
    """
    self._flush()
    self._db.execute("CREATE INDEX IF NOT EXISTS by_parent ON comments (parent, id) "
                     "WHERE parent IS NOT NULL")
    rows = self._db.execute("""
        SELECT c.parent, p.body, c.id, c.score, c.body
        FROM comments AS c JOIN comments AS p ON p.id = c.parent
        WHERE c.parent IS NOT NULL ORDER BY c.parent, c.id""")
    for _, group in itertools.groupby(rows, key=lambda row: row[0]):
      group = list(group)
      for _, reply_body in kept_replies([row[2:] for row in group], best_reply_only):
        yield group[0][1], reply_body

  def count_replies(self):
    """(usable replies, replies whose parent is not in the index)."""
    self._flush()
    total, = self._db.execute("SELECT count(*) FROM comments WHERE parent IS NOT NULL").fetchone()
    orphans, = self._db.execute(
        "SELECT count(*) FROM comments AS c WHERE parent IS NOT NULL AND NOT EXISTS "
        "(SELECT 1 FROM comments WHERE id = c.parent)").fetchone()
    return total, orphans


def remove(path):
  """Deletes an index file and its WAL / shared-memory companions."""
  for suffix in ("", "-wal", "-shm"):
    if os.path.exists(path + suffix):
      os.remove(path + suffix)


def kept_replies(replies, best_reply_only):
  """The replies of one parent that make pairs, as (reply id, body), by reply id.

  Args:
    replies: (reply id, score, body) of every usable reply to the parent, in any order.
    best_reply_only: keep only the highest-scored reply; a tie goes to the lowest id (the
      earliest comment), so the choice never depends on input order.
  """
  if best_reply_only:
    best = min(replies, key=lambda reply: (-reply[1], reply[0]))
    return [(best[0], best[2])]
  return [(reply_id, body) for reply_id, _, body in sorted(replies)]
