"""The files of a run's working directory, and the checks that keep a resume consistent.

    WORKDIR/config.json        the RunConfig of the run that created it
    WORKDIR/vocab.txt          one token a line, id = line number - 1
    WORKDIR/checkpoints/       tf.train.CheckpointManager files (see checkpoint_folder)
    WORKDIR/best/              the best validation checkpoints (checkpoints.BestCheckpoint)
    WORKDIR/summaries/{train,val}/   TensorBoard event files
    WORKDIR/lock               held by the running process (seq2seq.runtime.workdir_lock)
    WORKDIR/export/            the SavedModel of --mode=export (default --export_dir)
    WORKDIR/xla_cache/         compiled train steps, reused by later runs (default --xla_cache_dir)
"""
import dataclasses
import json
import os
import tempfile

from seq2seq import config as config_lib
from seq2seq import errors
from seq2seq.runtime import outputs

# The sections of config.json a run is rebuilt from, and the fields each must hold: those that
# decide what the checkpoints' variables and the vocabulary's ids mean. Other fields missing
# from a file written before they existed take their defaults.
_SECTIONS = {"model": config_lib.ModelConfig, "data": config_lib.DataConfig,
             "train": config_lib.TrainConfig}
_REQUIRED = {"model": tuple(config_lib.ModelConfig().architecture()),
             "data": ("max_vocab", "lowercase", "filters"), "train": ()}
# TensorFlow reads checkpoint and SavedModel variable paths as glob patterns.
PATTERN_CHARACTERS = "*?[]\\"
_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
               "auto or a bool": '"auto", true or false'}


class WorkdirError(errors.UserError, ValueError):
  """The workdir cannot be used as it is: a damaged file, or a path that is not a folder."""


class WorkdirMismatch(WorkdirError):
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


def best_dir(workdir):
  return os.path.join(workdir, "best")


def xla_cache_dir(workdir):
  """The default folder of the run's XLA cache (`--xla_cache_dir=auto`)."""
  return os.path.join(workdir, "xla_cache")


def checkpoint_files(workdir):
  """Paths of the checkpoint files (NAME-STEP.index and data shards) under WORKDIR/checkpoints
  and WORKDIR/best, those set aside as damaged included."""
  found = []
  for folder in (checkpoint_dir(workdir), best_dir(workdir)):
    for root, _, files in os.walk(folder):
      found += [os.path.join(root, f) for f in sorted(files)
                if f.endswith(".index") or ".data-" in f]
  return found


def check_vocabulary_kept(workdir):
  """Fails where WORKDIR/vocab.txt is missing but checkpoints trained with it remain: a new
  vocabulary (other words, perhaps the same size) would give their embedding rows and output
  ids other meanings.

  Raises:
    WorkdirError: naming the file to restore.
  """
  path = vocab_path(workdir)
  trained = checkpoint_files(workdir)
  if trained and not os.path.exists(path):
    raise WorkdirError(
        f"{path} is missing, but the workdir holds checkpoints trained with it (e.g. "
        f"{trained[0]}), whose rows and ids only that vocabulary explains. Restore "
        f"{os.path.basename(path)} (and {os.path.basename(path)}.sha256) from a backup of this "
        f"workdir; nothing was changed. To train anew instead, use a new --workdir.")



def own_files(workdir):
  """(what, path) of every file and folder a run keeps in `workdir`: no other output may
  replace them, nor may training read one as data."""
  names = ("config.json", "vocab.txt", "vocab.txt.sha256", "lock", "checkpoints", "best",
           "summaries", "export", "xla_cache")
  return [(f"the workdir's {name}", os.path.join(workdir, name)) for name in names]


_write_atomic = outputs.write_atomic  # config.json whole or not at all, no temporary file left


def load_run_config(workdir):
  """The RunConfig saved in `workdir`, or None.

  Raises:
    WorkdirError: the file is not the JSON object `RunConfig.to_json` writes (empty, not JSON,
      a section or a field that shapes the model missing, an unknown field, a value of the
      wrong type or out of range), naming the file and the field.
  """
  path = config_path(workdir)
  if not os.path.exists(path):
    return None
  try:
    with open(path, encoding="utf-8") as f:
      saved = json.load(f)
  except (OSError, UnicodeDecodeError, ValueError) as e:
    raise _bad_config(path, f"it cannot be read as JSON ({e})") from None
  if not isinstance(saved, dict):
    raise _bad_config(path, f"it holds a {type(saved).__name__}, not a JSON object")
  sections = {}
  for name, section_type in _SECTIONS.items():
    fields = saved.get(name)
    if not isinstance(fields, dict):
      raise _bad_config(path, f'the section "{name}" is missing or not an object')
    sections[name] = _section(path, name, section_type, fields)
  try:
    return config_lib.RunConfig(**sections)
  except config_lib.ConfigError as e:
    raise _bad_config(path, f'"{e.field}" is invalid ({e})') from None


def _section(path, name, section_type, fields):
  """`section_type` built from the {field: value} of config.json's section `name`."""
  defaults = section_type()
  known = {f.name for f in dataclasses.fields(section_type)}
  unknown = sorted(set(fields) - known)
  if unknown:
    raise _bad_config(path, f'"{name}.{unknown[0]}" is not a setting of this program')
  for field in _REQUIRED[name]:
    if field not in fields:
      raise _bad_config(path, f'"{name}.{field}" is missing')
  for field, value in fields.items():
    expected = type(getattr(defaults, field))
    fits = (isinstance(value, (int, float)) and not isinstance(value, bool)
            if expected is float else type(value) is expected)
    if field in config_lib.AUTO_OR_BOOL:
      fits, expected = value == config_lib.AUTO or isinstance(value, bool), "auto or a bool"
    if not fits:
      raise _bad_config(path, f'"{name}.{field}" is {json.dumps(value)}, not '
                              f"{_TYPE_NAMES[expected]}")
  try:
    return section_type(**fields)
  except config_lib.ConfigError as e:
    raise _bad_config(path, f'"{name}.{e.field}" is invalid ({e})') from None


def _bad_config(path, problem):
  return WorkdirError(
      f"{path}: {problem}. This file records the settings the workdir was trained with, "
      f"which chat, decode, export and a resumed run rebuild the model from; restore it from "
      f"a backup or correct that field (to the flag's value in training), or use a new "
      f"--workdir.")


def check_loadable_export(export_dir, flag="export_dir"):
  """Fails where `export_dir` holds characters that make `tf.saved_model.load` read its
  variables' path as a pattern (the SavedModel would be written but never load).

  Raises:
    WorkdirError: naming the character and the flag to set.
  """
  found = sorted({c for c in os.path.abspath(export_dir) if c in PATTERN_CHARACTERS})
  if found:
    raise WorkdirError(
        f"--{flag}={export_dir}: its path {os.path.abspath(export_dir)} holds "
        f"{' '.join(found)}, which TensorFlow's SavedModel loader reads as a pattern, so the "
        f"export could not be loaded; pass --export_dir=FOLDER with a path free of "
        f"{' '.join(PATTERN_CHARACTERS)}")


def check_folder(workdir, writing, flag="workdir"):
  """Fails unless `workdir` (the value of --`flag`) is a folder, or a path where one can be
  made; with `writing`, one this process can write in (a file is created and removed there
  to find out).

  Raises:
    WorkdirError: naming the path and what is wrong.
  """
  path = os.path.abspath(workdir)
  if os.path.exists(path) and not os.path.isdir(path):
    raise WorkdirError(f"--{flag}={workdir} is a file, not a folder; name a folder (it is "
                       "created if it does not exist)")
  existing = path
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise WorkdirError(f"--{flag}={workdir} cannot be made: {existing} is a file, not a "
                       "folder; name a folder under a folder")
  if not writing:
    return
  try:
    with tempfile.TemporaryFile(dir=existing):
      pass
  except OSError as e:
    raise WorkdirError(f"--{flag}={workdir} cannot be written: creating a file in {existing} "
                       f"failed ({e.strerror or e}); fix its permissions or free space, or "
                       "name another folder") from None


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
        f"{config_path(run_config.train.workdir)}: chat, decode, eval, export and serve use the "
        "model and data settings this workdir was trained with, and these flags differ from "
        "them: "
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
