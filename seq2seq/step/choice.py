"""Which train step a run gets: XLA-compiled or plain, and the unroll and XLA cache with it.

`--jit_compile=auto` (the default) compiles the step where it runs on a GPU: one device
with a GPU, `mirrored` over GPUs, `multi_worker` on hosts with GPUs. On a machine without
one the step stays plain (eager ops in a `tf.function`), as fast there as it was. With the
compiled step on a GPU, `--unroll=auto` is the dynamic unroll with 5 steps an iteration: it
compiles in a fraction of the static unroll's time (an XLA program of T / 5 loop bodies, not
of T steps) at some cost per step (benchmarks/README.md); and `--xla_cache_dir=auto` keeps the compiled
steps in WORKDIR/xla_cache, where a later run of the same configuration loads them instead
of compiling again (`seq2seq.runtime.xla_cache`).

`choose` resolves every `auto` into the values the run trains with; `describe` is the line
the run starts with, saying what was chosen and why.
"""
import dataclasses

import tensorflow as tf

from seq2seq import config as config_lib
from seq2seq.runtime import workdir as workdir_lib
from seq2seq.runtime import xla_cache

# Time steps a compiled dynamic unroll runs in each loop iteration (`--unroll_steps=0`).
FAST_COMPILE_UNROLL_STEPS = 5


@dataclasses.dataclass(frozen=True)
class StepChoice:
  """run_config: the run's config with `auto` resolved (jit_compile a bool, unroll static or
  dynamic, unroll_steps >= 1, xla_cache_dir a folder or ""; the XLA options off for a plain
  step); reason: why the step is compiled or not."""
  run_config: config_lib.RunConfig
  reason: str

  @property
  def compiled(self):
    return self.run_config.train.jit_compile


def visible_gpus():
  """The GPUs TensorFlow sees (physical devices; none are initialised)."""
  return tf.config.list_physical_devices("GPU")


def _compiled(train_config, gpus):
  """(compile the step?, why) for `--jit_compile` and the GPUs the machine has."""
  if train_config.jit_compile != config_lib.AUTO:
    flag = "--jit_compile" if train_config.jit_compile else "--jit_compile=false"
    return train_config.jit_compile, flag
  if train_config.strategy == "tpu":
    return False, "--strategy=tpu compiles its own step"
  devices = config_lib.split_list(train_config.devices)
  if devices and not all(tf.DeviceSpec.from_string(d).device_type == "GPU" for d in devices):
    return False, f"--devices={train_config.devices} are not all GPUs"
  if not gpus:
    return False, "no GPU"
  return True, f"{len(gpus)} GPU{'s' if len(gpus) > 1 else ''} (--jit_compile=auto)"


def _unroll(model_config, compiled_on_gpu):
  """(unroll, unroll_steps) with `auto` and 0 resolved."""
  unroll = model_config.unroll
  if unroll == config_lib.AUTO:
    fast_compile = compiled_on_gpu and not model_config.per_gate_hidden_gradient
    unroll = "dynamic" if fast_compile else "static"
  steps = model_config.unroll_steps
  if not steps:
    steps = FAST_COMPILE_UNROLL_STEPS if unroll == "dynamic" and compiled_on_gpu else 1
  return unroll, steps


def choose(run_config, gpus=None):
  """The step of `run_config` on a machine with `gpus` (default: `visible_gpus()`).

  A config already resolved comes back unchanged. Returns a `StepChoice`.
  """
  gpus = visible_gpus() if gpus is None else gpus
  train_config, model_config = run_config.train, run_config.model
  compiled, reason = _compiled(train_config, gpus)
  unroll, steps = _unroll(model_config, compiled and bool(gpus))
  cache = train_config.xla_cache_dir
  if cache == config_lib.AUTO:
    cache = workdir_lib.xla_cache_dir(train_config.workdir) if compiled else ""
  return StepChoice(dataclasses.replace(
      run_config,
      model=dataclasses.replace(model_config, unroll=unroll, unroll_steps=steps),
      train=dataclasses.replace(train_config, jit_compile=compiled,
                                xla_cache_dir=cache if compiled else "",
                                xla_autotune=train_config.xla_autotune and compiled)), reason)


def describe(choice):
  """The line a run starts with, e.g. "step: XLA-compiled (1 GPU (--jit_compile=auto)),
  dynamic unroll x5, embedding on the CPU (...); XLA cache runs/x/xla_cache: 4 compiled
  steps there"."""
  model_config = choice.run_config.model
  unroll = ("static unroll" if model_config.unroll == "static" else
            f"dynamic unroll x{model_config.unroll_steps}")
  if not choice.compiled:
    return f"plain step: {choice.reason}; {unroll}"
  embedding = ("embedding on the GPU (in the compiled step)"
               if model_config.embedding_device == "gpu" else
               "embedding on the CPU (looked up a batch ahead; lookup and row update outside "
               "the compiled step)")
  return (f"step: XLA-compiled ({choice.reason}), {unroll}, {embedding}; "
          f"{_cache_note(choice.run_config.train.xla_cache_dir)}")


def _cache_note(folder):
  """Where this process's XLA cache is (`xla_cache.active_folder`, set before TensorFlow
  started) and what it holds."""
  active = xla_cache.active_folder()
  if not active:
    return ("no XLA cache" if not folder else
            f"no XLA cache ({folder}: train.py sets it up before TensorFlow starts)")
  count = len(xla_cache.cached_executables(active))
  return f"XLA cache {active}: {count} compiled step{'' if count == 1 else 's'} there"
