"""The train-step benchmark runs end to end on a CPU, LM workloads included (shrunk)."""
import json
import os
import subprocess
import sys

import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
      self.assertAllClose(row["model_tflops"] * 1e12 * row["step_ms"] / 1e3, flops, rtol=1e-6)
      self.assertAllClose(row["target_tokens_per_sec"] * row["step_ms"] / 1e3, 2 * 4, rtol=1e-6)

  def test_attention_workload_times_the_attention_step_jit_and_dynamic(self):
    """m30k_attention, shrunk: the bidirectional Luong model's real step, plain and compiled
    with a while loop; Keras has no peer for it and says so."""
    rows = self._run("--workloads=m30k_attention", "--variants=engine,engine_xla_dyn5,keras",
                     "--override=batch=2,steps=5,embed=8,hidden=6,vocab=50")
    self.assertEqual(rows["keras"]["skipped"], "no Keras peer with attention")
    lstm = lambda inputs: 4 * 6 * (inputs + 6)
    encoder = 2 * (lstm(8) + lstm(12))
    decoder = lstm(8 + 6) + lstm(6)
    attention = 4 * 5 * 12 + 3 * 36 + 2 * 36
    flops = 6 * 2 * 5 * (encoder + decoder + attention + 6 * 50)
    for variant in ("engine", "engine_xla_dyn5"):
      row = rows[variant]
      self.assertAllClose(row["model_tflops"] * 1e12 * row["step_ms"] / 1e3, flops, rtol=1e-6)


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
    # Function bodies count too (the update's tf.cond branches, the gradients).
    self.assertGreater(plain["ops"], 1000)
    self.assertGreater(dropout["ops"], plain["ops"])


if __name__ == "__main__":
  tf.test.main()
