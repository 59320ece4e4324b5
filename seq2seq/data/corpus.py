"""Reading conversation pairs from the embedded corpus, ChatterBot YAML files, TSV files or
line-aligned parallel text files ("SOURCE|TARGET", e.g. "train.en|train.de").

Malformed records are counted and reported (with the first few file:line places), never
fatal, unless nothing usable is left.
"""
import collections
import dataclasses
import glob
import os

from seq2seq.data import prepared
from seq2seq import errors

EMBEDDED_CORPUS = "chatterbot"  # the English conversations of the chatterbot-corpus package
PARALLEL_SEPARATOR = "|"  # "SOURCE|TARGET": line i of SOURCE pairs with line i of TARGET
_MAX_EXAMPLES = 5


class DataError(errors.UserError, ValueError):
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
    return prepared.split_files(spec, "train")
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


def parallel_files(spec):
  """(source, target) paths if `spec` is "SOURCE|TARGET" (and not itself a file), else None."""
  if PARALLEL_SEPARATOR not in spec or os.path.exists(spec):
    return None
  source, _, target = spec.partition(PARALLEL_SEPARATOR)
  for path in (source, target):
    if not os.path.isfile(path):
      raise DataError(f"{path}: no such file (from the parallel data {spec!r})")
  return source, target


def _decoded_lines(path):
  """Yields (line number, text or None when the line is not UTF-8)."""
  with open(path, "rb") as f:
    for number, raw in enumerate(f, 1):
      try:
        yield number, raw.decode("utf-8").rstrip("\r\n")
      except UnicodeDecodeError:
        yield number, None


def _read_parallel(source, target, report):
  """Line i of `source` with line i of `target`; the files must have as many lines."""
  report.files.extend([source, target])
  where = f"{source}|{target}"
  pairs = []
  source_lines, target_lines = _decoded_lines(source), _decoded_lines(target)
  while True:
    a, b = next(source_lines, None), next(target_lines, None)
    if a is None or b is None:
      if a is not b:
        shorter, longer, ended = (target, source, a[0] - 1) if b is None else (source, target, b[0] - 1)
        raise DataError(f"{shorter}: ends at line {ended} but {longer} goes on: the parallel "
                        "files are not aligned line by line")
      return pairs
    number = a[0]
    if a[1] is None or b[1] is None:
      report.skip(where, number, "invalid UTF-8")
    elif not a[1].strip() or not b[1].strip():
      report.skip(where, number, "empty line")
    else:
      pairs.append((a[1], b[1]))


def load_pairs(spec):
  """Reads (question, answer) string pairs.

  Args:
    spec: "chatterbot" for the embedded corpus, a folder of .yml/.yaml/.tsv files, a
      prepared folder (its train.tsv), a file path or glob, or "SOURCE|TARGET" for two
      line-aligned text files.

  Returns:
    (pairs, LoadReport).

  Raises:
    DataError: no file matches, or no usable pair is left.
  """
  report = LoadReport()
  parallel = parallel_files(spec)
  pairs = _read_parallel(*parallel, report) if parallel else []
  for path in [] if parallel else _expand(spec):
    report.files.append(path)
    reader = _read_tsv if path.endswith((".tsv", ".txt")) else _read_yaml
    pairs.extend(reader(path, report))
  report.pairs = len(pairs)
  if not pairs:
    raise DataError(f"{spec}: no usable conversation pairs. {report.summary()}")
  return pairs, report
