"""A folder of checkpoints as it is on disk: its state file checked against the checkpoint
files, damaged checkpoints kept aside, and a path TensorFlow does not read as a pattern.

    FOLDER/checkpoint                 the state file: the checkpoints, newest last
    FOLDER/NAME-STEP.index            one checkpoint: its index and its data shard(s)
    FOLDER/NAME-STEP.data-00000-of-00001
    FOLDER/damaged/                   checkpoints (and state files) that could not be read

TensorFlow globs checkpoint paths (`tf.train.latest_checkpoint`, the restore's reader, and the
deletion of old checkpoints by `tf.train.CheckpointManager`), so a folder whose path holds
`*`, `?`, `[` or `\\` would not be found, or would match another folder's files. Such a folder
is handed to TensorFlow through a symbolic link of a plain name (`tf_directory`); paths shown
to the user are the real ones (`real`).
"""
import atexit
import os
import re
import shutil
import tempfile
import time

import tensorflow as tf

from seq2seq.runtime.workdir import PATTERN_CHARACTERS as GLOB_CHARACTERS

STATE_FILE = "checkpoint"
DAMAGED = "damaged"

_links = {}  # real folder -> its link, for this process


def _link_folder():
  """A temporary folder for this process's links, removed at exit (the links only)."""
  if "" not in _links:
    _links[""] = tempfile.mkdtemp(prefix="seq2seq-checkpoints-")
    atexit.register(shutil.rmtree, _links[""], True)  # removes links, never their targets
  return _links[""]


def unglobbed(directory):
  """`directory`, or a link to it whose path has no glob characters (for TensorFlow)."""
  if not any(c in directory for c in GLOB_CHARACTERS):
    return directory
  real = os.path.abspath(directory)
  if real not in _links:
    link = os.path.join(_link_folder(), str(len(_links)))
    os.symlink(real, link)
    if any(c in link for c in GLOB_CHARACTERS):
      raise OSError(f"{directory}: its path holds one of {GLOB_CHARACTERS}, which TensorFlow "
                    f"reads as a pattern, and so does the temporary folder {link}; set TMPDIR "
                    "to a plain folder, or rename the workdir")
    _links[real] = link
  return _links[real]


class Folder:
  """The checkpoints NAME-STEP of `directory` (as `tf.train.CheckpointManager` names them).

  `writable`: whether a damaged checkpoint may be moved aside and the state file rewritten
  (not in a folder another process writes to, nor in one this process cannot write).
  """

  def __init__(self, directory, name, writable=True):
    self.directory = directory
    self.name = name
    self._writable = writable
    self.tf_directory = unglobbed(directory)
    self._pattern = re.compile(rf"^{re.escape(name)}-(\d+)\.(index|data-\d+-of-\d+)$")

  @property
  def writable(self):
    return self._writable and os.access(self.directory, os.W_OK)

  @property
  def state_path(self):
    return os.path.join(self.directory, STATE_FILE)

  @property
  def damaged_directory(self):
    return os.path.join(self.directory, DAMAGED)

  def real(self, tf_path):
    """The path the user knows for `tf_path` (a path under `tf_directory`)."""
    if tf_path and self.tf_directory != self.directory and tf_path.startswith(self.tf_directory):
      return self.directory + tf_path[len(self.tf_directory):]
    return tf_path

  def tf_path(self, step):
    return os.path.join(self.tf_directory, f"{self.name}-{step}")

  def step_of(self, path):
    match = re.search(rf"{re.escape(self.name)}-(\d+)$", path or "")
    return int(match.group(1)) if match else None

  def files_of(self, step):
    """The file names of checkpoint `step` in the folder."""
    return sorted(f for f in self._listing() if self._pattern.match(f)
                  and int(self._pattern.match(f).group(1)) == step)

  def _listing(self):
    try:
      return os.listdir(self.directory)
    except (FileNotFoundError, NotADirectoryError):
      return []

  def steps_on_disk(self):
    """Steps of the checkpoints with any file here, ascending."""
    return sorted({int(m.group(1)) for m in map(self._pattern.match, self._listing()) if m})

  def state_steps(self):
    """The steps the state file names, oldest first, or None if it is missing or unreadable."""
    if not os.path.exists(self.state_path):
      return None
    state = tf.train.get_checkpoint_state(self.tf_directory)
    if state is None or not state.model_checkpoint_path:
      return None
    steps = [self.step_of(p) for p in state.all_model_checkpoint_paths]
    latest = self.step_of(state.model_checkpoint_path)
    if latest is None or None in steps:
      return None
    return sorted(set(steps) | {latest})

  def newest_first(self):
    """tf paths of the checkpoints the state file names, newest first; in a folder this
    process may not repair, those on disk (its state file may be missing or behind)."""
    steps = self.state_steps() if self.writable else None
    return [self.tf_path(step) for step in reversed(steps or self.steps_on_disk())]

  def repair(self, log):
    """Rebuilds the state file from the checkpoint files on disk where it is missing or
    unreadable, names a checkpoint none of whose files exist, or misses a newer one; an
    unreadable state file is kept in damaged/. Says so in one line."""
    on_disk = self.steps_on_disk()
    listed = self.state_steps()
    exists = os.path.exists(self.state_path)
    if not on_disk or not self.writable:
      return
    if listed is not None and set(listed) <= set(on_disk) and max(on_disk) <= max(listed):
      return
    if listed is None and exists:
      why = f"{self.state_path} could not be read (kept in {self.damaged_directory})"
      self._move_aside([STATE_FILE])
    elif listed is None:
      why = f"{self.state_path} was missing"
    else:
      why = (f"{self.state_path} named {self.name}-{max(listed)} but the files on disk are "
             f"{self.name}-{min(on_disk)} to {self.name}-{max(on_disk)}")
    self.write_state(on_disk)
    log(f"{why}: rebuilt it from the {len(on_disk)} checkpoint(s) on disk, newest "
        f"{self.real(self.tf_path(max(on_disk)))}")

  def write_state(self, steps):
    """Writes the state file naming checkpoints `steps` (newest last), atomically, in the
    format `tf.train.CheckpointManager` writes (relative names; timestamps that let it delete
    them beyond its max_to_keep)."""
    now = time.time()
    lines = [f'model_checkpoint_path: "{self.name}-{max(steps)}"'] if steps else []
    lines += [f'all_model_checkpoint_paths: "{self.name}-{step}"' for step in sorted(steps)]
    lines += [f"all_model_checkpoint_timestamps: {now:.6f}" for _ in steps]
    lines.append(f"last_preserved_timestamp: {now - 1:.6f}")
    tmp = self.state_path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
      f.write("\n".join(lines) + "\n")
    os.replace(tmp, self.state_path)

  def set_aside(self, tf_paths):
    """Moves the files of the checkpoints at `tf_paths` into damaged/ and drops them from the
    state file. Returns the folder they went to."""
    steps = {self.step_of(p) for p in tf_paths}
    for step in steps:
      self._move_aside(self.files_of(step))
    remaining = [s for s in (self.state_steps() or self.steps_on_disk()) if s not in steps]
    self.write_state(remaining)
    return self.damaged_directory

  def _move_aside(self, names):
    """Moves files of the folder into damaged/, never over an earlier one there."""
    os.makedirs(self.damaged_directory, exist_ok=True)
    for name in names:
      target, n = os.path.join(self.damaged_directory, name), 1
      while os.path.exists(target):
        target, n = os.path.join(self.damaged_directory, f"{name}.{n}"), n + 1
      os.rename(os.path.join(self.directory, name), target)


def first_line(error):
  text = str(error).strip()
  return text.splitlines()[0] if text else type(error).__name__


def read_problem(tf_path):
  """Why the checkpoint at `tf_path` cannot be read (its index, then every tensor of its data,
  checksums verified), or None when it reads."""
  try:
    reader = tf.train.load_checkpoint(tf_path)
    for key in reader.get_variable_to_shape_map():
      reader.get_tensor(key)
  except Exception as e:  # pylint: disable=broad-except  (TensorFlow raises many kinds here)
    if not os.path.exists(tf_path + ".index"):
      return f"{os.path.basename(tf_path)}.index is missing"
    return first_line(e)
  return None
