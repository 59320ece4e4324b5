"""A careless user loses nothing: outputs never replace an input, a foreign folder or an
earlier output left half-written; bad output paths and binary inputs are refused before any
model loads, naming the flag and the file."""
import errno
import os
import re
import signal
import subprocess
import sys
import time
from unittest import mock

import pytest

from seq2seq import config as config_lib
from seq2seq.data.prepare import pipeline
from seq2seq.runtime import outputs
from seq2seq.runtime import workdir as workdir_lib
from seq2seq.runtime import workdir_lock
from tests import helpers
from tests import prepare_helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _train_py(*flags, cwd=ROOT, stdin=None, timeout=120):
  return subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *flags], cwd=cwd,
                        input=stdin, capture_output=True, text=True, timeout=timeout,
                        env=dict(os.environ, PYTHONUNBUFFERED="1"))


def _write(path, text):
  with open(path, "w", encoding="utf-8") as f:
    f.write(text)
  return str(path)


def _read(path):
  with open(path, encoding="utf-8") as f:
    return f.read()


def _listing(folder):
  """{relative path: content} of every file under `folder`."""
  found = {}
  for root, _, files in os.walk(folder):
    for name in files:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        found[os.path.relpath(path, folder)] = f.read()
  return found


def _pairs(folder):
  os.makedirs(folder, exist_ok=True)
  return helpers.write_reverse_task(os.path.join(folder, "pairs.tsv"), num_pairs=30)


def _prepare_config(input_spec, output_dir):
  return config_lib.PrepareConfig(input=str(input_spec), output_dir=str(output_dir),
                                  input_format="pairs", progress_seconds=0)


# --mode=prepare --output_dir


@pytest.mark.parametrize("spelling", ["data", "data/", "./data", "data/../data", "link", "abs"])
def test_prepare_refuses_the_folder_of_its_input(tmp_path, monkeypatch, spelling):
  monkeypatch.chdir(tmp_path)
  data = _pairs(tmp_path / "data")
  os.symlink(tmp_path / "data", tmp_path / "link")
  before = _listing(tmp_path / "data")
  output_dir = str(tmp_path / "data") if spelling == "abs" else spelling
  with pytest.raises(outputs.OutputError, match=r"--output_dir=\S+ holds the --input file "):
    pipeline.prepare(_prepare_config(data, output_dir), config_lib.DataConfig(), helpers.quiet)
  assert _listing(tmp_path / "data") == before
  assert sorted(os.listdir(tmp_path)) == ["data", "link"]  # no .partial folder either


def test_prepare_refuses_a_workdir_and_a_foreign_folder(tmp_path):
  data = _pairs(tmp_path / "data")
  workdir = tmp_path / "run"
  os.makedirs(workdir / "checkpoints")
  _write(workdir / "checkpoints" / "ckpt-1.index", "weights")
  _write(workdir / "config.json", "{}")
  mine = tmp_path / "mine"
  os.makedirs(mine)
  _write(mine / "notes.txt", "keep me")
  for folder, reason in ((workdir, "is a training workdir"),
                         (mine, r"was not written by --mode=prepare")):
    before = _listing(folder)
    with pytest.raises(outputs.OutputError, match=f"is not empty and {reason}"):
      pipeline.prepare(_prepare_config(data, folder), config_lib.DataConfig(), helpers.quiet)
    assert _listing(folder) == before
  with pytest.raises(outputs.OutputError, match=r"pairs.tsv is a file, not a folder"):
    pipeline.check_output_dir(_prepare_config(data, data))


def test_prepare_refuses_the_current_home_root_and_source_folders(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  data = _pairs(tmp_path / "data")
  cases = {".": "the current folder", "./": "the current folder", str(tmp_path): "the current",
           "..": "the current folder", "/": "the root folder",
           os.path.expanduser("~"): "your home folder",
           outputs.SOURCE_ROOT: "this program's source folder",
           os.path.join(outputs.SOURCE_ROOT, "."): "this program's source folder"}
  for output_dir, what in cases.items():
    # check_output_dir only: if the guard failed, prepare() would replace these folders.
    with pytest.raises(outputs.OutputError, match=f"is {what}"):
      pipeline.check_output_dir(_prepare_config(data, output_dir))


def test_prepare_replaces_only_a_folder_it_wrote(tmp_path):
  data = _pairs(tmp_path / "data")
  out = tmp_path / "out"
  logged = []
  for _ in range(2):  # the second run replaces the first one's folder
    prepare_helpers.run(tmp_path, data, input_format="pairs", log=logged.append)
  assert any("replaced the earlier contents" in line for line in logged)
  assert sorted(os.listdir(tmp_path)) == ["data", "out"]  # no .partial or aside folder left
  _write(out / "raw.tsv", "my own data\n")  # a user's file put into a prepared folder
  before = _listing(out)
  with pytest.raises(outputs.OutputError, match="holds files --mode=prepare does not write: "
                                                "raw.tsv"):
    prepare_helpers.run(tmp_path, data, input_format="pairs")
  assert _listing(out) == before


def test_prepare_refuses_a_foreign_work_folder_beside_the_output(tmp_path):
  data = _pairs(tmp_path / "data")
  os.makedirs(tmp_path / "out.partial")
  _write(tmp_path / "out.partial" / "thesis.tex", "years of work")
  with pytest.raises(outputs.OutputError, match=r"out.partial is not empty and holds files "
                                                r"--mode=prepare does not write: thesis.tex"):
    prepare_helpers.run(tmp_path, data, input_format="pairs")
  assert _read(tmp_path / "out.partial" / "thesis.tex") == "years of work"


def test_prepare_output_dir_dot_from_the_command_line(tmp_path):
  data = _pairs(tmp_path / "data")
  before = _listing(tmp_path)
  result = _train_py("--mode=prepare", "--input_format=pairs", f"--input={data}",
                     "--output_dir=.", cwd=tmp_path)
  assert result.returncode == 1, result.stderr
  assert "--output_dir=. is the current folder" in result.stderr
  assert "Traceback" not in result.stderr
  assert _listing(tmp_path) == before


# --mode=decode and --plot_attention paths, checked before the model loads


@pytest.fixture(name="decode_setup")
def _decode_setup(tmp_path, monkeypatch):
  """(workdir with config.json, in.txt, ref.txt) in tmp_path, the current folder."""
  monkeypatch.chdir(tmp_path)
  workdir = str(tmp_path / "run")
  workdir_lib.check_or_save_config(helpers.tiny_config(workdir, "pairs.tsv"))
  _write(tmp_path / "run" / "vocab.txt", "<PAD>\n")
  return workdir, _write(tmp_path / "in.txt", "a b\nc d\n"), _write(tmp_path / "ref.txt", "x\ny\n")


def test_output_that_is_an_input_is_refused_however_named(tmp_path, decode_setup):
  workdir, source, reference = decode_setup
  os.symlink(source, tmp_path / "link.txt")
  os.link(source, tmp_path / "hard.txt")
  os.makedirs(tmp_path / "run" / "checkpoints")
  inputs = [("--decode_input", source), ("--decode_reference", reference)]
  inputs += workdir_lib.own_files(workdir)
  for output, what in (("in.txt", "--decode_input"), ("./in.txt", "--decode_input"),
                       (source, "--decode_input"), ("link.txt", "--decode_input"),
                       ("hard.txt", "--decode_input"), ("ref.txt", "--decode_reference"),
                       ("run/../ref.txt", "--decode_reference"),
                       ("run/vocab.txt", "the workdir's vocab.txt"),
                       ("run/config.json", "the workdir's config.json"),
                       ("run/checkpoints/out.txt", "the workdir's checkpoints")):
    with pytest.raises(outputs.OutputError, match=f"--decode_output={output} is {what} "):
      outputs.check_file("decode_output", output, inputs)
  outputs.check_file("decode_output", "run/out.txt", inputs)  # beside the workdir's files: fine


def test_output_folder_problems_are_named(tmp_path):
  _write(tmp_path / "file", "")
  os.makedirs(tmp_path / "dir")
  for output, message in ((tmp_path / "dir", "is a folder; name a file"),
                          (f"{tmp_path}/new/", "is a folder; name a file"),
                          (tmp_path / "no" / "out.txt", "the folder .*no does not exist"),
                          (tmp_path / "file" / "out.txt", "the folder .*file is a file")):
    with pytest.raises(outputs.OutputError, match=f"--decode_output={output}.*{message}"):
      outputs.check_file("decode_output", str(output))


def test_binary_and_non_utf8_inputs_name_the_line(tmp_path):
  with open(tmp_path / "nul.txt", "wb") as f:
    f.write(b"fine\nPK\x03\x04\x00\x00binary\n")
  with open(tmp_path / "latin1.txt", "wb") as f:
    f.write(b"one\ntwo\ncaf\xe9\n")
  with pytest.raises(outputs.NotText, match=r"--decode_input=\S+nul.txt: line 2 holds NUL"):
    outputs.check_text("decode_input", str(tmp_path / "nul.txt"))
  with open(tmp_path / "image.png", "wb") as f:  # not UTF-8 before its first NUL
    f.write(b"\x89PNG\r\n\x1a\n\x00\x00")
  with pytest.raises(outputs.NotText, match=r"image.png: line 3 holds NUL bytes: this is a "
                                            r"binary file"):
    outputs.check_text("decode_input", str(tmp_path / "image.png"))
  with pytest.raises(outputs.NotText, match=r"latin1.txt: line 3 is not UTF-8 text"):
    outputs.check_text("decode_input", str(tmp_path / "latin1.txt"))
  with pytest.raises(outputs.NotText, match="is a folder"):
    outputs.check_text("decode_input", str(tmp_path))
  outputs.check_text("decode_input", _write(tmp_path / "ok.txt", "héllo\n"))


def test_decode_refusals_come_before_the_model_loads(tmp_path, decode_setup):
  workdir, source, reference = decode_setup
  with open(tmp_path / "binary.bin", "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n\x00\x00")
  os.symlink(source, tmp_path / "link.txt")
  _write(tmp_path / "in[1].txt", "a b\n")  # a name that is also a glob pattern
  before = _listing(tmp_path)
  for flags, message in (
      (["--decode_input=in[1].txt", "--decode_output=in[1].txt"],
       r"--decode_output=in\[1\].txt is --decode_input \("),
      (["--decode_output=link.txt"], r"--decode_output=link.txt is --decode_input \("),
      ([f"--decode_reference={reference}", f"--decode_output={reference}"],
       "is --decode_reference"),
      (["--decode_output=run/vocab.txt"], "is the workdir's vocab.txt"),
      (["--decode_output=nowhere/out.txt"], "the folder .*nowhere does not exist"),
      (["--decode_output=run"], "--decode_output=run is a folder"),
      (["--decode_input=binary.bin", "--decode_output=out.txt"],
       "--decode_input=binary.bin: line 3 holds NUL bytes"),
      (["--decode_output=out.txt", "--plot_attention=in.txt"],
       "--plot_attention=in.txt is --decode_input"),
      (["--decode_output=a.png", "--plot_attention=a.png"],
       "--decode_output=a.png is --plot_attention")):
    flags = [f"--workdir={workdir}", "--mode=decode", "--decode_input=in.txt", *flags]
    started = time.monotonic()
    result = _train_py(*flags, cwd=tmp_path)
    assert result.returncode == 1, (flags, result.stderr)
    assert len(re.findall(message, result.stderr)) == 1, (message, result.stderr)
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 20, "refused only after loading the model"
  assert _listing(tmp_path) == before


# Writing whole or not at all


def test_lines_into_keeps_the_earlier_output_and_a_partial_file(tmp_path):
  target = _write(tmp_path / "out.txt", "earlier replies\n")
  logged = []
  with pytest.raises(KeyboardInterrupt):
    with outputs.lines_into(target, logged.append) as write:
      write("one")
      write("two")
      raise KeyboardInterrupt
  assert _read(target) == "earlier replies\n"
  assert _read(target + ".partial") == "one\ntwo\n"
  assert logged == [f"stopped before the end: {target} is unchanged; the 2 lines written so "
                    f"far are in {target}.partial (partial output)"]
  assert sorted(os.listdir(tmp_path)) == ["out.txt", "out.txt.partial"]  # no temporary file
  with outputs.lines_into(target, logged.append) as write:
    write("new")
  assert _read(target) == "new\n"


def test_decode_file_stopped_midway_keeps_the_earlier_output(tmp_path):
  from seq2seq.infer import decoding  # pylint: disable=import-outside-toplevel
  from tests import test_decoding  # pylint: disable=import-outside-toplevel
  model = test_decoding._model("uni", "none")  # pylint: disable=protected-access
  decoder = decoding.Decoder(model, test_decoding.FakeVocabulary(), str.split, 5)
  source = _write(tmp_path / "in.txt", "1 2\n3\n4 5\n6\n")
  target = _write(tmp_path / "out.txt", "earlier\n")
  batches = []

  def second_batch_interrupted(texts, original=decoder.n_best_batch):
    batches.append(texts)
    if len(batches) == 2:
      raise KeyboardInterrupt
    return original(texts)

  decoder.n_best_batch = second_batch_interrupted
  logged = []
  with pytest.raises(KeyboardInterrupt):
    decoder.decode_file(source, target, batch_size=2, log=logged.append)
  assert _read(target) == "earlier\n"
  assert len(_read(target + ".partial").splitlines()) == 2
  assert "the 2 lines written so far are in" in logged[0]


def test_folder_into_replaces_the_folder_whole_or_not_at_all(tmp_path):
  target = tmp_path / "export"
  os.makedirs(target)
  _write(target / "saved_model.pb", "earlier")
  with pytest.raises(KeyboardInterrupt):
    with outputs.folder_into(str(target)) as staging:
      _write(os.path.join(staging, "saved_model.pb"), "half")
      raise KeyboardInterrupt
  assert _listing(target) == {"saved_model.pb": b"earlier"}
  assert os.listdir(tmp_path) == ["export"]  # no staging folder left
  with outputs.folder_into(str(target)) as staging:
    _write(os.path.join(staging, "saved_model.pb"), "new")
  assert _listing(target) == {"saved_model.pb": b"new"}
  assert os.listdir(tmp_path) == ["export"]


def test_replace_folder_puts_the_earlier_folder_back_if_the_rename_fails(tmp_path):
  target, new = tmp_path / "out", tmp_path / "work" / "out"
  os.makedirs(target)
  os.makedirs(new)
  _write(target / "train.tsv", "earlier")
  real_rename = os.rename

  def second_rename_fails(src, dst):
    if str(src) == str(new):
      raise OSError(errno.ENOSPC, "No space left on device")
    return real_rename(src, dst)

  with mock.patch("os.rename", side_effect=second_rename_fails):
    with pytest.raises(OSError):
      outputs.replace_folder(str(new), str(target), str(tmp_path / "work" / "old"))
  assert _listing(target) == {"train.tsv": b"earlier"}
  assert sorted(os.listdir(tmp_path / "work")) == ["out"]


def test_failed_atomic_write_keeps_the_old_file_and_no_temporary(tmp_path):
  target = _write(tmp_path / "config.json", "old")
  full = OSError(errno.ENOSPC, "No space left on device")
  with mock.patch("os.replace", side_effect=full):
    with pytest.raises(OSError):
      outputs.write_atomic(target, "new")
  assert _read(target) == "old"
  assert os.listdir(tmp_path) == ["config.json"]


# A failure while a run starts


def test_lock_that_cannot_be_written_is_not_left_behind(tmp_path):
  full = OSError(errno.ENOSPC, "No space left on device")
  with mock.patch.object(workdir_lock.os, "fsync", side_effect=full):
    with pytest.raises(OSError):
      workdir_lock.WorkdirLock(str(tmp_path), helpers.quiet).acquire()
  assert not os.path.exists(workdir_lock.lock_path(str(tmp_path)))


@pytest.mark.parametrize("failing", ["config.json", "vocab.txt"])
def test_full_disk_at_start_names_the_path_and_frees_the_lock(tmp_path, failing):
  from seq2seq.train import loop  # pylint: disable=import-outside-toplevel
  data = helpers.write_reverse_task(str(tmp_path / "pairs.tsv"), num_pairs=30)
  workdir = str(tmp_path / "run")
  original = outputs.write_atomic

  def no_space(path, text):
    if path.endswith(failing):
      raise OSError(errno.ENOSPC, "No space left on device", path)
    return original(path, text)

  with mock.patch.object(outputs, "write_atomic", no_space), \
      mock.patch.object(workdir_lib, "_write_atomic", no_space):
    with pytest.raises(OSError) as raised:
      loop.train(helpers.tiny_config(workdir, data, max_steps=1), helpers.quiet)
  message = outputs.os_error_message(raised.value)
  assert message.startswith(os.path.join(workdir, failing) + ": No space left on device; "
                            "the disk is full")
  assert not os.path.exists(workdir_lock.lock_path(workdir))
  assert not [n for n in os.listdir(workdir) if n.endswith(".tmp")]


def test_training_input_that_the_workdir_overwrites_is_refused(tmp_path):
  workdir = tmp_path / "run"
  os.makedirs(workdir)
  vocab = _write(workdir / "vocab.txt", "hello\tworld\n")
  result = _train_py(f"--workdir={workdir}", f"--data={vocab}", cwd=tmp_path)
  assert result.returncode == 1, result.stderr
  assert f"--data={vocab}: {vocab} is the workdir's vocab.txt" in result.stderr
  assert _read(vocab) == "hello\tworld\n"


# Signals and the chat prompt, end to end (a model loads: slow)


def _trained_workdir(tmp_path):
  from tests import test_export  # pylint: disable=import-outside-toplevel
  workdir = str(tmp_path / "run")
  test_export._write_trained_workdir(workdir)  # pylint: disable=protected-access
  return workdir


def _wait_for(predicate, process, seconds=120):
  deadline = time.monotonic() + seconds
  while not predicate():
    assert process.poll() is None, process.communicate()
    assert time.monotonic() < deadline, "timed out"
    time.sleep(0.05)


@pytest.mark.slow
def test_sigterm_during_decode_keeps_the_earlier_output(tmp_path):
  workdir = _trained_workdir(tmp_path)
  source = _write(tmp_path / "in.txt", "hello how are you\n" * 200000)
  target = _write(tmp_path / "out.txt", "earlier\n")
  process = subprocess.Popen(
      [sys.executable, os.path.join(ROOT, "train.py"), f"--workdir={workdir}", "--mode=decode",
       f"--decode_input={source}", f"--decode_output={target}"], cwd=ROOT,
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  writing = lambda: any(n.endswith(".tmp") and os.path.getsize(tmp_path / n)
                        for n in os.listdir(tmp_path))
  _wait_for(writing, process)
  process.send_signal(signal.SIGTERM)
  output, _ = process.communicate(timeout=60)
  assert process.returncode == 143, output
  assert "Traceback" not in output
  assert _read(target) == "earlier\n"
  kept = len(_read(target + ".partial").splitlines())
  assert 0 < kept < 200000
  assert f"{target} is unchanged; the {kept} lines written so far are in {target}.partial" \
      in output
  assert sorted(os.listdir(tmp_path)) == ["in.txt", "out.txt", "out.txt.partial", "run"]


@pytest.mark.slow
def test_ctrl_c_and_eof_at_the_chat_prompt_leave_without_a_traceback(tmp_path):
  workdir = _trained_workdir(tmp_path)
  process = subprocess.Popen(
      [sys.executable, os.path.join(ROOT, "train.py"), f"--workdir={workdir}", "--mode=chat"],
      cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True)
  for line in process.stdout:  # the greeting comes when the model is loaded
    if "Talk to the bot" in line:
      break
  process.send_signal(signal.SIGINT)
  _, errors = process.communicate(timeout=60)
  assert process.returncode == 130, errors
  assert "Traceback" not in errors
  assert errors.strip().splitlines()[-1] == "stopped (Ctrl-C)"
  result = _train_py(f"--workdir={workdir}", "--mode=chat", stdin="hello\n")  # then EOF
  assert result.returncode == 0, result.stderr
  assert "bot: " in result.stdout and "Traceback" not in result.stderr
