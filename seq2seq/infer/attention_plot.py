"""Attention alignments as a heat map: source words across, output words down, a PNG file.

matplotlib is optional (`pip install matplotlib`, or the package's `plot` extra) and is
imported only when a plot is drawn. The figure is drawn on an Agg canvas of its own, so the
process-wide pyplot backend (a notebook's, say) is left alone.
"""
import importlib.util

import numpy as np

from seq2seq.runtime import outputs

INSTALL = 'pip install matplotlib (or pip install -e ".[plot]")'


class MatplotlibMissing(ImportError):
  """matplotlib, needed to draw, is not installed."""

  def __init__(self):
    super().__init__(f"drawing attention needs matplotlib, which is not installed: {INSTALL}")


def check_available():
  """Raises `MatplotlibMissing` unless matplotlib can be imported (without importing it)."""
  if importlib.util.find_spec("matplotlib") is None:
    raise MatplotlibMissing()


def _figure_class():
  try:
    from matplotlib.backends import backend_agg  # pylint: disable=import-outside-toplevel
    from matplotlib import figure  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise MatplotlibMissing() from None
  return figure.Figure, backend_agg.FigureCanvasAgg


def draw(path, source_words, output_words, weights, title=""):
  """Writes the heat map of `weights` to `path` as a PNG, atomically (PATH.tmp, then renamed).

  Args:
    path: the PNG file; its folder must exist.
    source_words: the S source words (the x axis, left to right).
    output_words: the T output words (the y axis, top to bottom), <EOS> included.
    weights: [T, S], row t the attention paid when output word t was chosen; 0 (white) to 1.
    title: an optional line above the plot.

  Raises:
    ValueError: no words on an axis, or `weights` of another shape.
    MatplotlibMissing: matplotlib is not installed.
  """
  weights = np.asarray(weights, np.float32)
  if not source_words or not output_words:
    raise ValueError(f"nothing to draw: {len(source_words)} source and {len(output_words)} "
                     "output words")
  if weights.shape != (len(output_words), len(source_words)):
    raise ValueError(f"weights of shape {weights.shape} do not match {len(output_words)} output "
                     f"and {len(source_words)} source words")
  figure_class, canvas_class = _figure_class()
  # About half an inch a word, so labels stay readable for sentences of up to ~50 words.
  fig = figure_class(figsize=(2.5 + 0.45 * len(source_words), 1.5 + 0.4 * len(output_words)),
                     layout="constrained")
  canvas_class(fig)
  axes = fig.add_subplot()
  image = axes.imshow(weights, cmap="Greys", vmin=0.0, vmax=1.0, aspect="auto",
                      interpolation="nearest")
  axes.set_xticks(range(len(source_words)), labels=source_words, rotation=60, ha="right",
                  rotation_mode="anchor")
  axes.set_yticks(range(len(output_words)), labels=output_words)
  axes.set_xlabel("source")
  axes.set_ylabel("output")
  if title:
    axes.set_title(title)
  fig.colorbar(image, ax=axes, label="attention")
  with outputs.file_into(path, "wb") as f:  # a chat redraws it: never seen half-written
    fig.savefig(f, format="png", dpi=100)


def draw_alignment(path, alignment, title=""):
  """`draw` for a `decoding.Alignment`."""
  draw(path, alignment.source_words, alignment.output_words, alignment.weights, title)
