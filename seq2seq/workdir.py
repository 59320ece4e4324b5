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


def _write_atomic(path, text):
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    f.write(text)
  os.replace(tmp, path)


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


# What to use instead of a flag that chat, decode, eval and export take from the workdir.
_INSTEAD = {
    "max_length": "--decode_max_length sets the longest input read and reply written",
    "data": "--mode=eval reads --val_data",
}


def check_given_flags(run_config, saved, given):
  """Refuses flags set on the command line that inference would ignore.

  chat, decode, eval and export rebuild the model and tokenise with the workdir's settings
  (`trained_settings`), whatever the flags say; a flag the user set to another value would
  otherwise be dropped without a word.

  Args:
    run_config: the flags' RunConfig.
    saved: the workdir's RunConfig (`load_run_config`), or None.
    given: names of the fields whose flags were set on the command line (or in a flagfile).

  Raises:
    WorkdirMismatch: naming each such flag, its value and the workdir's.
  """
  if saved is None:
    return
  differences = []
  for section in ("model", "data"):
    for field in dataclasses.fields(getattr(saved, section)):
      name = field.name
      value = getattr(getattr(run_config, section), name)
      saved_value = getattr(getattr(saved, section), name)
      if name in given and name != "val_data" and not _same(name, value, saved_value):
        hint = f" ({_INSTEAD[name]})" if name in _INSTEAD else ""
        differences.append(f"--{name}={value!r} (the workdir's: {saved_value!r}){hint}")
  if differences:
    raise WorkdirMismatch(
        f"{config_path(run_config.train.workdir)}: chat, decode, eval and export use the model "
        "and data settings this workdir was trained with, and these flags differ from them: "
        + "; ".join(differences) + ". Drop them (the workdir's values apply), or give a "
        "--workdir trained with them.")


def _same(name, value, saved_value):
  """Whether a flag's value is the workdir's; paths are compared as the files they name."""
  if name in ("data", "pretrained_embeddings") and value and saved_value:
    return os.path.realpath(value) == os.path.realpath(saved_value)
  return value == saved_value


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
