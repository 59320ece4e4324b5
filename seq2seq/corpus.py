"""Reading conversation pairs from the embedded corpus, ChatterBot YAML files or TSV files.

Malformed records are counted and reported (with the first few file:line places), never
fatal, unless nothing usable is left.
"""
import collections
import dataclasses
import glob
import os

from seq2seq import prepared

EMBEDDED_CORPUS = "chatterbot"  # the English conversations of the chatterbot-corpus package
_MAX_EXAMPLES = 5


class DataError(ValueError):
  """Input data that cannot be used; the message names the file and, where known, the line."""


@dataclasses.dataclass
class LoadReport:
  files: list = dataclasses.field(default_factory=list)
  pairs: int = 0
  skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  examples: list = dataclasses.field(default_factory=list)  # "file:line: reason"

  def skip(self, path, line, reason):
    self.skipped[reason] += 1
    if len(self.examples) < _MAX_EXAMPLES:
      self.examples.append(f"{path}:{line}: {reason}")

  def summary(self):
    text = f"read {self.pairs} pairs from {len(self.files)} file(s)"
    if self.skipped:
      reasons = ", ".join(f"{n} {r}" for r, n in sorted(self.skipped.items()))
      text += f"; skipped {sum(self.skipped.values())} malformed record(s): {reasons}"
      text += "".join(f"\n  e.g. {e}" for e in self.examples)
    return text


def embedded_corpus_dir():
  """The folder of English YAML files shipped by the `chatterbot-corpus` package."""
  try:
    import chatterbot_corpus  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise DataError("the embedded corpus needs the chatterbot-corpus package: "
                    "pip install chatterbot-corpus (or pass --data=FILE)") from None
  return os.path.join(os.path.dirname(chatterbot_corpus.__file__), "data", "english")


def _expand(spec):
  if spec == EMBEDDED_CORPUS:
    spec = embedded_corpus_dir()
  if prepared.is_prepared(spec):  # a --mode=prepare folder: its training split
    return [prepared.split_path(spec, "train")]
  if os.path.isdir(spec):
    files = sorted(glob.glob(os.path.join(spec, "*.yml")) + glob.glob(os.path.join(spec, "*.yaml"))
                   + glob.glob(os.path.join(spec, "*.tsv")))
    if not files:
      raise DataError(f"{spec}: no .yml, .yaml or .tsv files in this folder")
    return files
  files = sorted(glob.glob(spec))
  if not files:
    raise DataError(f"{spec}: no such file")
  return files


def _read_yaml(path, report):
  """ChatterBot format: {conversations: [[turn, turn, ...], ...]}; consecutive turns pair up."""
  import yaml  # pylint: disable=import-outside-toplevel
  try:
    with open(path, encoding="utf-8") as f:
      document = yaml.safe_load(f)
  except (yaml.YAMLError, UnicodeDecodeError) as e:
    mark = getattr(e, "problem_mark", None)
    line = mark.line + 1 if mark is not None else "?"
    report.skip(path, line, f"unreadable YAML ({type(e).__name__})")
    return []
  if not isinstance(document, dict) or not isinstance(document.get("conversations"), list):
    report.skip(path, 1, "not a ChatterBot file (no 'conversations' list)")
    return []
  pairs = []
  for number, conversation in enumerate(document["conversations"], 1):
    where = f"conversation {number}"
    if not isinstance(conversation, list) or len(conversation) < 2:
      report.skip(path, where, "conversation with fewer than two turns")
      continue
    turns = [t if isinstance(t, str) else None for t in conversation]
    for first, second in zip(turns, turns[1:]):
      if first is None or second is None or not first.strip() or not second.strip():
        report.skip(path, where, "turn that is not a non-empty string")
        continue
      pairs.append((first, second))
  return pairs


def _read_tsv(path, report):
  """One pair a line: question<TAB>answer. Lines are decoded one by one, so a line of
  invalid UTF-8 is skipped and counted without losing the rest of the file."""
  pairs = []
  with open(path, "rb") as f:
    for line_number, raw in enumerate(f, 1):
      try:
        line = raw.decode("utf-8")
      except UnicodeDecodeError:
        report.skip(path, line_number, "invalid UTF-8")
        continue
      fields = line.rstrip("\r\n").split("\t")
      if len(fields) != 2 or not fields[0].strip() or not fields[1].strip():
        report.skip(path, line_number, "not two non-empty tab-separated fields")
        continue
      pairs.append((fields[0], fields[1]))
  return pairs


def load_pairs(spec):
  """Reads (question, answer) string pairs.

  Args:
    spec: "chatterbot" for the embedded corpus, a folder of .yml/.yaml/.tsv files, a
      prepared folder (its train.tsv), or a file path or glob.

  Returns:
    (pairs, LoadReport).

  Raises:
    DataError: no file matches, or no usable pair is left.
  """
  report = LoadReport()
  pairs = []
  for path in _expand(spec):
    report.files.append(path)
    reader = _read_tsv if path.endswith((".tsv", ".txt")) else _read_yaml
    pairs.extend(reader(path, report))
  report.pairs = len(pairs)
  if not pairs:
    raise DataError(f"{spec}: no usable conversation pairs. {report.summary()}")
  return pairs, report
