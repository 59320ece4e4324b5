"""configs/multi30k_seeds.sh's report: the validation curves side by side and the summary
table, from the logs of stand-in training and decoding commands (no TensorFlow)."""
import json
import os
import subprocess
import sys
import textwrap

import tensorflow as tf

from tests import helpers
from tests.test_cli import ROOT, _SHOW_CONFIG

# Stands in for the interpreter: a train log whose losses depend on --seed, or a decode log.
STUB = textwrap.dedent('''\
    #!/bin/bash
    seed=$(printf '%s\\n' "$@" | sed -n 's/^--seed=//p')
    if printf '%s\\n' "$@" | grep -q -- '--mode=decode'; then
      printf '%s\\n' "$@" | grep -q test_2016 && echo "BLEU = 38.5 70/40" || echo "BLEU = 40.1 x"
      exit 0
    fi
    for e in 1 2 3; do echo "validation after epoch $e: loss=$((5 - e)).${seed}0 ppl=9; new best"; done
    [ "$seed" = 2 ] && echo "validation after epoch 4: loss=1.9 ppl=6.7"
    echo "stopped by signal 15 at step $((100 * seed)); saved x"
''')


class SeedSweepReportTest(tf.test.TestCase):

  def test_curves_and_summary(self):
    folder = self.get_temp_dir()
    stub = os.path.join(folder, "python")
    with open(stub, "w", encoding="utf-8") as f:
      f.write(STUB)
    os.chmod(stub, 0o755)
    env = dict(os.environ, PYTHON=stub, ROOT=os.path.join(folder, "runs"),
               FLAGFILE="configs/multi30k_attention.flags")
    result = subprocess.run(["bash", "configs/multi30k_seeds.sh", "5", "1", "2", "3"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=60)
    self.assertEqual(result.returncode, 0, result.stderr)
    lines = [line.split() for line in result.stdout.splitlines()]
    self.assertIn(["epoch", "seed", "1", "seed", "2", "seed", "3"], lines)
    self.assertIn(["1", "4.10", "4.20", "4.30"], lines)
    self.assertIn(["4", "-", "1.9", "-"], lines)
    self.assertIn(["seed", "steps", "wall_s", "best_val", "val_bleu", "test_bleu"], lines)
    rows = {line[0]: line[1:] for line in lines if line and line[0] in ("1", "2", "3")
            and len(line) == 6}
    self.assertEqual(rows["2"][0], "200")
    self.assertEqual(rows["2"][2:], ["1.9", "40.1", "38.5"])
    self.assertIn(["mean", "2.100", "40.100", "38.500"], lines)
    self.assertIn(["spread", "0.400", "0.000", "0.000"], lines)


class BpeRecipeTest(tf.test.TestCase):
  """configs/multi30k_bpe.flags parses, over the word-level recipe, into a valid config."""

  def test_recipe_and_the_fast_flags(self):
    text = os.path.join(self.get_temp_dir(), "pairs.txt")
    with open(text, "w", encoding="utf-8") as f:
      f.write("a b c\n")
    result = subprocess.run(
        [sys.executable, "-c", _SHOW_CONFIG, "--flagfile=configs/multi30k_bpe.flags",
         "--mode=train", f"--val_data={text}|{text}", f"--data={self.get_temp_dir()}",
         "--jit_compile", "--embedding_device=gpu", "--unroll=dynamic", "--unroll_steps=5"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    self.assertEqual(result.returncode, 0, result.stderr)
    config = json.loads(result.stdout.strip().splitlines()[-1])
    model, train = config["model"], config["train"]
    self.assertEqual((model["tie_embeddings"], model["share_embeddings"]), (True, True))
    self.assertEqual(model["embedding_size"], model["hidden_size"])
    self.assertEqual(model["cell"], "lstm")
    self.assertEqual(config["data"]["max_vocab"], 10000)
    self.assertEqual(train["workdir"], "workdir_multi30k_bpe")
    self.assertEqual(train["seed"], 1)
    with open(os.path.join(ROOT, "configs/multi30k_bpe.flags"), encoding="utf-8") as f:
      self.assertIn("--data=prepared_multi30k_bpe\n", f.read())  # multi30k_seeds.sh reads it


class SeedAblationTest(tf.test.TestCase):
  """benchmarks/seed_ablation.py without Multi30k, and its table."""

  def test_no_data_is_a_message_and_exit_0(self):
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.seed_ablation", f"--data_dir={self.get_temp_dir()}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    self.assertEqual(result.returncode, 0, result.stderr)
    self.assertIn(f"no Multi30k in {self.get_temp_dir()}; nothing to do", result.stdout)

  def test_table_gives_mean_and_spread_over_seeds(self):
    records = [dict(setting="a", seed=seed, step=step, val_loss=loss)
               for seed, step, loss in ((1, 10, 5.0), (2, 10, 5.5), (1, 20, 4.0), (2, 20, 4.75))]
    lines = helpers.call_in_fresh_process(
        "benchmarks", "seed_ablation.table", records, ["a"], [1, 2]).splitlines()
    self.assertEqual(lines[0], "| setting | step 10 | step 20 | worst seed (last) |")
    self.assertEqual(lines[2], "| a | 5.250 (0.500) | 4.375 (0.750) | 2 |")
