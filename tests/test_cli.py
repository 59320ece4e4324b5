"""train.py end to end, through a subprocess, as a user runs it."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf

from seq2seq.runtime import workdir as workdir_lib
from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--num_layers=1", "--hidden_size=32", "--embedding_size=16", "--num_buckets=1",
        "--batch_size=16"]


def run_train(*flags, stdin=None, timeout=300):
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  return subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *flags], cwd=ROOT,
                        input=stdin, capture_output=True, text=True, timeout=timeout, env=env)


class BadFlagsTest(tf.test.TestCase):
  """Bad values stop the program before any work, with a message naming the flag."""

  def _assert_refused(self, flag, pattern, *more_flags):
    workdir = os.path.join(self.get_temp_dir(), "never_created")
    started = time.monotonic()
    result = run_train(f"--workdir={workdir}", flag, *more_flags)
    self.assertEqual(result.returncode, 1, result.stderr)
    self.assertRegex(result.stderr, pattern)
    self.assertNotIn("Traceback", result.stderr)
    self.assertFalse(os.path.exists(workdir), "work was done before the flag was checked")
    self.assertLess(time.monotonic() - started, 60)

  def test_negative_size(self):
    self._assert_refused("--hidden_size=-1", r"--hidden_size: must be > 0, got -1")

  def test_unknown_cell(self):
    self._assert_refused("--cell=rnn", r"--cell.*lstm.*gru")

  def test_prepare_setting_checked_inside_prepare_is_a_message(self):
    data = os.path.join(self.get_temp_dir(), "pairs.tsv")
    with open(data, "w", encoding="utf-8") as f:
      f.write("hi there\thello\n")
    self._assert_refused("--mode=prepare", r"--vocab_coverage: cannot be used with "
                         r"--tokenizer=sentencepiece", f"--input={data}", "--input_format=pairs",
                         f"--output_dir={self.get_temp_dir()}/out", "--tokenizer=sentencepiece",
                         "--vocab_coverage=0.9")

  def test_keep_prob_out_of_range(self):
    self._assert_refused("--keep_prob=1.5", r"--keep_prob: must be in \(0, 1\]")

  def test_missing_data_file(self):
    self._assert_refused("--data=/no/such/file.tsv", r"--data=/no/such/file.tsv: no such file")

  def test_min_length_above_max_length(self):
    self._assert_refused("--min_length=30", r"--min_length: 30 is greater than max_length 20")

  def test_freeze_without_pretrained(self):
    self._assert_refused("--freeze_embeddings", r"--freeze_embeddings: freezing needs")

  def test_per_gate_hidden_gradient_with_dynamic_unroll(self):
    self._assert_refused("--per_gate_hidden_gradient", r"--per_gate_hidden_gradient: needs "
                         r"--unroll=static", "--unroll=dynamic")

  def test_unknown_attention(self):
    self._assert_refused("--attention=dot", r"--attention.*luong.*bahdanau")

  def test_decode_without_input(self):
    self._assert_refused("--mode=decode", r"--decode_input: --mode=decode needs")

  def test_serve_port_out_of_range(self):
    self._assert_refused("--port=70000", r"--port: must be in \[0, 65535\] \(0 = any free port\), "
                         r"got 70000", "--mode=serve")

  def test_lm_modes_not_supported(self):
    workdir = os.path.join(self.get_temp_dir(), "never_created")
    result = run_train(f"--workdir={workdir}", "--model=lm", "--mode=export")
    self.assertEqual(result.returncode, 1, result.stderr)
    self.assertIn("--model: lm supports --mode=train, eval and chat; not --mode=export",
                  result.stderr)
    result = run_train(f"--workdir={workdir}", "--model=lm", "--mode=chat", "--beam_width=2")
    self.assertEqual(result.returncode, 1, result.stderr)
    self.assertIn("--beam_width: --model=lm continues text greedily or by sampling",
                  result.stderr)
    self.assertFalse(os.path.exists(workdir))

  def test_ensemble_flags(self):
    workdir = os.path.join(self.get_temp_dir(), "never_created")
    for flags_, message in (
        (["--mode=chat", "--ensemble=/no/such/run"], "--ensemble=/no/such/run: no such workdir"),
        (["--mode=eval", f"--ensemble={ROOT}"],
         "--ensemble applies to --mode=chat, decode and export, not --mode=eval"),
        (["--mode=chat", f"--ensemble={ROOT}", "--plot_attention=a.png"],
         "--plot_attention: draws one model's attention; an ensemble (--ensemble) averages")):
      result = run_train(f"--workdir={workdir}", *flags_)
      self.assertEqual(result.returncode, 1, result.stderr)
      self.assertIn(message, result.stderr)
      self.assertNotIn("Traceback", result.stderr)
    self.assertFalse(os.path.exists(workdir))

  def test_negative_decode_max_length(self):
    self._assert_refused("--decode_max_length=-1",
                         r"--decode_max_length: must be >= 0 \(0 = the trained --max_length\)")

  def test_n_best_above_beam_width(self):
    self._assert_refused("--n_best=3", r"--n_best: 3 is more than beam_width 1")


@pytest.mark.slow
class EndToEndTest(tf.test.TestCase):

  def test_default_corpus_train_then_chat_then_eval(self):
    workdir = os.path.join(self.get_temp_dir(), "run")
    result = run_train(f"--workdir={workdir}", "--max_steps=4", "--log_every=2", *TINY)
    self.assertEqual(result.returncode, 0, result.stderr)
    self.assertRegex(result.stdout, r"read \d+ pairs from 21 file")
    self.assertRegex(result.stdout,
                     r"4/4 \(epoch 1/\d+\) loss=\S+ ppl=\S+ grad_norm=\S+ lr=\S+ tok/s=\d+ "
                     r"time/batch=\S+s ETA=0:00")
    self.assertIsNotNone(tf.train.latest_checkpoint(workdir_lib.checkpoint_dir(workdir)))
    self.assertNotEmpty(helpers.read_events(workdir_lib.summary_dir(workdir, "train")))

    chat = run_train(f"--workdir={workdir}", "--mode=chat", stdin="hello how are you\nquit\n")
    self.assertEqual(chat.returncode, 0, chat.stderr)
    self.assertIn("> hello how are you\nbot:", chat.stdout)

    evaluation = run_train(f"--workdir={workdir}", "--mode=eval")
    self.assertEqual(evaluation.returncode, 0, evaluation.stderr)
    self.assertRegex(evaluation.stdout, r"eval on chatterbot: loss=\S+ ppl=\S+")

  def test_attention_train_then_beam_chat(self):
    workdir = os.path.join(self.get_temp_dir(), "run")
    result = run_train(f"--workdir={workdir}", "--max_steps=2", "--encoder=bi",
                       "--attention=bahdanau_norm", *TINY)
    self.assertEqual(result.returncode, 0, result.stderr)
    chat = run_train(f"--workdir={workdir}", "--mode=chat", "--beam_width=3", "--n_best=2",
                     stdin="hello how are you\nquit\n")
    self.assertEqual(chat.returncode, 0, chat.stderr)
    self.assertRegex(chat.stdout, r"> hello how are you\nbot:.*\n  2\. .*\(-?\d+\.\d+\)\n")

    source, target = (os.path.join(self.get_temp_dir(), name) for name in ("in.txt", "out.txt"))
    with open(source, "w", encoding="utf-8") as f:
      f.write("hello\nhow are you\nwhat is your name\n")
    decoded = run_train(f"--workdir={workdir}", "--mode=decode", f"--decode_input={source}",
                        f"--decode_output={target}", "--beam_width=2")
    self.assertEqual(decoded.returncode, 0, decoded.stderr)
    self.assertIn(f"decoded 3 lines of {source}", decoded.stdout)
    with open(target, encoding="utf-8") as f:
      replies = f.read()
    self.assertLen(replies.split("\n"), 4)
    # An ensemble of the run with itself averages two equal distributions: the same replies.
    twice = os.path.join(self.get_temp_dir(), "twice.txt")
    decoded = run_train(f"--workdir={workdir}", "--mode=decode", f"--decode_input={source}",
                        f"--decode_output={twice}", "--beam_width=2", f"--ensemble={workdir}")
    self.assertEqual(decoded.returncode, 0, decoded.stderr)
    self.assertIn(f"decoding with an ensemble of 2 models: {workdir}, {workdir}", decoded.stdout)
    with open(twice, encoding="utf-8") as f:
      self.assertEqual(f.read(), replies)
    # --decode_max_length=2 (trained with --max_length=20): 3 decoder steps, 3 words at most.
    short = os.path.join(self.get_temp_dir(), "short.txt")
    decoded = run_train(f"--workdir={workdir}", "--mode=decode", f"--decode_input={source}",
                        f"--decode_output={short}", "--beam_width=2", "--decode_max_length=2")
    self.assertEqual(decoded.returncode, 0, decoded.stderr)
    with open(short, encoding="utf-8") as f:
      short_replies = f.read().split("\n")[:-1]
    self.assertLen(short_replies, 3)
    self.assertTrue(all(len(reply.split()) <= 3 for reply in short_replies), short_replies)

  def test_language_model_trains_on_text(self):
    text = os.path.join(self.get_temp_dir(), "text.txt")
    with open(text, "w", encoding="utf-8") as f:
      f.write("the cat sat on the mat\nthe dog sat on the log\n" * 40)
    workdir = os.path.join(self.get_temp_dir(), "lm")
    result = run_train(f"--workdir={workdir}", "--model=lm", f"--data={text}", "--num_steps=5",
                       "--num_epochs=2", "--batch_size=4", "--num_layers=1", "--hidden_size=16",
                       "--embedding_size=8", f"--val_data={text}", "--log_every=9")
    self.assertEqual(result.returncode, 0, result.stderr)
    self.assertRegex(result.stdout, r"language model: 80 lines, 560 tokens")
    self.assertRegex(result.stdout, r"54/54 \(epoch 2/2\) loss=\S+ ppl=\S+ grad_norm=\S+ lr=\S+ "
                                    r"tok/s=\d+ time/batch=\S+s ETA=0:00")
    self.assertRegex(result.stdout, r"validation after epoch 2: loss=\S+ ppl=\S+")
    self.assertIsNotNone(tf.train.latest_checkpoint(workdir_lib.checkpoint_dir(workdir)))

    evaluation = run_train(f"--workdir={workdir}", "--mode=eval", f"--val_data={text}")
    self.assertEqual(evaluation.returncode, 0, evaluation.stderr)
    self.assertRegex(evaluation.stdout, rf"eval on {text}: loss=\S+ ppl=\S+ over \d+ tokens")

    chat = run_train(f"--workdir={workdir}", "--mode=chat", "--temperature=0.8",
                     stdin="the cat\nquit\n")
    self.assertEqual(chat.returncode, 0, chat.stderr)
    self.assertRegex(chat.stdout, r"> the cat\nbot: [a-z ]*\n")

  def test_chat_without_training_is_a_clear_error(self):
    result = run_train(f"--workdir={self.get_temp_dir()}/empty", "--mode=chat", stdin="")
    self.assertEqual(result.returncode, 1)
    self.assertIn("train first", result.stderr)
    self.assertNotIn("Traceback", result.stderr)

  def test_sigint_saves_a_checkpoint_and_exits_130(self):
    tmp = self.get_temp_dir()
    data = helpers.write_reverse_task(os.path.join(tmp, "reverse.tsv"), num_pairs=200)
    workdir = os.path.join(tmp, "run")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "train.py"), f"--workdir={workdir}", f"--data={data}",
         "--max_length=6", "--log_every=1", "--save_every=100000", *TINY],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
      for line in process.stdout:
        if line.startswith("3/"):  # a few steps in, well before any periodic save
          break
      process.send_signal(signal.SIGINT)
      stdout, stderr = process.communicate(timeout=120)
    finally:
      process.kill()
    self.assertEqual(process.returncode, 130, stderr)
    self.assertIn("stopped by signal 2", stdout)
    latest = tf.train.latest_checkpoint(workdir_lib.checkpoint_dir(workdir))
    self.assertIsNotNone(latest)
    self.assertGreaterEqual(int(latest.rsplit("-", 1)[1]), 3)


# Reads a flagfile the way train.py does and prints the RunConfig it gives, as JSON.
_SHOW_CONFIG = """
import dataclasses, json, sys
import train
argv = train.FLAGS(["train.py", *sys.argv[1:]])
print(json.dumps(dataclasses.asdict(train._config_from_flags(argv))))
"""


class ShippedFlagfilesTest(tf.test.TestCase):
  """The flagfiles in configs/ parse into valid training configs holding the recipes that
  BUILD.md reports (the data paths are pointed at stand-ins, so ../shared is not needed)."""

  def _config(self, flagfile, *flags):
    tmp = self.get_temp_dir()
    text = os.path.join(tmp, "pairs.txt")
    with open(text, "w", encoding="utf-8") as f:
      f.write("a b c\n")
    result = subprocess.run(
        [sys.executable, "-c", _SHOW_CONFIG, f"--flagfile={flagfile}", "--mode=train",
         f"--val_data={text}|{text}", *flags],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    self.assertEqual(result.returncode, 0, result.stderr)
    return json.loads(result.stdout.strip().splitlines()[-1])

  def test_word_level_recipe(self):
    config = self._config("configs/multi30k_attention.flags",
                          f"--data={os.path.join(self.get_temp_dir(), '*')}")
    self.assertEqual(config["train"]["seed"], 1)
    self.assertEqual(config["data"]["max_vocab"], 14000)
    self.assertEqual(config["model"]["encoder"], "bi")
    self.assertEqual(config["model"]["attention"], "luong")
    self.assertAlmostEqual(config["train"]["label_smoothing"], 0.1)
    # The default step: compiled on a GPU, the embedding where the defaults keep it.
    self.assertEqual(config["train"]["jit_compile"], "auto")
    self.assertEqual(config["model"]["unroll"], "auto")
    self.assertEqual(config["model"]["embedding_device"], "cpu")

  def test_bpe_recipe_nests_the_word_level_flagfile(self):
    config = self._config("configs/multi30k_bpe.flags", f"--data={self.get_temp_dir()}")
    self.assertEqual(config["model"]["embedding_size"], 512)  # its own, over the nested 256
    self.assertTrue(config["model"]["share_embeddings"])  # over the nested --noshare_embeddings
    self.assertTrue(config["model"]["tie_embeddings"])
    self.assertEqual(config["train"]["seed"], 1)
    self.assertEqual(config["data"]["max_vocab"], 10000)
    self.assertEqual(config["data"]["input_pipeline"], "memory")
    self.assertEqual(config["train"]["workdir"], "workdir_multi30k_bpe")
    self.assertEqual(config["model"]["hidden_size"], 512)  # from the nested flagfile
    self.assertEqual(config["data"]["max_length"], 32)


if __name__ == "__main__":
  tf.test.main()
