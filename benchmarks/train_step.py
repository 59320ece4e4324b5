"""Times the engine's real train step on fixed synthetic batches, beside a Keras cuDNN peer and
PyTorch peers (`--variants=...,torch_bf16`; `benchmarks.torch_peers`, in a process of its own).

    python -m benchmarks.train_step --workloads=cpu_small --steps=10
    python -m benchmarks.train_step --workloads=seed_b20,seed_b256 --variants=engine,keras
    python -m benchmarks.train_step --workloads=ptb_large --steps=3 \
        --override=batch=4,hidden=32,embed=32,vocab=200      # LM smoke test on a CPU
    python -m benchmarks.train_step --workloads=seed_b20,seed_b256,m30k_attention \
        --variants=engine_xla_bf16,engine_xla_bf16_gpuemb  # tables on the host / on the GPU

Each (workload, variant) prints one JSON line; a table follows. Warm-up (tracing and
compilation) is timed apart from the measured steps, and every timed step ends by reading its
loss back to the host, so the clock covers the device work.

The workloads, their FLOPs and their synthetic inputs are `benchmarks.workloads`'.

The seq2seq workloads time `train_step.make_train_step` on a fixed padded batch; the LM
workloads (`ptb_large*`, the PTB "large" model of Zaremba et al.) time
`train_step.make_lm_train_step` on a fixed window, the final state carried into the next
step as in training. Both are `train_step.make_update_step`, so the variants mean the same.

A variant whose tables are on the host (embedding "cpu") and its twin with them on the GPU
("_gpuemb"), both chosen, get a line with the ratio of their steps (`placement_ratios`).
"""
import contextlib
import itertools
import json
import os
import resource
import shutil
import statistics
import tempfile
import time

from absl import app
from absl import flags
import tensorflow as tf

from benchmarks import compile_stages
from benchmarks import kernel_profile
from benchmarks import peer_process
from benchmarks import workloads
from ops import clipping
from ops import losses
from seq2seq import config as config_lib
from seq2seq.data import batches
from seq2seq.models import encoder_decoder as model_lib
from seq2seq.models import language_model
from seq2seq.runtime import host_memory
from seq2seq.runtime import xla_cache
from seq2seq.runtime import xla_flags
from seq2seq.step import choice as step_choice
from seq2seq.step import device_prefetch
from seq2seq.step import lookahead as lookahead_lib
from seq2seq.step import optimizers
from seq2seq.step import train_step as train_step_lib

# The workloads' definitions, shared with the PyTorch peers (`benchmarks.workloads`).
WORKLOADS, SIZES, LMWindow = workloads.WORKLOADS, workloads.SIZES, workloads.LMWindow
model_flops = workloads.model_flops
synthetic_batch, synthetic_window = workloads.synthetic_batch, workloads.synthetic_window
# Engine variants: (jit_compile, precision, embedding_device, unroll). "keras" is the peer.
ENGINE_VARIANTS = {
    "engine": (False, "fp32", "cpu", "static"),
    "engine_xla": (True, "fp32", "cpu", "static"),
    "engine_xla_bf16": (True, "bf16", "cpu", "static"),
    "engine_xla_bf16_gpuemb": (True, "bf16", "gpu", "static"),
    "engine_xla_gpuemb": (True, "fp32", "gpu", "static"),
    "engine_bf16": (False, "bf16", "cpu", "static"),
}
ENGINE_VARIANTS.update({name + suffix: options[:3] + (unroll,)
                        for name, options in list(ENGINE_VARIANTS.items())
                        for suffix, unroll in (("_dyn", "dynamic"),) + tuple(
                            (f"_dyn{k}", f"dynamic{k}") for k in (2, 3, 4, 5, 7, 10))})
# "_pergate": the same with --per_gate_hidden_gradient (each step's d(h) one matmul per gate).
PER_GATE_SUFFIX = "_pergate"
ENGINE_VARIANTS.update({name + PER_GATE_SUFFIX: ENGINE_VARIANTS[name]
                        for name in ("engine_xla_bf16_gpuemb", "engine_xla_bf16",
                                     "engine_xla_gpuemb", "engine")})
# "_usercell": the same with the built-in LSTM replaced by `benchmarks.user_cells.PlainLSTMCell`,
# the same math written as a user's --cell (the reference unroll runs it): equal FLOPs.
USER_CELL_SUFFIX = "_usercell"
USER_CELL = "benchmarks.user_cells:PlainLSTMCell"
ENGINE_VARIANTS.update({name + USER_CELL_SUFFIX: options
                        for name, options in list(ENGINE_VARIANTS.items())
                        if not name.endswith(PER_GATE_SUFFIX)})
# "engine_default": the step train.py's defaults choose on this machine (seq2seq.step.choice):
# on a GPU compiled, dynamic unroll x5, fp32, the embedding on the CPU; else the plain step.
# Filled in by `main`, once XLA's flags are set (listing the GPUs reads them).
DEFAULT_VARIANTS = ("engine_default", "engine_default" + USER_CELL_SUFFIX)
PEERS = ("keras",) + tuple(workloads.TORCH_VARIANTS)  # torch_*: benchmarks.torch_peers
VARIANTS = tuple(ENGINE_VARIANTS) + DEFAULT_VARIANTS + PEERS

flags.DEFINE_list("workloads", ["cpu_small"], f"among {', '.join(WORKLOADS)}")
flags.DEFINE_list("variants", ["engine", "keras"], f"among {', '.join(VARIANTS)}; the torch_* "
                  "peers run first, in a process of their own (benchmarks.torch_peers)")
flags.DEFINE_integer("steps", 30, "timed steps (the median is reported)")
flags.DEFINE_integer("warmup", 3, "untimed steps after the first")
flags.DEFINE_float("keep_prob", 0.8, "dropout keep probability of the engine variants")
flags.DEFINE_bool("device_batch", True,
                  "the steps whose lookups run on the device (the engine's gpuemb variants, "
                  "keras; in benchmarks.scaling the one-device and worker-process steps) are "
                  "given the batch (or LM window) already there, ids as int64 "
                  "(`seq2seq.step.train_step.device_batch`), as an input pipeline that prefetches "
                  "to the GPU gives it; false: int32 ids from host memory, which every step "
                  "copies in after the step before has finished")
flags.DEFINE_string("output", "", "also append the JSON lines to this file")
flags.DEFINE_integer("profile_steps", 0, "after timing, trace this many more steps with the "
                     "TensorFlow profiler and add a kernel summary (benchmarks.kernel_profile: "
                     "GPU busy time, GEMM and other kernel time, top kernels) to each line")
flags.DEFINE_integer("profile_top", 12, "kernel groups (and host activities) listed per profile")
flags.DEFINE_bool("profile_first_step", False, "also trace the first step (tracing and XLA "
                  "compilation) and list the host activities that took the most time")
flags.DEFINE_bool("first_step_stages", False, "split each XLA-compiled first step into its "
                  "stages (tracing and graph-to-HLO, HLO passes, LLVM IR, code generation, load "
                  "and run) by the times XLA writes its dump files (benchmarks.compile_stages; "
                  "--xla_dump_to in XLA_FLAGS, or a temporary folder removed after)")
flags.DEFINE_string("profile_dir", "", "where the traces go (one subfolder per workload and "
                    "variant, readable by TensorBoard's profile plugin); default: a temporary "
                    "folder, removed after")
flags.DEFINE_string("xla_cache_dir", "", "XLA's persistent compilation cache (seq2seq.runtime.xla_cache): "
                    "compiled steps are saved there, and a second run loads them (its first "
                    "step then times the trace and the load, not the compile)")
flags.DEFINE_bool("xla_autotune", False, "XLA:GPU's Triton GEMM and fusion-emitter autotuning, "
                  "as train.py --xla_autotune (off: seq2seq.runtime.xla_flags.NO_AUTOTUNING is added to "
                  "XLA_FLAGS, unless XLA_FLAGS sets those flags; xla_flags.COMMAND_BUFFERS "
                  "is added either way)")
flags.DEFINE_list("override", [], f"SIZE=N pairs (SIZE among {', '.join(SIZES)}) that replace "
                  "every chosen workload's sizes, e.g. batch=4,hidden=32 for a CPU smoke test "
                  "of a GPU workload")
flags.DEFINE_bool("pinned_host_memory", False, "host tensors in page-locked memory "
                  "(seq2seq.runtime.host_memory), so that rows of a table on the host move to "
                  "the GPU and back by DMA")
FLAGS = flags.FLAGS


def parse_override(pairs):
  """['batch=4', 'hidden=32'] -> {'batch': 4, 'hidden': 32}; UsageError on a bad pair."""
  try:
    return workloads.parse_override(pairs)
  except workloads.OverrideError as error:
    raise app.UsageError(str(error)) from None


def workload_sizes(workload):
  """(kind, B, T, E, H, V, layers) of `workload`, with --override applied."""
  return workloads.sizes(workload, FLAGS.override)


def workload_num_sampled(workload):
  """The sampled-softmax candidates of `workload` at its (overridden) size; 0: full softmax."""
  return workloads.num_sampled(workload, workload_sizes(workload)[5])


def synthetic_input(kind, batch, steps, vocab):
  """(the step's input as tensors, its number of real target tokens)."""
  if kind == "lm":
    window = LMWindow(*(tf.constant(x) for x in synthetic_window(batch, steps, vocab)))
    return window, float(batch * steps)
  b = batches.Batch(*(tf.constant(x) for x in synthetic_batch(batch, steps, vocab)))
  return b, float(tf.reduce_sum(b.target_weight))


def matmul_ceiling(dtype, size=None):
  """TFLOP/s of a size^3 matmul in `dtype` (default 8192 on a GPU, 1024 on a CPU): the ceiling
  the step's efficiency is judged by. (The GPUs are listed here, not at import: TensorFlow
  reads TF_XLA_FLAGS, --xla_cache_dir's, when it first lists them.)"""
  size = size or (8192 if tf.config.list_physical_devices("GPU") else 1024)
  a = tf.random.normal([size, size], dtype=tf.float32)
  a = tf.cast(a, dtype)
  matmul = tf.function(lambda x: tf.matmul(x, x))
  matmul(a).numpy()
  times = []
  for _ in range(5):
    start = time.perf_counter()
    matmul(a)[0, 0].numpy()
    times.append(time.perf_counter() - start)
  return 2 * size ** 3 / min(times) / 1e12


def engine_model_config(workload, variant, embedding_device=None):
  """The `ModelConfig` of `workload` under engine `variant` (its embedding placement unless
  `embedding_device` is given)."""
  kind, _, _, embed, hidden, _, layers = workload_sizes(workload)
  _, _, variant_embedding_device, unroll = ENGINE_VARIANTS[variant]
  unroll_steps = int(unroll[len("dynamic"):] or 1) if unroll.startswith("dynamic") else 1
  attention = {"encoder": "bi", "attention": "luong"} if kind == "attention" else {}
  return config_lib.ModelConfig(num_layers=layers, hidden_size=hidden, embedding_size=embed,
                                keep_prob=FLAGS.keep_prob,
                                embedding_device=embedding_device or variant_embedding_device,
                                unroll=unroll.rstrip("0123456789"), unroll_steps=unroll_steps,
                                per_gate_hidden_gradient=variant.endswith(PER_GATE_SUFFIX),
                                cell=USER_CELL if variant.endswith(USER_CELL_SUFFIX) else "lstm",
                                **attention)


def default_variants():
  """{name: (jit_compile, precision, embedding_device, unroll)} of `DEFAULT_VARIANTS`: what
  `step_choice.choose` makes of the default config on this machine."""
  resolved = step_choice.choose(config_lib.RunConfig()).run_config
  unroll = resolved.model.unroll
  if unroll == "dynamic":
    unroll += str(resolved.model.unroll_steps)
  options = (resolved.train.jit_compile, resolved.train.precision,
             resolved.model.embedding_device, unroll)
  return {name: options for name in DEFAULT_VARIANTS}


def engine_step(workload, variant):
  """The engine's own train step (the code train.py runs) for `workload`: input -> (loss, ...)."""
  kind, batch, _, _, _, vocab, _ = workload_sizes(workload)
  jit_compile, precision, embedding_device, _ = ENGINE_VARIANTS[variant]
  if embedding_device == "gpu" and not tf.config.list_physical_devices("GPU"):
    return None
  model_config = engine_model_config(workload, variant)
  compute_dtype = model_lib.COMPUTE_DTYPES[precision]
  if kind == "lm":
    model = language_model.LanguageModel(model_config, vocab, seed=0, compute_dtype=compute_dtype)
  else:
    model = model_lib.Seq2Seq(model_config, vocab, seed=0, compute_dtype=compute_dtype)
  model.build()
  optimizer = optimizers.make_optimizer(config_lib.TrainConfig(learning_rate=1e-3),
                                       model.trainable_variables)
  if kind != "lm":  # traced for B rows, as training traces it for --batch_size
    return train_step_lib.make_train_step(model, optimizer, max_grad_norm=5.0,
                                          jit_compile=jit_compile, batch_size=batch,
                                          num_sampled=workload_num_sampled(workload),
                                          lookahead=jit_compile)  # as train.py's loop on a GPU
  # As in training: the final state of each step is the initial state of the next.
  step = train_step_lib.make_carried_step(
      train_step_lib.make_lm_train_step(model, optimizer, max_grad_norm=5.0,
                                        jit_compile=jit_compile),
      language_model.CarriedState(model, batch))
  return lambda window: step(window.inputs, window.targets)


def keras_step(workload, variant):
  """The peer: keras.layers.LSTM (cuDNN on GPU), same embedding, projection, loss, Adam, clip.

  seq2seq: an encoder and a decoder stack, the decoder starting from the encoder's states.
  lm: one stack whose final states are carried into the next step (truncated BPTT), as the
  engine's LM step.
  """
  import keras  # pylint: disable=import-outside-toplevel
  del variant
  kind, batch, steps, embed, hidden, vocab, layers = workload_sizes(workload)
  if kind == "attention":
    return None  # Keras has no attention LSTM decoder to compare with
  lstm = lambda: keras.layers.LSTM(hidden, return_sequences=True, return_state=True)
  embedding = keras.layers.Embedding(vocab, embed)
  projection = keras.layers.Dense(vocab)
  optimizer = optimizers.make_optimizer(config_lib.TrainConfig(learning_rate=1e-3))

  if kind == "lm":
    stack = [lstm() for _ in range(layers)]
    layers_all = [embedding, *stack, projection]

    def forward(w, states):
      x = embedding(w.inputs)
      final_states = []
      for layer, (h, c) in zip(stack, states):
        x, h, c = layer(x, initial_state=[h, c])
        final_states.append((h, c))
      return x, w.targets, tf.ones(tf.shape(w.targets)), final_states

    zeros = tf.zeros([batch, hidden])
    carried = [[(zeros, zeros)] * layers]
    sample = LMWindow(*synthetic_window(2, steps, vocab))
    build_args = (sample, [(zeros[:2], zeros[:2])] * layers)
  else:
    encoder = [lstm() for _ in range(layers)]
    decoder = [lstm() for _ in range(layers)]
    layers_all = [embedding, *encoder, *decoder, projection]

    def forward(b):
      x = embedding(b.source)
      mask = tf.sequence_mask(b.source_length, tf.shape(b.source)[1])
      states = []
      for layer in encoder:
        x, h, c = layer(x, mask=mask)
        states.append([h, c])
      y = embedding(b.decoder_input)
      for layer, state in zip(decoder, states):
        y, _, _ = layer(y, initial_state=state)
      return y, b.target, b.target_weight, ()

    carried = None
    build_args = (synthetic_batch(2, steps, vocab),)

  forward(*build_args)  # build
  projection.build((None, hidden))
  variables = [v for layer in layers_all for v in layer.trainable_variables]
  optimizer.build([v.value for v in variables])

  sampled = workload_num_sampled(workload)
  projection_variables = projection.trainable_variables

  def loss_of(outputs, targets, weights):
    """The engine's training loss: the full softmax, or its sampled softmax."""
    if not sampled:
      return losses.sequence_loss(projection(outputs), targets, weights)
    return losses.sampled_sequence_loss(outputs, targets, weights, projection.kernel,
                                        projection.bias, sampled,
                                        train_step_lib.sampling_seed(0, optimizer.iterations))

  @tf.function(jit_compile=False)
  def step(b, *states):
    with tf.GradientTape() as tape:
      outputs, targets, weights, final_states = forward(b, *states)
      loss = loss_of(outputs, targets, weights)
    params = [v.value for v in variables]
    grads = tape.gradient(loss, params)
    # The sampled softmax gathers projection columns; the engine updates them densely.
    grads = [train_step_lib.dense_gradient(g) if any(v is p for p in projection_variables)
             else g for g, v in zip(grads, variables)]
    grads, norm = clipping.clip_gradients(grads, 5.0)
    optimizer.apply(grads, params)
    return loss, norm, final_states

  if carried is None:
    return lambda b: step(b)[:2]

  def carrying_step(w):
    loss, norm, carried[0] = step(w, carried[0])
    return loss, norm
  return carrying_step


def peak_memory_mb():
  if tf.config.list_physical_devices("GPU"):
    return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # host RSS


def batch_on_device(b, variant, device):
  """(the seq2seq batch or LM window `b` as a step of `variant` is given it, whether it was
  moved): with --device_batch, on `device` with int64 ids (`seq2seq.step.train_step.device_batch`)
  where the variant's lookups run on the device (variant None: a distributed step, whose
  tables are there); otherwise `b` as it is."""
  if FLAGS.device_batch and (variant in (None, "keras") or ENGINE_VARIANTS[variant][2] == "gpu"):
    return train_step_lib.device_batch(b, device), True
  return b, False


def measure(workload, variant, ceiling, dump_folder=None):
  kind, batch, steps, embed, hidden, vocab, layers = workload_sizes(workload)
  step = (keras_step if variant == "keras" else engine_step)(workload, variant)
  if step is None:
    reason = "no Keras peer with attention" if variant == "keras" else "needs a GPU"
    return {"workload": workload, "variant": variant, "skipped": reason}
  precision = "fp32" if variant == "keras" else ENGINE_VARIANTS[variant][1]
  ceiling = ceiling[precision]
  b, target_tokens = synthetic_input(kind, batch, steps, vocab)
  device = (tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU"))[0].name
  b, placed = batch_on_device(b, variant, device)
  if tf.config.list_physical_devices("GPU"):
    tf.config.experimental.reset_memory_stats("GPU:0")
  first_step_profile = []  # filled by the first step's trace, with --profile_first_step
  window = {}  # the first step's wall-clock start and end
  loss_of_step = lambda b: step(b)[0]
  first_step, median = time_steps(
      loss_of_step, b, all_of(wall_clock(window),
                              first_step_trace(f"{workload}-{variant}", first_step_profile)))
  stages = (compile_stages.stages(dump_folder, window["start"], window["end"])
            if dump_folder else None)
  sampled = workload_num_sampled(workload)
  tflops = model_flops(kind, batch, steps, embed, hidden, vocab, layers, sampled) / median / 1e12
  pipelined = pipelined_step_time(loss_of_step, b)
  prefetched = (prefetched_step_time(loss_of_step, host_inputs(kind, batch, steps, vocab), device)
                if placed else None)
  lookahead = in_order = None
  if isinstance(step, lookahead_lib.LookaheadStep):
    fresh = host_inputs(kind, batch, steps, vocab)
    lookahead = lookahead_step_time(step, fresh)
    in_order = lookahead_step_time(step, fresh, ahead=False)
  profile = profile_steps(step, b, f"{workload}-{variant}") if FLAGS.profile_steps else None
  return {
      "workload": workload, "variant": variant, "step_ms": 1e3 * median,
      "pipelined_step_ms": 1e3 * pipelined,
      "target_tokens_per_sec": target_tokens / median,
      # Positions a second count B·T (as for unpadded batches, every position a token), at the
      # back-to-back rate the training loop runs at.
      "positions_per_sec_pipelined": batch * steps / pipelined,
      **({"prefetched_step_ms": 1e3 * prefetched,
          "positions_per_sec_prefetched": batch * steps / prefetched} if placed else {}),
      **({"lookahead_step_ms": 1e3 * lookahead, "in_order_step_ms": 1e3 * in_order,
          "positions_per_sec_lookahead": batch * steps / lookahead} if lookahead else {}),
      "model_tflops": tflops,
      "ceiling_tflops": ceiling, "percent_of_ceiling": 100 * tflops / ceiling,
      "first_step_s": first_step, "peak_memory_mb": peak_memory_mb(), "batch": batch,
      "sizes": dict(zip(SIZES, (batch, steps, embed, hidden, vocab, layers))),
      "num_sampled": sampled, "keep_prob": FLAGS.keep_prob, "device_batch": placed,
      "device": "GPU" if tf.config.list_physical_devices("GPU") else "CPU",
      "tf_version": tf.__version__,
      "xla_flags_env": os.environ.get("XLA_FLAGS", ""),
      **({"profile": profile} if profile else {}),
      **({"first_step_profile": first_step_profile} if first_step_profile else {}),
      **({"first_step_stages": stages} if dump_folder else {}),
  }


@contextlib.contextmanager
def all_of(*contexts):
  """Enters `contexts` in order, and leaves them in reverse."""
  with contextlib.ExitStack() as stack:
    for context in contexts:
      stack.enter_context(context)
    yield


@contextlib.contextmanager
def wall_clock(window):
  """Records the wall-clock time (time.time(), comparable with file times) of entering and
  leaving as window["start"] and window["end"]."""
  window["start"] = time.time()
  try:
    yield
  finally:
    window["end"] = time.time()


def emit(row):
  """Prints a result's JSON line, and appends it to --output when given."""
  print(json.dumps(row), flush=True)
  if FLAGS.output:
    with open(FLAGS.output, "a", encoding="utf-8") as f:
      f.write(json.dumps(row) + "\n")


@contextlib.contextmanager
def profile_logdir(name):
  """A folder for one profiler trace: --profile_dir/NAME (kept), or a temporary one (removed
  after)."""
  root = FLAGS.profile_dir or tempfile.mkdtemp(prefix="train_step_profile_")
  try:
    yield os.path.join(root, name)
  finally:
    if not FLAGS.profile_dir:
      shutil.rmtree(root, ignore_errors=True)


def time_steps(loss_of_step, b, first_step_context=contextlib.nullcontext()):
  """(first step s, median step s): `loss_of_step(b)` once (trace and compile) inside
  `first_step_context`, --warmup more times, then --steps timed times; each call ends by
  reading its loss back to the host, so the clock covers the device work."""
  start = time.perf_counter()
  with first_step_context:
    float(loss_of_step(b))
  first_step = time.perf_counter() - start
  for _ in range(FLAGS.warmup):
    float(loss_of_step(b))
  times = []
  for _ in range(FLAGS.steps):
    start = time.perf_counter()
    float(loss_of_step(b))
    times.append(time.perf_counter() - start)
  return first_step, statistics.median(times)


def pipelined_step_time(loss_of_step, b):
  """Mean s a step over --steps steps issued back to back, the loss of the last one read at
  the end: the host dispatches each step while the device runs the one before. `time_steps`
  waits for every step, as the training loop does (it reads each step's `finite` flag), so
  the difference is the host's share of a step that a loop without that wait would hide."""
  return back_to_back_time(loss_of_step, itertools.repeat(b, FLAGS.steps))


def back_to_back_time(loss_of_step, given):
  """Mean s a step of `loss_of_step` over the inputs of the iterable `given`, issued back to
  back; the clock stops when the last step's loss is read."""
  start = time.perf_counter()
  count = 0
  for inputs in given:
    loss = loss_of_step(inputs)
    count += 1
  float(loss)
  return (time.perf_counter() - start) / count


def host_inputs(kind, batch, steps, vocab, count=4):
  """`count` distinct inputs of the workload's shape as NumPy arrays, as the input pipeline
  gives them to the training loop (seeds 1..count; `synthetic_input` is seed 0)."""
  make = synthetic_window if kind == "lm" else synthetic_batch
  return [make(batch, steps, vocab, seed=seed) for seed in range(1, count + 1)]


def prefetched_step_time(loss_of_step, inputs, device):
  """Mean s a step over --steps steps issued back to back, each given the next of `inputs`
  (NumPy, cycled) moved onto `device` by `device_prefetch.Prefetcher`, as the training loop
  gives its steps their batches: a background thread, int64 ids. Against
  `pipelined_step_time` (one batch, moved once) the difference is what moving a batch for
  every step costs. The clock includes the prefetcher's start (its first batch)."""
  cycled = (inputs[number % len(inputs)] for number in range(FLAGS.steps))

  def moved():
    with device_prefetch.Prefetcher(
        cycled, lambda host: train_step_lib.device_batch(host, device)) as batches:
      for _, given in batches:
        yield given

  return back_to_back_time(loss_of_step, moved())


def lookahead_step_time(step, inputs, ahead=True, warmup=3):
  """Mean s a step of a `lookahead.LookaheadStep` over --steps steps back to back, each given
  the next of `inputs` (NumPy, cycled) and, with `ahead`, the one after it, as the training
  loop gives a step whose tables are pinned to the host: it looks each next batch up while
  the device runs the step before. After `warmup` such steps (the traces of the row update
  and the refresh); the clock stops when the update the last step held back is applied and
  its loss read. Without `ahead`: the same fresh batches, each step's parts in order."""
  count = warmup + FLAGS.steps + 1
  cycled = [batches.Batch(*inputs[number % len(inputs)]) for number in range(count)]
  pairs = [(batch, following if ahead else None)
           for batch, following in zip(cycled[:-1], cycled[1:])]
  for pair in pairs[:warmup]:
    float(step(*pair)[0])
  start = time.perf_counter()
  for pair in pairs[warmup:]:
    loss = step(*pair)[0]
  step.flush()
  float(loss)
  return (time.perf_counter() - start) / FLAGS.steps


@contextlib.contextmanager
def first_step_trace(name, activities):
  """With --profile_first_step, traces the enclosed first step and then appends its top host
  activities ([name, seconds, count], `kernel_profile.host_activities`) to `activities`."""
  if not FLAGS.profile_first_step:
    yield
    return
  with profile_logdir(name + "-first") as logdir:
    with kernel_profile.trace(logdir):
      yield
    activities.extend(kernel_profile.host_activities(kernel_profile.read_space(logdir),
                                                     FLAGS.profile_top))


def profile_steps(step, b, name):
  """Traces --profile_steps more steps of `step` and summarizes their kernels, per step. The
  steps are issued back to back, as in `pipelined_step_time`, so the summary's wait_ms is the
  device time a pipelined loop leaves idle."""
  with profile_logdir(name) as logdir:
    with kernel_profile.trace(logdir):
      for _ in range(FLAGS.profile_steps):
        loss = step(b)[0]
      float(loss)
    return kernel_profile.summarize(logdir, FLAGS.profile_steps, FLAGS.profile_top)


def main(argv):
  del argv
  for name in FLAGS.workloads:
    if name not in WORKLOADS:
      raise app.UsageError(f"--workloads: unknown workload {name!r}")
  for name in FLAGS.variants:
    if name not in VARIANTS:
      raise app.UsageError(f"--variants: unknown variant {name!r}")
  parse_override(FLAGS.override)
  start_process()
  dump_folder, temporary_dump = (compile_stages.dump_folder() if FLAGS.first_step_stages
                                 else (None, False))
  ENGINE_VARIANTS.update(default_variants())  # after the flags: it lists the GPUs
  try:
    measure_all(dump_folder)
  finally:
    if temporary_dump:
      shutil.rmtree(dump_folder, ignore_errors=True)


def start_process():
  """What the flags set before TensorFlow starts: XLA's options and cache, host memory."""
  xla_flags.configure(FLAGS.xla_autotune)  # before anything compiles, as train.py does
  if FLAGS.xla_cache_dir:  # before anything compiles: TensorFlow reads TF_XLA_FLAGS at first use
    print(json.dumps({"xla_cache_dir": xla_cache.enable(FLAGS.xla_cache_dir)}), flush=True)
  if FLAGS.pinned_host_memory:  # before TensorFlow starts its devices
    print(json.dumps({"pinned_host_memory": host_memory.pin_host_tensors()}), flush=True)


def measure_all(dump_folder):
  """Measures every chosen workload and variant, prints their JSON lines and the tables."""
  torch_variants = [v for v in FLAGS.variants if v in workloads.TORCH_VARIANTS]
  # Before TensorFlow takes the GPU (peer_process).
  peer_rows = peer_process.torch_rows(FLAGS.workloads, torch_variants, FLAGS.steps,
                                      FLAGS.warmup, FLAGS.keep_prob, FLAGS.override)
  ceiling = {"fp32": matmul_ceiling(tf.float32), "bf16": matmul_ceiling(tf.bfloat16)}
  print(json.dumps({"matmul_ceiling_tflops": ceiling}), flush=True)
  rows = []
  for workload in FLAGS.workloads:
    for variant in FLAGS.variants:
      if variant in torch_variants:
        row = with_ceiling(peer_rows[(workload, variant)], ceiling)
      else:
        row = measure_cached(workload, variant, ceiling, dump_folder)
      rows.append(row)
      emit(row)
  print_table(rows)
  for ratio in peer_ratios(rows):
    emit(ratio)
  print_ratios(rows)
  for line in placement_ratios(rows):
    print(line)
  print_profiles(rows)


def measure_cached(workload, variant, ceiling, dump_folder):
  """`measure`, noting with --xla_cache_dir the compiled steps found in the cache and
  newly written to it."""
  cached = xla_cache.cached_executables(FLAGS.xla_cache_dir) if FLAGS.xla_cache_dir else []
  row = measure(workload, variant, ceiling, dump_folder)
  if FLAGS.xla_cache_dir:
    written = len(xla_cache.cached_executables(FLAGS.xla_cache_dir)) - len(cached)
    row["xla_cache"] = {"before": len(cached), "written": written}
  return row


def with_ceiling(row, ceiling):
  """A peer process's row with its share of this run's matmul ceiling in its precision."""
  if "skipped" in row:
    return row
  bound = ceiling[row["precision"]]
  return dict(row, ceiling_tflops=bound, percent_of_ceiling=100 * row["model_tflops"] / bound)


def print_table(rows):
  print(f"\n{'workload':16} {'variant':10} {'step ms':>9} {'pipe ms':>8} {'tok/s':>10} "
        f"{'pos/s pipe':>10} {'TFLOP/s':>8} {'%ceil':>6} {'first s':>8} {'peak MB':>9} "
        f"{'vs keras':>8} {'pipe':>5}")
  for row in rows:
    if "skipped" in row:
      print(f"{row['workload']:16} {row['variant']:10} skipped: {row['skipped']}")
      continue
    peer = [r for r in rows if r["workload"] == row["workload"] and r["variant"] == "keras"
            and "skipped" not in r]
    # Against keras in the same run: steps waited for one by one, and issued back to back.
    ratio, pipe_ratio = ((peer[0]["step_ms"] / row["step_ms"],
                          peer[0]["pipelined_step_ms"] / row["pipelined_step_ms"]) if peer
                         else (float("nan"), float("nan")))
    print(f"{row['workload']:16} {row['variant']:10} {row['step_ms']:9.2f} "
          f"{row['pipelined_step_ms']:8.2f} {row['target_tokens_per_sec']:10.0f} "
          f"{row['positions_per_sec_pipelined']:10.0f} "
          f"{row['model_tflops']:8.3f} {row['percent_of_ceiling']:6.1f} {row['first_step_s']:8.2f} "
          f"{row['peak_memory_mb']:9.0f} {ratio:8.2f} {pipe_ratio:5.2f}")
  for row in rows:
    if "prefetched_step_ms" in row:
      print(f"{row['workload']} {row['variant']}: a fresh batch each step, moved by the loop's "
            f"prefetcher: {row['prefetched_step_ms']:.2f} ms a step back to back "
            f"({row['positions_per_sec_prefetched']:.0f} positions/s)")
    if "lookahead_step_ms" in row:
      print(f"{row['workload']} {row['variant']}: a fresh batch each step, the next one looked "
            f"up ahead (the loop's step with tables on the host): "
            f"{row['lookahead_step_ms']:.2f} ms a step back to back "
            f"({row['positions_per_sec_lookahead']:.0f} positions/s); "
            f"{row['in_order_step_ms']:.2f} ms with each step's parts in order")


def peer_ratios(rows):
  """For each engine row and each peer row of its workload in this run: how many times the
  peer's step time the engine's is, waited for and back to back (> 1: the engine is faster)."""
  measured = [row for row in rows if "skipped" not in row]
  return [{"ratio": {"workload": engine["workload"], "engine": engine["variant"],
                     "peer": peer["variant"],
                     "waited": peer["step_ms"] / engine["step_ms"],
                     "back_to_back": peer["pipelined_step_ms"] / engine["pipelined_step_ms"]}}
          for engine in measured if engine["variant"] in ENGINE_VARIANTS
          for peer in measured
          if peer["variant"] in PEERS and peer["workload"] == engine["workload"]]


def print_ratios(rows):
  ratios = [line["ratio"] for line in peer_ratios(rows)]
  if ratios:
    print("\nengine / peer in this run (the peer's step time over the engine's; > 1: the "
          "engine is faster):")
  for ratio in ratios:
    print(f"  {ratio['workload']:16} {ratio['engine']:26} / {ratio['peer']:10} "
          f"waited {ratio['waited']:5.2f}x  back to back {ratio['back_to_back']:5.2f}x")


def placement_ratios(rows):
  """For each measured variant with its tables on the host whose twin with them on the GPU
  (the same but for the placement) was measured on the same workload: a line with both steps
  and their ratio, waited for and back to back."""
  measured = {(row["workload"], row["variant"]): row for row in rows if "skipped" not in row}
  lines = []
  for (workload, variant), host in measured.items():
    if variant not in ENGINE_VARIANTS or ENGINE_VARIANTS[variant][2] != "cpu":
      continue
    jit_compile, precision, _, unroll = ENGINE_VARIANTS[variant]
    twins = [name for name, options in ENGINE_VARIANTS.items()
             if options == (jit_compile, precision, "gpu", unroll)
             and name.endswith(PER_GATE_SUFFIX) == variant.endswith(PER_GATE_SUFFIX)
             and name.endswith(USER_CELL_SUFFIX) == variant.endswith(USER_CELL_SUFFIX)]
    for gpu in filter(None, (measured.get((workload, twin)) for twin in twins)):
      ahead = host.get("lookahead_step_ms")
      lines.append(
          f"{workload} {variant} / {gpu['variant']} (tables on the host / on the GPU): "
          f"{host['step_ms']:.2f} / {gpu['step_ms']:.2f} ms = "
          f"{host['step_ms'] / gpu['step_ms']:.2f}x waited for, "
          f"{host['pipelined_step_ms']:.2f} / {gpu['pipelined_step_ms']:.2f} ms = "
          f"{host['pipelined_step_ms'] / gpu['pipelined_step_ms']:.2f}x back to back"
          + (f", {ahead:.2f} / {gpu['pipelined_step_ms']:.2f} ms = "
             f"{ahead / gpu['pipelined_step_ms']:.2f}x with the lookahead on fresh batches"
             if ahead else ""))
  return lines


def print_profiles(rows):
  """Per profiled line: where each GPU's time went in one step, and the top kernels; the host
  activities of a traced first step."""
  for row in rows:
    if row.get("first_step_stages"):
      stages = row["first_step_stages"]
      print(f"\n{row['workload']} {row['variant']}, first step ({row['first_step_s']:.1f} s) "
            "by stage: " + ", ".join(f"{stage} {stages[stage]:.2f} s"
                                     for stage in compile_stages.STAGES
                                     if stages[stage] is not None)
            + f"; HLO instructions before/after the passes {stages['hlo_instructions']}")
    if row.get("first_step_profile"):
      print(f"\n{row['workload']} {row['variant']}, first step ({row['first_step_s']:.1f} s), "
            "host activities (inclusive):")
      for name, seconds, count in row["first_step_profile"]:
        print(f"  {seconds:8.2f} s {count:6d}x  {name[:90]}")
    label = f"{row['workload']} {row['variant']}" + (
        f" x{row['replicas']}" if "replicas" in row else "")
    for gpu in row.get("profile", {}).get("gpus", []):
      step_ms = row.get("pipelined_step_ms", row["step_ms"])
      print(f"\n{label}, GPU {gpu['device']}, per step: "
            f"{gpu['kernels']:.0f} kernels, busy {gpu['busy_ms']:.2f} ms of a {step_ms:.2f} ms "
            f"step (GEMM {gpu['gemm_ms']:.2f}, other {gpu['other_ms']:.2f}); "
            f"idle between kernels {gpu['launch_gap_ms']:.2f} ms "
            f"({gpu['launch_gaps']:.0f} gaps up to "
            f"{kernel_profile.SHORT_GAP_PS / 1e6:.0f} us), waiting {gpu['wait_ms']:.2f} ms")
      for name, ms, launches in gpu["top"]:
        print(f"  {ms:8.3f} ms {launches:6.0f}x  {name[:90]}")
    if "all_busy_ms" in row.get("profile", {}):
      print(f"\n{label}: all GPUs busy at once {row['profile']['all_busy_ms']:.2f} ms a step")


if __name__ == "__main__":
  app.run(main)
