"""XLA's compiler options, set through the environment before TensorFlow first compiles.

TensorFlow reads TF_XLA_FLAGS, and XLA reads XLA_FLAGS, once per process, at the first XLA
compilation. No TensorFlow import here, so a program can set them first.
"""
import os

# XLA:GPU spends about half of an unrolled step's compilation searching Triton GEMM tilings
# and fusion emitters. Without them the GEMMs go to cuBLAS, whose algorithm choice is quick.
# Turning them off halves the first step of seed_b256 and leaves the step time as it was
# (benchmarks/README.md).
NO_AUTOTUNING = ("--xla_gpu_enable_triton_gemm=false",
                 "--xla_gpu_experimental_enable_fusion_autotuner=false")


# XLA:GPU replays runs of kernels as CUDA graphs ("command buffers"), by default not across
# while loops and conditionals: every iteration of a `tf.while_loop` (`--unroll=dynamic`)
# then returns to the host. With them the dynamic unroll's step is about a fifth shorter, and
# the static unroll's is unchanged (benchmarks/README.md).
COMMAND_BUFFERS = (
    "--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN,WHILE,CONDITIONAL",
    "--xla_gpu_graph_min_graph_size=1")


def parallel_compilation(threads=None):
  """Flags that split the compiled step's LLVM module by kernel and generate the pieces' PTX
  and cubins on `threads` threads (default: the CPUs this process may run on). Without them
  XLA:GPU compiles one module on one thread under TensorFlow, which passes it no thread pool.
  With them the first step of seed_b256 on a 16-CPU host is about a quarter shorter and the
  step is the same (benchmarks/README.md)."""
  if threads is None:
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  return ("--xla_gpu_enable_llvm_module_compilation_parallelism=true",
          f"--xla_gpu_force_compilation_parallelism={max(1, threads or 1)}")


def _name(flag):
  return flag.split("=", 1)[0]


def value(variable, name):
  """The value of flag `name` (e.g. "--xla_dump_to") in environment variable `variable`, or
  None when it is not there."""
  for flag in os.environ.get(variable, "").split():
    if _name(flag) == name:
      return flag.split("=", 1)[1] if "=" in flag else ""
  return None


def add(variable, flags, replace):
  """Adds `flags` to the space-separated flags of environment variable `variable`.

  A flag whose name is already there is replaced when `replace`; otherwise the value already
  there (the user's) is kept. Returns the variable's new value.
  """
  current = os.environ.get(variable, "").split()
  if replace:
    names = {_name(f) for f in flags}
    value = [f for f in current if _name(f) not in names] + list(flags)
  else:
    present = {_name(f) for f in current}
    value = current + [f for f in flags if _name(f) not in present]
  os.environ[variable] = " ".join(value)
  return os.environ[variable]


def configure(autotune=False):
  """Sets the engine's XLA:GPU options in XLA_FLAGS: loops and conditionals in CUDA graphs
  (`COMMAND_BUFFERS`), code generation on every CPU (`parallel_compilation`) and, unless
  `autotune`, no Triton GEMM or fusion-emitter autotuning (`NO_AUTOTUNING`). Flags XLA_FLAGS
  already sets keep their values. Call before the first XLA compilation. Returns XLA_FLAGS."""
  flags = COMMAND_BUFFERS + parallel_compilation() + (() if autotune else NO_AUTOTUNING)
  return add("XLA_FLAGS", flags, replace=False)
