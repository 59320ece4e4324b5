"""A first step's stages, from the times at which XLA writes its dump files.

With `--xla_dump_to=FOLDER`, XLA writes each compiled module's HLO when its HLO passes start
(`*.before_optimizations.txt`) and when they end (`*_after_optimizations.txt`), then its LLVM
IR (`*.ir-no-opt.ll`), then per-piece optimized IR, PTX or objects. Each file's modification
time is the end of a stage, so with the wall-clock start and end of the first step:

    trace_and_bridge  start -> HLO before optimization: Python tracing, TensorFlow's graph
                      passes and the graph-to-HLO bridge (tf2xla)
    hlo_passes        -> HLO after optimization: XLA's HLO pipeline (fusion, layout, ...)
    to_llvm_ir        -> unoptimized LLVM IR: buffer assignment and IR emission
    codegen           -> the module's last file: LLVM optimization and PTX or object code
    load_and_run      -> end: loading the executable and running the step

    folder, temporary = compile_stages.dump_folder()  # before the first XLA compilation
    start = time.time(); first_step(); end = time.time()
    stages = compile_stages.stages(folder, start, end)

Of the modules compiled in the window, the one with the largest HLO (the step) is reported.
Writing the dump costs a fraction of a second (seed_b256 on an H200: 18.1 s against
18.6-19.2 s without).
"""
import glob
import os
import tempfile

from seq2seq.runtime import xla_flags

STAGES = ("trace_and_bridge", "hlo_passes", "to_llvm_ir", "codegen", "load_and_run")
_BEFORE = ".before_optimizations.txt"
_AFTER = "after_optimizations.txt"
_IR = ".ir-no-opt.ll"


def dump_folder():
  """(folder, temporary): the folder XLA dumps to, the one XLA_FLAGS names with
  --xla_dump_to or else a new temporary one (`temporary`) added there. Call before the first
  XLA compilation: XLA reads XLA_FLAGS once per process."""
  folder = xla_flags.value("XLA_FLAGS", "--xla_dump_to")
  if folder:
    return folder, False
  folder = tempfile.mkdtemp(prefix="xla_dump_")
  xla_flags.add("XLA_FLAGS", [f"--xla_dump_to={folder}"], replace=False)
  return folder, True


def _instructions(path):
  with open(path, encoding="utf-8", errors="replace") as f:
    return sum(1 for line in f if " = " in line)


def stages(folder, start, end):
  """{stage: seconds} (`STAGES`) of the largest module whose dump files were written between
  the wall-clock times `start` and `end`, with `module` (its dump name) and
  `hlo_instructions` ([before, after] the HLO passes); a stage whose closing file is missing
  is None. None when no module was compiled in the window (e.g. a cached executable)."""
  modules = {}
  for path in glob.glob(os.path.join(folder, "module_*")):
    written = os.path.getmtime(path)
    if start <= written <= end:
      name = os.path.basename(path)
      modules.setdefault(".".join(name.split(".")[:2]), []).append((written, name, path))
  befores = [(os.path.getsize(path), module) for module, files in modules.items()
             for _, name, path in files if name.endswith(_BEFORE)]
  if not befores:
    return None
  module = max(befores)[1]
  files = modules[module]
  first = lambda suffix: min((t for t, name, _ in files if name.endswith(suffix)), default=None)
  path_of = lambda suffix: next((p for _, name, p in files if name.endswith(suffix)), None)
  marks = [start, first(_BEFORE), first(_AFTER), first(_IR), max(t for t, _, _ in files), end]
  result = {}
  for stage, (begin, finish) in zip(STAGES, zip(marks, marks[1:])):
    result[stage] = None if begin is None or finish is None else finish - begin
  result["module"] = module
  result["hlo_instructions"] = [_instructions(path_of(suffix)) if path_of(suffix) else None
                                for suffix in (_BEFORE, _AFTER)]
  return result
