"""Train, evaluate or chat with a seq2seq chatbot (or a language model, --model=lm).

    python train.py                                   # train on the embedded corpus
    python train.py --mode=chat                       # talk to the best (else latest) checkpoint
    python train.py --mode=eval --val_data=FILE       # loss and perplexity on FILE
    python train.py --mode=prepare --input='RC_2015-0*.zst' --input_format=reddit \
        --output_dir=reddit15                         # splits, vocabulary, report.json
    python train.py --data=reddit15                   # train on a prepared folder (tf.data)
    python train.py --mode=export --beam_width=5      # a SavedModel in WORKDIR/export
    python train.py --mode=serve --port=8080          # a chat page and JSON API over it
    python train.py --model=lm --data=text.txt --val_data=valid.txt   # a language model
    python train.py --mode=eval --val_data=test.txt   # its perplexity (--mode=chat continues text)

Flags are converted once into a validated `seq2seq.config.RunConfig`; a bad value stops the
program, naming the flag, before any data is read. Exit status: 0 done; 1 bad flags or data, a
workdir held by another live run, a checkpoint that could not be written (earlier ones stay
valid), or --max_bad_steps consecutive non-finite steps; 130 / 143 stopped by SIGINT / SIGTERM
after saving a checkpoint (under a strategy: received by any worker), or stopping another mode
(a stopped decode leaves --decode_output as it was, its replies so far in OUTPUT.partial); 129
multi_worker lost a peer worker (restart every worker; see launch.py).
"""
import dataclasses
import glob
import os
import sys

from absl import app
from absl import flags
from absl import logging

from seq2seq import config as config_lib
from seq2seq import errors
from seq2seq.runtime import interrupts  # light, like config
from seq2seq.runtime import outputs  # light too: paths are checked before the heavy imports
from seq2seq.runtime import workdir as workdir_lib  # light (no TensorFlow), like config
from seq2seq.runtime import xla_cache  # light too: it must run before TensorFlow reads TF_XLA_FLAGS
from seq2seq.runtime import xla_flags  # the same: before XLA reads XLA_FLAGS

_HELP = {
    "cell": "recurrent cell: lstm, gru, layer_norm_lstm (Ba et al. 2016) or mgu (the cells of "
            "seq2seq.contrib, by name), or package.module:ClassName, any class with "
            "__call__(inputs, state) -> (output, new_state), initial_state(batch_size, dtype) "
            "and output_size, built as ClassName(hidden_size) plus those of dtype, seed, name, "
            "forget_bias that its __init__ names (e.g. seq2seq.contrib.mgu:MGUCell); the module "
            "is imported from sys.path and the current directory, and the workdir records the "
            "path for chat, decode, eval and export",
    "num_layers": "layers in the encoder and in the decoder",
    "hidden_size": "units per recurrent layer",
    "embedding_size": "embedding dimension",
    "keep_prob": "dropout keep probability while training, on the embeddings, each layer's output and the "
                 "attentional vectors (1 = off)",
    "forget_bias": "LSTM forget-gate bias",
    "share_embeddings": "one embedding table for source and target",
    "tie_embeddings": "the target embedding table is also the output projection's kernel "
                      "(Press & Wolf 2017; with --share_embeddings, the one table of both "
                      "sides); needs --embedding_size equal to --hidden_size; the tied table "
                      "lives with the projection, on the accelerator, whatever "
                      "--embedding_device says",
    "embedding_device": "where the embedding table lives: cpu or gpu",
    "pretrained_embeddings": "GloVe / word2vec text file that initialises the embeddings",
    "freeze_embeddings": "do not train the pretrained embeddings",
    "unroll": "static (a Python loop over time), dynamic (tf.while_loop: XLA compiles it "
              "faster) or auto (dynamic in a step compiled for a GPU, else static); for the "
              "encoder (both directions) and the decoder, attention included",
    "unroll_steps": "with --unroll=dynamic: time steps unrolled inside each loop iteration "
                    "(0 = 5 in a step compiled for a GPU, else 1)",
    "per_gate_hidden_gradient": "static unroll: compute each step's hidden-state gradient "
                                "d(gates) W_h^T as one matmul per gate (a batched matmul) and "
                                "their float32 sum, not one matmul; other GEMM shapes, the same "
                                "gradient up to rounding; faster for a large LM at a large "
                                "batch, slower elsewhere (benchmarks/README.md)",
    "data": "training pairs: 'chatterbot' (embedded corpus), a .yml/.tsv file, folder or glob, "
            "or 'SOURCE|TARGET', two line-aligned text files (e.g. train.en|train.de)",
    "val_data": "validation pairs, same formats (--model=lm: text); reported at each epoch end "
                "and in eval mode",
    "max_vocab": "vocabulary size, including <PAD> <GO> <EOS> <UNK>",
    "min_length": "drop pairs with a side shorter than this (tokens)",
    "max_length": "drop pairs with a side longer than this (tokens); also the longest input read "
                  "and reply written by chat, decode and export (--model=lm: the longest "
                  "continuation chat generates), unless --decode_max_length is set",
    "num_buckets": "padded lengths evenly spaced up to max_length (one compiled step each)",
    "lowercase": "lowercase text before tokenising",
    "filters": "characters replaced by spaces before splitting into words (punctuation)",
    "vocab_coverage": "if > 0: the smallest vocabulary covering this share of tokens "
                      "(instead of --max_vocab)",
    "bucket_boundaries": "comma-separated padded lengths, e.g. 5,10,20 (default: --num_buckets "
                         "evenly spaced)",
    "input_pipeline": "auto (tf.data for a prepared folder, in memory otherwise), memory or tfdata",
    "shuffle_buffer": "tf.data shuffle buffer, in pairs",
    "input": "prepare: input files, GLOB[,GLOB] (chatterbot: empty = the embedded corpus)",
    "input_format": "prepare: reddit, pairs (TSV/CSV), parallel, chatterbot or text",
    "target_input": "prepare, parallel format: target-side file(s) aligned with --input",
    "output_dir": "prepare: folder to write splits, vocabulary and report.json to",
    "pairs_header": "prepare, pairs format: skip the first line of each file",
    "skip_authors": "prepare, reddit: comma-separated authors (bots) to skip",
    "min_score": "prepare, reddit: minimum score of a reply (ups in old dumps)",
    "subreddits": "prepare, reddit: comma-separated subreddits to keep (empty = all)",
    "skip_subreddits": "prepare, reddit: comma-separated subreddits to skip",
    "skip_urls": "prepare, reddit: skip comments containing URLs",
    "best_reply_only": "prepare, reddit: keep only the best-scored reply of each parent",
    "val_fraction": "prepare: share of pairs in the validation split",
    "test_fraction": "prepare: share of pairs in the test split",
    "tokenizer": "prepare: word, or sentencepiece (trains a subword model on the train split)",
    "sentencepiece_type": "prepare, sentencepiece: bpe or unigram",
    "max_words_in_memory": "prepare: distinct words counted in memory before spilling to disk",
    "progress_seconds": "prepare: seconds between progress lines (0 = none)",
    "parse_workers": "prepare, reddit: parse processes (-1 = one per core, at most 4; 0 = none)",
    "prepare_runner": "prepare: local (this machine), or beam (an Apache Beam pipeline; reddit "
                      "only; needs pip install -e \".[beam]\")",
    "beam_options": "prepare, beam: pipeline options, e.g. \"--runner=DirectRunner "
                    "--direct_num_workers=2 --direct_running_mode=multi_processing\"",
    "output_shards": "prepare, beam: files per split (0 = one per 256 MB of input; 1 = train.tsv, "
                     "val.tsv, test.tsv as the local runner writes)",
    "model": "seq2seq, or lm: a language model over the lines of --data (text files), its "
             "state carried across batches within an epoch; --mode=eval gives its perplexity "
             "on --val_data, --mode=chat continues the typed text",
    "num_steps": "--model=lm: tokens per window, the truncated backpropagation length",
    "residual": "residual connections around each stacked layer above the first (not in a bi "
                "encoder's upper layers, which read 2H features)",
    "variational_dropout": "draw keep_prob's dropout masks once per sequence (Gal & Ghahramani), "
                           "on each layer's output and recurrent hidden state",
    "encoder": "uni, or bi: a bidirectional encoder whose final states are bridged to the decoder",
    "attention": "none, luong, luong_scaled, bahdanau or bahdanau_norm: attention over the "
                 "encoder outputs, with input feeding",
    "beam_width": "chat: beam search with this many beams (1 = greedy)",
    "length_penalty": "chat, beam search: GNMT length-penalty exponent alpha (0 = none)",
    "n_best": "chat, beam search: replies shown per input, best first",
    "temperature": "chat: > 0 samples from softmax(logits / temperature) instead of arg-max",
    "top_k": "chat, sampling: sample among the k most likely tokens only (0 = all)",
    "decode_input": "--mode=decode: the file of source sentences, one per line",
    "decode_output": "--mode=decode: the file written with the best reply to each line",
    "decode_reference": "--mode=decode: reference translations aligned with --decode_input; "
                        "prints corpus BLEU (sacrebleu, tokenize='none')",
    "export_dir": "--mode=export: the SavedModel folder (default: WORKDIR/export); an earlier "
                  "export there is replaced",
    "plot_attention": "FILE.png: draw the attention (source words against output words, "
                      "greedy or sampled) of the reply to --decode_input's first line "
                      "(--mode=decode), or of each reply (--mode=chat, redrawn); needs a model "
                      "with attention and matplotlib",
    "workdir": "folder for checkpoints, vocabulary, config and TensorBoard summaries",
    "batch_size": "pairs per batch (--model=lm: rows of text read in parallel)",
    "optimizer": "adam, rmsprop or sgd",
    "learning_rate": "initial learning rate",
    "lr_schedule": "the learning rate after warmup: exponential (x decay_rate every "
                   "decay_steps), constant, inverse_sqrt (constant until decay_steps, then "
                   "x sqrt(decay_steps / step)) or cosine (from learning_rate to 0 at "
                   "decay_steps, the run's planned length); --plateau_factor multiplies it",
    "warmup_steps": "raise the learning rate linearly from 0 to its schedule's value over this "
                    "many steps (0 = off); works with every --lr_schedule",
    "decay_steps": "the schedule's length in steps: exponential, steps per decay by "
                   "decay_rate; inverse_sqrt, steps before the decay starts; cosine, steps to 0",
    "decay_rate": "learning-rate decay factor (--lr_schedule=exponential)",
    "staircase": "decay in steps rather than continuously",
    "adam_beta2": "Adam's decay of the squared-gradient average (0.98 reacts faster to the "
                  "large early gradients; 0.999 is Kingma & Ba's)",
    "adam_epsilon": "Adam's epsilon, added to the root of the squared-gradient average",
    "max_grad_norm": "clip gradients to this global norm (0 = no clipping)",
    "num_epochs": "epochs to train",
    "max_steps": "stop after this many steps in all (0 = no limit)",
    "save_every": "steps between checkpoints",
    "max_bad_steps": "stop after this many consecutive steps with a NaN/Inf loss or gradient "
                     "norm (each is skipped: no update)",
    "keep_checkpoints": "checkpoints kept",
    "log_every": "steps between log lines and summaries",
    "seed": "seed of weights, dropout and data order",
    "deterministic": "deterministic ops (slower; bitwise-reproducible runs)",
    "jit_compile": "auto, true or false: XLA-compile the train step (with "
                   "--embedding_device=cpu the embedding lookup and update stay outside it; "
                   "with gpu the whole step is compiled); auto compiles it where it runs on a "
                   "GPU, and the run's first line says which step it got and why",
    "xla_cache_dir": "with a compiled step: a folder where XLA saves each compiled step and "
                     "loads it from in later runs of the same step and shapes (a resumed run, "
                     "the same configuration again), which then skip the compilation; auto = "
                     "WORKDIR/xla_cache, '' = off",
    "xla_autotune": "with --jit_compile: let XLA:GPU search Triton GEMM tilings and fusion "
                    "emitters (about half of the first step's compilation; off, GEMMs go to "
                    "cuBLAS: as fast a step at half the compile time); "
                    "XLA_FLAGS that set these win",
    "compile_ahead": "with a compiled step: before the first step, compile the step of every "
                     "bucket (or load it from the XLA cache), this many buckets at a time on "
                     "parallel threads; 0 = each bucket compiles when its first batch comes",
    "pinned_host_memory": "with --embedding_device=cpu on a GPU: allocate host tensors in "
                          "page-locked memory, so that the looked-up rows and their gradients "
                          "move to the GPU and back by DMA while the host goes on (off: "
                          "pageable memory, copied through a staging buffer)",
    "precision": "fp32, or bf16 mixed precision (float32 weights, loss and softmax statistics)",
    "strategy": "default (one device), mirrored (the GPUs of this host), multi_worker (hosts "
                "named in TF_CONFIG) or tpu; --batch_size is the global batch",
    "devices": "mirrored: comma-separated devices, e.g. /gpu:0,/gpu:1 (default: every GPU)",
    "label_smoothing": "training loss against (1 - eps) one-hot + eps uniform over the vocabulary "
                       "(0 = off); evaluation reports the plain cross entropy",
    "plateau_patience": "after this many epochs without a new best validation loss, scale the "
                        "learning rate by --plateau_factor (again after as many more); 0 = off; "
                        "needs --val_data",
    "plateau_factor": "the learning-rate scale applied at each plateau (see --plateau_patience)",
    "early_stopping": "stop training after this many epochs without a new best validation loss "
                      "(0 = off); needs --val_data. The best checkpoint is kept in WORKDIR/best "
                      "whenever --val_data is given",
    "ensemble": "chat, decode, export: more workdirs, comma-separated, whose models decode with "
                "--workdir's: each step uses the mean of their next-token probabilities. "
                "They need the same vocabulary; each reads the checkpoint that --checkpoint and "
                "--average_checkpoints pick",
    "decode_max_length": "chat, decode, export: the longest input read (longer input is cut) "
                         "and reply written, in tokens (--model=lm chat: the longest "
                         "continuation); 0 = the workdir's trained --max_length",
    "checkpoint": "which checkpoint chat, decode, eval and export read: best (the lowest "
                  "validation loss, WORKDIR/best), latest, or auto (best if the run has one)",
    "average_checkpoints": "chat, decode, eval and export use the mean weights of this many "
                           "checkpoints, the newest that --checkpoint picks (fewer if fewer "
                           "exist); train with --keep_best=N to keep N best ones",
    "keep_best": "checkpoints of the lowest validation losses kept in WORKDIR/best (see "
                 "--average_checkpoints)",
    "host": "--mode=serve: the address to listen on (0.0.0.0: every interface, reachable "
            "from the network)",
    "port": "--mode=serve: the TCP port (0 = any free one, named in the 'serving on' line)",
    "max_queue": "--mode=serve: requests that may wait for the model; more are answered 503",
    "request_timeout": "--mode=serve: seconds a request may wait and run before it is "
                       "answered 504",
    "max_beam_width": "--mode=serve: the widest beam a request may ask for",
    "num_sampled": "train with a sampled softmax over this many log-uniform (Zipfian) candidate "
                   "words, for large vocabularies (0 = full softmax); must be below the "
                   "vocabulary size; evaluation, validation and decoding stay exact",
}
_CHOICES = {"model": config_lib.MODELS, "encoder": config_lib.ENCODERS,
            "attention": config_lib.ATTENTIONS, "optimizer": config_lib.OPTIMIZERS,
            "lr_schedule": config_lib.LR_SCHEDULES,
            "precision": config_lib.PRECISIONS, "unroll": config_lib.UNROLLS,
            "embedding_device": config_lib.EMBEDDING_DEVICES,
            "input_format": config_lib.INPUT_FORMATS, "tokenizer": config_lib.TOKENIZERS,
            "prepare_runner": config_lib.PREPARE_RUNNERS,
            "sentencepiece_type": config_lib.SENTENCEPIECE_TYPES,
            "input_pipeline": config_lib.INPUT_PIPELINES, "strategy": config_lib.STRATEGIES,
            "checkpoint": config_lib.CHECKPOINTS}


class _AutoOrBoolParser(flags.ArgumentParser):
  """auto, or a boolean as absl spells it (true/false, t/f, 1/0); with the flag's `boolean`
  set, `--name` means true and `--noname` false."""

  def parse(self, argument):
    if isinstance(argument, str) and argument.lower() == config_lib.AUTO:
      return config_lib.AUTO
    try:
      return flags.BooleanParser().parse(argument)
    except (TypeError, ValueError):
      raise ValueError(f"must be auto, true or false; got {argument!r}") from None

  def flag_type(self):
    return "auto or bool"


class _AutoOrBoolFlag(flags.Flag):
  """A boolean flag that also takes auto, shown and written as such (absl would write the
  truthy "auto" as true)."""

  def __init__(self, name, default, help_text):
    super().__init__(_AutoOrBoolParser(), None, name, default, help_text, boolean=True)

  def _get_parsed_value_as_string(self, value):
    return repr(value) if value == config_lib.AUTO else super()._get_parsed_value_as_string(value)

  def _serialize(self, value):
    return (f"--{self.name}={value}" if value == config_lib.AUTO
            else super()._serialize(value))


def _define_flags():
  """One flag per config field, with the config's default (defined only there)."""
  defaults = config_lib.RunConfig()
  for section in dataclasses.fields(defaults):
    for field in dataclasses.fields(section.type):
      default = getattr(getattr(defaults, section.name), field.name)
      name, help_text = field.name, _HELP[field.name]
      if name in config_lib.AUTO_OR_BOOL:
        flags.DEFINE_flag(_AutoOrBoolFlag(name, default, help_text))
      elif name in _CHOICES:
        flags.DEFINE_enum(name, default, _CHOICES[name], help_text)
      elif isinstance(default, bool):
        flags.DEFINE_bool(name, default, help_text)
      elif isinstance(default, int):
        flags.DEFINE_integer(name, default, help_text)
      elif isinstance(default, float):
        flags.DEFINE_float(name, default, help_text)
      else:
        flags.DEFINE_string(name, default, help_text)


flags.DEFINE_enum("mode", "train",
                  ["train", "eval", "chat", "decode", "prepare", "export", "serve"],
                  "what to do; prepare turns --input into a folder that --data can name; "
                  "decode writes the replies to --decode_input into --decode_output; export "
                  "writes a SavedModel (strings in, replies and scores out) to --export_dir; "
                  "serve answers on --host:--port with a chat page and a JSON API over that "
                  "SavedModel (exported first if it is missing or older than the checkpoints)")
_define_flags()
FLAGS = flags.FLAGS


def _config_from_flags(argv):
  """The RunConfig the flags describe; UsageError (naming the flag) if any value is bad, an
  `errors.UserError` if a path or workdir they name cannot be used."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])} (flags take --name=value)")
  values = {name: FLAGS[name].value for name in config_lib.field_names()}
  try:
    run_config = config_lib.replace(config_lib.RunConfig(), **values)
    if FLAGS.mode == "prepare":
      run_config.prepare.check_ready()
    if FLAGS.mode == "decode":
      run_config.decode.check_ready()
    if FLAGS.mode == "train":
      run_config.check_training()
    if run_config.model.model == "lm" and FLAGS.mode not in ("train", "eval", "chat"):
      raise config_lib.ConfigError("model", f"lm supports --mode=train, eval and chat; not "
                                   f"--mode={FLAGS.mode} so far")
    if run_config.model.model == "lm" and FLAGS.mode == "chat":
      run_config.decode.check_lm()
  except config_lib.ConfigError as e:
    raise app.UsageError(f"--{e}") from None
  if FLAGS.mode == "prepare":
    return run_config
  _check_workdirs(run_config)
  for name in ("data", "val_data", "pretrained_embeddings", "decode_input", "decode_reference"):
    value = FLAGS[name].value
    parts = value.split("|") if "|" in value and not os.path.exists(value) else [value]
    for path in parts:  # "SOURCE|TARGET" names two parallel files
      if path and path != "chatterbot" and not (os.path.exists(path) or glob.glob(path)):
        raise app.UsageError(f"--{name}={value}: no such file or folder ({path})")
  _check_ensemble(run_config)
  if FLAGS.mode in ("chat", "decode", "eval", "export", "serve"):
    _check_given_flags(run_config)
  if FLAGS.mode == "train":
    _check_training_inputs(run_config)
  if FLAGS.mode in ("chat", "decode"):
    _check_inference_paths(run_config)
  plot = run_config.decode.plot_attention
  if plot and FLAGS.mode in ("chat", "decode"):
    from seq2seq.infer import attention_plot  # pylint: disable=import-outside-toplevel
    try:
      attention_plot.check_available()
      config_lib.check_attention(workdir_lib.trained_settings(run_config).model)
    except (attention_plot.MatplotlibMissing, config_lib.NoAttention) as e:
      raise app.UsageError(f"--plot_attention: {e}") from None
  if FLAGS.mode == "decode" and run_config.decode.decode_reference:
    from seq2seq.infer import bleu  # pylint: disable=import-outside-toplevel
    try:
      bleu.check_ready(run_config.decode.decode_input, run_config.decode.decode_reference)
    except bleu.BleuError as e:
      raise app.UsageError(f"--decode_reference: {e}") from None
  return run_config


def _check_given_flags(run_config):
  """Model and data flags set on the command line must agree with the workdir's settings,
  which inference uses (a damaged config.json is left to the mode's own load to report)."""
  try:
    saved = workdir_lib.load_run_config(run_config.train.workdir)
  except (ValueError, TypeError, KeyError, OSError):
    return
  given = {name for name in config_lib.field_names() if FLAGS[name].present}
  try:
    workdir_lib.check_given_flags(run_config, saved, given)
  except workdir_lib.WorkdirMismatch as e:
    raise app.UsageError(str(e)) from None


def _check_workdirs(run_config):
  """--workdir (and --ensemble's) are folders (writable, to train in) with a readable
  config.json if they have one, before anything is loaded. Raises workdir.WorkdirError."""
  workdirs = [("workdir", run_config.train.workdir)]
  if FLAGS.mode != "train":
    workdirs += [("ensemble", w) for w in config_lib.split_list(run_config.decode.ensemble)]
  for flag, workdir in workdirs:
    workdir_lib.check_folder(workdir, writing=FLAGS.mode == "train", flag=flag)
    workdir_lib.load_run_config(workdir)
  if FLAGS.mode in ("export", "serve"):
    workdir_lib.check_loadable_export(
        run_config.decode.export_dir or workdir_lib.export_dir(run_config.train.workdir))


def _check_ensemble(run_config):
  """--ensemble: chat, decode and export of seq2seq models, from workdirs that exist."""
  workdirs = config_lib.split_list(run_config.decode.ensemble)
  if not workdirs:
    return
  if FLAGS.mode not in ("chat", "decode", "export"):
    raise app.UsageError(f"--ensemble applies to --mode=chat, decode and export, not "
                         f"--mode={FLAGS.mode}")
  if workdir_lib.trained_settings(run_config).model.model != "seq2seq":
    raise app.UsageError("--ensemble: ensembles of --model=lm are not supported")
  for workdir in workdirs:
    if not os.path.isdir(workdir):
      raise app.UsageError(f"--ensemble={run_config.decode.ensemble}: no such workdir ({workdir})")


def _check_training_inputs(run_config):
  """Raises OutputError if a file training reads is one the run writes in its workdir."""
  own = workdir_lib.own_files(run_config.train.workdir)
  for name in ("data", "val_data", "pretrained_embeddings"):
    value = FLAGS[name].value
    for path in value.split("|") if value and value != "chatterbot" else []:
      for what, written in own:
        if os.path.lexists(path) and (outputs.same_file(path, written)
                                      or outputs.inside(path, written)):
          raise outputs.OutputError(f"--{name}={value}: {path} is {what} ({written}), which "
                                    "training writes; copy it elsewhere or use another --workdir")


def _check_inference_paths(run_config):
  """Chat and decode: text inputs, and outputs that replace none of the run's inputs."""
  options = run_config.decode
  inputs = [("--decode_input", options.decode_input),
            ("--decode_reference", options.decode_reference)]
  for workdir in [run_config.train.workdir, *config_lib.split_list(options.ensemble)]:
    inputs.extend(workdir_lib.own_files(workdir))
  if FLAGS.mode == "decode":
    for flag, path in inputs[:2]:
      if path:
        outputs.check_text(flag[2:], path)
    outputs.check_file("decode_output", options.decode_output,
                       inputs + [("--plot_attention", options.plot_attention)])
    inputs.append(("--decode_output", options.decode_output))
  if options.plot_attention:
    outputs.check_file("plot_attention", options.plot_attention, inputs)


def main(argv):
  """Runs `_run`; a bad flag, Ctrl-C, SIGTERM or a file error ends it with a line, not a
  traceback."""
  try:
    return _run(argv)
  except app.UsageError as e:  # a flag's mistake: its message alone, not the whole flag list
    print(f"error: {e}\n(python train.py --helpfull lists every flag)", file=sys.stderr)
    return e.exitcode
  except config_lib.ConfigError as e:  # a check that needed the data (the vocabulary size)
    print(f"error: --{e}", file=sys.stderr)
    return 1
  except errors.UserError as e:  # every layer's mistake of the user's, named in its message
    print(f"error: {e}", file=sys.stderr)
    return 1
  except KeyboardInterrupt:
    print("\nstopped (Ctrl-C)", file=sys.stderr)
    return interrupts.EXIT_SIGINT
  except interrupts.Terminated:
    print("stopped (SIGTERM)", file=sys.stderr)
    return interrupts.EXIT_SIGTERM
  except OSError as e:
    print(f"error: {outputs.os_error_message(e)}", file=sys.stderr)
    return 1


def _prepare_xla(train_config, log):
  """XLA's options and cache, set before TensorFlow starts (it reads them once) for a step
  that may be compiled; whether it is, the run decides (`seq2seq.step.choice`). -> 1 if the
  cache folder cannot be used, else 0."""
  if train_config.jit_compile is False:
    return 0
  flags_set = xla_flags.configure(train_config.xla_autotune)
  if train_config.jit_compile is True:
    log(f"XLA_FLAGS={flags_set}" + ("" if train_config.xla_autotune else
                                    " (--xla_autotune to tune)"))
  folder = xla_cache.folder_before_start(train_config)
  if folder:
    try:  # `auto`'s folder is left to XLA to create, so a run that compiles nothing has none
      xla_cache.enable(folder, create=train_config.xla_cache_dir != config_lib.AUTO)
    except OSError as e:
      print(f"error: --xla_cache_dir={train_config.xla_cache_dir}: {folder}: "
            f"{outputs.os_error_message(e)}; name "
            "another folder, or pass --xla_cache_dir= to train without the cache",
            file=sys.stderr)
      return 1
  return 0


def _run(argv):
  run_config = _config_from_flags(argv)
  log = lambda message: print(message, flush=True)
  if FLAGS.mode == "prepare":  # no TensorFlow on this path (about 600 MB of RSS)
    from seq2seq.data.prepare import pipeline  # pylint: disable=import-outside-toplevel
    pipeline.prepare(run_config.prepare, run_config.data, log)
    return 0
  if FLAGS.mode == "train" and _prepare_xla(run_config.train, log):
    return 1
  if FLAGS.mode == "serve":  # inference code only: nothing of training is imported
    from seq2seq.serve import server  # pylint: disable=import-outside-toplevel
    logging.set_verbosity(logging.WARNING)
    return server.serve(run_config, log)
  # The heavy imports (TensorFlow) after validation, so a bad flag is reported at once.
  from seq2seq.modes import run  # pylint: disable=import-outside-toplevel
  logging.set_verbosity(logging.WARNING)  # TensorFlow's INFO lines would bury the progress
  return run.run(FLAGS.mode, run_config, log)


if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # hide C++ INFO/WARNING noise
  app.run(main)
