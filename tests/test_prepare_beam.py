"""--prepare_runner=beam: the same prepared folder as the local runner, pair for pair."""
import gzip
import importlib.util
import json
import os
import random
import subprocess
import sys

import pytest

from seq2seq import config as config_lib
from seq2seq.data import corpus
from seq2seq.data import prepared
from seq2seq.data.prepare import pipeline
from tests.prepare_helpers import comment, read_split, run, write_dump

needs_beam = pytest.mark.skipif(
    importlib.util.find_spec("apache_beam") is None,
    reason="apache-beam is not installed: pip install -e \".[beam]\" runs the Beam runner's tests")

Q = "what do you think about this plan"
A = "i think it is a really good idea"
_WORDS = ("alpha beta gamma delta river stone cloud light music paper garden window "
          "orange silver quiet bright story travel winter summer").split()


def _sentence(rng):
  return " ".join(rng.choices(_WORDS, k=rng.randint(2, 9)))


def _many_pairs(rng, prefix, n):
  """n parent/reply pairs plus a second, weaker reply to some (ids PREFIX + number)."""
  records = []
  for i in range(n):
    parent, reply = f"{prefix}p{i}", f"{prefix}r{i}"
    records += [comment(parent, "t3_x", _sentence(rng)),
                comment(reply, parent, _sentence(rng), score=rng.randint(2, 9))]
    if i % 3 == 0:
      records.append(comment(f"{prefix}s{i}", parent, _sentence(rng), score=rng.randint(2, 9)))
  return records


def quirky_dumps(folder, months=("2015-01", "2015-02", "2015-03", "2015-04")):
  """Four dumps (plain, .bz2, .zst, truncated .gz) with every quirk the local tests use:
  a parent in one month's file and its reply in another, both ways; duplicate ids; old
  schemas; broken lines; filtered comments; quotes and entities; score ties."""
  rng = random.Random(7)
  first, second, third, fourth = (os.path.join(folder, f"RC_{m}") for m in months)
  write_dump(first, [
      comment("b1", "a1", A),  # its parent is in the second file
      comment("b1", "a1", "a later copy of the same id"),
      {"name": "t1_o1", "parent_id": "t3_z", "body": Q, "ups": 7, "created_utc": "1200000000"},
      {"name": "t1_o2", "parent_id": "t1_o1", "body": "old schema reply here", "ups": 3},
      b'{"id": "x9", "body": "caf\xff"}', b"{not json", b"[1, 2]",
      {"id": "m1", "parent_id": "t1_a1", "score": 5},  # no body
      comment("d1", "a1", "[deleted]"), comment("d2", "a1", A, author="AutoModerator"),
      comment("d3", "a1", A + " https://example.com"), comment("d4", "a1", A, score=1),
      comment("d5", "a1", " ".join(["word"] * 30)),
      comment("q1", "t3_y", "&gt; a quote\nthe real question &amp; more &lt;3"),
      comment("q2", "q1", "an answer with &amp;gt; kept", score=4),
      comment("t1", "t3_t", "which reply wins the tie"),
      comment("t3", "t1", "the later reply of the tie", score=5),
      comment("t2", "t1", "the earlier reply of the tie", score=5),
      comment("z9", "zz", "a reply without any parent")] + _many_pairs(rng, "f", 40))
  write_dump(second + ".bz2", [comment("a1", "t3_x", Q), comment("c1", "b1", "sure why not then"),
                               comment("e1", "f3", "a reply to a parent in the first month")]
             + _many_pairs(rng, "g", 40))
  write_dump(third + ".zst", _many_pairs(rng, "h", 40) + [comment("h9", "t3_k", Q)])
  lines = b"".join(write_dump_line(r) for r in _many_pairs(rng, "k", 20))
  with open(fourth + ".gz", "wb") as f:
    f.write(gzip.compress(lines)[:-200])  # cut short: a truncated stream


def write_dump_line(record):
  return json.dumps(record).encode() + b"\n"


def _both(tmp_path, spec, data_overrides=None, **overrides):
  """(local report, local folder, Beam report, Beam folder) of the same settings."""
  settings = dict(val_fraction=0.15, test_fraction=0.15, **overrides)
  shards = settings.pop("output_shards", 1)
  beam_options = settings.pop("beam_options", "")
  local = run(tmp_path / "local", spec, data_overrides, **settings)
  beamed = run(tmp_path / "beam", spec, data_overrides, prepare_runner="beam",
               output_shards=shards, beam_options=beam_options, **settings)
  return (*local, *beamed)


def _comparable(report):
  return {k: v for k, v in report.items() if k not in ("seconds", "settings")}


def _assert_same_folder(local_out, beam_out):
  for name in ("train.tsv", "val.tsv", "test.tsv", "vocab.txt"):
    with open(os.path.join(local_out, name), "rb") as a, open(os.path.join(beam_out, name),
                                                               "rb") as b:
      assert a.read() == b.read(), name


@needs_beam
@pytest.mark.parametrize("months", [("2015-01", "2015-02", "2015-03", "2015-04"),
                                    ("2015-04", "2015-03", "2015-02", "2015-01")],
                         ids=["parents-later", "parents-earlier"])
def test_beam_output_equals_local_output(tmp_path, months):
  quirky_dumps(str(tmp_path), months)
  local_report, local_out, beam_report, beam_out = _both(tmp_path, str(tmp_path / "RC_*"))
  assert local_report["pairs_written"]["val"] and local_report["pairs_written"]["test"]
  assert local_report["duplicate_ids"] == 1 and local_report["truncated_files"]
  assert ("which reply wins the tie", "the earlier reply of the tie") in read_split(local_out)
  _assert_same_folder(local_out, beam_out)
  assert _comparable(beam_report) == _comparable(local_report)


@needs_beam
def test_beam_all_replies_and_coverage_vocabulary(tmp_path):
  quirky_dumps(str(tmp_path))
  local_report, local_out, beam_report, beam_out = _both(
      tmp_path, str(tmp_path / "RC_*"), {"vocab_coverage": 0.9}, best_reply_only=False)
  _assert_same_folder(local_out, beam_out)
  assert _comparable(beam_report) == _comparable(local_report)


@needs_beam
def test_beam_top_words_cut_ties_alphabetically(tmp_path):
  quirky_dumps(str(tmp_path))
  local_report, local_out, beam_report, beam_out = _both(tmp_path, str(tmp_path / "RC_*"),
                                                         {"max_vocab": 15})
  _assert_same_folder(local_out, beam_out)
  assert beam_report["vocabulary"] == local_report["vocabulary"]


@needs_beam
def test_sharded_output_holds_the_same_pairs_and_is_read_by_data(tmp_path):
  quirky_dumps(str(tmp_path))
  local_report, local_out, beam_report, beam_out = _both(tmp_path, str(tmp_path / "RC_*"),
                                                         output_shards=3)
  for split in prepared.SPLITS:
    files = prepared.split_files(beam_out, split)
    assert [os.path.basename(f) for f in files] == [
        f"{split}-{i:05d}-of-00003.tsv" for i in range(3)]
    pairs = [line for f in files for line in open(f, encoding="utf-8")]
    assert sorted(pairs) == sorted(open(prepared.split_path(local_out, split), encoding="utf-8"))
  assert _comparable(beam_report) == _comparable(local_report)
  pairs, _ = corpus.load_pairs(beam_out)  # --data=DIR with --input_pipeline=memory
  assert len(pairs) == local_report["pairs_written"]["train"]
  pipeline.check_output_dir(config_lib.PrepareConfig(input=str(tmp_path / "RC_*"),
                                                     output_dir=beam_out))  # may be replaced


@needs_beam
@pytest.mark.slow
def test_beam_multi_process_direct_runner(tmp_path):
  quirky_dumps(str(tmp_path))
  local_report, local_out, beam_report, beam_out = _both(
      tmp_path, str(tmp_path / "RC_*"),
      beam_options="--direct_num_workers=2 --direct_running_mode=multi_processing")
  _assert_same_folder(local_out, beam_out)
  assert _comparable(beam_report) == _comparable(local_report)


@needs_beam
@pytest.mark.slow
def test_beam_sentencepiece_equals_local(tmp_path):
  pytest.importorskip("sentencepiece")
  quirky_dumps(str(tmp_path))
  local_report, local_out, beam_report, beam_out = _both(
      tmp_path, str(tmp_path / "RC_*"), {"max_vocab": 60, "max_length": 12},
      tokenizer="sentencepiece")
  in_words = local_report.get("pairs_too_short", 0) + local_report.get("pairs_too_long", 0)
  assert local_report["skipped"]["length"] > in_words  # some are cut in pieces
  _assert_same_folder(local_out, beam_out)
  assert _comparable(beam_report) == _comparable(local_report)
  import sentencepiece as spm  # pylint: disable=import-outside-toplevel
  local_model, beam_model = (spm.SentencePieceProcessor(model_file=prepared.sentencepiece_path(d))
                             for d in (local_out, beam_out))
  assert [(beam_model.id_to_piece(i), beam_model.get_score(i)) for i in range(60)] == [
      (local_model.id_to_piece(i), local_model.get_score(i)) for i in range(60)]


def test_missing_beam_is_a_clear_error(tmp_path, monkeypatch):
  write_dump(str(tmp_path / "RC_1"), [comment("a1", "t3_x", Q), comment("b1", "a1", A)])
  monkeypatch.setitem(sys.modules, "apache_beam", None)  # import apache_beam fails
  monkeypatch.delitem(sys.modules, "seq2seq.data.prepare.beam_pipeline", raising=False)
  monkeypatch.delattr(sys.modules["seq2seq.data.prepare"], "beam_pipeline", raising=False)
  with pytest.raises(corpus.DataError, match=r'pip install -e "\.\[beam\]"'):
    run(tmp_path, str(tmp_path / "RC_1"), prepare_runner="beam")
  assert not os.path.exists(tmp_path / "out")


def test_local_runner_does_not_import_beam():
  code = ("import sys; from seq2seq.data.prepare import pipeline; "
          "assert 'apache_beam' not in sys.modules, 'apache_beam imported'")
  subprocess.run([sys.executable, "-c", code], check=True, cwd=os.path.dirname(
      os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("overrides, flag", [
    (dict(prepare_runner="beam", input_format="pairs"), "prepare_runner"),
    (dict(beam_options="--direct_num_workers=2"), "beam_options"),
    (dict(output_shards=2), "output_shards"),
    (dict(prepare_runner="beam", output_shards=-1), "output_shards"),
])
def test_settings_that_do_not_fit_the_runner(overrides, flag):
  with pytest.raises(config_lib.ConfigError, match=flag):
    config_lib.PrepareConfig(input="x", **overrides)


@needs_beam
@pytest.mark.parametrize("options", ["direct_num_workers=2", "--runner='DirectRunner"])
def test_bad_beam_options_name_the_flag(tmp_path, options):
  write_dump(str(tmp_path / "RC_1"), [comment("a1", "t3_x", Q), comment("b1", "a1", A)])
  with pytest.raises(config_lib.ConfigError, match="beam_options"):
    run(tmp_path, str(tmp_path / "RC_1"), prepare_runner="beam", beam_options=options)


@needs_beam
@pytest.mark.slow
def test_training_streams_a_sharded_folder_as_the_single_file_one(tmp_path):
  from seq2seq.data import datasets  # pylint: disable=import-outside-toplevel
  from tests.test_input_pipeline import _epoch_pairs, _tiny_run_config  # pylint: disable=import-outside-toplevel
  quirky_dumps(str(tmp_path))
  _, local_out, _, beam_out = _both(tmp_path, str(tmp_path / "RC_*"), output_shards=3)
  loaded = [datasets.load_training_data(_tiny_run_config(out, str(tmp_path / f"work{i}")),
                                        log=lambda m: None) for i, out in enumerate(
                                            (local_out, beam_out))]
  assert loaded[1].train.path == prepared.split_files(beam_out, "train")
  assert loaded[0].vocabulary == loaded[1].vocabulary
  assert loaded[0].train.batches_per_epoch == loaded[1].train.batches_per_epoch
  assert _epoch_pairs(loaded[0].train) == _epoch_pairs(loaded[1].train)
  assert _epoch_pairs(loaded[0].val) == _epoch_pairs(loaded[1].val)


@needs_beam
def test_beam_without_a_pair_is_the_local_error(tmp_path):
  write_dump(str(tmp_path / "RC_1"), [comment("a1", "t3_x", Q), b"{not json",
                                      comment("b1", "a1", A, score=1)])
  messages = []
  for runner in ("local", "beam"):
    with pytest.raises(corpus.DataError, match="no usable pair") as error:
      run(tmp_path / runner, str(tmp_path / "RC_1"), prepare_runner=runner)
    messages.append(str(error.value))
    assert not os.path.exists(tmp_path / runner / "out")
  assert messages[0] == messages[1]
