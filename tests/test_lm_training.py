"""--model=lm through the training loop: the carried state is checkpointed, a resumed run
equals an uninterrupted one, and eval perplexity equals a NumPy re-derivation."""
import os
import random

import numpy as np
import tensorflow as tf

from seq2seq import config as config_lib
from seq2seq.runtime import workdir as workdir_lib
from seq2seq.train import lm_run
from seq2seq.train import loop
from tests import helpers

WORDS = "the cat dog sat on a mat log and ran".split()


def _write_text(path, num_lines=100, seed=0):
  """Lines of 3..7 random words: 600 or so tokens with the <EOS> of each line."""
  rng = random.Random(seed)
  with open(path, "w", encoding="utf-8") as f:
    for _ in range(num_lines):
      f.write(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 7))) + "\n")
  return path


def _config(workdir, text, **changes):
  sizes = dict(model="lm", num_steps=5, batch_size=4, hidden_size=16, embedding_size=8)
  return helpers.tiny_config(workdir, text, **{**sizes, **changes})


def _checkpoint_values(workdir, prefix, path=None):
  """{key: value} of the checkpoint variables under `prefix` (latest checkpoint by default)."""
  return helpers.checkpoint_values(path or workdir_lib.checkpoint_dir(workdir), (prefix,),
                                   slots=False)


class LMTrainingTest(tf.test.TestCase):

  def test_resume_matches_uninterrupted_run(self):
    """Stopped mid-epoch (the carried state is restored, not zeroed) and at an epoch's end
    (it is reset), then resumed: the parameters of one straight run, dropout included."""
    tf.config.experimental.enable_op_determinism()
    tmp = self.get_temp_dir()
    text = _write_text(os.path.join(tmp, "text.txt"))
    straight = _config(os.path.join(tmp, "straight"), text, keep_prob=0.7, max_steps=36)
    messages = []
    loop.train(straight, log=messages.append)
    per_epoch = int([m for m in messages if m.startswith("model:")][0].split(" batches")[0]
                    .split()[-1])
    self.assertBetween(per_epoch, 20, 35)

    pieces = os.path.join(tmp, "pieces")
    messages = []
    for stop in (10, per_epoch, 36):
      result = loop.train(_config(pieces, text, keep_prob=0.7, max_steps=stop),
                          log=messages.append)
      if stop == 10:  # mid-epoch: a non-zero state was saved to go on from
        carried = _checkpoint_values(pieces, "carried_state/")
        self.assertLen(carried, 2)  # LSTMState(hidden, cell) of the one layer
        self.assertTrue(all(np.abs(v).max() > 0 for v in carried.values()))
    self.assertEqual(result.step, 36)
    self.assertTrue(any(m.startswith("Resuming from") and f"batch 10 of {per_epoch}" in m
                        for m in messages), messages)

    for prefix in ("model/", "optimizer/", "carried_state/"):  # weights, slots, state
      expected = _checkpoint_values(straight.train.workdir, prefix)
      actual = _checkpoint_values(pieces, prefix)
      self.assertEqual(sorted(expected), sorted(actual))
      for key in expected:
        self.assertAllClose(expected[key], actual[key], atol=1e-6, msg=key)

  def test_resume_with_other_windows_is_refused_naming_the_flag(self):
    tmp = self.get_temp_dir()
    text = _write_text(os.path.join(tmp, "text.txt"))
    workdir = os.path.join(tmp, "run")
    loop.train(_config(workdir, text, max_steps=2), log=helpers.quiet)
    for name, value in (("batch_size", 8), ("num_steps", 7)):
      with self.assertRaisesRegex(workdir_lib.WorkdirMismatch, f"--{name}={value}"):
        loop.train(_config(workdir, text, max_steps=4, **{name: value}), log=helpers.quiet)

  def test_decode_max_length_is_the_longest_continuation(self):
    tmp = self.get_temp_dir()
    text = _write_text(os.path.join(tmp, "text.txt"))
    config = _config(os.path.join(tmp, "run"), text, max_steps=2)
    self.assertEqual(config.data.max_length, 6)
    loop.train(config, log=helpers.quiet)
    for decode_max_length, want in ((0, 6), (9, 9)):
      generator = lm_run.make_generator(
          config_lib.replace(config, decode_max_length=decode_max_length), helpers.quiet)
      self.assertEqual(generator.max_length, want)
      generator.choose = lambda logits, seed: tf.constant([5], tf.int32)  # a word, never <EOS>
      self.assertLen(generator.continuation("the cat").text.split(), want)

  def test_validation_summaries_and_eval_perplexity(self):
    """The epoch-end validation equals --mode=eval on the final parameters, and both equal
    exp(mean NLL) re-derived in NumPy from one unroll over each whole row."""
    tmp = self.get_temp_dir()
    text = _write_text(os.path.join(tmp, "text.txt"))
    val = _write_text(os.path.join(tmp, "val.txt"), num_lines=30, seed=1)
    config = _config(os.path.join(tmp, "run"), text, val_data=val, num_epochs=1, log_every=5)
    messages = []
    result = loop.train(config, log=messages.append)
    self.assertTrue(any(m.startswith(f"{result.step}/{result.step} (epoch 1/1) loss=")
                        and " ppl=" in m and " tok/s=" in m and " ETA=" in m for m in messages),
                    messages)
    self.assertNotEmpty(helpers.read_events(workdir_lib.summary_dir(config.train.workdir,
                                                                     "train")))
    self.assertNotEmpty(helpers.read_events(workdir_lib.summary_dir(config.train.workdir, "val")))

    loss, ppl = lm_run.evaluate(config, log=messages.append)
    self.assertAllClose(result.val_loss, loss, rtol=1e-6)
    self.assertAllClose(np.exp(loss), ppl, rtol=1e-6)
    self.assertTrue(any(m.startswith(f"eval on {val}: loss=") for m in messages))

    # Re-derivation: the same rows (4 of them, each row_length tokens), unrolled whole.
    model, vocabulary = lm_run.load_trained(config, log=helpers.quiet)
    stream = lm_run.encode_stream(lm_run.read_stream(val, lambda line: line.split()), vocabulary)
    row_length = len(stream) // 4
    count = (row_length - 1) // 5
    rows = stream[:4 * row_length].reshape(4, row_length)
    inputs, targets = rows[:, :count * 5], rows[:, 1:count * 5 + 1]
    logits, _ = model(tf.constant(inputs), model.initial_state(4))
    logits = logits.numpy().astype(np.float64)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -np.take_along_axis(log_probs, targets[..., None], -1).mean()
    self.assertAllClose(nll, loss, rtol=1e-5)


if __name__ == "__main__":
  tf.test.main()
