"""--plot_attention: the alignments collected while decoding, the heat map, the flag end to end."""
import io
import os
import struct
import sys
from unittest import mock

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from seq2seq.data import vocab as vocab_lib
from seq2seq.infer import attention_plot
from seq2seq.infer import chat
from seq2seq.infer import decoding
from seq2seq.nn import cells
from seq2seq.nn import unroll
from seq2seq.runtime import workdir as workdir_lib
from seq2seq.train import loop
from tests import helpers
from tests.test_cli import run_train
from tests.test_model_options import _model
from tests.test_train_step import VOCAB, _batch

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_size(path):
  """(width, height) from a PNG's IHDR chunk; fails unless the file starts as a PNG does."""
  with open(path, "rb") as f:
    head = f.read(24)
  assert head[:8] == PNG_SIGNATURE and head[12:16] == b"IHDR", head
  return struct.unpack(">II", head[16:24])


class _EmitAlignments(cells.RNNCore):
  """An `AttentionWrapper` whose output also carries the step's alignments: [a_t; alpha_t]."""

  def __init__(self, core):
    super().__init__()
    self.core = core

  def __call__(self, inputs, state):
    output, state = self.core(inputs, state)
    return tf.concat([output, state.alignments], -1), state

  def initial_state(self, batch_size, dtype=None):
    return self.core.initial_state(batch_size, dtype)

  @property
  def output_size(self):
    return self.core.output_size + self.core.memory.shape[1]


def _vocabulary():
  return vocab_lib.Vocabulary(list(vocab_lib.SPECIAL_TOKENS) + [f"w{i}" for i in range(4, VOCAB)])


class DecodedAlignmentsTest(parameterized.TestCase, tf.test.TestCase):

  @parameterized.parameters(("uni", "luong"), ("bi", "bahdanau_norm"), ("uni", "luong_scaled"))
  def test_alignments_are_the_teacher_forced_ones(self, encoder, attention):
    model = _model(encoder, attention)  # float64, random weights
    batch = _batch()
    steps = 7
    ids, alignments = decoding.greedy_decode(model, batch.source, batch.source_length, steps,
                                             alignments=True)
    ids, alignments = ids.numpy(), alignments.numpy()
    self.assertAllEqual(ids, decoding.greedy_decode(model, batch.source, batch.source_length,
                                                    steps))
    source_steps = batch.source.shape[1]
    self.assertEqual(alignments.shape, (len(ids), steps, source_steps))
    valid = np.arange(source_steps)[None, None, :] < batch.source_length[:, None, None]
    self.assertAllClose(np.where(valid, alignments, 0).sum(-1), np.ones(ids.shape), atol=1e-6)
    self.assertTrue(np.all(alignments[~np.broadcast_to(valid, alignments.shape)] == 0))

    # Teacher forcing on the decoded tokens (<GO> y1 .. y_{T-1}) through the library's unroll.
    decoder_input = np.concatenate([np.full([len(ids), 1], vocab_lib.GO_ID), ids[:, :-1]], 1)
    core, state = model.start_decoder(model.source_embedding(batch.source), batch.source_length)
    outputs, _ = unroll.static_unroll(_EmitAlignments(core),
                                      model.target_embedding(decoder_input), state)
    self.assertAllClose(alignments, outputs[..., core.output_size:], atol=1e-6)
    # ... whose arg-max tokens are the decoded ones, up to each row's <EOS>.
    chosen = np.argmax(model(batch.source, batch.source_length, decoder_input), -1)
    for row, tokens in zip(chosen, ids):
      end = list(tokens).index(vocab_lib.EOS_ID) + 1 if vocab_lib.EOS_ID in tokens else steps
      self.assertAllEqual(row[:end], tokens[:end])

  def test_a_model_without_attention_is_refused_naming_the_flag(self):
    model = _model("uni", "none")
    batch = _batch()
    with self.assertRaisesRegex(decoding.NoAttention, r"has none \(--attention=none\)"):
      decoding.greedy_decode(model, batch.source, batch.source_length, 3, alignments=True)
    decoder = decoding.Decoder(model, _vocabulary(), str.split, 5)
    with self.assertRaisesRegex(decoding.NoAttention, r"--attention=luong"):
      decoder.align("w4 w5")

  def test_decoder_align_gives_the_reply_and_its_words(self):
    model = _model("uni", "luong", dtype=tf.float32)
    vocabulary = _vocabulary()
    source = tf.constant([[5, 6, vocab_lib.UNK_ID, 0, 0]], tf.int32)
    for options in ({}, {"temperature": 1.0, "top_k": 5, "seed": 3}):
      decoder = decoding.Decoder(model, vocabulary, str.split, 5, **options)
      alignment = decoder.align("w5 w6 zzz")
      self.assertEqual(alignment.source_words, ["w5", "w6", vocab_lib.UNK])
      # The reply of the Decoder's own search (run eagerly here: one trace fewer).
      ids, _ = decoding.make_search(model, 5, **options)(source, tf.constant([3]))
      self.assertEqual(alignment.reply, " ".join(vocabulary.decode(ids[0, 0].numpy())))
      words = alignment.output_words
      self.assertTrue(words[-1] == vocab_lib.EOS or len(words) == 6, words)
      self.assertNotIn(vocab_lib.EOS, words[:-1])
      self.assertEqual(alignment.weights.shape, (len(words), 3))
      self.assertAllClose(alignment.weights.sum(-1), np.ones(len(words)), atol=1e-5)
    beam = decoding.Decoder(model, _vocabulary(), str.split, 5, beam_width=2)
    with self.assertRaisesRegex(ValueError, "beam search"):
      beam.align("w5")


class DrawTest(tf.test.TestCase):

  def test_draw_writes_a_png_in_place(self):
    path = os.path.join(self.get_temp_dir(), "attention.png")
    with open(path, "wb") as f:
      f.write(b"an older plot")
    weights = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    attention_plot.draw(path, ["hello", "there", "<UNK>"], ["hi", "<EOS>"], weights, title="t")
    width, height = _png_size(path)
    self.assertGreater(width * height, 0)
    self.assertGreater(os.path.getsize(path), 100)
    self.assertEqual(os.listdir(self.get_temp_dir()), ["attention.png"])  # no PATH.tmp left

  def test_bad_shapes_and_missing_matplotlib(self):
    path = os.path.join(self.get_temp_dir(), "never.png")
    with self.assertRaisesRegex(ValueError, r"shape \(2, 2\) do not match 2 output and 3 source"):
      attention_plot.draw(path, ["a", "b", "c"], ["x", "<EOS>"], np.zeros([2, 2]))
    with self.assertRaisesRegex(ValueError, "nothing to draw"):
      attention_plot.draw(path, [], ["<EOS>"], np.zeros([1, 0]))
    hidden = dict.fromkeys(["matplotlib", "matplotlib.figure", "matplotlib.backends",
                            "matplotlib.backends.backend_agg"])
    with mock.patch.dict(sys.modules, hidden):
      with self.assertRaisesRegex(attention_plot.MatplotlibMissing, r"pip install matplotlib"):
        attention_plot.check_available()
      with self.assertRaisesRegex(attention_plot.MatplotlibMissing, r"\.\[plot\]"):
        attention_plot.draw(path, ["a"], ["<EOS>"], np.ones([1, 1]))
    self.assertFalse(os.path.exists(path))


class FlagTest(tf.test.TestCase):
  """--plot_attention through train.py, as a user runs it."""

  def test_decode_and_chat_draw_the_attention(self):
    tmp = self.get_temp_dir()
    data = helpers.write_reverse_task(os.path.join(tmp, "reverse.tsv"), num_pairs=64)
    workdir = os.path.join(tmp, "run")
    loop.train(helpers.tiny_config(workdir, data, attention="luong", max_steps=1),
               helpers.quiet)  # in this process: a third subprocess would take 10 s more

    source, target = os.path.join(tmp, "in.txt"), os.path.join(tmp, "out.txt")
    with open(source, "w", encoding="utf-8") as f:
      f.write("a b c\nd e\n")
    plot = os.path.join(tmp, "decode.png")
    decoded = run_train(f"--workdir={workdir}", "--mode=decode", f"--decode_input={source}",
                        f"--decode_output={target}", f"--plot_attention={plot}")
    self.assertEqual(decoded.returncode, 0, decoded.stderr)
    self.assertIn(f"drew the attention behind the reply to line 1 in {plot}", decoded.stdout)
    self.assertGreater(_png_size(plot)[0], 0)

    # Chat in this process (a subprocess costs 10 s), as train.py --mode=chat runs it.
    plot = os.path.join(tmp, "chat.png")
    stdout = io.StringIO()
    chat.chat_loop(chat.make_decoder(workdir_lib.load_run_config(workdir), helpers.quiet),
                   io.StringIO("a b c\nd e f\nquit\n"), stdout, plot_attention=plot)
    self.assertIn(f"The attention behind each reply is drawn in {plot}.", stdout.getvalue())
    self.assertRegex(stdout.getvalue(), r"> a b c\nbot: .*\n> d e f\nbot: ")
    self.assertGreater(_png_size(plot)[0], 0)

  def test_refusals_name_the_flag(self):
    tmp = self.get_temp_dir()
    workdir = os.path.join(tmp, "untrained")
    workdir_lib.check_or_save_config(helpers.tiny_config(workdir, "chatterbot"))  # no attention
    for flags, message in [
        ([f"--plot_attention={tmp}/no/such/a.png"],
         r"--plot_attention=\S+: the folder \S+ does not exist"),
        (["--plot_attention=a.png", "--beam_width=2"],
         r"--plot_attention: draws the attention of greedy and sampled replies; beam search"),
        ([f"--plot_attention={tmp}/a.png"],
         r"--plot_attention: attention alignments need a seq2seq model with attention, and this "
         r"one has none \(--attention=none\)")]:
      result = run_train(f"--workdir={workdir}", "--mode=chat", *flags, stdin="hello\n")
      self.assertEqual(result.returncode, 1, result.stderr)
      self.assertRegex(result.stderr, message)
      self.assertNotIn("Traceback", result.stderr)
    self.assertEqual(sorted(os.listdir(workdir)), ["config.json"])  # nothing was loaded


if __name__ == "__main__":
  tf.test.main()
