"""Loading a trained run for inference, and the interactive chat loop."""
import sys

from seq2seq import config as config_lib
from seq2seq.data import datasets
from seq2seq.infer import attention_plot
from seq2seq.infer import decoding
from seq2seq.infer import ensemble
from seq2seq.infer import restore
from seq2seq.models import encoder_decoder as model_lib
from seq2seq.runtime import workdir as workdir_lib


def load_trained(run_config, log=print, sources=None):
  """(model, vocabulary) restored from run_config.train.workdir: the checkpoint that
  --checkpoint picks (auto: the best by validation loss if the run kept one, else the latest).
  `sources`, a list, gets the `restore.Restored` of what was read appended."""
  workdir = run_config.train.workdir
  vocabulary = restore.load_vocabulary(workdir, f"python train.py --workdir={workdir}")
  model = model_lib.build_model(run_config, vocabulary, log, initialize_pretrained=False)
  restored = restore.restore(model, run_config, log)
  if sources is not None:
    sources.append(restored)
  return model, vocabulary


def load_ensemble(run_config, log=print, sources=None):
  """(model, vocabulary) as `load_trained`; with --ensemble, the model is an `Ensemble` of
  run_config.train.workdir's model and those of the --ensemble workdirs, each with the model
  settings its workdir was trained with. `sources` as in `load_trained`, one a member.

  Raises:
    ensemble.VocabularyMismatch: a member's vocabulary differs from the first one's.
    restore.NoCheckpoint: a workdir has nothing trained.
  """
  model, vocabulary = load_trained(run_config, log, sources)
  workdirs = config_lib.split_list(run_config.decode.ensemble)
  if not workdirs:
    return model, vocabulary
  first = workdir_lib.vocab_path(run_config.train.workdir)
  models = [model]
  for workdir in workdirs:
    member = workdir_lib.trained_settings(config_lib.replace(run_config, workdir=workdir))
    member_model, member_vocabulary = load_trained(member, log, sources)
    ensemble.check_same_vocabulary(vocabulary.tokens, first, member_vocabulary.tokens,
                                   workdir_lib.vocab_path(workdir))
    models.append(member_model)
  log(f"decoding with an ensemble of {len(models)} models: {run_config.train.workdir}, "
      f"{', '.join(workdirs)}")
  return ensemble.Ensemble(models), vocabulary


def make_decoder(run_config, log=print):
  """A `decoding.Decoder` over `load_ensemble`'s model, searching as run_config.decode says;
  input is cut to, and replies stop at, --decode_max_length tokens (0: the trained
  --max_length, run_config.data.max_length)."""
  model, vocabulary = load_ensemble(run_config, log)
  options = run_config.decode
  return decoding.Decoder(model, vocabulary, datasets.tokenizer_for(run_config.data),
                          options.max_length_for(run_config.data),
                          beam_width=options.beam_width,
                          length_penalty=options.length_penalty,
                          temperature=options.temperature, top_k=options.top_k,
                          n_best=options.n_best, seed=run_config.train.seed)


def reply_and_plot(decoder, text, path):
  """`decoder.align(text)`, its attention drawn into the PNG `path` (unless `text` has no words).

  Returns:
    the `decoding.Alignment`, its `reply` the reply to `text`.
  """
  alignment = decoder.align(text)
  if alignment.source_words:
    attention_plot.draw_alignment(path, alignment)
  return alignment


def chat_loop(decoder, stdin=sys.stdin, stdout=sys.stdout, plot_attention=""):
  """Reads a line, prints the reply; ends at EOF or on 'quit' / 'exit'.

  With `plot_attention` (a PNG path), each reply comes from `decoder.align` and its attention
  is drawn there, replacing the previous reply's.
  """
  interactive = stdin.isatty()
  stdout.write("Talk to the bot (Ctrl-D or 'quit' to leave).\n")
  if plot_attention:
    stdout.write(f"The attention behind each reply is drawn in {plot_attention}.\n")
  while True:
    if interactive:
      stdout.write("> ")
    stdout.flush()
    line = stdin.readline()
    if not line and interactive:
      stdout.write("\n")  # Ctrl-D: end the prompt's line
    if not line or line.strip().lower() in ("quit", "exit"):
      break
    if not line.strip():
      continue
    if not interactive:
      stdout.write(f"> {line.strip()}\n")
    if plot_attention:
      replies = [(reply_and_plot(decoder, line, plot_attention).reply, 0.0)]
    else:
      replies = decoder.n_best(line)
    stdout.write(f"bot: {replies[0][0]}\n")
    for rank, (reply, score) in enumerate(replies[1:], start=2):
      stdout.write(f"  {rank}. {reply}  ({score:.3f})\n")
  stdout.flush()
