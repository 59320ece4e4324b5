"""Seed spread of the early training of a small translation model, setting by setting.

    python -m benchmarks.seed_ablation --seeds=1,2,3 --settings=baseline,warmup \
        --train_steps=300 --eval_every=50 --out=benchmarks/results/seed_ablation.jsonl

Trains the miniature of `configs/multi30k_attention.flags` (a bidirectional LSTM encoder and
a decoder with Luong attention, dropout, label smoothing, Adam at 1e-3; sizes from the flags
below) on the first --train_pairs pairs of Multi30k for --train_steps steps, once per seed and
setting, and measures the validation loss (the plain cross entropy per target token, on the
first --val_pairs validation pairs) every --eval_every steps. Each run prints one JSON line
per measurement (also appended to --out); a table of the mean and the spread (max - min)
over the seeds at each measured step follows, one row per setting. Exits 0 with a message
when --data_dir has no Multi30k.

A setting is a set of `RunConfig` field values over the base (`SETTINGS`; --settings names
them), so each row differs from `baseline` in what its name says.
"""
import json
import os
import statistics
import sys
import tempfile
import time

from absl import app
from absl import flags
import tensorflow as tf

from seq2seq import config as config_lib
from seq2seq.data import datasets
from seq2seq.models import encoder_decoder as model_lib
from seq2seq.step import optimizers
from seq2seq.step import train_step as train_step_lib
from seq2seq.train import loop

# The miniature of configs/multi30k_attention.flags (sizes come from the flags).
BASE = dict(encoder="bi", attention="luong", num_layers=1, keep_prob=0.6, label_smoothing=0.1,
            learning_rate=0.001, decay_rate=1.0, share_embeddings=False, filters="",
            lowercase=False, min_length=1, max_length=20, bucket_boundaries="10,14,20",
            max_vocab=6000, max_grad_norm=5.0, unroll="dynamic")
SETTINGS = {
    "baseline": {},
    "warmup": dict(warmup_steps=200),
    "warmup_inverse_sqrt": dict(warmup_steps=200, lr_schedule="inverse_sqrt", decay_steps=200),
    "lr_2e-3": dict(learning_rate=0.002),
    "lr_5e-4": dict(learning_rate=0.0005),
    "beta2_0.98": dict(adam_beta2=0.98),
    "clip_1": dict(max_grad_norm=1.0),
    "layer_norm_lstm": dict(cell="layer_norm_lstm"),
    "tied": dict(tie_embeddings=True),
    "no_label_smoothing": dict(label_smoothing=0.0),
    "no_dropout": dict(keep_prob=1.0),
    "variational_dropout": dict(variational_dropout=True),
    "forget_bias_0": dict(forget_bias=0.0),
    "batch_64": dict(batch_size=64),
    "warmup_layer_norm": dict(warmup_steps=200, cell="layer_norm_lstm"),
    "layer_norm_tied": dict(cell="layer_norm_lstm", tie_embeddings=True),
}

flags.DEFINE_string("data_dir", "../shared/data/multi30k", "the Multi30k folder")
flags.DEFINE_integer("train_pairs", 4000, "training pairs read (the first of the file)")
flags.DEFINE_integer("val_pairs", 400, "validation pairs read (the first of the file)")
flags.DEFINE_string("seeds", "1,2,3", "comma-separated seeds")
flags.DEFINE_string("settings", "baseline,warmup", f"comma-separated, of {', '.join(SETTINGS)}")
flags.DEFINE_integer("train_steps", 300, "train steps per run")
flags.DEFINE_integer("eval_every", 50, "steps between validation losses")
flags.DEFINE_integer("hidden_size", 128, "units per layer")
flags.DEFINE_integer("embedding_size", 128, "embedding size (equal to --hidden_size lets "
                     "'tied' run)")
flags.DEFINE_integer("batch_size", 32, "pairs per batch")
flags.DEFINE_integer("threads", 1, "TensorFlow intra- and inter-op threads")
flags.DEFINE_string("out", "", "append the JSON lines to this file too")
FLAGS = flags.FLAGS


def _slices(folder, data_dir, train_pairs, val_pairs):
  """Writes the first lines of train and val (both languages) into `folder`; -> the
  'SOURCE|TARGET' specs of train and val."""
  specs = []
  for split, count in (("train", train_pairs), ("val", val_pairs)):
    paths = []
    for language in ("en", "de"):
      path = os.path.join(folder, f"{split}.{language}")
      with open(os.path.join(data_dir, f"{split}.lc.norm.tok.{language}"),
                encoding="utf-8") as source, open(path, "w", encoding="utf-8") as target:
        for _, line in zip(range(count), source):
          target.write(line)
      paths.append(path)
    specs.append("|".join(paths))
  return specs


def run_config_for(setting, seed, workdir, data, val_data):
  """The RunConfig of one run: BASE, the sizes of the flags, then the setting's changes."""
  values = {**BASE, "hidden_size": FLAGS.hidden_size, "embedding_size": FLAGS.embedding_size,
            "batch_size": FLAGS.batch_size, **SETTINGS[setting]}
  return config_lib.replace(config_lib.RunConfig(), seed=seed, workdir=workdir, data=data,
                            val_data=val_data, max_steps=FLAGS.train_steps, **values)


def train_one(run_config, emit):
  """Trains `run_config` for its max_steps, calling emit(step, record) at each measurement."""
  quiet = lambda _: None
  data = datasets.load_training_data(run_config, quiet)
  train = run_config.train
  model = model_lib.build_model(run_config, data.vocabulary, quiet)
  optimizer = optimizers.make_optimizer(train, model.trainable_variables)
  step = train_step_lib.make_train_step(model, optimizer, train.max_grad_norm,
                                        label_smoothing=train.label_smoothing)
  eval_step = train_step_lib.make_eval_step(model)
  done, epoch, window, start = 0, 0, [], time.perf_counter()
  while done < train.max_steps:
    for batch in data.train.batches(epoch):
      loss, norm, _ = step(batch)
      done += 1
      window.append((float(loss), float(norm)))
      if done % FLAGS.eval_every == 0 or done == train.max_steps:
        val_loss, _ = loop.evaluate(eval_step, data.val)
        emit(done, dict(val_loss=round(val_loss, 4),
                        train_loss=round(statistics.mean(l for l, _ in window), 4),
                        max_grad_norm=round(max(n for _, n in window), 3),
                        seconds=round(time.perf_counter() - start, 1)))
        window = []
      if done == train.max_steps:
        break
    epoch += 1


def table(records, settings, seeds):
  """Markdown: per setting, the val loss mean (max - min) over the seeds at each step."""
  steps = sorted({r["step"] for r in records})
  lines = ["| setting | " + " | ".join(f"step {s}" for s in steps) + " | worst seed (last) |",
           "| --- |" + " ---: |" * (len(steps) + 1)]
  for setting in settings:
    cells, last = [], {}
    for step in steps:
      losses = [r["val_loss"] for r in records if r["setting"] == setting and r["step"] == step]
      if len(losses) == len(seeds):
        cells.append(f"{statistics.mean(losses):.3f} ({max(losses) - min(losses):.3f})")
        last = {r["seed"]: r["val_loss"] for r in records
                if r["setting"] == setting and r["step"] == step}
      else:
        cells.append("")
    worst = max(last, key=last.get) if last else ""
    lines.append(f"| {setting} | " + " | ".join(cells) + f" | {worst} |")
  return "\n".join(lines)


def main(argv):
  del argv
  if not os.path.exists(os.path.join(FLAGS.data_dir, "train.lc.norm.tok.en")):
    print(f"no Multi30k in {FLAGS.data_dir}; nothing to do (--data_dir names the folder)")
    return 0
  settings = config_lib.split_list(FLAGS.settings)
  unknown = [s for s in settings if s not in SETTINGS]
  if unknown:
    print(f"error: --settings: unknown {', '.join(unknown)}; known: {', '.join(SETTINGS)}",
          file=sys.stderr)
    return 1
  seeds = [int(s) for s in config_lib.split_list(FLAGS.seeds)]
  tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
  tf.config.threading.set_inter_op_parallelism_threads(FLAGS.threads)
  records = []
  with tempfile.TemporaryDirectory() as folder:
    data, val_data = _slices(folder, FLAGS.data_dir, FLAGS.train_pairs, FLAGS.val_pairs)
    for setting in settings:
      for seed in seeds:
        def emit(step, record, setting=setting, seed=seed):
          record = dict(setting=setting, seed=seed, step=step, **record)
          records.append(record)
          print(json.dumps(record), flush=True)
          if FLAGS.out:
            with open(FLAGS.out, "a", encoding="utf-8") as f:
              f.write(json.dumps(record) + "\n")
        workdir = os.path.join(folder, f"{setting}_{seed}")
        os.makedirs(workdir)
        train_one(run_config_for(setting, seed, workdir, data, val_data), emit)
  print(table(records, settings, seeds))
  return 0


if __name__ == "__main__":
  app.run(main)
