"""The exported SavedModel, called for a batch of checked requests (`requests.Query`)."""
import numpy as np
import tensorflow as tf

from seq2seq.infer import export


class ServedModel:
  """The SavedModel at `export_dir` with its `export.INFO_FILE`.

  `answer` is not thread-safe by design: one worker thread calls it (`worker.Worker`).
  """

  def __init__(self, export_dir):
    self.export_dir = export_dir
    self.info = export.read_info(export_dir) or {}
    self._loaded = tf.saved_model.load(export_dir)
    self._reply = self._loaded.signatures["reply"]
    self._align = self._loaded.signatures.get("align")

  @property
  def has_attention(self):
    return self._align is not None

  def warm_up(self):
    """Runs each search once, so the first request is not the one that waits for the
    runtime's one-off work (graph optimisation) on each signature."""
    for signature in filter(None, (self._reply, self._align)):
      for beam_width, temperature in ((1, 0.0), (2, 0.0), (1, 1.0)):
        signature(**self._inputs(["hello"], beam_width, 1, temperature, 0, 0))

  @staticmethod
  def _inputs(texts, beam_width, n_best, temperature, top_k, seed):
    """The tensors the `reply` and `align` signatures take."""
    return {"text": tf.constant(texts, tf.string),
            "beam_width": tf.constant(beam_width, tf.int32),
            "n_best": tf.constant(n_best, tf.int32),
            "temperature": tf.constant(temperature, tf.float32),
            "top_k": tf.constant(top_k, tf.int32), "seed": tf.constant(seed, tf.int64)}

  def answer(self, queries):
    """The answers to `queries`, which share their settings (`requests.batch_key`), decoded
    as one batch.

    Returns:
      one dict a query: {"replies": [{"text", "score"}], best first}; with `attention`, each
      reply also has "attention": {"source": [S words], "output": [T words, <EOS> included],
      "weights": [T][S]}.
    """
    first = queries[0]
    signature = self._align if first.attention else self._reply
    out = {name: value.numpy() for name, value in signature(**self._inputs(
        [query.text for query in queries], *first[1:6])).items()}
    answers = []
    for b in range(len(queries)):
      replies = [{"text": text.decode("utf-8"), "score": float(score)}
                 for text, score in zip(out["replies"][b], out["scores"][b])]
      if first.attention:
        for n, reply in enumerate(replies):
          reply["attention"] = _attention(out, b, n)
      answers.append({"replies": replies})
    return answers


def _attention(out, b, n):
  """Reply n of text b's attention, from the outputs of the `align` signature."""
  sources, outputs = out["source_lengths"][b], out["output_lengths"][b, n]
  weights = out["alignments"][b, n, :outputs, :sources].astype(np.float64)
  return {"source": [w.decode("utf-8") for w in out["source_words"][b, :sources]],
          "output": [w.decode("utf-8") for w in out["output_words"][b, n, :outputs]],
          "weights": np.round(weights, 4).tolist()}
