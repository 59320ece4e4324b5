"""--mode=prepare on the other formats, splits, vocabulary figures and subwords."""
import os

import pytest

from seq2seq import config as config_lib
from seq2seq.data import corpus
from seq2seq.data.prepare import pipeline
from seq2seq.data import vocab as vocab_lib
from seq2seq.data import wordcount
from tests import prepare_helpers
from tests.prepare_helpers import read_split


def run(tmp_path, input_spec, **overrides):
  overrides.setdefault("input_format", "pairs")
  return prepare_helpers.run(tmp_path, input_spec, **overrides)

MULTI30K = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "multi30k")


def _write(path, text, mode="w"):
  with open(path, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
    f.write(text)
  return str(path)


def test_pairs_tsv_with_bad_lines(tmp_path):
  path = _write(tmp_path / "p.tsv", "Hello, there!\tHi you.\nno tab here\n\tempty\nA b\tc D\n")
  report, out = run(tmp_path, path)
  assert read_split(out) == [("hello there", "hi you"), ("a b", "c d")]
  assert report["skipped"]["not two non-empty tab-separated fields"] == 2
  assert f"{path}:2: not two non-empty tab-separated fields" in report["skipped_examples"]


def test_pairs_csv_with_header(tmp_path):
  path = _write(tmp_path / "p.csv", 'question,answer\n"Hi, you",yes indeed\nbad\n')
  report, out = run(tmp_path, path, input_format="pairs", pairs_header=True)
  assert read_split(out) == [("hi you", "yes indeed")]
  assert report["skipped"]["not two non-empty CSV fields"] == 1


@pytest.mark.parametrize("name", ["p.csv", "p.csv.gz"])
def test_pairs_csv_quoted_newlines_and_quotes(tmp_path, name):
  text = ('q,a\r\n'
          '"first line\nsecond line","she said ""hi"", then\nleft"\r\n'
          '"only one field"\n'
          '\n'
          'plain question,"answer, with comma",extra column\n'
          '"unclosed quote, then\nmore",')
  data = text.encode("utf-8")
  if name.endswith(".gz"):
    import gzip
    data = gzip.compress(data)
  path = str(tmp_path / name)
  with open(path, "wb") as f:
    f.write(data)
  report, out = run(tmp_path, path, input_format="pairs", pairs_header=True,
                    data_overrides=dict(filters=""))
  assert read_split(out) == [("first line second line", 'she said "hi", then left'),
                             ("plain question", "answer, with comma")]
  assert report["skipped"]["not two non-empty CSV fields"] == 3  # one field, blank, unclosed
  assert report["skipped_examples"] == [f"{path}:{n}: not two non-empty CSV fields"
                                        for n in (5, 6, 8)]  # a record's first line
  assert report["records_parsed"] == 2
  assert report["lines_read"] == 9


def test_parallel(tmp_path):
  src = _write(tmp_path / "s.en", "a man runs .\ntwo dogs\n")
  tgt = _write(tmp_path / "t.de", "ein mann rennt .\nzwei hunde\n")
  _, out = run(tmp_path, src, input_format="parallel", target_input=tgt)
  assert read_split(out) == [("a man runs", "ein mann rennt"), ("two dogs", "zwei hunde")]


def test_parallel_misaligned_names_files_and_line(tmp_path):
  src = _write(tmp_path / "s.en", "a\nb\nc\n")
  tgt = _write(tmp_path / "t.de", "x\ny\n")
  with pytest.raises(corpus.DataError, match=r"t\.de: ends at line 2 but .*s\.en goes on"):
    run(tmp_path, src, input_format="parallel", target_input=tgt)


def test_chatterbot(tmp_path):
  path = _write(tmp_path / "c.yml", "conversations:\n- - Hello there\n  - Hi friend\n  - How are you\n")
  _, out = run(tmp_path, path, input_format="chatterbot")
  assert read_split(out) == [("hello there", "hi friend"), ("hi friend", "how are you")]


def test_text(tmp_path):
  path = _write(tmp_path / "t.txt", "One line.\nTwo line\n\nThree\nFour\n")
  _, out = run(tmp_path, path, input_format="text")
  assert read_split(out) == [("one line", "two line"), ("three", "four")]


def test_text_invalid_utf8_line(tmp_path):
  path = _write(tmp_path / "t.txt", b"good one\nbad \xff\xfe\ngood two\n", "wb")
  report, out = run(tmp_path, path, input_format="text")
  assert report["skipped"]["invalid UTF-8"] == 1
  assert f"{path}:2: invalid UTF-8" in report["skipped_examples"]
  assert read_split(out) == [("good one", "good two")]


def test_empty_pairs_file_is_a_clear_error(tmp_path):
  path = _write(tmp_path / "p.tsv", "")
  with pytest.raises(corpus.DataError, match=r"p\.tsv: no usable pair.*0 lines read"):
    run(tmp_path, path)


def test_split_is_stable_when_data_grows(tmp_path):
  lines = [f"question {i} here\tanswer {i} there" for i in range(3000)]
  small = _write(tmp_path / "small.tsv", "\n".join(lines[:1000]) + "\n")
  big = _write(tmp_path / "big.tsv", "\n".join(lines[::-1]) + "\n")  # more, and reordered
  fractions = dict(val_fraction=0.1, test_fraction=0.05)
  report_small, out_small = run(tmp_path / "a", small, **fractions)
  report_big, out_big = run(tmp_path / "b", big, **fractions)
  for split in ("train", "val", "test"):
    assert set(read_split(out_small, split)) <= set(read_split(out_big, split))
  counts = report_big["pairs_written"]
  assert counts["train"] + counts["val"] + counts["test"] == 3000
  assert 200 < counts["val"] < 400 and 90 < counts["test"] < 220
  assert pipeline.split_of(["a"], ["b"], 0.1, 0.05) == pipeline.split_of(["a"], ["b"], 0.1, 0.05)


def test_vocabulary_coverage_against_a_hand_count(tmp_path):
  # Training tokens: a x6, b x3, c x2, d x1 (12). Hand count:
  #   top 1 word covers 6/12 = 50%; top 2 cover 9/12 = 75%; top 3 cover 11/12.
  path = _write(tmp_path / "p.tsv", "a a a\ta a a\nb b b\tc c d\n")
  report, out = run(tmp_path, path, data_overrides={"max_vocab": 6})
  vocabulary = report["vocabulary"]
  assert vocabulary["unique_words"] == 4
  assert vocabulary["kept_words"] == 2
  assert vocabulary["type_share"] == pytest.approx(2 / 4)
  assert vocabulary["token_coverage"] == pytest.approx(9 / 12)
  assert vocab_lib.Vocabulary.load(os.path.join(out, "vocab.txt")).tokens == [
      "<PAD>", "<GO>", "<EOS>", "<UNK>", "a", "b"]
  report, _ = run(tmp_path, path, data_overrides={"vocab_coverage": 0.8})
  assert report["vocabulary"]["kept_words"] == 3  # 75% < 80% <= 11/12
  assert report["vocabulary"]["token_coverage"] == pytest.approx(11 / 12)


def test_word_counter_spills_to_disk_with_the_same_result(tmp_path):
  words = [f"w{i % 37}" for i in range(5000)] + [f"rare{i}" for i in range(300)]
  counter = wordcount.WordCounter(str(tmp_path / "spill.sqlite"), max_in_memory=50)
  for i in range(0, len(words), 7):
    counter.update(words[i:i + 7])
  assert counter.spills > 3
  expected = {}
  for w in words:
    expected[w] = expected.get(w, 0) + 1
  ranked = list(counter.ranked())
  assert ranked == sorted(expected.items(), key=lambda kv: (-kv[1], kv[0]))
  assert counter.unique() == len(expected) and counter.total == len(words)
  counter.close()
  assert not os.path.exists(tmp_path / "spill.sqlite")


def test_sentencepiece(tmp_path):
  pytest.importorskip("sentencepiece")
  lines = [f"the cat number {i % 50} sat on the mat\tand the dog {i % 30} barked at it"
           for i in range(400)]
  path = _write(tmp_path / "p.tsv", "\n".join(lines) + "\n")
  report, out = run(tmp_path, path, tokenizer="sentencepiece", sentencepiece_type="unigram",
                    data_overrides={"max_vocab": 120, "max_length": 40})
  vocabulary = vocab_lib.Vocabulary.load(os.path.join(out, "vocab.txt"))
  assert vocabulary.tokens[:4] == list(vocab_lib.SPECIAL_TOKENS)
  assert os.path.exists(os.path.join(out, "sentencepiece.model"))
  pairs = read_split(out)
  assert len(pairs) == report["pairs_written"]["train"] > 300
  assert all(piece in vocabulary.tokens for s, t in pairs for piece in (s + " " + t).split())
  # The report counts the pieces the training text uses, not the model's whole inventory.
  used = {piece for s, t in pairs for piece in (s + " " + t).split()}
  assert report["vocabulary"]["kept_words"] == len(used) <= report["vocabulary"]["unique_words"]
  assert report["vocabulary"]["token_coverage"] == 1.0
  # Replies are detokenised: the pieces of a sentence decode back to its words.
  from seq2seq.data import datasets  # pylint: disable=import-outside-toplevel
  from seq2seq.infer import decoding  # pylint: disable=import-outside-toplevel
  tokenizer = datasets.tokenizer_for(config_lib.DataConfig(data=out, max_vocab=120, max_length=40))
  pieces = tokenizer("The cat number 7 sat on the mat!")
  assert len(pieces) > 8 and any(p.startswith("▁") for p in pieces)
  decoder = type("Stub", (), {"tokenizer": tokenizer})()
  assert decoding.Decoder._text(decoder, pieces) == "the cat number 7 sat on the mat"


def test_sentencepiece_rejects_coverage():
  with pytest.raises(config_lib.ConfigError, match="vocab_coverage"):
    pipeline.prepare(config_lib.PrepareConfig(input="x", input_format="pairs",
                                             tokenizer="sentencepiece"),
                    config_lib.DataConfig(vocab_coverage=0.9))


def test_config_validation():
  with pytest.raises(config_lib.ConfigError, match="input_format: must be one of"):
    config_lib.PrepareConfig(input_format="json")
  with pytest.raises(config_lib.ConfigError, match="target_input: is only used"):
    config_lib.PrepareConfig(target_input="t.txt")
  with pytest.raises(config_lib.ConfigError, match="input: --mode=prepare with"):
    config_lib.PrepareConfig().check_ready()
  with pytest.raises(config_lib.ConfigError, match="pics is both allowed"):
    config_lib.PrepareConfig(subreddits="Pics", skip_subreddits="pics")
  with pytest.raises(config_lib.ConfigError, match="bucket_boundaries: the largest bucket 10"):
    config_lib.DataConfig(bucket_boundaries="5,10")
  with pytest.raises(config_lib.ConfigError, match="strictly increasing"):
    config_lib.DataConfig(bucket_boundaries="10,5,20")
  assert config_lib.DataConfig(bucket_boundaries="4,8,20").boundaries() == (4, 8, 20)


@pytest.mark.skipif(not os.path.isdir(MULTI30K), reason="../shared/data/multi30k is absent")
def test_multi30k_parallel(tmp_path):
  report, out = run(tmp_path, os.path.join(MULTI30K, "val.lc.norm.tok.en"),
                    input_format="parallel",
                    target_input=os.path.join(MULTI30K, "val.lc.norm.tok.de"),
                    data_overrides={"max_length": 50})
  assert report["lines_read"] == 1014
  assert report["pairs_written"]["train"] > 1000


def test_train_py_prepare_does_not_import_tensorflow(tmp_path):
  import subprocess
  import sys
  path = _write(tmp_path / "p.tsv", "hello there\thi you\nhow are you\tfine thanks\n")
  out = str(tmp_path / "out")
  code = ("import runpy, sys\n"
          f"sys.argv = ['train.py', '--mode=prepare', '--input={path}', '--input_format=pairs',\n"
          f"            '--output_dir={out}', '--val_fraction=0', '--test_fraction=0',\n"
          "            '--min_length=1']\n"
          "try:\n"
          "  runpy.run_path('train.py', run_name='__main__')\n"
          "except SystemExit as e:\n"
          "  assert not e.code, e.code\n"
          "print('tensorflow' in sys.modules)\n")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                          check=True)
  assert result.stdout.strip().splitlines()[-1] == "False"
  assert read_split(out) == [("hello there", "hi you"), ("how are you", "fine thanks")]
