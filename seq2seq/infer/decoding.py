"""Decoding with a fixed maximum length: greedy, sampling (temperature, top-k) and beam search."""
import collections

import tensorflow as tf

from seq2seq import config as config_lib
from seq2seq.data import vocab as vocab_lib
from seq2seq.infer import beam_search
from seq2seq.infer import ensemble as ensemble_lib
from seq2seq.runtime import outputs

# The attention paid while decoding one sentence (`Decoder.align`): weights [len(output_words),
# len(source_words)], row t the alignment that produced output word t; `output_words` end with
# <EOS> when the reply ended before the step limit; `reply` is the text `Decoder.reply` gives.
Alignment = collections.namedtuple("Alignment",
                                   ["source_words", "output_words", "weights", "reply"])

NoAttention = config_lib.NoAttention
check_attention = config_lib.check_attention


def greedy_choice(scores, step):
  """The arg-max token of each row: scores [B, V] (log-probabilities or logits) -> [B]."""
  del step
  return tf.argmax(scores, axis=-1, output_type=tf.int32)


def sampling_choice(temperature=1.0, top_k=0, seed=0):
  """A choice that samples from softmax(scores / temperature), among the top_k (0 = all).

  The scores are log-probabilities or logits (the same distribution). Stateless: step t draws
  with seed (seed, t), so a decode is reproducible.
  """
  if temperature <= 0:
    raise ValueError(f"temperature must be > 0 to sample, got {temperature}")

  def choose(scores, step):
    scores = tf.cast(scores, tf.float32) / temperature
    if top_k > 0:
      kth = tf.math.top_k(scores, top_k).values[:, -1:]
      scores = tf.where(scores < kth, float("-inf"), scores)
    draw = tf.random.stateless_categorical(scores, 1, seed=tf.stack([seed, step]))
    return tf.cast(draw[:, 0], tf.int32)
  return choose


def tensor_choice(temperature, top_k, seed):
  """A choice whose settings are scalar tensors, so that one traced search serves them all
  (the exported `reply` and `align` signatures take them per call).

  Args:
    temperature: float32 []; 0 picks the arg-max, > 0 samples from softmax(scores /
      temperature), among the `top_k` most likely tokens (int32 []; 0 = all).
    seed: int64 []; step t draws with the stateless seed (seed, t).
  """
  def choose(scores, step):
    def sample():
      scaled = tf.cast(scores, tf.float32) / temperature
      vocab_size = tf.shape(scaled)[-1]
      k = tf.where(top_k > 0, tf.minimum(top_k, vocab_size), vocab_size)
      kth = tf.reduce_min(tf.math.top_k(scaled, k).values, axis=-1, keepdims=True)
      scaled = tf.where(scaled < kth, float("-inf"), scaled)
      draw = tf.random.stateless_categorical(
          scaled, 1, seed=tf.stack([seed, tf.constant(step, tf.int64)]))
      return tf.cast(draw[:, 0], tf.int32)
    return tf.cond(temperature > 0, sample, lambda: greedy_choice(scores, step))
  return choose


def decode(model, source, source_length, max_length, choose=greedy_choice, alignments=False):
  """Feeds back the chosen token until <EOS> or `max_length` tokens.

  Args:
    model: a `Seq2Seq`, or an `ensemble.Ensemble` (not with `alignments`).
    source: [B, Ts] ids; source_length: [B].
    max_length: static number of decoder steps.
    choose: (log-probabilities [B, V], step) -> tokens [B]; `greedy_choice` or a
      `sampling_choice`.
    alignments: also return the attention's alignments (`AttentionState.alignments`) at
      each step; the model needs attention.

  Returns:
    ids [B, max_length] int32: the tokens, then <EOS>, then <PAD> after it. With
    `alignments`, (ids, alignments [B, max_length, Ts] float32): row t is the alignment the
    decoder attended with when it chose token t (0 on padded source positions).

  Raises:
    NoAttention: `alignments` for a model without attention.
    ValueError: `alignments` for an ensemble.
  """
  if alignments:
    _check_alignments(model)
  step_fn, state = model.start_decoding(source, source_length)
  batch = tf.shape(source)[0]
  token = tf.fill([batch], vocab_lib.GO_ID)
  finished = tf.zeros([batch], tf.bool)
  tokens, attended = [], []
  for step in range(max_length):
    log_probs, state = step_fn(token, state)
    if alignments:
      attended.append(tf.cast(state.alignments, tf.float32))
    token = choose(log_probs, step)
    token = tf.where(finished, vocab_lib.PAD_ID, token)
    tokens.append(token)
    finished |= tf.equal(token, vocab_lib.EOS_ID)
  ids = tf.stack(tokens, axis=1)
  return (ids, tf.stack(attended, axis=1)) if alignments else ids


def _check_alignments(model):
  """Raises unless `model` is one `Seq2Seq` with attention (whose alignments can be drawn)."""
  if isinstance(model, ensemble_lib.Ensemble):
    raise ValueError("alignments are drawn for one model; an ensemble averages "
                     f"{len(model.models)} models' predictions")
  check_attention(model.config)


def greedy_decode(model, source, source_length, max_length, alignments=False):
  """`decode` with the arg-max token at each step (and the alignments, with `alignments`)."""
  return decode(model, source, source_length, max_length, greedy_choice, alignments)


def _choice(temperature, top_k, seed):
  return sampling_choice(temperature, top_k, seed) if temperature > 0 else greedy_choice


def make_search(model, max_length, beam_width=1, length_penalty=0.0, temperature=0.0, top_k=0,
                seed=0):
  """The reply search of a `Decoder`, as a function that a `tf.function` can trace.

  Beam search when `beam_width` > 1, sampling when `temperature` > 0, greedy otherwise; replies
  of up to `max_length` words and <EOS> (T = max_length + 1 steps). The exported SavedModel
  (`seq2seq.infer.export`) traces the same function, so both decode alike.

  Returns:
    search(source [B, Ts] int32, source_length [B] int32) -> (ids [B, K, T] int32, scores
    [B, K] float32), K = beam_width; the beams best first; scores are 0 for greedy and sampling.
  """
  steps = max_length + 1
  if beam_width > 1:
    def search(source, source_length):
      result = beam_search.beam_decode(model, source, source_length, beam_width, steps,
                                       length_penalty)
      return result.ids, result.scores
    return search
  choose = _choice(temperature, top_k, seed)

  def search(source, source_length):
    ids = decode(model, source, source_length, steps, choose)
    return ids[:, None, :], tf.zeros([tf.shape(ids)[0], 1])
  return search


def make_alignment_search(model, max_length, temperature=0.0, top_k=0, seed=0):
  """`make_search`'s greedy or sampling search, also returning the alignments.

  Returns:
    search(source [B, Ts] int32, source_length [B] int32) -> (ids [B, T] int32, alignments
    [B, T, Ts] float32), T = max_length + 1; the ids are those of `make_search`'s search.

  Raises:
    NoAttention: the model has no attention.
    ValueError: the model is an ensemble.
  """
  _check_alignments(model)
  choose = _choice(temperature, top_k, seed)

  def search(source, source_length):
    return decode(model, source, source_length, max_length + 1, choose, alignments=True)
  return search


class Decoder:
  """Text in, text out: tokenise, encode with the vocabulary, decode in a compiled function.

  Greedy by default; `beam_width` > 1 runs beam search (n-best from `n_best`), and
  `temperature` > 0 samples (with `top_k` > 0, among the k most likely tokens).
  """

  def __init__(self, model, vocabulary, tokenizer, max_length, beam_width=1, length_penalty=0.0,
               temperature=0.0, top_k=0, n_best=1, seed=0):
    if beam_width > 1 and temperature > 0:
      raise ValueError("beam search and sampling exclude each other: set beam_width=1 or "
                       "temperature=0")
    self.num_best = max(1, min(n_best, beam_width))
    self.model = model
    self.vocabulary = vocabulary
    self.tokenizer = tokenizer
    self.max_length = max_length
    self._beam_width, self._sampling = beam_width, (temperature, top_k, seed)
    self._signature = [tf.TensorSpec([None, max_length], tf.int32),
                       tf.TensorSpec([None], tf.int32)]
    self._decode = tf.function(
        make_search(model, max_length, beam_width, length_penalty, temperature, top_k, seed),
        input_signature=self._signature, autograph=False)  # explicit loops: no conversion
    self._align = None  # the alignment search, compiled on the first `align`

  def _encode(self, texts):
    """(source [B, max_length] int32, lengths [B] int32); input past max_length words is cut."""
    sources, lengths = [], []
    for text in texts:
      ids = self.vocabulary.encode(self.tokenizer(text))[:self.max_length]
      sources.append(ids + [vocab_lib.PAD_ID] * (self.max_length - len(ids)))
      lengths.append(len(ids))
    return (tf.constant(sources, tf.int32, [len(texts), self.max_length]),
            tf.constant(lengths, tf.int32, [len(texts)]))

  def _text(self, tokens):
    """Output tokens -> text: words joined by spaces, or subword pieces detokenised."""
    detokenize = getattr(self.tokenizer, "detokenize", None)
    return detokenize(tokens) if detokenize else " ".join(tokens)

  def n_best_batch(self, texts):
    """For each of `texts`, [(reply, score)] best first (one for greedy and sampling).

    All of `texts` go through the compiled function as one batch; input past max_length
    words is cut.
    """
    out, scores = self._decode(*self._encode(texts))
    return [[(self._text(self.vocabulary.decode(row)), float(score))
             for row, score in zip(rows, row_scores)][:self.num_best]
            for rows, row_scores in zip(out.numpy(), scores.numpy())]

  def n_best(self, text):
    """[(reply, score)] for one `text`, best first."""
    return self.n_best_batch([text])[0]

  def decode_file(self, input_path, output_path, batch_size=64, log=print):
    """Writes the best reply to each line of `input_path` to the same line of `output_path`.

    `output_path` is replaced only when every line is decoded; if decoding stops early (an
    error, Ctrl-C), it keeps its earlier content and the replies so far are in
    OUTPUT_PATH.partial (`outputs.lines_into`), which `log` names.

    Returns:
      the number of lines decoded.
    """
    with open(input_path, encoding="utf-8") as f:
      lines = [line.rstrip("\n") for line in f]
    with outputs.lines_into(output_path, log) as write:
      for start in range(0, len(lines), batch_size):
        for replies in self.n_best_batch(lines[start:start + batch_size]):
          write(replies[0][0])
    return len(lines)

  def reply(self, text):
    """The best reply string (possibly empty) to `text`."""
    return self.n_best(text)[0][0]

  def align(self, text):
    """The reply to `text` with the attention the decoder paid to each source word.

    The reply is the one `reply` gives (greedy, or sampled with the same seed); beam search
    does not track alignments.

    Returns:
      an `Alignment`: the source words as the model read them (<UNK> for unknown ones), the
      output words up to and including <EOS>, and their weights.

    Raises:
      NoAttention: the model has no attention.
      ValueError: the decoder runs beam search, or decodes with an ensemble.
    """
    if self._align is None:
      if self._beam_width > 1:
        raise ValueError("alignments are tracked for greedy and sampled replies; beam search "
                         f"(beam_width={self._beam_width}) does not track them")
      self._align = tf.function(
          make_alignment_search(self.model, self.max_length, *self._sampling),
          input_signature=self._signature, autograph=False)
    source, lengths = self._encode([text])
    ids, weights = self._align(source, lengths)
    ids, weights, source_length = ids[0].numpy(), weights[0].numpy(), int(lengths[0])
    ends = [t for t, i in enumerate(ids) if i == vocab_lib.EOS_ID]
    num_outputs = ends[0] + 1 if ends else len(ids)
    tokens = self.vocabulary.tokens  # one word a row and column, <PAD> and <GO> included
    return Alignment(
        source_words=[tokens[i] for i in source[0, :source_length].numpy()],
        output_words=[tokens[i] for i in ids[:num_outputs]],
        weights=weights[:num_outputs, :source_length],
        reply=self._text(self.vocabulary.decode(ids)))


GreedyDecoder = Decoder  # the name before sampling and beam search existed
