"""The train-step benchmark runs end to end on a CPU, LM workloads included (shrunk)."""
import json
import os
import subprocess
import sys

import pytest
import tensorflow as tf
from tensorflow.tsl.profiler.protobuf import xplane_pb2

from benchmarks import compile_stages
from benchmarks import kernel_profile

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


if __name__ == "__main__":
  tf.test.main()


class PlacementRatioTest(tf.test.TestCase):

  def test_each_host_table_variant_against_its_twin_on_the_gpu(self):
    """A line per host-table variant whose twin (the same but for the placement; with the
    per-gate gradient or not alike) was measured on the same workload; none for the rest."""
    from benchmarks import train_step  # pylint: disable=import-outside-toplevel
    row = lambda workload, variant, ms: {"workload": workload, "variant": variant,
                                         "step_ms": ms, "pipelined_step_ms": ms / 2}
    skipped = {"workload": "seed_b20", "variant": "engine_xla_bf16_gpuemb", "skipped": "GPU"}
    lines = train_step.placement_ratios([
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
    self.assertEqual(sorted(row["ms"]), ["gathers", "rows", "rule", "scatters", "slices"])
