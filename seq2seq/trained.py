"""A trained run's vocabulary and weights, loaded for inference (chat, decode, eval, export)."""
from seq2seq import checkpoints
from seq2seq import optimizers
from seq2seq import vocab as vocab_lib
from seq2seq import workdir as workdir_lib


class NoCheckpoint(FileNotFoundError):
  """The workdir has nothing trained to load (no vocabulary, or no checkpoint)."""


def load_vocabulary(workdir, train_command):
  """The vocabulary of `workdir`; NoCheckpoint (naming `train_command`) if there is none."""
  path = workdir_lib.vocab_path(workdir)
  try:
    return vocab_lib.Vocabulary.load(path)
  except FileNotFoundError:
    raise NoCheckpoint(f"{path}: not found; train first ({train_command})") from None


def restore(model, run_config, log=print):
  """Restores `model` (built) from the checkpoint(s) that run_config.decode picks
  (`--checkpoint`, `--average_checkpoints`; see `checkpoints.for_inference`).

  Raises:
    NoCheckpoint: the workdir has no checkpoint.
    checkpoints.CheckpointError: the checkpoint does not fit the model.
  """
  workdir = run_config.train.workdir
  optimizer = optimizers.make_optimizer(run_config.train, model.trainable_variables)
  checkpointer = checkpoints.Checkpointer(workdir_lib.checkpoint_dir(workdir), model, optimizer,
                                          checkpoints.Progress())
  restored = checkpointer.restore_for_inference(run_config.decode.checkpoint,
                                                run_config.decode.average_checkpoints)
  if not restored:
    raise NoCheckpoint(f"{workdir_lib.checkpoint_dir(workdir)}: no checkpoint; train first")
  log(checkpoints.describe_restored(restored, checkpointer.progress))
