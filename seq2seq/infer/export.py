"""A trained run as a SavedModel: strings in, replies and scores out (--mode=export).

The SavedModel holds the model's variables, the vocabulary (a lookup table) and the text
normalisation of `vocab.Tokenizer` written in TensorFlow ops, so serving needs neither this
package nor the workdir:

    loaded = tf.saved_model.load(EXPORT_DIR)
    out = loaded.signatures["serving_default"](text=tf.constant(["Hello, how are you?"]))
    out["replies"]  # string [B, N]: the replies, best first; words joined by single spaces
    out["scores"]   # float32 [B, N]: beam search scores (log P / length penalty); 0 otherwise

N is `n_best` for beam search and 1 for greedy decoding and sampling. A second signature,
`encode(text) -> {"ids": int32 [B, max_length], "lengths": int32 [B]}`, gives the source ids
the model reads (for checking a client's inputs). The search is `decoding.make_search` with the
settings of `DecodeConfig`, the one a `decoding.Decoder` on the checkpoint runs.

Two more signatures take the search settings per call (what `--mode=serve` calls):

    reply(text [B], beam_width, n_best, top_k: int32 [], temperature: float32 [], seed: int64 [])
      -> {"replies": string [B, N], "scores": float32 [B, N]}, N = min(n_best, beam_width)
    align(the same)    # only for one model with attention: `reply`'s outputs and
      {"source_words": string [B, Ts], "source_lengths": int32 [B], "output_words": string
       [B, N, T], "output_lengths": int32 [B, N], "alignments": float32 [B, N, T, Ts]}: the
       attention behind each word of each reply (<EOS> included)

`reply` with beam_width 1 is greedy (temperature 0) or samples (temperature > 0, among the
top_k most likely words, 0 = all, drawing with `seed`); with beam_width > 1 it runs beam search
with the exported --length_penalty. `assets.extra/export_info.json` (`INFO_FILE`) records the
model, the checkpoints read and when, for a server to show and to tell a stale export.
"""
import datetime
import json
import os

import tensorflow as tf

from seq2seq import config as config_lib
from seq2seq.data import datasets
from seq2seq.data import vocab as vocab_lib
from seq2seq import errors
from seq2seq.infer import beam_search
from seq2seq.infer import chat
from seq2seq.infer import decoding
from seq2seq.runtime import outputs
from seq2seq.runtime import workdir as workdir_lib

# The characters `str.split()` splits on (Unicode White_Space and the ASCII separators
# \x1c..\x1f), so the TensorFlow normalisation splits exactly where `vocab.Tokenizer` does.
WHITESPACE = "".join(c for c in map(chr, range(0x110000)) if c.isspace())

_TEXT = tf.TensorSpec([None], tf.string, name="text")
_INT = lambda name: tf.TensorSpec([], tf.int32, name=name)
_TEMPERATURE = tf.TensorSpec([], tf.float32, name="temperature")
_SEED = tf.TensorSpec([], tf.int64, name="seed")
_PER_CALL = [_TEXT, _INT("beam_width"), _INT("n_best"), _TEMPERATURE, _INT("top_k"), _SEED]

# The metadata beside the SavedModel (TensorFlow Serving's place for extra files) and its
# format; an export without it, or of another format, predates the per-call signatures.
INFO_FILE = os.path.join("assets.extra", "export_info.json")
INFO_FORMAT = 1


class ExportError(errors.UserError, ValueError):
  """The run cannot be exported as asked; the message says what to change."""


def _character_class(characters):
  """An RE2 class matching any of `characters`, each escaped by code point (no metacharacters)."""
  return "[" + "".join(f"\\x{{{ord(c):x}}}" for c in sorted(set(characters))) + "]"


def normalize(text, lowercase=True, filters=vocab_lib.DEFAULT_FILTERS):
  """`vocab.Tokenizer(lowercase, filters)` on each string, in TensorFlow ops.

  Invalid UTF-8 becomes U+FFFD first; then the text is lowercased (full Unicode case mapping,
  as `str.lower`), each character of `filters` is replaced by a space, and the result is split
  on whitespace.

  Args:
    text: string [B].

  Returns:
    words: string RaggedTensor [B, (words)].
  """
  text = tf.strings.unicode_transcode(text, "UTF-8", "UTF-8", errors="replace")
  if lowercase:
    text = tf.strings.lower(text, encoding="utf-8")
  text = tf.strings.regex_replace(text, _character_class(filters + WHITESPACE), " ")
  return tf.strings.split(text)


class ServingModule(tf.Module):
  """The model, its vocabulary, tokenisation and reply search, as one saveable module.

  Takes the arguments of `decoding.Decoder` and decodes the same way: sources cut to
  `max_length` words and padded to it, the same search, replies stopped at <EOS>.

  Raises:
    ExportError: `tokenizer` is not a word `vocab.Tokenizer` (SentencePiece is not supported).
  """

  def __init__(self, model, vocabulary, tokenizer, max_length, beam_width=1, length_penalty=0.0,
               temperature=0.0, top_k=0, n_best=1, seed=0):
    super().__init__(name="serving")
    if not isinstance(tokenizer, vocab_lib.Tokenizer):
      raise ExportError(f"only the word tokenizer can be exported, not {type(tokenizer).__name__}")
    self.model = model
    self.max_length = max_length
    self.num_best = max(1, min(n_best, beam_width))
    self._lowercase, self._filters = tokenizer.lowercase, tokenizer.filters or ""
    self._ids = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(vocabulary.tokens, tf.string),
            tf.range(len(vocabulary), dtype=tf.int64)),
        default_value=vocab_lib.UNK_ID)
    self._words = tf.constant(vocabulary.tokens, tf.string)
    self._search = decoding.make_search(model, max_length, beam_width, length_penalty,
                                        temperature, top_k, seed)
    self.length_penalty = length_penalty
    try:
      decoding.make_alignment_search(model, max_length)
      self.has_alignments = True
    except (config_lib.NoAttention, ValueError):  # no attention, or an ensemble
      self.has_alignments = False
    if self.has_alignments:  # saving traces every tf.function of the module: only if it can
      self.align = tf.function(self._align, input_signature=_PER_CALL, autograph=False)

  def _encode(self, text):
    """text [B] -> (source ids [B, max_length] int32, <PAD> after each, lengths [B] int32)."""
    words = normalize(text, self._lowercase, self._filters)[:, :self.max_length]
    ids = tf.cast(tf.ragged.map_flat_values(self._ids.lookup, words), tf.int32)
    source = ids.to_tensor(default_value=vocab_lib.PAD_ID, shape=[None, self.max_length])
    return source, tf.cast(ids.row_lengths(), tf.int32)

  def _join(self, ids):
    """ids [B, N, T] -> string [B, N]: the words before the first <EOS>, <PAD> and <GO> dropped
    (as `Vocabulary.decode`), joined by single spaces."""
    before_eos = tf.equal(tf.cumsum(tf.cast(tf.equal(ids, vocab_lib.EOS_ID), tf.int32), -1), 0)
    keep = before_eos & tf.not_equal(ids, vocab_lib.PAD_ID) & tf.not_equal(ids, vocab_lib.GO_ID)
    words = tf.ragged.boolean_mask(tf.gather(self._words, ids), keep)
    joined = tf.strings.reduce_join(words, axis=-1, separator=" ")
    if isinstance(joined, tf.RaggedTensor):
      joined = joined.to_tensor()
    return tf.reshape(joined, tf.shape(ids)[:2])

  @tf.function(input_signature=[_TEXT])
  def encode(self, text):
    """text [B] -> {"ids": int32 [B, max_length], "lengths": int32 [B]}."""
    source, lengths = self._encode(text)
    return {"ids": source, "lengths": lengths}

  @tf.function(input_signature=[_TEXT])
  def serve(self, text):
    """text [B] -> {"replies": string [B, N], "scores": float32 [B, N]}, best first."""
    ids, scores = self._search(*self._encode(text))
    return {"replies": self._join(ids[:, :self.num_best]),
            "scores": scores[:, :self.num_best]}

  def _per_call_search(self, text, beam_width, n_best, temperature, top_k, seed,
                       alignments=False):
    """The search of `reply` (and `align`): (source, lengths) as `_encode`, ids [B, N, T],
    scores [B, N] and, with `alignments`, the alignments [B, N, T, Ts] (else None)."""
    source, lengths = self._encode(text)
    steps = self.max_length + 1

    def beam():
      result = beam_search.beam_decode(self.model, source, lengths, beam_width, steps,
                                       self.length_penalty, alignments)
      return (result.ids, result.scores) + ((result.tracked,) if alignments else ())

    def single():
      found = decoding.decode(self.model, source, lengths, steps,
                              decoding.tensor_choice(temperature, top_k, seed), alignments)
      ids = found[0] if alignments else found
      return ((ids[:, None, :], tf.zeros([tf.shape(ids)[0], 1]))
              + ((found[1][:, None],) if alignments else ()))

    found = tf.cond(beam_width > 1, beam, single)
    num_best = tf.clip_by_value(n_best, 1, tf.shape(found[0])[1])
    weights = found[2][:, :num_best] if alignments else None
    return source, lengths, found[0][:, :num_best], found[1][:, :num_best], weights

  @tf.function(input_signature=_PER_CALL, autograph=False)  # explicit loops: no conversion
  def reply(self, text, beam_width, n_best, temperature, top_k, seed):
    """text [B] -> {"replies": string [B, N], "scores": float32 [B, N]}, best first, searched
    with the settings given (scalars): beam search when beam_width > 1, N = min(n_best,
    beam_width); else one greedy (temperature 0) or sampled reply, score 0."""
    _, _, ids, scores, _ = self._per_call_search(text, beam_width, n_best, temperature, top_k,
                                                 seed)
    return {"replies": self._join(ids), "scores": scores}

  def _align(self, text, beam_width, n_best, temperature, top_k, seed):
    """`reply`, and the attention behind each reply (see the module's doc); `align`, the
    tf.function of it, exists where the model has alignments."""
    source, lengths, ids, scores, weights = self._per_call_search(
        text, beam_width, n_best, temperature, top_k, seed, alignments=True)
    is_eos = tf.cast(tf.equal(ids, vocab_lib.EOS_ID), tf.int32)
    return {"replies": self._join(ids), "scores": scores,
            "source_words": tf.gather(self._words, source), "source_lengths": lengths,
            "output_words": tf.gather(self._words, ids),
            # the steps up to the first <EOS>, it included (all of them without one)
            "output_lengths": tf.reduce_sum(
                tf.cast(tf.equal(tf.cumsum(is_eos, -1, exclusive=True), 0), tf.int32), -1),
            "alignments": weights}

  def signatures(self):
    """{name: concrete function} of the SavedModel; `align` only where alignments exist."""
    found = {"serving_default": self.serve, "encode": self.encode, "reply": self.reply}
    if self.has_alignments:
      found["align"] = self.align
    return found


def _check_replaceable(export_dir, workdirs=()):
  """Raises ExportError unless `export_dir` is absent, empty or a SavedModel, and holds none
  of `workdirs` (nor the current, home or root folder: `outputs.check_folder`)."""
  def foreign(path):
    return None if tf.saved_model.contains_saved_model(path) else "is not a SavedModel"

  try:
    outputs.check_folder("export_dir", export_dir, [("a workdir", w) for w in workdirs], foreign)
  except outputs.OutputError as e:
    raise ExportError(str(e)) from None


def save(module, export_dir, info=None):
  """Writes `module` as a SavedModel at `export_dir`, whole or not at all; `info` (a dict),
  with the signatures' names added, as its `INFO_FILE`.

  The SavedModel is written to a hidden folder beside `export_dir`, then renamed into place
  (`outputs.folder_into`); an earlier export there is replaced.

  Raises:
    ExportError: `export_dir` exists and is neither a SavedModel nor empty.
  """
  export_dir = os.path.abspath(export_dir)
  _check_replaceable(export_dir)
  with outputs.folder_into(export_dir) as staging:
    signatures = module.signatures()
    tf.saved_model.save(module, staging, signatures=signatures)
    os.makedirs(os.path.join(staging, os.path.dirname(INFO_FILE)))
    with open(os.path.join(staging, INFO_FILE), "w", encoding="utf-8") as f:
      json.dump(dict(info or {}, format=INFO_FORMAT, signatures=sorted(signatures)), f,
                indent=2, sort_keys=True)
  return export_dir


def read_info(export_dir):
  """The `INFO_FILE` of `export_dir` as a dict, or None where there is none, it cannot be
  read, or it has another format."""
  try:
    with open(os.path.join(export_dir, INFO_FILE), encoding="utf-8") as f:
      info = json.load(f)
  except (OSError, ValueError):
    return None
  return info if isinstance(info, dict) and info.get("format") == INFO_FORMAT else None


def _timestamp(seconds):
  return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat(
      timespec="seconds")


def _info(run_config, module, vocabulary, sources):
  """The facts `INFO_FILE` records: what was exported, from which checkpoints, when."""
  newest = sources[0].paths[0]
  return {"model": dict(run_config.model.architecture(),
                        ensemble=len(sources) if len(sources) > 1 else 0),
          "vocabulary_size": len(vocabulary), "max_length": module.max_length,
          "attention": module.has_alignments, "length_penalty": module.length_penalty,
          "workdir": os.path.abspath(run_config.train.workdir),
          "checkpoint": run_config.decode.checkpoint,
          "average_checkpoints": run_config.decode.average_checkpoints,
          "checkpoints": [path for restored in sources for path in restored.paths],
          "step": sources[0].step,
          "trained_at": (_timestamp(os.path.getmtime(newest + ".index"))
                         if os.path.exists(newest + ".index") else None),
          "exported_at": _timestamp(datetime.datetime.now().timestamp())}


def export_trained(run_config, log=print):
  """Exports the checkpoint --checkpoint picks in run_config.train.workdir (with --ensemble,
  the ensemble of it and the other workdirs' models); returns the export folder.

  The folder is --export_dir, or WORKDIR/export; the search follows run_config.decode, and
  input is cut to, and replies stop at, --decode_max_length tokens (0: the trained
  --max_length).

  Raises:
    ExportError: the data was tokenised with SentencePiece, or the folder is taken.
    trained.NoCheckpoint: nothing to export yet.
  """
  data_config, options = run_config.data, run_config.decode
  export_dir = options.export_dir or workdir_lib.export_dir(run_config.train.workdir)
  if datasets.uses_sentencepiece(data_config):
    raise ExportError(f"--data={data_config.data} was prepared with --tokenizer=sentencepiece; "
                      "--mode=export supports --tokenizer=word only so far (SentencePiece in a "
                      "SavedModel needs tensorflow-text)")
  workdirs = [run_config.train.workdir, *config_lib.split_list(options.ensemble)]
  _check_replaceable(os.path.abspath(export_dir), workdirs)  # before the slow part
  sources = []
  model, vocabulary = chat.load_ensemble(run_config, log, sources)  # with --ensemble, all
  module = ServingModule(model, vocabulary, datasets.tokenizer_for(data_config),
                         options.max_length_for(data_config), beam_width=options.beam_width,
                         length_penalty=options.length_penalty, temperature=options.temperature,
                         top_k=options.top_k, n_best=options.n_best, seed=run_config.train.seed)
  path = save(module, export_dir, _info(run_config, module, vocabulary, sources))
  log(f"exported to {path}: serving_default(text: string [B]) -> replies: string "
      f"[B, {module.num_best}], scores: float32 [B, {module.num_best}]")
  return path
