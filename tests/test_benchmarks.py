"""The train-step benchmark runs end to end on a CPU, LM workloads included (shrunk)."""
import contextlib
import importlib.util
import io
import json
import os
import subprocess
import sys
import unittest

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.tsl.profiler.protobuf import xplane_pb2

from benchmarks import compile_stages
from benchmarks import kernel_profile
from benchmarks import peer_process
from benchmarks import loop_log
from benchmarks import workloads
from ops import losses
from seq2seq import config as config_lib
from seq2seq.data import batches
from seq2seq.models import encoder_decoder
from seq2seq.models import language_model
from seq2seq.step import optimizers
from seq2seq.step import train_step as train_step_lib
from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
class TrainStepBenchmarkTest(tf.test.TestCase):

  def _run(self, *flags):
    """{variant: JSON row} of `python -m benchmarks.train_step FLAGS`, 2 steps, no warm-up."""
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.train_step", "--steps=2", "--warmup=0", *flags],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    self.assertEqual(result.returncode, 0, result.stderr)
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return {row["variant"]: row for row in rows if "variant" in row}

  def test_lm_workload_runs_with_the_engine_step_and_the_keras_peer(self):
    """ptb_large, shrunk by --override: the real LM step and keras.layers.LSTM each time
    their steps, and the FLOPs follow 6·B·T·(Σ 4H(I+H) + H·V) of the sizes run."""
    rows = self._run("--workloads=ptb_large", "--variants=engine,keras",
                     "--override=batch=2,steps=4,embed=8,hidden=6,vocab=50")
    self.assertEqual(sorted(rows), ["engine", "keras"])
    layers = 4 * 6 * (8 + 6) + 4 * 6 * (6 + 6)
    flops = 6 * 2 * 4 * (layers + 6 * 50)
    for variant, row in rows.items():
      self.assertNotIn("skipped", row, variant)
      self.assertEqual(row["sizes"], {"batch": 2, "steps": 4, "embed": 8, "hidden": 6,
                                      "vocab": 50, "layers": 2})
      self.assertGreater(row["step_ms"], 0)
      self.assertGreater(row["pipelined_step_ms"], 0)  # the same steps, not waited for one by one
      self.assertAllClose(row["model_tflops"] * 1e12 * row["step_ms"] / 1e3, flops, rtol=1e-6)
      self.assertAllClose(row["target_tokens_per_sec"] * row["step_ms"] / 1e3, 2 * 4, rtol=1e-6)
      self.assertAllClose(row["positions_per_sec_pipelined"] * row["pipelined_step_ms"] / 1e3,
                          2 * 4, rtol=1e-6)  # B·T positions at the back-to-back rate
    # The window is moved (int64 ids) for the peer, whose lookups run on the device, as for a
    # seq2seq batch; not for the engine with its table pinned to the host.
    self.assertEqual({variant: row["device_batch"] for variant, row in rows.items()},
                     {"engine": False, "keras": True})
    # So it is also timed with a fresh window each step, moved by the loop's prefetcher.
    self.assertNotIn("prefetched_step_ms", rows["engine"])
    keras = rows["keras"]
    self.assertGreater(keras["prefetched_step_ms"], 0)
    self.assertAllClose(keras["positions_per_sec_prefetched"] * keras["prefetched_step_ms"] / 1e3,
                        2 * 4, rtol=1e-6)

  def test_attention_workload_times_the_attention_step_jit_and_dynamic(self):
    """m30k_attention, shrunk: the bidirectional Luong model's real step, plain and compiled
    with a while loop; Keras has no peer for it and says so."""
    rows = self._run("--workloads=m30k_attention", "--variants=engine,engine_xla_dyn5,keras",
                     "--override=batch=2,steps=5,embed=8,hidden=6,vocab=50", "--profile_steps=1",
                     "--profile_first_step", "--profile_top=5", "--first_step_stages")
    self.assertEqual(rows["keras"]["skipped"], "no Keras peer with attention")
    lstm = lambda inputs: 4 * 6 * (inputs + 6)
    encoder = 2 * (lstm(8) + lstm(12))
    decoder = lstm(8 + 6) + lstm(6)
    attention = 4 * 5 * 12 + 3 * 36 + 2 * 36
    flops = 6 * 2 * 5 * (encoder + decoder + attention + 6 * 50)
    for variant in ("engine", "engine_xla_dyn5"):
      row = rows[variant]
      self.assertAllClose(row["model_tflops"] * 1e12 * row["step_ms"] / 1e3, flops, rtol=1e-6)
      # The profiler traced the step; a CPU has no GPU kernels to summarize.
      self.assertEqual(row["profile"]["gpus"], [])
      self.assertIn("no GPU kernels", row["profile"]["note"])
      # The first step was traced too: its top host activities, longest first.
      activities = row["first_step_profile"]
      self.assertLen(activities, 5)
      seconds = [s for _, s, _ in activities]
      self.assertEqual(seconds, sorted(seconds, reverse=True))
      self.assertLessEqual(seconds[0], row["first_step_s"] * 1.01)
    # XLA's dump file times split the compiled first step into stages that add up to it.
    self.assertIsNone(rows["engine"]["first_step_stages"])  # nothing compiled with XLA
    stages = rows["engine_xla_dyn5"]["first_step_stages"]
    seconds = [stages[stage] for stage in compile_stages.STAGES]
    self.assertTrue(all(s is not None and s >= 0 for s in seconds), stages)
    self.assertAllClose(sum(seconds), rows["engine_xla_dyn5"]["first_step_s"], rtol=0.01)
    self.assertGreater(stages["hlo_instructions"][0], 100)

  def test_user_cell_runs_the_same_model_at_equal_flops(self):
    """A user's LSTM (benchmarks/user_cells.py, on the reference unroll) beside the built-in
    one, and the step the defaults choose on this machine (a CPU: the plain step)."""
    rows = self._run("--workloads=cpu_small", "--variants=engine,engine_usercell,engine_default",
                     "--override=batch=2,steps=4,embed=8,hidden=6,vocab=50")
    flops = {variant: row["model_tflops"] * row["step_ms"] for variant, row in rows.items()}
    self.assertAllClose(flops["engine_usercell"], flops["engine"], rtol=1e-6)
    self.assertAllClose(flops["engine_default"], flops["engine"], rtol=1e-6)


@pytest.mark.slow
def test_compile_buckets_cold_then_warm():
  """Every bucket's first step in a process with an empty XLA cache, then in one that loads
  what the first saved; each bucket at its first step, then all compiled ahead."""
  result = subprocess.run(
      [sys.executable, "-m", "benchmarks.compile_buckets", "--variant=engine_xla",
       "--buckets=3,4", "--sizes=batch=2,embed=4,hidden=4,vocab=20,layers=1", "--ahead=0,2"],
      cwd=ROOT, capture_output=True, text=True, timeout=900,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  assert result.returncode == 0, result.stderr
  lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
  assert [(line["ahead"], line["phase"]) for line in lines] == [
      (0, "cold"), (0, "warm"), (2, "cold"), (2, "warm")]
  for line in lines:
    assert sorted(line["first_step_s"]) == ["3", "4"]
    assert line["all_buckets_s"] == pytest.approx(
        line["compile_ahead_s"] + sum(line["first_step_s"].values()))
    assert line["all_buckets_less_steps_s"] == pytest.approx(
        line["all_buckets_s"] - sum(line["next_step_s"].values()))
    assert (line["compile_ahead_s"] > 0) == (line["ahead"] > 0)
  for cold, warm in (lines[:2], lines[2:]):
    assert cold["xla_cache"] == {"before": 0, "written": 2}  # one compiled step a bucket
    assert warm["xla_cache"] == {"before": 2, "written": 0}  # loaded, not compiled


class CompileStagesTest(tf.test.TestCase):
  """`compile_stages.stages`: a first step split by the times XLA wrote its dump files."""

  def _write(self, folder, name, written, text=""):
    path = os.path.join(folder, name)
    with open(path, "w", encoding="utf-8") as f:
      f.write(text)
    os.utime(path, (written, written))

  def test_stages_of_the_largest_module_in_the_window(self):
    folder = self.get_temp_dir()
    step = "module_0007.a_inference_whole_step_1__"
    hlo = "x = f32[] parameter(0)\ny = f32[] add(x, x)\n"
    self._write(folder, f"{step}.before_optimizations.txt", 103.0, hlo * 50)
    self._write(folder, f"{step}.sm_9.0a_gpu_after_optimizations.txt", 110.0, hlo * 80)
    self._write(folder, f"{step}.sm_9.0a_gpu_after_optimizations-buffer-assignment.txt", 110.5)
    self._write(folder, f"{step}.ir-no-opt.ll", 113.0)
    self._write(folder, f"{step}.3.ptx", 114.5)
    # A smaller module in the same window, and a larger one compiled before it.
    small = "module_0008.a_inference_small_2__"
    self._write(folder, f"{small}.before_optimizations.txt", 104.0, hlo)
    self._write(folder, f"{small}.cpu_after_optimizations.txt", 104.5, hlo)
    old = "module_0001.a_inference_earlier_3__"
    self._write(folder, f"{old}.before_optimizations.txt", 50.0, hlo * 500)
    stages = compile_stages.stages(folder, start=100.0, end=115.0)
    self.assertEqual(step, stages.pop("module"))
    self.assertEqual([100, 160], stages.pop("hlo_instructions"))
    self.assertAllClose({"trace_and_bridge": 3.0, "hlo_passes": 7.0, "to_llvm_ir": 3.0,
                         "codegen": 1.5, "load_and_run": 0.5}, stages)

  def test_missing_files_and_an_empty_window(self):
    folder = self.get_temp_dir()
    module = "module_0002.a_inference_step_1__"
    self._write(folder, f"{module}.before_optimizations.txt", 12.0, "a = b\n")
    self._write(folder, f"{module}.cpu_after_optimizations.txt", 15.0, "a = b\n")
    stages = compile_stages.stages(folder, start=10.0, end=16.0)
    self.assertEqual((2.0, 3.0, None, None), tuple(stages[s] for s in compile_stages.STAGES[:4]))
    self.assertIsNone(compile_stages.stages(folder, start=20.0, end=30.0))  # e.g. cached

  def test_dump_folder_keeps_the_users_and_adds_a_temporary_one(self):
    saved = os.environ.get("XLA_FLAGS")
    try:
      os.environ["XLA_FLAGS"] = "--xla_gpu_autotune_level=1 --xla_dump_to=/some/where"
      self.assertEqual(("/some/where", False), compile_stages.dump_folder())
      os.environ["XLA_FLAGS"] = "--xla_gpu_autotune_level=1"
      folder, temporary = compile_stages.dump_folder()
      self.assertTrue(temporary)
      self.assertTrue(os.path.isdir(folder))
      self.assertEqual(f"--xla_gpu_autotune_level=1 --xla_dump_to={folder}",
                       os.environ["XLA_FLAGS"])
      os.rmdir(folder)
    finally:
      if saved is None:
        os.environ.pop("XLA_FLAGS", None)
      else:
        os.environ["XLA_FLAGS"] = saved


@pytest.mark.slow
class ScalingBenchmarkTest(tf.test.TestCase):

  def test_times_one_device_and_mirrored_replicas_on_logical_cpus(self):
    """benchmarks.scaling, shrunk: the one-device step and the mirrored step over 1 and 2
    logical CPU devices (the all-reduce checked first), each on B rows per replica."""
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.scaling", "--workloads=cpu_small",
         "--variants=engine,engine_dyn2", "--replicas=1,2", "--steps=2", "--warmup=0",
         "--override=batch=2,steps=4,embed=8,hidden=6,vocab=50"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    self.assertEqual(result.returncode, 0, result.stderr)
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    # The while-loop variant builds its model with the variant's unroll (2 steps an iteration).
    self.assertEqual(sorted(row["replicas"] for row in lines if row["variant"] == "engine_dyn2"),
                     [0, 1, 2])
    rows = {row["replicas"]: row for row in lines if row["variant"] == "engine"}
    self.assertEqual(sorted(rows), [0, 1, 2])
    self.assertEqual([rows[r].get("global_batch") for r in (0, 1, 2)], [None, 2, 4])
    self.assertEqual(rows[2]["all_reduce"], "CollectiveAllReduce")
    self.assertFalse(rows[2]["all_reduce_in_xla"])  # no collective compiles for CPUs
    for row in rows.values():
      self.assertGreater(row["target_tokens_per_sec"], 0)
    self.assertIn("vs 1 replica", result.stdout)

  def test_times_worker_processes(self):
    """--processes=2: two localhost MultiWorkerMirroredStrategy workers (one CPU each); the
    chief's line comes back through the launcher. With --replicas= no mirrored step is
    timed, only the one-device step."""
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.scaling", "--workloads=cpu_small",
         "--variants=engine", "--replicas=", "--processes=2", "--steps=2", "--warmup=0",
         "--staged=on,off",
         "--override=batch=2,steps=4,embed=8,hidden=6,vocab=50"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    workers = [row for row in lines if row.get("processes")]
    self.assertEqual([row["replicas"] for row in lines if not row.get("processes")], [0])
    self.assertEqual([row["staged"] for row in workers], ["on", "off"])
    for row in workers:
      self.assertEqual((row["replicas"], row["global_batch"]), (2, 4))
      self.assertGreater(row["target_tokens_per_sec"], 0)
    self.assertIn("2 proc", result.stdout)

  def test_refuses_lm_workloads_and_non_positive_replica_counts(self):
    for flag, message in (("--workloads=ptb_large", "not a seq2seq workload"),
                          ("--replicas=0", "positive counts"),
                          ("--replicas=", "or none, with --processes"),
                          ("--all_reduce=inside", "is not one of"),
                          ("--staged=maybe", "is not one of"),
                          ("--processes=1", "0 or at least 2")):
      result = subprocess.run(
          [sys.executable, "-m", "benchmarks.scaling", "--variants=engine", flag],
          cwd=ROOT, capture_output=True, text=True, timeout=600,
          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
      self.assertNotEqual(result.returncode, 0)
      self.assertIn(message, result.stderr)


class KernelProfileTest(tf.test.TestCase):
  """benchmarks.kernel_profile on a hand-built trace whose answer is known."""

  def _space(self):
    space = xplane_pb2.XSpace()
    host = space.planes.add(name="/host:CPU")
    host.event_metadata[1].name = "GpuCompiler::RunBackend"
    host.event_metadata[2].name = "FusionCompiler::Compile"
    thread = host.lines.add(name="Stream #1")  # a host line named like a stream: not a kernel
    thread.events.add(metadata_id=1, offset_ps=0, duration_ps=3 * 10**12)
    for _ in range(2):
      thread.events.add(metadata_id=2, offset_ps=0, duration_ps=10**12)
    host.lines.add(name="other thread").events.add(metadata_id=2, offset_ps=0,
                                                   duration_ps=2 * 10**12)
    gpu = space.planes.add(name="/device:GPU:0")
    for key, name in ((1, "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n"), (2, "loop_add_fusion_12"),
                      (3, "loop_add_fusion_7"), (4, "gemm_fusion_dot_3")):
      gpu.event_metadata[key].name = name
    # Stream 7, from t = 1 ms: a GEMM [0, 2) ms and adds [2, 3) and [5, 6) ms.
    compute = gpu.lines.add(name="Stream #7(Compute)", timestamp_ns=10**6)
    for key, start_ms, length_ms in ((1, 0, 2), (2, 2, 1), (3, 5, 1)):
      compute.events.add(metadata_id=key, offset_ps=start_ms * 10**9,
                         duration_ps=length_ms * 10**9)
    # Stream 9, from t = 2 ms: a fused dot [0, 2) ms, overlapping stream 7's kernels.
    other = gpu.lines.add(name="Stream #9(Compute)", timestamp_ns=2 * 10**6)
    other.events.add(metadata_id=4, offset_ps=0, duration_ps=2 * 10**9)
    # A derived line repeats kernels; it must not count twice.
    gpu.lines.add(name="XLA Ops").events.add(metadata_id=1, offset_ps=0, duration_ps=10**12)
    return space

  def test_busy_time_gemm_time_and_groups_per_step(self):
    summary = kernel_profile.summarize_space(self._space(), steps=2, top=2)
    self.assertLen(summary["gpus"], 1)
    gpu = summary["gpus"][0]
    self.assertEqual(gpu["device"], 0)
    self.assertAllClose(gpu["kernels"], 2.0)     # 4 kernels over 2 steps
    self.assertAllClose(gpu["busy_ms"], 2.0)     # [1, 4) and [6, 7) ms: 4 ms over 2 steps
    self.assertAllClose(gpu["gemm_ms"], 2.0)     # 2 + 2 ms
    self.assertAllClose(gpu["other_ms"], 1.0)    # 1 + 1 ms
    self.assertAllClose(gpu["span_ms"], 3.0)     # 1 ms to 7 ms
    # The two add fusions are one group; ties keep the first seen (the library GEMM).
    self.assertEqual([name for name, _, _ in gpu["top"]],
                     ["sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n", "loop_add_fusion"])
    self.assertAllClose(gpu["top"][1][1:], [1.0, 1.0])

  def test_idle_time_split_into_launch_gaps_and_waits(self):
    summary = kernel_profile.summarize_space(self._space(), steps=2)
    gpu = summary["gpus"][0]  # busy [1, 4) and [6, 7) ms: one 2 ms gap, a wait
    self.assertAllClose([gpu["launch_gap_ms"], gpu["launch_gaps"], gpu["wait_ms"]], [0, 0, 1.0])
    space = self._space()
    stream = [line for line in space.planes[1].lines if line.name == "Stream #7(Compute)"][0]
    # Kernels at 7.005 and 7.030 ms: gaps of 5 us (a launch gap) and 24 us (a wait).
    for start_us in (6005, 6030):
      stream.events.add(metadata_id=2, offset_ps=start_us * 10**6, duration_ps=10**6)
    gpu = kernel_profile.summarize_space(space, steps=2)["gpus"][0]
    self.assertAllClose(gpu["launch_gap_ms"], 0.005 / 2)
    self.assertAllClose(gpu["launch_gaps"], 0.5)
    self.assertAllClose(gpu["wait_ms"], (2 + 0.024) / 2)

  def test_time_all_gpus_are_busy_at_once(self):
    space = self._space()  # GPU 0 busy [1, 4) and [6, 7) ms
    self.assertNotIn("all_busy_ms", kernel_profile.summarize_space(space, steps=2))
    gpu = space.planes.add(name="/device:GPU:1")
    gpu.event_metadata[1].name = "loop_add_fusion"
    stream = gpu.lines.add(name="Stream #3(Compute)", timestamp_ns=0)
    for start_ms, length_ms in ((0, 2), (3, 4), (8, 1)):  # [0, 2), [3, 7), [8, 9) ms
      stream.events.add(metadata_id=1, offset_ps=start_ms * 10**9, duration_ps=length_ms * 10**9)
    summary = kernel_profile.summarize_space(space, steps=2)
    self.assertAllClose(summary["gpus"][1]["busy_ms"], 3.5)
    # Both busy in [1, 2), [3, 4) and [6, 7) ms: 3 ms over 2 steps.
    self.assertAllClose(summary["all_busy_ms"], 1.5)

  def test_host_activities_sum_over_threads_longest_first(self):
    self.assertEqual(kernel_profile.host_activities(self._space()),
                     [["FusionCompiler::Compile", 4.0, 3], ["GpuCompiler::RunBackend", 3.0, 1]])
    self.assertLen(kernel_profile.host_activities(self._space(), top=1), 1)

  def test_kernel_names(self):
    for name in ("nvjet_hsh_128x256_64x4_1x2_h_bz_coopA_TNT", "cutlass_80_tensorop_s1688gemm",
                 "gemm_fusion_dot_12", "sm90_xmma_gemm_f32f32_tf32f32"):
      self.assertTrue(kernel_profile.is_gemm(name), name)
    for name in ("loop_multiply_fusion_3", "input_reduce_fusion", "redzone_checker"):
      self.assertFalse(kernel_profile.is_gemm(name), name)
    self.assertEqual(kernel_profile.kernel_group("loop_add_fusion_12"), "loop_add_fusion")
    self.assertEqual(kernel_profile.kernel_group("wrapped_slice.3"), "wrapped_slice")

  def test_summarize_reads_the_newest_trace_and_names_a_missing_one(self):
    logdir = self.get_temp_dir()
    with self.assertRaisesRegex(FileNotFoundError, "no profiler trace"):
      kernel_profile.summarize(logdir, steps=1)
    run = os.path.join(logdir, "plugins", "profile", "run1")
    os.makedirs(run)
    with open(os.path.join(run, "host.xplane.pb"), "wb") as f:
      f.write(self._space().SerializeToString())
    self.assertAllClose(kernel_profile.summarize(logdir, steps=1)["gpus"][0]["busy_ms"], 4.0)


@pytest.mark.slow
class OpCountTest(tf.test.TestCase):

  def _ops(self, *flags):
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.op_count", "--length=2", "--batch=2", "--vocab=50",
         *flags], cwd=ROOT, capture_output=True, text=True, timeout=600,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    self.assertEqual(result.returncode, 0, result.stderr)
    return json.loads(result.stdout.splitlines()[-1])

  def test_counts_the_attention_step_with_and_without_dropout(self):
    dropout, plain = self._ops("--keep_prob=0.6", "--top=3"), self._ops("--keep_prob=1.0")
    self.assertEqual(dropout["length"], 2)
    self.assertLen(dropout["top"], 3)
    self.assertNotIn("Const", dropout["top"])
    # Function bodies count too (the compiled parts, the gradients).
    self.assertGreater(plain["ops"], 1000)
    self.assertGreater(dropout["ops"], plain["ops"])



HAS_TORCH = importlib.util.find_spec("torch") is not None
TINY = dict(batch=4, steps=5, embed=8, hidden=6, vocab=50, layers=2)


def engine_weights(model):
  """A `Seq2Seq` or `LanguageModel`'s weights as NumPy, in `torch_models`' `load_engine` form."""
  cells = lambda stack: [(c.w_input.numpy(), c.w_hidden.numpy(), c.bias.numpy()) for c in stack]
  table = (model.embedding if isinstance(model, language_model.LanguageModel)
           else model.source_embedding).table
  weights = {"embedding": table.numpy(), "forget_bias": model.config.forget_bias,
             "projection_kernel": model.projection_kernel.numpy(),
             "projection_bias": model.projection_bias.numpy()}
  if isinstance(model, language_model.LanguageModel):
    return dict(weights, encoder=cells(model.cells))
  weights.update(encoder=cells(model.encoder_cells), decoder=cells(model.decoder_cells))
  if model.bidirectional:
    weights.update(
        encoder_backward=cells(model.encoder_backward_cells),
        bridge=[[(k.numpy(), b.numpy()) for k, b in zip(kernels, biases)]
                for kernels, biases in zip(model.bridge.kernels, model.bridge.biases)],
        attention_memory_kernel=model.attention.memory_kernel.numpy(),
        attention_output_kernel=model.attention.output_kernel.numpy())
  return weights


@unittest.skipUnless(HAS_TORCH, "PyTorch is not installed (pip install torch)")
class TorchPeerTest(tf.test.TestCase):
  """The PyTorch peers do the engine's work: started from the engine's weights, on the same
  batch, they give the engine's loss and global gradient norm."""

  def _engine(self, kind, **options):
    """(built engine model, its first train step's loss and gradient norm) at the TINY size,
    float32, no dropout, the step run on `synthetic_batch` (or `synthetic_window`)."""
    config = config_lib.ModelConfig(num_layers=TINY["layers"], hidden_size=TINY["hidden"],
                                    embedding_size=TINY["embed"], **options)
    model_class = language_model.LanguageModel if kind == "lm" else encoder_decoder.Seq2Seq
    model = model_class(config, TINY["vocab"], seed=3)
    model.build()
    weights = engine_weights(model)  # before the step changes them
    optimizer = optimizers.make_optimizer(config_lib.TrainConfig(), model.trainable_variables)
    sampled = workloads.num_sampled("reddit_100k", TINY["vocab"]) if kind == "sampled" else 0
    if kind == "lm":
      step = train_step_lib.make_lm_train_step(model, optimizer, max_grad_norm=5.0)
      window = workloads.synthetic_window(TINY["batch"], TINY["steps"], TINY["vocab"])
      loss, norm, _, _ = step(*window, model.initial_state(TINY["batch"]))
    else:
      step = train_step_lib.make_train_step(model, optimizer, max_grad_norm=5.0,
                                            num_sampled=sampled)
      batch = workloads.synthetic_batch(TINY["batch"], TINY["steps"], TINY["vocab"])
      loss, norm, _ = step(batches.Batch(*(tf.constant(x) for x in batch)))
    return weights, float(loss), float(norm)

  def _peer(self, kind, weights, candidates=None):
    """(loss, global gradient norm of the engine's parameters) of the peer's first step."""
    import torch  # pylint: disable=import-outside-toplevel
    from benchmarks import torch_peers  # pylint: disable=import-outside-toplevel
    workload = {"seq2seq": "cpu_small", "attention": "m30k_attention", "lm": "ptb_large",
                "sampled": "reddit_100k"}[kind]
    override = [f"{name}={value}" for name, value in TINY.items()]
    model, loss_fn, inputs, _ = torch_peers.build(workload, 1.0, torch.device("cpu"), override)
    if candidates is not None:
      loss_fn = torch_peers.seq2seq_loss(model, len(candidates), torch.as_tensor(candidates))
    model.load_engine(weights)
    loss = loss_fn(inputs)
    loss.backward()
    # nn.LSTM's second bias (bias_hh) repeats the gradient of the engine's one bias.
    grads = [p.grad for name, p in model.named_parameters() if "bias_hh" not in name]
    return float(loss.detach()), float(torch.linalg.vector_norm(torch.stack(
        [torch.linalg.vector_norm(g) for g in grads])))

  def _check(self, kind, candidates=None, **options):
    weights, engine_loss, engine_norm = self._engine(kind, **options)
    peer_loss, peer_norm = self._peer(kind, weights, candidates)
    self.assertAllClose(engine_loss, peer_loss, rtol=1e-5)
    self.assertAllClose(engine_norm, peer_norm, rtol=1e-5)
    self.assertGreater(engine_loss, 1.0)  # a real loss, not an empty batch

  def test_seq2seq_peer_matches_the_engine(self):
    self._check("seq2seq")

  def test_attention_peer_matches_the_engine(self):
    """OpenNMT-py's form: bidirectional cuDNN encoder, LSTMCell loop, Luong general
    attention with input feeding, and the engine's bridge."""
    self._check("attention", encoder="bi", attention="luong")

  def test_language_model_peer_matches_the_engine(self):
    self._check("lm", model="lm")

  def test_cli_refuses_unknown_names_and_bad_sizes(self):
    from benchmarks import torch_peers  # pylint: disable=import-outside-toplevel
    args = torch_peers.parse_args(["--workloads=reddit_100k,m30k_attention",
                                   "--variants=torch_bf16,torch_tf32", "--override=vocab=50"])
    self.assertEqual((args.workloads, args.variants, args.override),
                     (["reddit_100k", "m30k_attention"], ["torch_bf16", "torch_tf32"],
                      ["vocab=50"]))
    for flag, message in (("--variants=torch_fp16", "unknown variant 'torch_fp16'"),
                          ("--workloads=seed_b512", "unknown workload 'seed_b512'"),
                          ("--override=vocab=0", "is not SIZE=N")):
      errors = io.StringIO()
      with contextlib.redirect_stderr(errors), self.assertRaises(SystemExit) as stopped:
        torch_peers.parse_args([flag])
      self.assertEqual(stopped.exception.code, 2)
      self.assertIn(message, errors.getvalue())

  def test_sampled_softmax_peer_matches_the_engine(self):
    """reddit_100k's loss: the engine's first step draws its candidates from (seed 0,
    step 0); the peer scores the same ones."""
    sampled = workloads.num_sampled("reddit_100k", TINY["vocab"])
    candidates = losses.log_uniform_sample(
        sampled, TINY["vocab"], train_step_lib.sampling_seed(0, tf.constant(0, tf.int64)))
    self._check("sampled", candidates=candidates.numpy().astype(np.int64))



class WorkloadsTest(tf.test.TestCase):
  """`benchmarks.workloads`: the sizes both the engine and its peers read."""

  def test_reddit_100k_is_the_sampled_softmax_workload(self):
    self.assertEqual(workloads.sizes("reddit_100k"),
                     ("seq2seq", 256, 20, 1024, 1024, 100000, 2))
    self.assertEqual(workloads.num_sampled("reddit_100k", 100000), 1024)
    self.assertEqual(workloads.num_sampled("seed_b256", 20000), 0)
    # Shrunk by --override, it still samples fewer candidates than its vocabulary.
    self.assertEqual(workloads.num_sampled("reddit_100k", 50), 25)

  def test_sampled_flops_score_the_candidates_not_the_vocabulary(self):
    recurrent = 2 * (4 * 6 * (8 + 6) + 4 * 6 * (6 + 6))
    self.assertEqual(workloads.model_flops("seq2seq", 2, 4, 8, 6, 50, 2, sampled=9),
                     6 * 2 * 4 * (recurrent + 6 * 10))
    self.assertEqual(workloads.model_flops("seq2seq", 2, 4, 8, 6, 50, 2),
                     6 * 2 * 4 * (recurrent + 6 * 50))

  def test_override_pairs(self):
    self.assertEqual(workloads.sizes("reddit_100k", ["vocab=50", "batch=4"])[1:6:4], (4, 50))
    for pair in ("vocab=0", "width=3", "batch=x"):
      with self.assertRaisesRegex(workloads.OverrideError, "is not SIZE=N"):
        workloads.parse_override([pair])


class PeerProcessTest(tf.test.TestCase):

  def test_without_torch_every_peer_row_says_so(self):
    saved = peer_process.importlib.util.find_spec
    peer_process.importlib.util.find_spec = lambda name: None
    try:
      rows = peer_process.torch_rows(["cpu_small", "seed_b20"], ["torch_bf16"], 2, 0, 1.0)
    finally:
      peer_process.importlib.util.find_spec = saved
    self.assertEqual(sorted(rows), [("cpu_small", "torch_bf16"), ("seed_b20", "torch_bf16")])
    for row in rows.values():
      self.assertIn("PyTorch is not installed", row["skipped"])
    self.assertEqual(peer_process.torch_rows(["cpu_small"], [], 2, 0, 1.0), {})


class TrainLoopFiguresTest(tf.test.TestCase):
  """`benchmarks.loop_log`: the figure `benchmarks.train_loop` reads from train.py's log."""

  def _line(self, step, tokens_per_sec):
    return (f"{step}/300 (epoch 1/40) loss=5.0000 ppl=148.41 grad_norm=1.000 lr=0.002 "
            f"tok/s={tokens_per_sec} time/batch=0.005s ETA=0:01\n")

  def test_only_the_windows_after_the_warm_up_count(self):
    lines = [(0.0, "model: lstm 2x16\n"), (30.0, self._line(100, 10)),  # compiled in here
             (31.0, self._line(200, 1000)), (33.0, self._line(300, 4000)),
             (33.5, "done at step 300; saved ckpt-300\n")]
    tokens_per_sec, steps_per_sec, steps = loop_log.loop_figures(lines, warmup=100)
    self.assertEqual(steps, 200)
    self.assertAllClose(steps_per_sec, 200 / 3.0)
    self.assertAllClose(tokens_per_sec, (1000 * 1.0 + 4000 * 2.0) / 3.0)
    self.assertIsNone(loop_log.loop_figures(lines, warmup=300))

  def test_step_flags_of_the_engine_variants(self):
    self.assertEqual(loop_log.step_flags(True, "bf16", "gpu", "dynamic5"),
                     ["--jit_compile=true", "--precision=bf16", "--embedding_device=gpu",
                      "--unroll=dynamic", "--unroll_steps=5"])
    self.assertEqual(loop_log.step_flags(False, "fp32", "cpu", "static", per_gate=True),
                     ["--jit_compile=false", "--precision=fp32", "--embedding_device=cpu",
                      "--unroll=static", "--per_gate_hidden_gradient"])


@pytest.mark.slow
class PeersInOneRunTest(tf.test.TestCase):
  """The engine and its peers from one invocation, shrunk to a CPU."""

  def _run(self, module, *flags):
    result = subprocess.run(
        [sys.executable, "-m", module, "--steps=2", "--warmup=0", *flags],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    return result.stdout, [json.loads(line) for line in result.stdout.splitlines()
                           if line.startswith("{")]

  @unittest.skipUnless(HAS_TORCH, "PyTorch is not installed (pip install torch)")
  def test_train_step_runs_the_torch_peer_and_prints_the_ratios(self):
    output, lines = self._run("benchmarks.train_step", "--workloads=reddit_100k",
                              "--variants=engine,torch_bf16",
                              "--override=batch=4,steps=5,embed=8,hidden=6,vocab=50")
    rows = {line["variant"]: line for line in lines if "variant" in line}
    peer = rows["torch_bf16"]
    self.assertEqual((peer["precision"], peer["num_sampled"]), ("bf16", 25))
    self.assertEqual(peer["sizes"], rows["engine"]["sizes"])
    for field in ("step_ms", "pipelined_step_ms", "target_tokens_per_sec", "percent_of_ceiling",
                  "peak_memory_mb", "first_step_s"):
      self.assertGreater(peer[field], 0, field)
    ratio = [line["ratio"] for line in lines if "ratio" in line]
    self.assertEqual([(r["engine"], r["peer"]) for r in ratio], [("engine", "torch_bf16")])
    self.assertAllClose(ratio[0]["waited"], peer["step_ms"] / rows["engine"]["step_ms"])
    self.assertIn("engine / peer in this run", output)

  def test_unknown_peers_and_loop_settings_are_refused(self):
    for module, flag, message in (
        ("benchmarks.train_step", "--variants=torch_fp16", "unknown variant 'torch_fp16'"),
        ("benchmarks.train_loop", "--peers=pytorch", "'pytorch' is not among keras, torch_fp32"),
        ("benchmarks.train_loop", "--loop_warmup=7", "a multiple of --log_every")):
      result = subprocess.run([sys.executable, "-m", module, flag], cwd=ROOT,
                              capture_output=True, text=True, timeout=600,
                              env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
      self.assertNotEqual(result.returncode, 0)
      self.assertIn(message, result.stderr)

  def test_train_loop_reads_the_loops_pace(self):
    """benchmarks.train_loop runs train.py for a few steps after a warm-up and times the
    same step alone."""
    output, lines = self._run(
        "benchmarks.train_loop", "--workloads=cpu_small", "--variants=engine", "--peers=keras",
        "--loop_steps=10", "--loop_warmup=5", "--log_every=5", "--pairs=200",
        "--override=batch=4,steps=6,embed=8,hidden=6,vocab=40")
    row, peer = lines
    self.assertEqual(peer["variant"], "keras")
    self.assertRegex(output, rf"/ keras +{peer['pipelined_step_ms'] / row['loop_step_ms']:.2f}x")
    self.assertEqual(row["loop_measured_steps"], 10)
    self.assertIn("--max_steps=15", row["loop_command"])
    self.assertAllClose(row["loop_step_ms"], 1e3 / row["loop_steps_per_sec"])
    self.assertGreater(row["loop_tokens_per_sec"], 0)
    self.assertGreater(row["step_pipelined_step_ms"], 0)


if __name__ == "__main__":
  tf.test.main()


class PlacementRatioTest(tf.test.TestCase):

  def test_each_host_table_variant_against_its_twin_on_the_gpu(self):
    """A line per host-table variant whose twin (the same but for the placement; with the
    per-gate gradient or not alike) was measured on the same workload; none for the rest."""
    row = lambda workload, variant, ms: {"workload": workload, "variant": variant,
                                         "step_ms": ms, "pipelined_step_ms": ms / 2}
    skipped = {"workload": "seed_b20", "variant": "engine_xla_bf16_gpuemb", "skipped": "GPU"}
    lines = helpers.call_in_fresh_process("benchmarks", "train_step.placement_ratios", [
        row("seed_b256", "engine_xla_bf16", 12.0), row("seed_b256", "engine_xla_bf16_gpuemb", 6.0),
        row("seed_b256", "engine_xla_bf16_pergate", 9.0), row("seed_b20", "engine_xla_bf16", 4.0),
        row("seed_b256", "keras", 10.0), skipped])
    self.assertEqual(lines, [
        "seed_b256 engine_xla_bf16 / engine_xla_bf16_gpuemb (tables on the host / on the GPU): "
        "12.00 / 6.00 ms = 2.00x waited for, 6.00 / 3.00 ms = 2.00x back to back"])


@pytest.mark.slow
class HostUpdateBenchmarkTest(tf.test.TestCase):

  def test_times_the_three_ways_on_a_shrunk_workload(self):
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.host_update", "--workloads=seed_b20", "--steps=2",
         "--override=batch=3,steps=4,embed=8,vocab=30"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    self.assertEqual(result.returncode, 0, result.stderr)
    row = json.loads([line for line in result.stdout.splitlines() if line.startswith("{")][0])
    self.assertEqual(row["looked_up"], 3 * 4 + 3 * 5)  # source [B, T] and decoder input [B, T+1]
    self.assertLess(row["distinct"], row["looked_up"])
    self.assertEqual(sorted(row["ms"]), ["gathers", "ops", "reference", "reference_bf16", "rows",
                                        "rows_bf16", "rule", "scatters", "slices"])


@pytest.mark.slow
class LookaheadPartsBenchmarkTest(tf.test.TestCase):

  def test_times_each_part_of_a_step_with_host_tables(self):
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.lookahead_parts", "--workloads=cpu_small",
         "--variants=engine_xla,engine", "--override=batch=4,steps=6,hidden=16,embed=8,vocab=60"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    self.assertEqual(result.returncode, 0, result.stderr)
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    self.assertLen(rows, 1)  # the plain step has no lookahead
    row = rows[0]
    self.assertEqual(row["variant"], "engine_xla")
    # One table shared by source [B, T] and decoder input [B, T + 1]: at most 4 * 13 rows.
    self.assertLessEqual(row["distinct_rows"][0], 4 * 13)
    self.assertLessEqual(row["read_by_next"][0], row["distinct_rows"][0])
    for name in ("look_up_moved_ms", "look_up_in_place_ms", "dense_ms", "update_all_ms",
                 "update_read_next_ms", "lookahead_ms", "in_order_ms"):
      self.assertGreater(row[name], 0, msg=name)
