"""Small builders shared by the tests: tiny configs and generated corpora."""
import os
import random

from seq2seq import config as config_lib
from seq2seq import optimizers
from seq2seq import train_step as train_step_lib


def write_reverse_task(path, num_pairs=400, symbols="abcdefgh", min_len=3, max_len=5, seed=0):
  """A TSV of 'x1 x2 .. xn' -> 'xn .. x1' pairs over single-letter words."""
  rng = random.Random(seed)
  with open(path, "w", encoding="utf-8") as f:
    for _ in range(num_pairs):
      words = [rng.choice(symbols) for _ in range(rng.randint(min_len, max_len))]
      f.write(" ".join(words) + "\t" + " ".join(reversed(words)) + "\n")
  return path


def tiny_config(workdir, data, **changes):
  """A RunConfig small enough to train in seconds on CPU; `changes` as in config.replace."""
  base = config_lib.RunConfig(
      model=config_lib.ModelConfig(num_layers=1, hidden_size=32, embedding_size=16, keep_prob=1.0),
      data=config_lib.DataConfig(data=data, max_length=6, num_buckets=1, max_vocab=50),
      train=config_lib.TrainConfig(workdir=workdir, batch_size=16, learning_rate=0.01,
                                   num_epochs=1000, log_every=1000, save_every=1000, seed=3))
  return config_lib.replace(base, **changes)


def quiet(_):
  """A log function that drops messages."""


def read_events(directory):
  """Names of event files under `directory` (recursively)."""
  found = []
  for root, _, files in os.walk(directory):
    found.extend(os.path.join(root, f) for f in files if "tfevents" in f)
  return found


def one_sgd_step(model, batch, jit_compile, max_grad_norm=5.0, learning_rate=1.0, batch_size=0):
  """(loss, grad_norm, {variable name: its change}) of one train step of `model` on `batch`
  with plain SGD; at rate 1 each change is minus the variable's clipped gradient. `batch_size`
  as in `make_train_step` (0: the batch dimension left free)."""
  optimizer = optimizers.SGD(learning_rate)
  optimizer.build(model.trainable_variables)
  step = train_step_lib.make_train_step(model, optimizer, max_grad_norm, jit_compile=jit_compile,
                                        batch_size=batch_size)
  before = {v.name: v.numpy() for v in model.trainable_variables}
  loss, norm, _ = step(batch)
  return float(loss), float(norm), {v.name: before[v.name] - v.numpy()
                                    for v in model.trainable_variables}
