"""A trained run's vocabulary and weights, loaded for inference (chat, decode, eval, export)."""
import collections
import os

from seq2seq.data import vocab as vocab_lib
from seq2seq import errors
from seq2seq.runtime import checkpoints
from seq2seq.runtime import workdir as workdir_lib
from seq2seq.runtime import workdir_lock


# What `restore` read: the checkpoint paths (newest first; several when averaged) and the
# training step of the newest.
Restored = collections.namedtuple("Restored", ["paths", "step"])


class NoCheckpoint(errors.UserError, FileNotFoundError):
  """The workdir has nothing trained to load (no vocabulary, or no checkpoint)."""


def load_vocabulary(workdir, train_command):
  """The vocabulary of `workdir`; NoCheckpoint (naming `train_command`) if there is none.

  Raises:
    workdir.WorkdirError: it is missing but checkpoints trained with it remain.
  """
  path = workdir_lib.vocab_path(workdir)
  try:
    return vocab_lib.Vocabulary.load(path)
  except FileNotFoundError:
    workdir_lib.check_vocabulary_kept(workdir)
    raise NoCheckpoint(f"{path}: not found; train first ({train_command})") from None


def restore(model, run_config, log=print):
  """Restores `model` (built) from the checkpoint(s) that run_config.decode picks
  (`--checkpoint`, `--average_checkpoints`; see `checkpoints.inference_folders`); a
  checkpoint that cannot be read is passed over for the next older one.

  Returns:
    a `Restored`.

  Raises:
    NoCheckpoint: the workdir has no checkpoint.
    checkpoints.CheckpointError: the checkpoint does not fit the model, or none can be read.
  """
  workdir = run_config.train.workdir
  checkpointer = checkpoints.Checkpointer(workdir_lib.checkpoint_dir(workdir), model, None,
                                          checkpoints.Progress(), log=log)
  # A training run writing the workdir keeps its folders as they are (nothing moved aside).
  writable = not os.path.exists(workdir_lock.lock_path(workdir))
  restored = checkpointer.restore_for_inference(run_config.decode.checkpoint,
                                                run_config.decode.average_checkpoints, writable)
  if not restored:
    raise NoCheckpoint(f"{workdir_lib.checkpoint_dir(workdir)}: no checkpoint; train first")
  log(checkpoints.describe_restored(restored, checkpointer.progress))
  return Restored(list(restored), int(checkpointer.progress.step.numpy()))
