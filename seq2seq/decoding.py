"""Greedy decoding with a fixed maximum length."""
import tensorflow as tf

from seq2seq import vocab as vocab_lib


def greedy_decode(model, source, source_length, max_length):
  """Feeds back the arg-max token until <EOS> or `max_length` tokens.

  Args:
    model: a `Seq2Seq`.
    source: [B, Ts] ids; source_length: [B].
    max_length: static number of decoder steps.

  Returns:
    ids [B, max_length] int32: the tokens, then <EOS>, then <PAD> after it.
  """
  _, state = model.encode(source, source_length)
  decoder = model.decoder(training=False)
  batch = tf.shape(source)[0]
  token = tf.fill([batch], vocab_lib.GO_ID)
  finished = tf.zeros([batch], tf.bool)
  tokens = []
  for _ in range(max_length):
    inputs = tf.cast(model.target_embedding(token), model.dtype)
    output, state = decoder(inputs, state)
    logits = model.project(output[:, None, :])[:, 0, :]
    token = tf.argmax(logits, axis=-1, output_type=tf.int32)
    token = tf.where(finished, vocab_lib.PAD_ID, token)
    tokens.append(token)
    finished |= tf.equal(token, vocab_lib.EOS_ID)
  return tf.stack(tokens, axis=1)


class GreedyDecoder:
  """Text in, text out: tokenise, encode with the vocabulary, decode in a compiled function."""

  def __init__(self, model, vocabulary, tokenizer, max_length):
    self.model = model
    self.vocabulary = vocabulary
    self.tokenizer = tokenizer
    self.max_length = max_length
    self._decode = tf.function(
        lambda s, n: greedy_decode(model, s, n, max_length + 1),
        input_signature=[tf.TensorSpec([None, max_length], tf.int32),
                         tf.TensorSpec([None], tf.int32)])

  def reply(self, text):
    """One reply string (possibly empty) to `text`; input past max_length words is cut."""
    ids = self.vocabulary.encode(self.tokenizer(text))[:self.max_length]
    source = [ids + [vocab_lib.PAD_ID] * (self.max_length - len(ids))]
    out = self._decode(tf.constant(source, tf.int32), tf.constant([len(ids)], tf.int32))
    return " ".join(self.vocabulary.decode(out.numpy()[0]))
