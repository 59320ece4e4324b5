"""--model=lm: the data, evaluation and generation of a language model over running text.

Text files are read one sentence a line: each line is tokenised like the pairs' text and ends
with <EOS>, and the lines are concatenated into one stream that `language_model.lm_windows`
cuts into windows of --num_steps tokens. Training runs through `training.train` (checkpoints
with the carried state, resume, log line, summaries, signals, validation); this module gives
it the data (`load_data`), and serves --mode=eval (`evaluate`) and --mode=chat (`Generator`).
"""
import collections
import glob

import numpy as np
import tensorflow as tf

from seq2seq.data import corpus
from seq2seq.data import datasets
from seq2seq.data import vocab as vocab_lib
from seq2seq.infer import decoding
from seq2seq.infer import restore
from seq2seq.models import encoder_decoder as model_lib
from seq2seq.models import language_model


def read_stream(spec, tokenizer):
  """Token lists of the non-empty lines of the files matching `spec` (comma-separated globs)."""
  files = sorted(f for pattern in spec.split(",") for f in glob.glob(pattern.strip()))
  if not files:
    raise corpus.DataError(f"{spec}: no such file")
  lines = []
  for path in files:
    with open(path, encoding="utf-8") as f:
      lines.extend(tokens for tokens in (tokenizer(line) for line in f) if tokens)
  return lines


def encode_stream(lines, vocabulary):
  """One int32 id stream: each line's ids followed by <EOS>."""
  return np.array([i for tokens in lines for i in vocabulary.encode(tokens) + [vocab_lib.EOS_ID]],
                  np.int32)


class WindowSchedule:
  """The windows of a token stream as the training loop reads batches (`data.BatchSchedule`'s
  interface). Every epoch reads them in the same order: row b of window i+1 continues row b
  of window i, which the carried state needs. `seed` is kept for the interface only.

  Args:
    ids: the token stream.
    batch_size: rows read in parallel; lowered to what the text fills when `shrink`.
    num_steps: tokens per window.
    shrink: for evaluation, fewer rows rather than an error when the text is short.

  Raises:
    ValueError: the text is too short for one window.
  """

  def __init__(self, ids, batch_size, num_steps, shrink=False):
    if shrink:
      batch_size = max(1, min(batch_size, len(ids) // (num_steps + 1)))
    self.batch_size = batch_size
    self.windows = language_model.lm_windows(ids, batch_size, num_steps)
    self.batches_per_epoch = len(self.windows)
    self.seed = 0

  def batches(self, epoch, start=0):
    """The (inputs [B, T], targets [B, T]) windows of an epoch from `start` on."""
    del epoch
    return iter(self.windows[start:])


def _windows(ids, batch_size, num_steps, spec, shrink=False):
  try:
    return WindowSchedule(ids, batch_size, num_steps, shrink)
  except ValueError as e:
    raise corpus.DataError(f"{spec}: {e}") from None


def load_data(run_config, log=print):
  """`datasets.TrainingData` for an LM: the vocabulary (reused from the workdir when there),
  and `WindowSchedule`s of --data and, if given, --val_data (its rows lowered to fit).

  Raises:
    corpus.DataError: a file is missing or too short for one window.
  """
  data, train_config = run_config.data, run_config.train
  tokenizer = vocab_lib.Tokenizer(data.lowercase, data.filters)
  lines = read_stream(data.data, tokenizer)
  vocabulary = datasets.load_or_build_vocabulary(lines, data, train_config.workdir, log)
  stream = encode_stream(lines, vocabulary)
  log(f"language model: {len(lines)} lines, {len(stream)} tokens, vocabulary {len(vocabulary)}")
  train = _windows(stream, train_config.batch_size, data.num_steps, data.data)
  val = None
  if data.val_data:
    val_stream = encode_stream(read_stream(data.val_data, tokenizer), vocabulary)
    val = _windows(val_stream, train_config.batch_size, data.num_steps, data.val_data,
                   shrink=True)
    log(f"val data: {len(val_stream)} tokens, {val.batches_per_epoch} windows of "
        f"{val.batch_size}x{data.num_steps}")
  return datasets.TrainingData(vocabulary, train, val)


def load_trained(run_config, log=print):
  """(model, vocabulary) of the checkpoint of run_config.train.workdir that --checkpoint picks.

  Raises:
    restore.NoCheckpoint: no vocabulary or no checkpoint there.
    checkpoints.CheckpointError: the checkpoint does not fit the configured model.
  """
  workdir = run_config.train.workdir
  vocabulary = restore.load_vocabulary(
      workdir, f"python train.py --model=lm --workdir={workdir}")
  model = language_model.LanguageModel(
      run_config.model, len(vocabulary), seed=run_config.train.seed,
      compute_dtype=model_lib.COMPUTE_DTYPES[run_config.train.precision])
  model.build()
  restore.restore(model, run_config, log)
  return model, vocabulary


def evaluate(run_config, log=print):
  """--mode=eval: (loss per token, perplexity) of the trained LM on --val_data (else --data).

  The text is cut into windows of --num_steps with up to --batch_size rows (fewer if the text
  is short), the state carried from window to window from zeros, as in validation.
  """
  model, vocabulary = load_trained(run_config, log)
  data = run_config.data
  spec = data.val_data or data.data
  stream = encode_stream(read_stream(spec, vocab_lib.Tokenizer(data.lowercase, data.filters)),
                         vocabulary)
  schedule = _windows(stream, run_config.train.batch_size, data.num_steps, spec, shrink=True)
  loss, ppl = language_model.evaluate(language_model.make_lm_eval_step(model), schedule.windows,
                                      model.initial_state(schedule.batch_size))
  log(f"eval on {spec}: loss={loss:.4f} ppl={ppl:.2f} over "
      f"{schedule.batches_per_epoch * schedule.batch_size * data.num_steps} tokens")
  return loss, ppl


Continuation = collections.namedtuple("Continuation", ["text", "log_prob"])


class Generator:
  """Continues typed text: greedy (temperature 0) or sampled, up to `max_length` tokens or
  <EOS>. `n_best(text)` has the `decoding.Decoder` interface, so `chat.chat_loop` serves it.

  The text is read after an <EOS> (a line starts there in the training stream), one token at
  a time through the same one-step function that generates.
  """

  def __init__(self, model, vocabulary, tokenizer, max_length, temperature=0.0, top_k=0,
               seed=0):
    self.model, self.vocabulary, self.tokenizer = model, vocabulary, tokenizer
    self.max_length = max_length
    self.choose = (decoding.sampling_choice(temperature, top_k, seed) if temperature > 0
                   else decoding.greedy_choice)
    self._step = tf.function(lambda ids, state: model(ids[:, None], state), autograph=False)
    self._calls = 0  # a sampling seed per call, so a repeated line gets a fresh sample

  def continuation(self, text):
    """The generated continuation of `text` and its log-probability under the model."""
    ids = [vocab_lib.EOS_ID] + self.vocabulary.encode(self.tokenizer(text))
    state = self.model.initial_state(1)
    for token in ids:
      logits, state = self._step(tf.constant([token], tf.int32), state)
    generated, log_prob = [], 0.0
    self._calls += 1
    for t in range(self.max_length):
      logits = tf.cast(logits[:, 0, :], tf.float32)
      token = self.choose(logits, self._calls * 1000 + t)
      generated.append(int(token[0]))
      log_prob += float(tf.nn.log_softmax(logits)[0, generated[-1]])
      if generated[-1] == vocab_lib.EOS_ID:
        break
      logits, state = self._step(token, state)
    return Continuation(" ".join(self.vocabulary.decode(generated)), log_prob)

  def n_best(self, text):
    return [tuple(self.continuation(text))]


def make_generator(run_config, log=print):
  """A `Generator` over the trained LM of run_config.train.workdir (--temperature, --top_k,
  --decode_max_length tokens at most; 0: the trained --max_length).

  Raises:
    config.ConfigError: beam search asked for (--beam_width > 1).
    restore.NoCheckpoint: nothing trained in the workdir.
  """
  data, options = run_config.data, run_config.decode
  options.check_lm()
  model, vocabulary = load_trained(run_config, log)
  return Generator(model, vocabulary, vocab_lib.Tokenizer(data.lowercase, data.filters),
                   options.max_length_for(data), temperature=options.temperature,
                   top_k=options.top_k, seed=run_config.train.seed)
