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
    for beam_width, n_best in ((1, 1), (2, 2)):
      self._reply(**self._settings(["hello"], beam_width, n_best, 0.0, 0, 0))
    self._reply(**self._settings(["hello"], 1, 1, 1.0, 0, 0))
    if self._align is not None:
      self._align(**self._align_settings(["hello"], 0.0, 0, 0))

  @staticmethod
  def _align_settings(texts, temperature, top_k, seed):
    return {"text": tf.constant(texts, tf.string),
            "temperature": tf.constant(temperature, tf.float32),
            "top_k": tf.constant(top_k, tf.int32), "seed": tf.constant(seed, tf.int64)}

  def _settings(self, texts, beam_width, n_best, temperature, top_k, seed):
    return dict(self._align_settings(texts, temperature, top_k, seed),
                beam_width=tf.constant(beam_width, tf.int32), n_best=tf.constant(n_best, tf.int32))

  def answer(self, queries):
    """The answers to `queries`, which share their settings (`requests.batch_key`), decoded
    as one batch.

    Returns:
      one dict a query: {"replies": [{"text", "score"}], best first; "attention": None, or
      {"source": [S words], "output": [T words, <EOS> included], "weights": [T][S]}}.
    """
    first = queries[0]
    texts = [query.text for query in queries]
    if first.attention:
      return self._aligned(texts, first)
    out = self._reply(**self._settings(texts, first.beam_width, first.n_best,
                                       first.temperature, first.top_k, first.seed))
    return [{"replies": [{"text": reply.decode("utf-8"), "score": float(score)}
                         for reply, score in zip(replies, scores)], "attention": None}
            for replies, scores in zip(out["replies"].numpy(), out["scores"].numpy())]

  def _aligned(self, texts, query):
    out = {name: value.numpy() for name, value in self._align(
        **self._align_settings(texts, query.temperature, query.top_k, query.seed)).items()}
    answers = []
    for b in range(len(texts)):
      sources, outputs = out["source_lengths"][b], out["output_lengths"][b]
      weights = np.round(out["alignments"][b, :outputs, :sources].astype(np.float64), 4)
      answers.append({
          "replies": [{"text": out["replies"][b].decode("utf-8"), "score": 0.0}],
          "attention": {"source": [w.decode("utf-8") for w in out["source_words"][b, :sources]],
                        "output": [w.decode("utf-8") for w in out["output_words"][b, :outputs]],
                        "weights": weights.tolist()}})
    return answers
