"""The persistent XLA compilation cache (--xla_cache_dir): flags, and a second run that loads."""
import os

import pytest

from seq2seq.runtime import xla_cache
from tests.test_cli import TINY, run_train


def test_enable_points_tf_xla_flags_at_the_folder(tmp_path, monkeypatch):
  monkeypatch.setenv("TF_XLA_FLAGS", f"--tf_xla_auto_jit=2 {xla_cache.FLAG}=/an/older/one")
  folder = xla_cache.enable(str(tmp_path / "cache"))
  assert folder == str(tmp_path / "cache") and os.path.isdir(folder)
  assert os.environ["TF_XLA_FLAGS"] == f"--tf_xla_auto_jit=2 {xla_cache.FLAG}={folder}"
  assert xla_cache.cached_executables(folder) == []


def test_enable_refuses_a_file(tmp_path, monkeypatch):
  monkeypatch.delenv("TF_XLA_FLAGS", raising=False)
  taken = tmp_path / "taken"
  taken.write_text("not a folder")
  with pytest.raises(OSError):
    xla_cache.enable(str(taken))
  assert "TF_XLA_FLAGS" not in os.environ


def test_needs_a_step_that_may_compile(tmp_path):
  workdir = tmp_path / "never_created"
  result = run_train(f"--workdir={workdir}", "--nojit_compile",
                     f"--xla_cache_dir={tmp_path / 'cache'}")
  assert result.returncode == 1
  assert ("--xla_cache_dir: keeps the XLA-compiled step; it needs --jit_compile=true or auto"
          in result.stderr)
  assert not workdir.exists() and not (tmp_path / "cache").exists()


def test_a_file_in_the_way_is_a_message(tmp_path):
  taken = tmp_path / "taken"
  taken.write_text("not a folder")
  result = run_train(f"--workdir={tmp_path / 'w'}", *TINY, f"--xla_cache_dir={taken}",
                     "--max_steps=1")
  assert result.returncode == 1 and "Traceback" not in result.stderr
  assert f"error: --xla_cache_dir={taken}: {taken}" in result.stderr
  assert taken.read_text() == "not a folder"


@pytest.mark.slow
def test_the_same_configuration_again_loads_the_compiled_step(tmp_path):
  cache = tmp_path / "first" / "xla_cache"  # --xla_cache_dir=auto: in the first run's workdir
  flags = [*TINY, "--jit_compile", "--min_length=1", "--max_length=6", "--save_every=2",
           "--log_every=1"]
  first = run_train(*flags, f"--workdir={tmp_path / 'first'}", "--max_steps=2")
  assert first.returncode == 0, first.stderr
  assert f"XLA cache {cache}: 0 compiled steps there" in first.stdout
  compiled = xla_cache.cached_executables(str(cache))
  assert compiled, "the first run saved no compiled step"
  second = run_train(*flags, f"--workdir={tmp_path / 'second'}", f"--xla_cache_dir={cache}",
                     "--max_steps=4")
  assert second.returncode == 0, second.stderr
  assert f"XLA cache {cache}: {len(compiled)} compiled step" in second.stdout
  # The same step and shapes: loaded, not compiled (and saved) again.
  assert xla_cache.cached_executables(str(cache)) == compiled


def test_a_plain_run_makes_no_cache_folder(tmp_path):
  """CPU only: --jit_compile=auto trains the plain step and leaves no WORKDIR/xla_cache."""
  workdir = tmp_path / "run"
  result = run_train(*TINY, f"--workdir={workdir}", "--min_length=1", "--max_length=6",
                     "--max_steps=1", "--hidden_size=8")
  assert result.returncode == 0, result.stderr
  assert "plain step: no GPU; static unroll" in result.stdout
  assert not (workdir / "xla_cache").exists()
