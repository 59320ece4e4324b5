"""XLA's compiler options through the environment (seq2seq.runtime.xla_flags, train.py --xla_autotune)."""
import pytest
import os

from seq2seq.runtime import xla_flags
from tests.test_cli import TINY, run_train


def test_add_replaces_or_keeps_a_flag_already_there(monkeypatch):
  monkeypatch.setenv("V", "--a=1 --b=2")
  assert xla_flags.add("V", ["--b=3", "--c=4"], replace=True) == "--a=1 --b=3 --c=4"
  assert xla_flags.add("V", ["--a=9", "--d=5"], replace=False) == "--a=1 --b=3 --c=4 --d=5"
  assert os.environ["V"] == "--a=1 --b=3 --c=4 --d=5"
  monkeypatch.delenv("V")
  assert xla_flags.add("V", ["--e"], replace=False) == "--e"


def test_value_reads_one_flag(monkeypatch):
  monkeypatch.setenv("V", "--a=1 --dump_to=/x/y=z --flag")
  assert xla_flags.value("V", "--dump_to") == "/x/y=z"
  assert xla_flags.value("V", "--flag") == ""
  assert xla_flags.value("V", "--dump") is None
  monkeypatch.delenv("V")
  assert xla_flags.value("V", "--a") is None


def test_configure_keeps_the_users_choice_and_adds_once(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "--xla_gpu_enable_triton_gemm=true --xla_dump_to=/tmp/d "
                     "--xla_gpu_graph_min_graph_size=4")
  parallel = " ".join(xla_flags.parallel_compilation())
  expected = ("--xla_gpu_enable_triton_gemm=true --xla_dump_to=/tmp/d "
              "--xla_gpu_graph_min_graph_size=4 " + xla_flags.COMMAND_BUFFERS[0] + " " +
              parallel + " --xla_gpu_experimental_enable_fusion_autotuner=false")
  assert xla_flags.configure() == expected
  assert xla_flags.configure() == expected
  monkeypatch.setenv("XLA_FLAGS", "")
  assert xla_flags.configure(autotune=True) == " ".join(xla_flags.COMMAND_BUFFERS) + " " + parallel


def test_parallel_compilation_uses_the_cpus_this_process_may_run_on(monkeypatch):
  assert xla_flags.parallel_compilation(3) == (
      "--xla_gpu_enable_llvm_module_compilation_parallelism=true",
      "--xla_gpu_force_compilation_parallelism=3")
  monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 5}, raising=False)
  assert xla_flags.parallel_compilation()[1] == "--xla_gpu_force_compilation_parallelism=2"


def test_xla_autotune_needs_jit_compile(tmp_path):
  workdir = tmp_path / "never_created"
  result = run_train(f"--workdir={workdir}", "--xla_autotune", "--nojit_compile")
  assert result.returncode == 1
  assert ("--xla_autotune: tunes the XLA-compiled step; it needs --jit_compile=true or auto"
          in result.stderr)
  assert not workdir.exists()


@pytest.mark.slow
def test_a_compiled_run_skips_autotuning_unless_asked(tmp_path, monkeypatch):
  """XLA accepts the flags (an unknown one would abort the process) and the run trains;
  autotuning is skipped unless asked for, and loops go to CUDA graphs either way."""
  monkeypatch.delenv("XLA_FLAGS", raising=False)  # run_train passes this environment on
  flags = [*TINY, "--jit_compile", "--min_length=1", "--max_length=6", "--max_steps=1",
           "--log_every=1"]
  plain = run_train(f"--workdir={tmp_path / 'plain'}", *flags)
  assert plain.returncode == 0, plain.stderr
  engine_flags = xla_flags.COMMAND_BUFFERS + xla_flags.parallel_compilation()
  assert (f"XLA_FLAGS={' '.join(engine_flags + xla_flags.NO_AUTOTUNING)} (--xla_autotune to "
          "tune)") in plain.stdout
  tuned = run_train(f"--workdir={tmp_path / 'tuned'}", *flags, "--xla_autotune")
  assert tuned.returncode == 0, tuned.stderr
  assert f"XLA_FLAGS={' '.join(engine_flags)}\n" in tuned.stdout
