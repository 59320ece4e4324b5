"""Several trained models decoding as one: at each step, the mean of their next-token probabilities.

The members share one vocabulary (their own architectures may differ). An `Ensemble` goes
wherever decoding takes a `Seq2Seq` (`decoding.Decoder`, `decoding.decode`,
`beam_search.beam_decode`): they only call `start_decoding`.
"""
import math

import tensorflow as tf

from seq2seq import errors


class VocabularyMismatch(errors.UserError, ValueError):
  """Two members of an ensemble map ids to different tokens."""


def check_same_vocabulary(tokens, path, other_tokens, other_path):
  """Raises VocabularyMismatch, naming the first line where the two vocabularies differ."""
  for line, (token, other) in enumerate(zip(tokens, other_tokens), start=1):
    if token != other:
      raise VocabularyMismatch(
          f"{other_path}: line {line} is {other!r} where {path} has {token!r}; the models of an "
          "ensemble need one vocabulary (prepare their data once, or train them from one folder)")
  if len(tokens) != len(other_tokens):
    raise VocabularyMismatch(
        f"{other_path}: {len(other_tokens)} tokens where {path} has {len(tokens)}; the models of "
        "an ensemble need one vocabulary")


class Ensemble(tf.Module):
  """The mean of the members' distributions: log p(y) = log(1/M sum_m p_m(y))."""

  def __init__(self, models, name=None):
    super().__init__(name=name)
    if not models:
      raise ValueError("an ensemble needs at least one model")
    self.models = list(models)

  def start_decoding(self, source, source_length):
    """Encodes source [B, Ts] (lengths [B]) with every member.

    Returns:
      (step, state) as `Seq2Seq.start_decoding`: step(tokens [B], state) -> (log-probabilities
      [B, V] float32 of the averaged distribution, new state); the state is a tuple of the
      members' states.
    """
    starts = [model.start_decoding(source, source_length) for model in self.models]
    member_steps = [step for step, _ in starts]
    log_count = math.log(len(self.models))

    def step(tokens, state):
      outputs = [member(tokens, s) for member, s in zip(member_steps, state)]
      log_probs = tf.stack([log_probs for log_probs, _ in outputs])  # [M, B, V]
      mean = tf.reduce_logsumexp(log_probs, axis=0) - log_count
      return mean, tuple(new_state for _, new_state in outputs)
    return step, tuple(state for _, state in starts)
