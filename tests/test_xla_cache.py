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


def test_needs_jit_compile(tmp_path):
  workdir = tmp_path / "never_created"
  result = run_train(f"--workdir={workdir}", f"--xla_cache_dir={tmp_path / 'cache'}")
  assert result.returncode == 1
  assert "--xla_cache_dir: keeps the XLA-compiled step; it needs --jit_compile" in result.stderr
  assert not workdir.exists() and not (tmp_path / "cache").exists()


@pytest.mark.slow
def test_a_second_run_loads_the_compiled_step(tmp_path):
  cache = tmp_path / "cache"
  flags = [*TINY, "--jit_compile", f"--xla_cache_dir={cache}", "--min_length=1",
           "--max_length=6", "--max_steps=2", "--save_every=2", "--log_every=1"]
  first = run_train(f"--workdir={tmp_path / 'first'}", *flags)
  assert first.returncode == 0, first.stderr
  assert f"XLA compilation cache: {cache} (0 compiled steps there)" in first.stdout
  compiled = xla_cache.cached_executables(str(cache))
  assert compiled, "the first run saved no compiled step"
  second = run_train(f"--workdir={tmp_path / 'second'}", *flags)
  assert second.returncode == 0, second.stderr
  assert f"({len(compiled)} compiled steps there)" in second.stdout
  # The same step and shapes: loaded, not compiled (and saved) again.
  assert xla_cache.cached_executables(str(cache)) == compiled
