"""Beam search with the GNMT length penalty, in one `tf.while_loop` of fixed maximum length.

The search only needs `step_fn(tokens, state) -> (log_probs, state)`, so it runs on any
decoder (or a toy with known probabilities in the tests); `beam_decode` plugs in a `Seq2Seq`
or an ensemble of them (`Seq2Seq.start_decoding`).

Shapes: B = batch, K = beam width, N = B * K (beams flattened batch-major), V = vocabulary,
T = max_length.
"""
import collections

import tensorflow as tf

from seq2seq.data import vocab as vocab_lib

BeamResult = collections.namedtuple("BeamResult",
                                    ["ids", "scores", "log_probs", "lengths", "tracked"],
                                    defaults=[None])


def length_penalty(lengths, alpha):
  """GNMT (Wu et al. 2016): lp(Y) = ((5 + |Y|) / 6) ** alpha; alpha = 0 turns it off."""
  return tf.pow((5.0 + tf.cast(lengths, tf.float32)) / 6.0, alpha)


def beam_search(step_fn, initial_state, batch_size, beam_width, max_length, alpha=0.0,
                track=None):
  """The `beam_width` best sequences of each batch row, best first.

  Each step extends every live beam by every token and keeps the K candidates of highest
  score = log P(Y) / lp(|Y|). A beam that emitted <EOS> has ended: it can only be extended by
  <PAD> at no cost and no length, so it keeps its score and competes with the live beams.
  The loop stops after `max_length` steps or as soon as every beam of every row has ended.

  Args:
    step_fn: (tokens [N] int32, state) -> (log-probabilities [N, V], new state); the state is
      a nest of tensors whose first dimension is N.
    initial_state: the nest for N = B * K, each row's state repeated K times (`tf.repeat`).
    batch_size: B (a scalar tensor is fine).
    beam_width: K, a Python int, or an int32 scalar tensor (one traced search serves every
      width; the exported `reply` signature takes it per call).
    max_length: T, a Python int.
    alpha: the length-penalty exponent.
    track: optional, state -> float32 [N, S]: a value of each step's new state to keep along
      each beam's path (the attention's alignments).

  Returns:
    `BeamResult`: ids [B, K, T] int32 (tokens, then <EOS>, then <PAD>); scores [B, K] (the
    penalised score), log_probs [B, K] and lengths [B, K] (tokens, <EOS> included); the beams
    of each row sorted by score, best first. With `track`, tracked [B, K, T, S]: row t of a
    beam is `track` of the state its token t was chosen from (zeros past the search's end).
  """
  k = beam_width if tf.is_tensor(beam_width) else int(beam_width)
  batch = batch_size
  first = tf.concat([tf.zeros([1]), tf.fill([k - 1], float("-inf"))], 0)
  log_probs = tf.tile(first[None], [batch, 1])  # only beam 0 is alive at the start
  finished = tf.zeros([batch, k], tf.bool)
  lengths = tf.zeros([batch, k], tf.int32)
  ids = tf.fill([batch, k, max_length], vocab_lib.PAD_ID)
  tokens = tf.fill([batch * k], vocab_lib.GO_ID)
  offsets = tf.range(batch)[:, None] * k  # [B, 1]: row b's beams start at b * K
  beams = lambda x: tf.reshape(x, tf.concat([[batch, k], tf.shape(x)[1:]], 0))  # [N,.]->[B,K,.]
  tracked = ()  # with `track`: ([B, K, T, S],), the values along each beam's path
  if track is not None:
    width = tf.shape(track(initial_state))[-1]
    tracked = (tf.zeros(tf.stack([batch, k, max_length, width])),)

  def cond(t, tokens, state, log_probs, finished, lengths, ids, tracked):
    del tokens, state, log_probs, lengths, ids, tracked
    return tf.logical_and(t < max_length, tf.logical_not(tf.reduce_all(finished)))

  def body(t, tokens, state, log_probs, finished, lengths, ids, tracked):
    step_log_probs, new_state = step_fn(tokens, state)
    vocab_size = tf.shape(step_log_probs)[-1]
    step_log_probs = tf.reshape(tf.cast(step_log_probs, tf.float32), [batch, k, vocab_size])
    pad_only = tf.one_hot(vocab_lib.PAD_ID, vocab_size, on_value=0.0, off_value=float("-inf"))
    step_log_probs = tf.where(finished[..., None], pad_only, step_log_probs)
    total = log_probs[..., None] + step_log_probs  # [B, K, V]
    new_lengths = lengths + tf.cast(tf.logical_not(finished), tf.int32)
    scores = total / length_penalty(new_lengths, alpha)[..., None]
    _, best = tf.math.top_k(tf.reshape(scores, [batch, k * vocab_size]), k)  # [B, K]
    parent, token = best // vocab_size, best % vocab_size
    log_probs = tf.gather(tf.reshape(total, [batch, k * vocab_size]), best, batch_dims=1)
    lengths = tf.gather(new_lengths, parent, batch_dims=1)
    finished = tf.logical_or(tf.gather(finished, parent, batch_dims=1),
                             tf.equal(token, vocab_lib.EOS_ID))
    ids = tf.gather(ids, parent, batch_dims=1)
    at_t = tf.one_hot(t, max_length, on_value=True, off_value=False, dtype=tf.bool)
    ids = tf.where(at_t[None, None], token[..., None], ids)
    if track is not None:  # the parent's history, and at t the value its token came from
      now = tf.gather(beams(tf.cast(track(new_state), tf.float32)), parent, batch_dims=1)
      history = tf.gather(tracked[0], parent, batch_dims=1)
      tracked = (tf.where(at_t[None, None, :, None], now[:, :, None, :], history),)
    rows = tf.reshape(parent + offsets, [-1])  # [N] flat indices of the parents
    state = tf.nest.map_structure(lambda s: tf.gather(s, rows), new_state)
    return t + 1, tf.reshape(token, [-1]), state, log_probs, finished, lengths, ids, tracked

  _, _, _, log_probs, _, lengths, ids, tracked = tf.while_loop(
      cond, body,
      (tf.constant(0), tokens, initial_state, log_probs, finished, lengths, ids, tracked))
  scores = log_probs / length_penalty(lengths, alpha)
  scores, order = tf.math.top_k(scores, k)
  return BeamResult(ids=tf.gather(ids, order, batch_dims=1), scores=scores,
                    log_probs=tf.gather(log_probs, order, batch_dims=1),
                    lengths=tf.gather(lengths, order, batch_dims=1),
                    tracked=tf.gather(tracked[0], order, batch_dims=1) if tracked else None)


def beam_decode(model, source, source_length, beam_width, max_length, alpha=0.0,
                alignments=False):
  """Beam search on a `Seq2Seq` (or an `ensemble.Ensemble`): source [B, Ts] ids, lengths [B]
  -> `BeamResult`; with `alignments` (a model with attention), its `tracked` [B, K, T, Ts]
  holds the alignment each beam's token t was chosen with.

  Each source is repeated K times before encoding, so every decoder core (with attention or
  not) gets per-beam memory and state without knowing about beams.
  """
  repeat = lambda x: tf.repeat(x, beam_width, axis=0)
  step, state = model.start_decoding(repeat(source), repeat(source_length))
  track = (lambda s: s.alignments) if alignments else None
  return beam_search(step, state, tf.shape(source)[0], beam_width, max_length, alpha, track)
