"""One function a mode of train.py (train, chat, decode, export, eval), and `run`, which calls
the one asked for and turns a user's mistake into its message and an exit status.

`train.py` imports this module only after the flags are checked, so a bad flag is reported
before TensorFlow loads; `--mode=prepare` never imports it.
"""
import os
import sys
import time

from ops import native

from seq2seq.data import batches
from seq2seq.data import datasets
from seq2seq.distributed import distribution
from seq2seq.infer import bleu
from seq2seq.infer import chat as chat_lib
from seq2seq.infer import export as export_lib
from seq2seq.models import encoder_decoder as model_lib
from seq2seq.nn import cell_registry
from seq2seq.runtime import host_memory
from seq2seq.runtime import interrupts
from seq2seq.runtime import workdir as workdir_lib
from seq2seq.step import choice as step_choice
from seq2seq.step import fused_adam
from seq2seq.step import train_step
from seq2seq.train import lm_run
from seq2seq.train import loop


def run(mode, run_config, log):
  """Runs `mode`; -> the process's exit status. A user's mistake (`errors.UserError`,
  `config.ConfigError`) propagates to train.py, which prints its message alone."""
  try:
    return _MODES[mode](run_config, log)
  except distribution.PeerLost as e:  # retryable: restart every worker
    print(f"error: {e}", file=sys.stderr)
    return distribution.EXIT_PEER_LOST


def check_cell(model_config, precision, config_file=""):
  """A custom --cell imported and run one step (`cell_registry.check`) before any work;
  `config_file`: the workdir's config.json when the cell comes from it."""
  cell_registry.check(model_config, model_lib.COMPUTE_DTYPES[precision], config_file)


def train(run_config, log):
  pin_host_memory(run_config, log)  # before the cell's check starts TensorFlow's devices
  check_cell(run_config.model, run_config.train.precision)
  build_host_kernels(run_config, log)
  return loop.train(run_config, log).exit_code


def build_host_kernels(run_config, log):
  """The host's Adam kernel for the tables on the CPU (`fused_adam`), built before the first
  step where this run's one-device step uses it and it is not yet cached, so the log says
  where the time goes; and where it cannot be built, that TensorFlow's ops update the rows."""
  train_config = run_config.train
  if not (train_config.optimizer == "adam" and train_config.strategy == "default"
          and model_lib.any_table_on_host(run_config.model)):
    return
  path, _ = native.library_path(fused_adam.KERNEL)
  cached = os.path.exists(path)
  start = time.perf_counter()
  if native.load(fused_adam.KERNEL) is None:
    log("host Adam kernel: not available (the warning above says why); the embedding's rows "
        "are updated by TensorFlow's ops, slower")
  elif not cached:
    log(f"host Adam kernel: built in {time.perf_counter() - start:.1f} s, kept in {path}")


def pin_host_memory(run_config, log):
  """Host tensors in page-locked memory (`host_memory.pin_host_tensors`) for a table on the
  CPU trained on a GPU, with --pinned_host_memory; the log says so."""
  if not (run_config.train.pinned_host_memory and model_lib.any_table_on_host(run_config.model)):
    return
  if step_choice.visible_gpus() and host_memory.pin_host_tensors():
    log("host tensors in page-locked memory: the embedding's rows move to the GPU and back "
        "by DMA (--nopinned_host_memory: pageable memory)")


def _trained_config(run_config):
  """The workdir's model and data settings (what chat, decode, eval and export rebuild), its
  cell checked."""
  trained_config = workdir_lib.trained_settings(run_config)
  saved = workdir_lib.config_path(run_config.train.workdir)
  check_cell(trained_config.model, run_config.train.precision,
             saved if os.path.exists(saved) else "")
  return trained_config


def chat(run_config, log):
  trained_config = _trained_config(run_config)
  if trained_config.model.model == "lm":
    chat_lib.chat_loop(lm_run.make_generator(trained_config, log))
  else:
    chat_lib.chat_loop(chat_lib.make_decoder(trained_config, log),
                       plot_attention=run_config.decode.plot_attention)
  return 0


def decode(run_config, log):
  """--decode_input to --decode_output; the attention behind line 1 with --plot_attention,
  and BLEU with --decode_reference."""
  options, plot = run_config.decode, run_config.decode.plot_attention
  decoder = chat_lib.make_decoder(_trained_config(run_config), log)
  with interrupts.sigterm_raises():  # a stopped decode keeps OUTPUT and OUTPUT.partial
    count = decoder.decode_file(options.decode_input, options.decode_output,
                                run_config.train.batch_size, log)
  log(f"decoded {count} lines of {options.decode_input} into {options.decode_output}")
  if plot:
    with open(options.decode_input, encoding="utf-8") as f:
      first = f.readline().rstrip("\n")
    if chat_lib.reply_and_plot(decoder, first, plot).source_words:
      log(f"drew the attention behind the reply to line 1 in {plot}")
    else:
      log(f"line 1 of {options.decode_input} has no words: no attention drawn")
  if options.decode_reference:
    score, signature = bleu.file_bleu(options.decode_output, options.decode_reference)
    log(f"BLEU = {score:.2f} against {options.decode_reference} ({signature})")
  return 0


def export(run_config, log):
  export_lib.export_trained(_trained_config(run_config), log)
  return 0


def evaluate(run_config, log):
  """Loss and perplexity of the trained model on --val_data (or --data)."""
  trained_config = _trained_config(run_config)
  if trained_config.model.model == "lm":
    lm_run.evaluate(trained_config, log)
    return 0
  model, vocabulary = chat_lib.load_trained(trained_config, log)
  spec = datasets.eval_spec(trained_config.data)
  pairs = datasets.read_examples(spec, trained_config.data, log, "eval data")
  schedule = batches.BatchSchedule(
      batches.encode_pairs(pairs, vocabulary), trained_config.train.batch_size,
      trained_config.data.boundaries(), seed=0)
  loss, ppl = loop.evaluate(train_step.make_eval_step(model), schedule)
  log(f"eval on {spec}: loss={loss:.4f} ppl={ppl:.2f} over {len(pairs)} pairs")
  return 0


_MODES = {"train": train, "chat": chat, "decode": decode, "export": export, "eval": evaluate}
