"""The whole loop: it learns, it resumes exactly, it checkpoints, it refuses mismatches."""
import os

import numpy as np
import tensorflow as tf

from seq2seq.data import vocab as vocab_lib
from seq2seq.models import encoder_decoder as model_lib
from seq2seq.runtime import checkpoints
from seq2seq.runtime import workdir as workdir_lib
from seq2seq.step import optimizers
from seq2seq.train import loop
from tests import helpers


def _final_variables(workdir):
  """{checkpoint key: value} of the model variables in the latest checkpoint of `workdir`."""
  return helpers.checkpoint_values(workdir_lib.checkpoint_dir(workdir), slots=False)


class TrainingTest(tf.test.TestCase):

  def test_loss_drops_on_reverse_task(self):
    tmp = self.get_temp_dir()
    data = helpers.write_reverse_task(os.path.join(tmp, "reverse.tsv"))
    config = helpers.tiny_config(os.path.join(tmp, "run"), data, hidden_size=64, max_steps=300)
    result = loop.train(config, log=helpers.quiet)
    self.assertEqual(result.step, 300)
    # Uniform guessing over 12 tokens costs ln(12) = 2.5 nats; reversal must be learned.
    self.assertLess(result.last_loss, 0.5)

  def test_resume_matches_uninterrupted_run(self):
    tf.config.experimental.enable_op_determinism()
    tmp = self.get_temp_dir()
    data = helpers.write_reverse_task(os.path.join(tmp, "reverse.tsv"), num_pairs=100)
    # Dropout on and several batches an epoch: resuming must restore dropout masks and the
    # position inside the epoch, not only the weights.
    straight = helpers.tiny_config(os.path.join(tmp, "straight"), data, keep_prob=0.7,
                                   max_steps=17)
    loop.train(straight, log=helpers.quiet)

    pieces = os.path.join(tmp, "pieces")
    messages = []
    for stop in (5, 11, 17):
      loop.train(helpers.tiny_config(pieces, data, keep_prob=0.7, max_steps=stop),
                 log=messages.append)
    self.assertTrue(any(m.startswith("Resuming from") and "batch 5 of 7" in m for m in messages),
                    messages)

    expected, actual = _final_variables(straight.train.workdir), _final_variables(pieces)
    self.assertEqual(sorted(expected), sorted(actual))
    for key in expected:
      self.assertAllClose(expected[key], actual[key], atol=1e-6, msg=key)

  def test_checkpoint_holds_progress_and_summaries_are_written(self):
    tmp = self.get_temp_dir()
    data = helpers.write_reverse_task(os.path.join(tmp, "reverse.tsv"), num_pairs=100)
    config = helpers.tiny_config(os.path.join(tmp, "run"), data, max_steps=9, save_every=4,
                                 log_every=3, keep_checkpoints=2, val_data=data)
    loop.train(config, log=helpers.quiet)
    reader = tf.train.load_checkpoint(workdir_lib.checkpoint_dir(config.train.workdir))
    keys = reader.get_variable_to_shape_map()
    step_key = [k for k in keys if k.startswith("progress/step")][0]
    epoch_key = [k for k in keys if k.startswith("progress/epoch")][0]
    position_key = [k for k in keys if k.startswith("progress/position")][0]
    self.assertEqual(reader.get_tensor(step_key), 9)
    self.assertEqual(reader.get_tensor(epoch_key), 1)  # 7 batches an epoch
    self.assertEqual(reader.get_tensor(position_key), 2)
    self.assertTrue(any(k.startswith("progress/data_seed") for k in keys))
    self.assertTrue(any(k.startswith("optimizer/") for k in keys))
    manager_state = tf.train.get_checkpoint_state(workdir_lib.checkpoint_dir(config.train.workdir))
    self.assertLen(manager_state.all_model_checkpoint_paths, 2)  # keep_checkpoints
    self.assertNotEmpty(helpers.read_events(workdir_lib.summary_dir(config.train.workdir, "train")))
    self.assertNotEmpty(helpers.read_events(workdir_lib.summary_dir(config.train.workdir, "val")))
    with open(workdir_lib.vocab_path(config.train.workdir), encoding="utf-8") as f:
      self.assertEqual(f.read().split("\n")[:4], ["<PAD>", "<GO>", "<EOS>", "<UNK>"])

  def test_architecture_change_is_refused_naming_the_flag(self):
    tmp = self.get_temp_dir()
    data = helpers.write_reverse_task(os.path.join(tmp, "reverse.tsv"), num_pairs=50)
    workdir = os.path.join(tmp, "run")
    loop.train(helpers.tiny_config(workdir, data, max_steps=2), log=helpers.quiet)
    with self.assertRaisesRegex(workdir_lib.WorkdirMismatch, r"--hidden_size=48.*32"):
      loop.train(helpers.tiny_config(workdir, data, hidden_size=48, max_steps=4),
                 log=helpers.quiet)

  def test_checkpoint_of_other_shape_gives_clear_error(self):
    tmp = self.get_temp_dir()
    data = helpers.write_reverse_task(os.path.join(tmp, "reverse.tsv"), num_pairs=50)
    workdir = os.path.join(tmp, "run")
    loop.train(helpers.tiny_config(workdir, data, max_steps=2), log=helpers.quiet)
    os.remove(workdir_lib.config_path(workdir))  # bypass the config check: the checkpoint decides
    with self.assertRaisesRegex(checkpoints.CheckpointError, "does not fit the configured model"):
      loop.train(helpers.tiny_config(workdir, data, hidden_size=48, max_steps=4),
                 log=helpers.quiet)

  def test_every_kept_checkpoint_loads_into_a_fresh_model(self):
    tmp = self.get_temp_dir()
    data = helpers.write_reverse_task(os.path.join(tmp, "reverse.tsv"), num_pairs=50)
    config = helpers.tiny_config(os.path.join(tmp, "run"), data, max_steps=6, save_every=2,
                                 keep_checkpoints=3)
    loop.train(config, log=helpers.quiet)
    state = tf.train.get_checkpoint_state(workdir_lib.checkpoint_dir(config.train.workdir))
    self.assertLen(state.all_model_checkpoint_paths, 3)
    vocabulary = vocab_lib.Vocabulary.load(
        workdir_lib.vocab_path(config.train.workdir))
    for number, path in zip((2, 4, 6), state.all_model_checkpoint_paths):
      model = model_lib.build_model(config, vocabulary, log=helpers.quiet)
      optimizer = optimizers.make_optimizer(config.train)
      optimizer.build(model.trainable_variables)
      progress = checkpoints.Progress()
      tf.train.Checkpoint(model=model, optimizer=optimizer, progress=progress).restore(
          path).assert_existing_objects_matched()
      self.assertEqual(int(progress.step.numpy()), number)

  def test_frozen_pretrained_embedding_does_not_move(self):
    tmp = self.get_temp_dir()
    data = helpers.write_reverse_task(os.path.join(tmp, "reverse.tsv"), num_pairs=50)
    glove = os.path.join(tmp, "glove.txt")
    rng = np.random.default_rng(0)
    with open(glove, "w", encoding="utf-8") as f:
      for word in "abcd":
        f.write(word + " " + " ".join(f"{x:.4f}" for x in rng.normal(size=16)) + "\n")
    config = helpers.tiny_config(os.path.join(tmp, "run"), data, max_steps=3,
                                 pretrained_embeddings=glove, freeze_embeddings=True)
    messages = []
    loop.train(config, log=messages.append)
    self.assertTrue(any("4 of 12 vocabulary words found" in m for m in messages), messages)
    variables = _final_variables(config.train.workdir)
    table = [v for k, v in variables.items() if "source_embedding" in k][0]
    with open(glove, encoding="utf-8") as f:
      first = f.readline().split()
    vocabulary = [line.strip() for line in open(workdir_lib.vocab_path(config.train.workdir),
                                                encoding="utf-8")]
    self.assertAllClose(table[vocabulary.index(first[0])], np.asarray(first[1:], np.float32))


if __name__ == "__main__":
  tf.test.main()
