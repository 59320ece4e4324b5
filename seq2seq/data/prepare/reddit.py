"""One Reddit comment-dump line -> a filtered, normalised comment, or the reason it is skipped.

The dumps' schema changed over the years: `created_utc` is a string or an int, old dumps have
`ups` and no `score`, some records lack `body` or `id` (old ones hold `name` = "t1_<id>").
A record that cannot be used is never an error: `parse` returns the reason, which the caller
counts (see SKIP_REASONS).
"""
import collections
import json
import re

from seq2seq import config as config_lib

try:
  import orjson as _json  # about 15x faster than the standard library on dump lines
  _JSON_ERRORS = (_json.JSONDecodeError,)
except ImportError:  # pragma: no cover - orjson is in install_requires
  _json = json
  _JSON_ERRORS = (ValueError,)

MALFORMED_JSON = "malformed JSON"
INVALID_UTF8 = "invalid UTF-8"
MISSING_FIELD = "missing field"
DELETED = "deleted"
SCORE = "score"
URL = "url"
BOT = "bot"
SUBREDDIT = "subreddit"
SKIP_REASONS = (MALFORMED_JSON, INVALID_UTF8, MISSING_FIELD, DELETED, SCORE, URL, BOT, SUBREDDIT)

DELETED_BODIES = frozenset(("[deleted]", "[removed]"))
_URL = re.compile(r"https?://|www\.|\]\(/", re.IGNORECASE)
_URL_HINTS = ("http", "www.", "](/")  # cheap substring tests before the regex

Comment = collections.namedtuple("Comment", ["id", "parent", "score", "body"])
Comment.__doc__ = """A usable comment.

  id:     int, the base-36 comment id decoded (the `id` field, or `name` without "t1_").
  parent: int id of the parent comment, or None when the parent is a submission ("t3_...").
  score:  int, `score` or else `ups`.
  body:   str, normalised (see `normalise_body`).
"""


def normalise_body(body):
  """Un-escapes &gt; &lt; &amp; (in that order, so "&amp;gt;" becomes "&gt;"), drops markdown
  quote lines ("> ..."), and collapses newlines and runs of whitespace into single spaces."""
  if "&" in body:
    body = body.replace("&gt;", ">").replace("&lt;", "<").replace("&amp;", "&")
  if ">" in body:
    body = " ".join(line for line in body.split("\n") if not line.lstrip().startswith(">"))
  return " ".join(body.split())


def _has_url(body):
  lowered = body.lower()
  return any(hint in lowered for hint in _URL_HINTS) and _URL.search(body) is not None


def _decode_id(value, prefix="t1_"):
  """'t1_abc' or 'abc' -> int (base 36); None if it is not a comment id."""
  if not isinstance(value, str):
    return None
  if value.startswith(prefix):
    value = value[len(prefix):]
  elif "_" in value:
    return None
  try:
    return int(value, 36)
  except ValueError:
    return None


def _as_int(value):
  if isinstance(value, bool):
    return None
  if isinstance(value, int):
    return value
  if isinstance(value, (str, float)):
    try:
      return int(float(value))
    except ValueError:
      return None
  return None


class CommentFilter:
  """The filters of a PrepareConfig, applied to one record at a time."""

  def __init__(self, prepare_config):
    self.skip_authors = frozenset(a.lower() for a in config_lib.split_list(
        prepare_config.skip_authors))
    self.allow = frozenset(s.lower() for s in config_lib.split_list(prepare_config.subreddits))
    self.deny = frozenset(s.lower() for s in config_lib.split_list(prepare_config.skip_subreddits))
    self.min_score = prepare_config.min_score
    self.skip_urls = prepare_config.skip_urls

  def parse(self, line):
    """One dump line (bytes) -> (Comment, replyable) or (None, skip reason).

    `replyable` is False when the comment is usable only as a parent: its score is below
    --min_score, or its parent is a submission. Such a comment is still counted under SCORE
    when its score is the reason.
    """
    try:
      record = _json.loads(line)
    except _JSON_ERRORS:
      try:
        line.decode("utf-8")
      except UnicodeDecodeError:
        return None, INVALID_UTF8
      return None, MALFORMED_JSON
    if not isinstance(record, dict):
      return None, MALFORMED_JSON
    body = record.get("body")
    comment_id = _decode_id(record.get("id")) if "id" in record else _decode_id(record.get("name"))
    score = _as_int(record["score"]) if record.get("score") is not None else _as_int(
        record.get("ups"))
    parent_id = record.get("parent_id")
    if not isinstance(body, str) or comment_id is None or score is None or not isinstance(
        parent_id, str):
      return None, MISSING_FIELD
    if body in DELETED_BODIES:
      return None, DELETED
    author = record.get("author")
    if isinstance(author, str) and author.lower() in self.skip_authors:
      return None, BOT
    if self.allow or self.deny:
      subreddit = record.get("subreddit")
      if not isinstance(subreddit, str):
        return None, MISSING_FIELD
      subreddit = subreddit.lower()
      if (self.allow and subreddit not in self.allow) or subreddit in self.deny:
        return None, SUBREDDIT
    if self.skip_urls and _has_url(body):
      return None, URL
    parent = _decode_id(parent_id)
    comment = Comment(comment_id, parent, score, normalise_body(body))
    return comment, parent is not None and score >= self.min_score
