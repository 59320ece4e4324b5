"""The files of a run's working directory, and the checks that keep a resume consistent.

    WORKDIR/config.json        the RunConfig of the run that created it
    WORKDIR/vocab.txt          one token a line, id = line number - 1
    WORKDIR/checkpoints/       tf.train.CheckpointManager files
    WORKDIR/summaries/{train,val}/   TensorBoard event files
    WORKDIR/lock               held by the running process (seq2seq.workdir_lock)
    WORKDIR/export/            the SavedModel of --mode=export (default --export_dir)
"""
import dataclasses
import json
import os

from seq2seq import config as config_lib
from seq2seq import outputs


class WorkdirMismatch(ValueError):
  """The flags disagree with what a workdir was created with."""


def config_path(workdir):
  return os.path.join(workdir, "config.json")


def vocab_path(workdir):
  return os.path.join(workdir, "vocab.txt")


def checkpoint_dir(workdir):
  return os.path.join(workdir, "checkpoints")


def export_dir(workdir):
  return os.path.join(workdir, "export")


def summary_dir(workdir, split):
  return os.path.join(workdir, "summaries", split)


def own_files(workdir):
  """(what, path) of every file and folder a run keeps in `workdir`: no other output may
  replace them, nor may training read one as data."""
  names = ("config.json", "vocab.txt", "vocab.txt.sha256", "lock", "checkpoints", "best",
           "summaries", "export")
  return [(f"the workdir's {name}", os.path.join(workdir, name)) for name in names]


_write_atomic = outputs.write_atomic  # config.json whole or not at all, no temporary file left


def load_run_config(workdir):
  """The RunConfig saved in `workdir`, or None."""
  path = config_path(workdir)
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    saved = json.load(f)
  return config_lib.RunConfig(
      model=config_lib.ModelConfig(**saved["model"]),
      data=config_lib.DataConfig(**saved["data"]),
      train=config_lib.TrainConfig(**saved["train"]))


def trained_settings(run_config):
  """run_config with the model and data settings its workdir was trained with (as saved in
  WORKDIR/config.json; the flags' own when there is none). --val_data stays the flags'."""
  saved = load_run_config(run_config.train.workdir)
  if saved is None:
    return run_config
  return dataclasses.replace(run_config, model=saved.model,
                             data=dataclasses.replace(saved.data, val_data=run_config.data.val_data))


def check_or_save_config(run_config):
  """Saves the config in a new workdir; in an existing one, fails on architecture changes.

  Raises:
    WorkdirMismatch: naming each field (flag) whose value differs from the saved run.
  """
  workdir = run_config.train.workdir
  os.makedirs(workdir, exist_ok=True)
  saved = load_run_config(workdir)
  if saved is not None:
    differences = [
        f"--{name}={value!r} (the workdir was trained with {saved_value!r})"
        for name, value, saved_value in _fixed_fields(run_config, saved)
        if value != saved_value]
    if differences:
      raise WorkdirMismatch(
          f"{config_path(workdir)}: the flags differ from this workdir's model: "
          + "; ".join(differences) + ". Use the same values, or a new --workdir.")
  _write_atomic(config_path(workdir), run_config.to_json())
  return saved


def _fixed_fields(current, saved):
  """(name, current value, saved value) of fields that must not change across a resume."""
  for name, value in current.model.architecture().items():
    yield name, value, saved.model.architecture()[name]
  for name in ("max_vocab", "lowercase"):
    yield name, getattr(current.data, name), getattr(saved.data, name)
  if current.model.model == "lm":
    # They cut the text into the windows a checkpoint's position and carried state refer to.
    yield "batch_size", current.train.batch_size, saved.train.batch_size
    yield "num_steps", current.data.num_steps, saved.data.num_steps


def as_flags(run_config):
  """--name=value strings that recreate `run_config` (for logs and messages)."""
  flags = []
  for section in dataclasses.fields(run_config):
    for field in dataclasses.fields(section.type):
      flags.append(f"--{field.name}={getattr(getattr(run_config, section.name), field.name)}")
  return flags
