"""Small builders shared by the tests: tiny configs, generated corpora, checkpoint values."""
import os
import random

import numpy as np
import tensorflow as tf

from seq2seq import config as config_lib
from seq2seq.step import optimizers
from seq2seq.step import train_step as train_step_lib


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


def checkpoint_values(path, prefixes=("model/",), slots=True):
  """{key: value} of the variables under `prefixes` in the checkpoint at `path` (a file
  prefix, or a folder: its latest); without optimizer slots unless `slots`."""
  reader = tf.train.load_checkpoint(path)
  return {key: reader.get_tensor(key) for key in reader.get_variable_to_shape_map()
          if key.startswith(tuple(prefixes)) and (slots or "OPTIMIZER_SLOT" not in key)}


def call_in_fresh_process(module, function, *args):
  """`module.function(*args)` (JSON arguments and result) in a new Python process: a module
  that defines absl flags clashes with train.py's when both are imported in the tests' one."""
  import json, subprocess, sys  # pylint: disable=import-outside-toplevel,multiple-imports
  code = (f"import json, sys; from {module} import {function.split('.')[0]} as m; "
          f"print(json.dumps(getattr(m, {function.split('.')[1]!r})(*json.loads(sys.argv[1]))))")
  result = subprocess.run([sys.executable, "-c", code, json.dumps(args)], capture_output=True,
                          text=True, timeout=300,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert result.returncode == 0, result.stderr
  return json.loads(result.stdout.strip().splitlines()[-1])


def assert_compiled_step_matches_plain(make_model, batch):
  """One SGD step of a fresh `make_model()` on `batch`, plain and XLA-compiled: the same loss,
  gradient norm and change of every variable (to float tolerance)."""
  (loss0, norm0, changes0), (loss1, norm1, changes1) = [
      one_sgd_step(make_model(), batch, jit_compile) for jit_compile in (False, True)]
  np.testing.assert_allclose(loss0, loss1, rtol=1e-5)
  np.testing.assert_allclose(norm0, norm1, rtol=1e-4)
  assert_same_values(changes0, changes1, rtol=1e-4, atol=1e-5)


def assert_resumes_and_every_mode_runs(test, flags, workdir):
  """Training `flags` (which ran to step 2) resumes without --jit_compile to step 3; then chat,
  decode, eval and export of `workdir` run (as a user runs them, through train.py)."""
  from tests.test_cli import run_train  # pylint: disable=import-outside-toplevel (it imports this)
  # Without --jit_compile: a resume is the same in either, and skips another compile.
  resumed = run_train(*[f for f in flags if f != "--jit_compile"], "--max_steps=3", timeout=600)
  test.assertEqual(resumed.returncode, 0, resumed.stderr)
  test.assertRegex(resumed.stdout, r"Resuming from .*ckpt-2 at step 2")
  test.assertIn("done at step 3", resumed.stdout)
  chat = run_train(f"--workdir={workdir}", "--mode=chat", "--beam_width=2",
                   stdin="hello how are you\nquit\n")
  test.assertEqual(chat.returncode, 0, chat.stderr)
  test.assertIn("> hello how are you\nbot:", chat.stdout)
  source, target = (os.path.join(test.get_temp_dir(), name) for name in ("in.txt", "out.txt"))
  with open(source, "w", encoding="utf-8") as f:
    f.write("hello\nhow are you\n")
  decoded = run_train(f"--workdir={workdir}", "--mode=decode", f"--decode_input={source}",
                      f"--decode_output={target}")
  test.assertEqual(decoded.returncode, 0, decoded.stderr)
  test.assertIn(f"decoded 2 lines of {source}", decoded.stdout)
  evaluation = run_train(f"--workdir={workdir}", "--mode=eval")
  test.assertEqual(evaluation.returncode, 0, evaluation.stderr)
  test.assertRegex(evaluation.stdout, r"eval on chatterbot: loss=\S+")
  assert_exports_and_replies(test.get_temp_dir(), workdir)


def assert_exports_and_replies(temp_dir, workdir):
  """`--mode=export` of `workdir` into TEMP_DIR/export succeeds, and the SavedModel replies."""
  from tests.test_cli import run_train  # pylint: disable=import-outside-toplevel (it imports this)
  export_dir = os.path.join(temp_dir, "export")
  exported = run_train(f"--workdir={workdir}", "--mode=export", f"--export_dir={export_dir}")
  assert exported.returncode == 0, exported.stderr
  replies = tf.saved_model.load(export_dir).signatures["serving_default"](
      text=tf.constant(["hello"]))["replies"]
  assert replies.shape == [1, 1], replies.shape


def assert_same_values(want, got, rtol, atol):
  """`got` has the keys of `want` ({key: array}), each value close to want's."""
  assert sorted(want) == sorted(got), (sorted(want), sorted(got))
  for key, value in want.items():
    np.testing.assert_allclose(got[key], value, rtol=rtol, atol=atol, err_msg=key)
