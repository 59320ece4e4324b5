"""Corpus BLEU through sacrebleu, checked against an independent NumPy-free reference."""
import collections
import math
import os
import subprocess
import sys

import tensorflow as tf

from seq2seq.infer import bleu

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def reference_bleu(hypotheses, references, max_order=4):
  """Papineni et al. (2002) corpus BLEU on space-split tokens, no smoothing."""
  matches, totals = [0] * max_order, [0] * max_order
  hyp_length = ref_length = 0
  for hyp, ref in zip(hypotheses, references):
    h, r = hyp.split(), ref.split()
    hyp_length, ref_length = hyp_length + len(h), ref_length + len(r)
    for n in range(1, max_order + 1):
      h_grams = collections.Counter(tuple(h[i:i + n]) for i in range(len(h) - n + 1))
      r_grams = collections.Counter(tuple(r[i:i + n]) for i in range(len(r) - n + 1))
      matches[n - 1] += sum(min(c, r_grams[g]) for g, c in h_grams.items())
      totals[n - 1] += max(len(h) - n + 1, 0)
  log_precision = sum(math.log(m / t) for m, t in zip(matches, totals)) / max_order
  brevity = min(0.0, 1.0 - ref_length / hyp_length)
  return 100 * math.exp(log_precision + brevity)


def _misaligned_files(directory):
  """(source with 2 lines, reference with 1 line) in `directory`."""
  source, reference = os.path.join(directory, "in.en"), os.path.join(directory, "ref.de")
  with open(source, "w", encoding="utf-8") as f:
    f.write("one\ntwo\n")
  with open(reference, "w", encoding="utf-8") as f:
    f.write("eins\n")
  return source, reference


class BleuTest(tf.test.TestCase):

  def test_matches_the_reference_formula_on_tokenised_text(self):
    references = ["ein mann fährt fahrrad auf der straße .",
                  "zwei hunde spielen im schnee .",
                  "eine frau mit einem roten hut liest ein buch ."]
    hypotheses = ["ein mann fährt ein fahrrad auf der straße .",
                  "zwei hunde spielen im schnee",
                  "eine frau liest ein buch ."]
    score, signature = bleu.corpus_bleu(hypotheses, references)
    self.assertAllClose(score, reference_bleu(hypotheses, references), atol=1e-6)
    self.assertIn("tok:none", signature)
    # Tokens are compared as written: punctuation glued to a word is another token.
    glued, _ = bleu.corpus_bleu(["zwei hunde spielen im schnee."], ["zwei hunde spielen im schnee ."])
    self.assertLess(glued, 100.0)
    self.assertAllClose(bleu.corpus_bleu(references, references)[0], 100.0)

  def test_misaligned_inputs_are_refused(self):
    with self.assertRaisesRegex(bleu.BleuError, "2 hypotheses but 1 references"):
      bleu.corpus_bleu(["a b", "c d"], ["a b"])
    directory = self.get_temp_dir()
    source, reference = _misaligned_files(directory)
    with self.assertRaisesRegex(bleu.BleuError, f"{reference} has 1 lines but {source} has 2"):
      bleu.check_ready(source, reference)

  def test_decode_flag_refuses_a_misaligned_reference_before_loading_anything(self):
    directory = self.get_temp_dir()
    source, reference = _misaligned_files(directory)
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "train.py"), "--mode=decode",
         f"--workdir={os.path.join(directory, 'none')}", f"--decode_input={source}",
         f"--decode_output={os.path.join(directory, 'out.de')}", f"--decode_reference={reference}"],
        capture_output=True, text=True, timeout=120, check=False)
    self.assertNotEqual(result.returncode, 0)
    self.assertIn("--decode_reference:", result.stderr)
    self.assertIn("has 1 lines but", result.stderr)
    self.assertNotIn("Traceback", result.stderr)


if __name__ == "__main__":
  tf.test.main()
