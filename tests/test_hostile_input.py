"""Hostile data (BUILD.md, "Reliability"): every case ends in a counted skip or a clean error that
names the file; never a traceback, never a hang.

Each case runs `train.py --mode=prepare` in a subprocess with a time limit (prepare does not
import TensorFlow, so a case takes about a second), plus the in-memory readers of train mode.
"""
import bz2
import json
import lzma
import os
import subprocess
import sys

import pytest

from seq2seq.data import corpus

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASE_SECONDS = 60


def _comment(cid, parent, body, **extra):
  record = {"id": cid, "parent_id": parent, "body": body, "score": 10, "author": "a",
            "subreddit": "AskReddit", "created_utc": 1420070400}
  record.update(extra)
  return json.dumps(record).encode()


def _good_lines(n=40):
  """n/2 parent-reply pairs that pass every default filter."""
  lines = []
  for i in range(n // 2):
    lines.append(_comment(f"p{i}", "t3_x", f"what do you think about topic number {i} today"))
    lines.append(_comment(f"r{i}", f"t1_p{i}", f"i think topic {i} is rather good really"))
  return lines


def _prepare(tmp_path, path, input_format="reddit", *extra):
  out = os.path.join(str(tmp_path), "out")
  result = subprocess.run(
      [sys.executable, os.path.join(ROOT, "train.py"), "--mode=prepare", f"--input={path}",
       f"--input_format={input_format}", f"--output_dir={out}", *extra],
      cwd=ROOT, capture_output=True, text=True, timeout=CASE_SECONDS)
  assert "Traceback" not in result.stderr, result.stderr
  assert result.returncode in (0, 1), (result.returncode, result.stderr)
  if result.returncode == 1:
    assert os.path.basename(path) in result.stderr, result.stderr  # the error names the file
  return result


def _write(path, data):
  with open(path, "wb") as f:
    f.write(data)
  return str(path)


def test_random_bytes_as_a_reddit_dump(tmp_path):
  rng = __import__("random").Random(0)
  path = _write(tmp_path / "RC_random", bytes(rng.getrandbits(8) for _ in range(200_000)))
  result = _prepare(tmp_path, path)
  assert result.returncode == 1
  assert "no usable" in result.stderr.lower() or "malformed" in result.stderr.lower()


def test_invalid_utf8_and_wrong_json_types_are_counted(tmp_path):
  hostile = [b"\xff\xfe\xfd not utf8 at all", b'{"id": 5, "body": 12, "score": "high"}',
             b'{"id": "z1", "parent_id": 7, "body": ["list"], "created_utc": [1]}',
             b'"just a string"', b"[1, 2, 3]", b"{", b"null"]
  path = _write(tmp_path / "RC_mixed", b"\n".join(_good_lines() + hostile) + b"\n")
  result = _prepare(tmp_path, path)
  assert result.returncode == 0, result.stderr
  report = json.load(open(tmp_path / "out" / "report.json", encoding="utf-8"))
  assert sum(report["pairs_written"].values()) == 20  # every good pair survives
  assert sum(report["skipped"].values()) == len(hostile)  # every hostile line is counted
  assert report["skipped"]["invalid UTF-8"] == 1


def test_a_ten_megabyte_line(tmp_path):
  huge = _comment("h1", "t3_x", "word " * 2_000_000)
  path = _write(tmp_path / "RC_huge", b"\n".join(_good_lines() + [huge]) + b"\n")
  assert _prepare(tmp_path, path).returncode == 0


def test_empty_file_is_a_clean_error(tmp_path):
  path = _write(tmp_path / "RC_empty", b"")
  assert _prepare(tmp_path, path).returncode == 1


@pytest.mark.parametrize("suffix", [".bz2", ".xz", ".zst"])
def test_truncated_compressed_streams_keep_what_came_before(tmp_path, suffix):
  raw = b"\n".join(_good_lines(4000)) + b"\n"
  if suffix == ".bz2":
    packed = bz2.compress(raw)
  elif suffix == ".xz":
    packed = lzma.compress(raw)
  else:
    import zstandard  # pylint: disable=import-outside-toplevel
    packed = zstandard.ZstdCompressor().compress(raw)
  path = _write(tmp_path / f"RC_cut{suffix}", packed[:len(packed) * 2 // 3])
  result = _prepare(tmp_path, path)
  output = result.stdout + result.stderr
  assert os.path.basename(path) in output  # the message names the cut file
  if result.returncode == 0:
    report = json.load(open(tmp_path / "out" / "report.json", encoding="utf-8"))
    assert "truncat" in json.dumps(report).lower() or "truncat" in output.lower()


def test_csv_with_embedded_newlines_and_quotes(tmp_path):
  text = ('"how are you\ntoday","fine, ""thanks"" for asking"\n'
          '"what is ""this"" thing","a quoted\nanswer over lines"\n' * 10)
  path = _write(tmp_path / "pairs.csv", text.encode())
  assert _prepare(tmp_path, path, "pairs").returncode == 0


@pytest.mark.parametrize("content", [b"- just\n- a list\n", b"conversations: 7\n",
                                     b"key: [unclosed\n", b"\xff\xfe\x00binary"])
def test_yaml_that_is_not_a_conversation_list(tmp_path, content):
  path = _write(tmp_path / "talk.yml", content)
  result = _prepare(tmp_path, path, "chatterbot")
  assert result.returncode == 1
  with pytest.raises(corpus.DataError, match="talk.yml"):
    corpus.load_pairs(path)  # the train-mode reader says the same


def test_random_bytes_in_train_mode_readers(tmp_path):
  rng = __import__("random").Random(1)
  for name in ("noise.tsv", "noise.yml"):
    path = _write(tmp_path / name, bytes(rng.getrandbits(8) for _ in range(50_000)))
    with pytest.raises(corpus.DataError, match=name):
      corpus.load_pairs(path)
