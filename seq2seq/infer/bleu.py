"""Corpus BLEU with sacrebleu, for pre-tokenised text (`tokenize='none'`).

The hypotheses and references are compared token by token as written (split on spaces), so
the score matches the usual "tokenised BLEU" of papers on pre-tokenised sets such as Multi30k.
"""
from seq2seq import errors



class BleuError(errors.UserError, ValueError):
  """BLEU cannot be computed: sacrebleu is missing, or the files do not align."""


def _metric():
  try:
    from sacrebleu.metrics import BLEU  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise BleuError("BLEU needs sacrebleu: pip install sacrebleu "
                    "(or pip install -e '.[bleu]')") from None
  return BLEU(tokenize="none")


def check_ready(input_path, reference_path):
  """Before decoding: sacrebleu is importable and the reference has a line per input line."""
  _metric()
  counts = []
  for path in (input_path, reference_path):
    with open(path, encoding="utf-8") as f:
      counts.append(sum(1 for _ in f))
  if counts[0] != counts[1]:
    raise BleuError(f"{reference_path} has {counts[1]} lines but {input_path} has {counts[0]}: "
                    "the reference must align line by line with the input")


def corpus_bleu(hypotheses, references):
  """BLEU of hypothesis lines against one reference line each.

  Args:
    hypotheses: list of N strings.
    references: list of N strings.

  Returns:
    (score in 0..100, sacrebleu's signature string).

  Raises:
    BleuError: the lists differ in length, or sacrebleu is not installed.
  """
  if len(hypotheses) != len(references):
    raise BleuError(f"{len(hypotheses)} hypotheses but {len(references)} references")
  metric = _metric()
  result = metric.corpus_score(list(hypotheses), [list(references)])
  return result.score, str(metric.get_signature())


def file_bleu(hypothesis_path, reference_path):
  """corpus_bleu of two line-aligned files; BleuError naming the files if they do not align."""
  with open(hypothesis_path, encoding="utf-8") as f:
    hypotheses = [line.rstrip("\n") for line in f]
  with open(reference_path, encoding="utf-8") as f:
    references = [line.rstrip("\n") for line in f]
  if len(hypotheses) != len(references):
    raise BleuError(f"{reference_path} has {len(references)} lines but {hypothesis_path} has "
                     f"{len(hypotheses)}: a reference must align line by line with the input")
  return corpus_bleu(hypotheses, references)
