"""--mode=prepare on Reddit dumps: pairing, filters, schemas, damaged input, restarts."""
import bz2
import json
import os

import pytest

from seq2seq.data import corpus
from seq2seq.data.prepare import pairing
from seq2seq.data.prepare import pipeline
from seq2seq.data.prepare import reddit
from tests.prepare_helpers import comment, read_split, run, write_dump

Q = "what do you think about this plan"
A = "i think it is a really good idea"


def test_pairs_reply_before_parent_across_files(tmp_path):
  # File order puts the reply first; its parent is in the second file.
  write_dump(str(tmp_path / "RC_2015-01"), [comment("b1", "a1", A)])
  write_dump(str(tmp_path / "RC_2015-02"), [comment("a1", "t3_x", Q),
                                            comment("c1", "b1", "sure why not then")])
  report, out = run(tmp_path, str(tmp_path / "RC_*"))
  assert sorted(read_split(out)) == sorted([(Q, A), (A, "sure why not then")])
  assert report["pairs_written"]["train"] == 2
  assert report["replies_without_parent"] == 0


def test_reply_without_parent_is_counted(tmp_path):
  write_dump(str(tmp_path / "RC_1"), [comment("a1", "t3_x", Q), comment("b1", "a1", A),
                                      comment("z9", "zz", A)])
  report, _ = run(tmp_path, str(tmp_path / "RC_1"))
  assert report["replies_without_parent"] == 1
  assert report["usable_replies"] == 2


@pytest.mark.parametrize("record, reason, overrides", [
    (comment("b1", "a1", "[deleted]"), "deleted", {}),
    (comment("b1", "a1", "[removed]"), "deleted", {}),
    (comment("b1", "a1", A, author="AutoModerator"), "bot", {}),
    (comment("b1", "a1", A, author="helperbot"), "bot", {"skip_authors": "HelperBot"}),
    (comment("b1", "a1", A, score=1), "score", {}),
    (comment("b1", "a1", A + " see https://example.com"), "url", {}),
    (comment("b1", "a1", A + " [here](/r/foo)"), "url", {}),
    (comment("b1", "a1", A, subreddit="pics"), "subreddit", {"subreddits": "AskReddit"}),
    (comment("b1", "a1", A, subreddit="pics"), "subreddit", {"skip_subreddits": "Pics"}),
    (comment("b1", "a1", " ".join(["word"] * 30)), "length", {}),
])
def test_each_filter_drops_the_reply(tmp_path, record, reason, overrides):
  write_dump(str(tmp_path / "RC_1"), [comment("a1", "t3_x", Q), record,
                                      comment("k1", "t3_y", Q), comment("k2", "k1", A)])
  report, out = run(tmp_path, str(tmp_path / "RC_1"), **overrides)
  assert read_split(out) == [(Q, A)]  # only the control pair k1 -> k2
  assert report["skipped"][reason] == 1


def test_filters_can_be_turned_off(tmp_path):
  write_dump(str(tmp_path / "RC_1"), [
      comment("a1", "t3_x", Q), comment("b1", "a1", A + " http://x.org", score=0, author="AutoModerator")])
  _, out = run(tmp_path, str(tmp_path / "RC_1"), skip_urls=False, min_score=0, skip_authors="")
  assert read_split(out) == [(Q, A + " http x org")]


def test_best_reply_only(tmp_path):
  records = [comment("a1", "t3_x", Q), comment("b1", "a1", "a fine reply here", score=3),
             comment("b2", "a1", "the best reply here", score=9),
             comment("b3", "a1", "another ok reply", score=4)]
  write_dump(str(tmp_path / "RC_1"), records)
  _, out = run(tmp_path, str(tmp_path / "RC_1"))
  assert read_split(out) == [(Q, "the best reply here")]
  _, out = run(tmp_path, str(tmp_path / "RC_1"), best_reply_only=False)
  assert sorted(read_split(out)) == sorted(
      [(Q, "a fine reply here"), (Q, "the best reply here"), (Q, "another ok reply")])


def test_normalise_body():
  body = "&gt; quoted line\nfirst line &amp; more\n\n  &gt;another quote\nx &lt;3 &amp;gt;"
  assert reddit.normalise_body(body) == "first line & more x <3 &gt;"


def test_old_schema_records(tmp_path):
  records = [
      {"name": "t1_a1", "parent_id": "t3_x", "body": Q, "ups": 7, "created_utc": "1199145600",
       "author": "old"},  # no id, no score, string time
      {"id": "b1", "parent_id": "t1_a1", "body": A, "ups": 3, "created_utc": 1199145601},
      {"id": "b2", "parent_id": "t1_a1", "score": 5},  # no body
      {"id": "b3", "parent_id": "t1_a1", "body": A},  # neither score nor ups
      {"parent_id": "t1_a1", "body": A, "score": 4},  # no id
      [1, 2, 3],  # not an object
  ]
  write_dump(str(tmp_path / "RC_2008-01"), records)
  report, out = run(tmp_path, str(tmp_path / "RC_2008-01"))
  assert read_split(out) == [(Q, A)]
  assert report["skipped"]["missing field"] == 3
  assert report["skipped"]["malformed JSON"] == 1
  assert report["lines_read"] == 6


def test_invalid_utf8_and_malformed_json_are_counted_with_places(tmp_path):
  path = str(tmp_path / "RC_1")
  write_dump(path, [comment("a1", "t3_x", Q), b'{"id": "b9", "body": "caf\xff"}', b"{not json",
                    comment("b1", "a1", A)])
  report, out = run(tmp_path, path)
  assert read_split(out) == [(Q, A)]
  assert report["skipped"]["invalid UTF-8"] == 1
  assert report["skipped"]["malformed JSON"] == 1
  assert f"{path}:2: invalid UTF-8" in report["skipped_examples"]
  assert f"{path}:3: malformed JSON" in report["skipped_examples"]


@pytest.mark.parametrize("suffix", [".bz2", ".zst", ".xz"])
def test_compressed_dumps(tmp_path, suffix):
  if suffix == ".xz":
    import lzma
    path = str(tmp_path / "RC_1.xz")
    with open(path, "wb") as f:
      f.write(lzma.compress(b"".join(json.dumps(r).encode() + b"\n" for r in [
          comment("a1", "t3_x", Q), comment("b1", "a1", A)])))
  else:
    path = write_dump(str(tmp_path / f"RC_1{suffix}"), [comment("a1", "t3_x", Q),
                                                       comment("b1", "a1", A)])
  _, out = run(tmp_path, path)
  assert read_split(out) == [(Q, A)]


@pytest.mark.parametrize("suffix", [".bz2", ".zst"])
def test_truncated_stream_keeps_what_was_read(tmp_path, suffix):
  # Many pairs, so the cut falls well inside the stream; the other file is intact.
  records = [comment("a1", "t3_x", Q), comment("b1", "a1", A)]
  for i in range(6000):
    records.append(comment(f"p{i}", "t3_x", f"question number {i} is here"))
    records.append(comment(f"r{i}", f"p{i}", f"answer number {i} is here"))
  path = write_dump(str(tmp_path / f"RC_1{suffix}"), records)
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(data[:len(data) // 2])
  report, out = run(tmp_path, path)
  assert len(report["truncated_files"]) == 1
  message = report["truncated_files"][0]
  assert message.startswith(f"{path}: truncated or corrupt compressed stream after line ")
  last_good = int(message.split("after line ")[1].split(" ")[0])
  assert 2 < last_good < len(records)
  pairs = read_split(out)
  assert (Q, A) in pairs
  assert len(pairs) == 1 + (last_good - 2) // 2  # every pair complete before the damage


def test_empty_input_is_a_clear_error(tmp_path):
  with pytest.raises(corpus.DataError, match="no file matches"):
    run(tmp_path, str(tmp_path / "RC_nothing*"))
  write_dump(str(tmp_path / "RC_empty"), [])
  with pytest.raises(corpus.DataError, match=r"no usable pair.*0 lines read"):
    run(tmp_path, str(tmp_path / "RC_empty"))
  assert not os.path.exists(tmp_path / "out")


def test_interrupted_prepare_resumes_without_mixing(tmp_path, monkeypatch):
  write_dump(str(tmp_path / "RC_1"), [comment("b1", "a1", A)])
  write_dump(str(tmp_path / "RC_2"), [comment("a1", "t3_x", Q)])
  expected, _ = run(tmp_path / "clean", str(tmp_path / "RC_*"))

  real_pairs = pairing.CommentIndex.pairs

  def interrupted(self, best_reply_only):
    raise KeyboardInterrupt
    yield  # pylint: disable=unreachable

  monkeypatch.setattr(pairing.CommentIndex, "pairs", interrupted)
  with pytest.raises(KeyboardInterrupt):
    run(tmp_path, str(tmp_path / "RC_*"))
  assert not os.path.exists(tmp_path / "out")  # nothing half-written where training looks
  assert os.path.exists(tmp_path / "out.partial" / "index.sqlite")
  monkeypatch.setattr(pairing.CommentIndex, "pairs", real_pairs)
  messages = []
  report, out = run(tmp_path, str(tmp_path / "RC_*"), log=messages.append)
  assert any("resuming; 2 of 2 file(s) already indexed" in m for m in messages)
  assert read_split(out) == [(Q, A)]
  assert report["lines_read"] == expected["lines_read"] == 2
  assert report["pairs_written"] == expected["pairs_written"]
  assert not os.path.exists(tmp_path / "out.partial")


def test_changed_filters_start_the_index_over(tmp_path, monkeypatch):
  write_dump(str(tmp_path / "RC_1"), [comment("a1", "t3_x", Q), comment("b1", "a1", A, score=1)])
  monkeypatch.setattr(pairing.CommentIndex, "pairs",
                      lambda self, best: (_ for _ in ()).throw(KeyboardInterrupt()))
  with pytest.raises(KeyboardInterrupt):
    run(tmp_path, str(tmp_path / "RC_1"), min_score=0)
  monkeypatch.undo()
  messages = []
  with pytest.raises(corpus.DataError):  # min_score=2 now: the old index must not be reused
    run(tmp_path, str(tmp_path / "RC_1"), log=messages.append)
  assert not any("resuming" in m for m in messages)


@pytest.mark.parametrize("suffix", ["", ".bz2", ".zst"])
@pytest.mark.parametrize("final_newline", [True, False])
def test_read_blocks_matches_read_lines(tmp_path, suffix, final_newline):
  from seq2seq.data import streams
  lines = [b"", b"x" * 3000] + [b"line %d" % i for i in range(5000)] + [b"", b"last"]
  data = b"\n".join(lines) + (b"\n" if final_newline else b"")
  path = str(tmp_path / f"f{suffix}")
  if suffix == ".bz2":
    data = bz2.compress(data)
  elif suffix == ".zst":
    import zstandard
    data = zstandard.ZstdCompressor().compress(data)
  with open(path, "wb") as f:
    f.write(data)
  expected = list(streams.read_lines(path))
  got = []
  for first, block in streams.read_blocks(path, block_bytes=1000):
    got.extend(enumerate(block.split(b"\n"), first))
  assert got == expected


@pytest.mark.parametrize("suffix", [".bz2", ".zst"])
def test_read_blocks_truncated_like_read_lines(tmp_path, suffix):
  from seq2seq.data import streams
  records = [comment(f"p{i}", "t3_x", f"question number {i} is here") for i in range(20000)]
  path = write_dump(str(tmp_path / f"RC_1{suffix}"), records)
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(data[:len(data) // 2])

  def collect(reader):
    got = []
    with pytest.raises(streams.TruncatedStream) as error:
      for item in reader:
        got.append(item)
    return got, error.value.last_line

  expected, expected_last = collect(streams.read_lines(path))
  blocks, last = collect(streams.read_blocks(path, block_bytes=5000))
  got = [pair for first, block in blocks for pair in enumerate(block.split(b"\n"), first)]
  assert got == expected
  assert last == expected_last == len(expected)


def test_parse_workers_give_the_same_result(tmp_path, monkeypatch):
  import functools
  from seq2seq.data import streams
  monkeypatch.setattr(pipeline.streams, "read_blocks",
                      functools.partial(streams.read_blocks, block_bytes=2000))
  records = [b"{not json", b"\xff\xfe", comment("d1", "t3_x", "[deleted]")]
  for i in range(1500):
    records.append(comment(f"p{i}", "t3_x", f"question number {i} is here"))
    records.append(comment(f"r{i}", f"p{i}", f"answer {i} " + ("is here" if i % 3 else "x " * 30),
                           score=i % 4))
  records.append(comment("u1", "t3_x", "see https://example.com now"))
  path = write_dump(str(tmp_path / "RC_1.zst"), records)
  results = {}
  for workers in (0, 1, 2):
    report, out = run(tmp_path / str(workers), path, parse_workers=workers)
    del report["seconds"], report["settings"]
    results[workers] = (report, read_split(out))
  assert results[0][0]["skipped"].keys() >= {"malformed JSON", "invalid UTF-8", "deleted",
                                              "score", "length", "url"}
  assert results[0] == results[1] == results[2]
