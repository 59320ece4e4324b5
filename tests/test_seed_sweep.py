"""configs/multi30k_seeds.sh's report: the validation curves side by side and the summary
table, from the logs of stand-in training and decoding commands (no TensorFlow)."""
import os
import subprocess
import textwrap

import tensorflow as tf

from tests.test_cli import ROOT

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
