"""Typed, frozen, validated configuration. Each default is defined here, once.

Entry points (train.py) convert their flags into these objects; the library never reads flags.
Field names match flag names, so a `ConfigError` names the flag to change.
"""
import dataclasses
import json
import math
import re

MODELS = ("seq2seq", "lm")
CELLS = ("lstm", "gru")  # built in; --cell also takes "package.module:ClassName"
# Cells of seq2seq.contrib by short name: --cell=NAME is --cell=PATH (seq2seq.nn.cell_registry).
NAMED_CELLS = {"layer_norm_lstm": "seq2seq.contrib.layer_norm_lstm:LayerNormLSTMCell",
               "mgu": "seq2seq.contrib.mgu:MGUCell"}
# A custom cell's import path: dotted module name, a colon, a class name.
CUSTOM_CELL = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")
ENCODERS = ("uni", "bi")
ATTENTIONS = ("none", "luong", "luong_scaled", "bahdanau", "bahdanau_norm")
OPTIMIZERS = ("adam", "rmsprop", "sgd")
LR_SCHEDULES = ("exponential", "constant", "inverse_sqrt", "cosine")  # ops.optim.decay_factor
EMBEDDING_DEVICES = ("cpu", "gpu")
PRECISIONS = ("fp32", "bf16")
UNROLLS = ("auto", "static", "dynamic")
AUTO = "auto"  # a setting the run chooses from the machine it runs on (seq2seq.step.choice)
# Fields that hold AUTO, True or False (flags that are booleans with an "auto" default).
AUTO_OR_BOOL = ("jit_compile",)
INPUT_FORMATS = ("reddit", "pairs", "parallel", "chatterbot", "text")
TOKENIZERS = ("word", "sentencepiece")
PREPARE_RUNNERS = ("local", "beam")
SENTENCEPIECE_TYPES = ("bpe", "unigram")
INPUT_PIPELINES = ("auto", "memory", "tfdata")
STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
CHECKPOINTS = ("auto", "latest", "best")  # seq2seq.runtime.checkpoints.inference_folders
# The punctuation filter of the tutorial's tokenizer (Keras' `Tokenizer` default); the
# apostrophe is kept, so "don't" stays one word.
DEFAULT_FILTERS = '!"#$%&()*+,-./:;<=>?@[\\]^_`{|}~\t\n'


class ConfigError(ValueError):
  """A bad configuration value. `field` is the name of the offending field (and flag)."""

  def __init__(self, field, message):
    super().__init__(f"{field}: {message}")
    self.field = field


def _check(condition, field, message):
  if not condition:
    raise ConfigError(field, message)


# The largest integer a flag may hold: sizes, counts and seeds become int32 tensor shapes and
# seeds, so a larger value would fail deep inside TensorFlow instead of here.
MAX_INT = 2 ** 31 - 1


def _numbers(config):
  """Checks that every float field is finite and every int field fits MAX_INT: the ranges of
  the fields' own checks then hold for what they compare (NaN fails no comparison)."""
  for field in dataclasses.fields(config):
    value = getattr(config, field.name)
    if isinstance(value, bool):
      continue
    if isinstance(value, float):
      _check(math.isfinite(value), field.name, f"must be a finite number, got {value}")
    elif isinstance(value, int):
      _check(abs(value) <= MAX_INT, field.name,
             f"must be at {'most ' if value > 0 else 'least -'}{MAX_INT}, got {value}")


def _positive(config, *names):
  for name in names:
    value = getattr(config, name)
    _check(value > 0, name, f"must be > 0, got {value}")


def is_custom_cell(cell):
  """Whether `cell` (a --cell value) names a class: by import path, "package.module:ClassName",
  or by a short name of `NAMED_CELLS`."""
  return cell in NAMED_CELLS or (cell not in CELLS and bool(CUSTOM_CELL.fullmatch(cell)))


def _choice(config, name, choices):
  value = getattr(config, name)
  _check(value in choices, name, f"must be one of {', '.join(choices)}; got {value!r}")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """The network. These fields must match a checkpoint's to resume from it."""
  model: str = "seq2seq"  # lm: a decoder-only language model over running text
  cell: str = "lstm"
  num_layers: int = 2
  hidden_size: int = 256
  embedding_size: int = 128
  keep_prob: float = 1.0  # dropout keep probability (embeddings, layer outputs, attention), training only
  forget_bias: float = 1.0
  share_embeddings: bool = True  # one embedding table for source and target
  tie_embeddings: bool = False  # the target table is also the output projection's kernel
  embedding_device: str = "cpu"  # where the embedding table lives and is looked up
  pretrained_embeddings: str = ""  # GloVe / word2vec text file to initialise the table
  freeze_embeddings: bool = False  # keep a pretrained table fixed
  # static: Python loop over T; dynamic: tf.while_loop (quicker XLA compile); auto: dynamic in
  # a step compiled for a GPU, else static
  unroll: str = AUTO
  # with unroll=dynamic: time steps unrolled inside each loop iteration; 0: 5 in a step
  # compiled for a GPU, else 1
  unroll_steps: int = 0
  encoder: str = "uni"  # bi: bidirectional encoder, final states bridged to the decoder
  attention: str = "none"  # attention over the encoder outputs, with input feeding
  residual: bool = False  # residual connections around the layers above the first
  variational_dropout: bool = False  # keep_prob's masks drawn once per sequence, also on h
  per_gate_hidden_gradient: bool = False  # each step's d(h) as a matmul per gate, summed

  def __post_init__(self):
    _numbers(self)
    _check(self.cell in CELLS or is_custom_cell(self.cell), "cell",
           f"must be lstm, gru, {', '.join(NAMED_CELLS)} or package.module:ClassName (a class "
           f"importable from sys.path or the current directory, e.g. "
           f"seq2seq.contrib.mgu:MGUCell); got {self.cell!r}")
    _choice(self, "model", MODELS)
    _choice(self, "encoder", ENCODERS)
    _choice(self, "attention", ATTENTIONS)
    _choice(self, "embedding_device", EMBEDDING_DEVICES)
    _choice(self, "unroll", UNROLLS)
    _positive(self, "num_layers", "hidden_size", "embedding_size")
    _check(self.unroll_steps >= 0, "unroll_steps",
           f"must be >= 0 (0 = chosen with --unroll), got {self.unroll_steps}")
    _check(0.0 < self.keep_prob <= 1.0, "keep_prob", f"must be in (0, 1], got {self.keep_prob}")
    _check(not self.tie_embeddings or self.embedding_size == self.hidden_size,
           "tie_embeddings", f"the target embedding [V, --embedding_size={self.embedding_size}] "
           f"would be the output projection's kernel, which reads the decoder's outputs of "
           f"--hidden_size={self.hidden_size}; tying needs equal sizes: set --embedding_size="
           f"{self.hidden_size} (or --hidden_size={self.embedding_size}), or drop --tie_embeddings")
    _check(not (self.tie_embeddings and self.freeze_embeddings), "tie_embeddings",
           "a frozen table (--freeze_embeddings) would freeze the output projection tied to it; "
           "drop one of the two flags")
    _check(not self.freeze_embeddings or self.pretrained_embeddings, "freeze_embeddings",
           "freezing needs --pretrained_embeddings (a frozen random table never learns)")
    _check(not self.per_gate_hidden_gradient or self.unroll != "dynamic",
           "per_gate_hidden_gradient", "needs --unroll=static (a tf.while_loop's steps "
           "compute d(h) as one matmul)")

  def architecture(self):
    """The fields that shape the variables: a checkpoint is only usable if these match."""
    return {k: getattr(self, k) for k in
            ("model", "cell", "num_layers", "hidden_size", "embedding_size", "share_embeddings", "encoder",
             "attention")}


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Where the pairs come from and how they become ids."""
  data: str = "chatterbot"  # the embedded corpus, or a .yml/.tsv file, folder or glob
  val_data: str = ""
  max_vocab: int = 8000  # including the 4 special tokens
  min_length: int = 3  # tokens, after tokenisation, on both sides of a pair
  max_length: int = 20
  num_buckets: int = 4  # padded lengths evenly spaced up to max_length
  lowercase: bool = True
  filters: str = DEFAULT_FILTERS  # characters replaced by spaces before splitting on whitespace
  vocab_coverage: float = 0.0  # > 0: the smallest vocabulary covering this share of tokens
  bucket_boundaries: str = ""  # comma-separated padded lengths; "" = num_buckets evenly spaced
  input_pipeline: str = "auto"  # auto: tf.data for a prepared folder, in memory otherwise
  shuffle_buffer: int = 10000  # tf.data: examples in the shuffle buffer
  num_steps: int = 35  # --model=lm: tokens per window (truncated backpropagation length)

  def __post_init__(self):
    _numbers(self)
    _check(bool(self.data), "data", "must name a corpus")
    _positive(self, "min_length", "max_length", "num_buckets", "shuffle_buffer", "num_steps")
    _check(self.max_vocab > 4, "max_vocab", f"must exceed the 4 special tokens, got {self.max_vocab}")
    _check(self.min_length <= self.max_length, "min_length",
           f"{self.min_length} is greater than max_length {self.max_length}")
    _check(0.0 <= self.vocab_coverage <= 1.0, "vocab_coverage",
           f"must be in [0, 1] (0 = use max_vocab), got {self.vocab_coverage}")
    _choice(self, "input_pipeline", INPUT_PIPELINES)
    boundaries = self.boundaries()
    _check(boundaries[-1] >= self.max_length, "bucket_boundaries",
           f"the largest bucket {boundaries[-1]} must be >= max_length {self.max_length}")

  def boundaries(self):
    """The padded source lengths of the buckets, ascending: from bucket_boundaries or num_buckets."""
    if not self.bucket_boundaries:
      num_buckets = max(1, min(self.num_buckets, self.max_length))
      return tuple(sorted({math.ceil(self.max_length * (k + 1) / num_buckets)
                           for k in range(num_buckets)}))
    try:
      values = tuple(int(v) for v in self.bucket_boundaries.split(","))
    except ValueError:
      raise ConfigError("bucket_boundaries", "must be comma-separated integers, e.g. 5,10,20; "
                        f"got {self.bucket_boundaries!r}") from None
    _check(all(v > 0 for v in values) and list(values) == sorted(set(values)), "bucket_boundaries",
           f"must be positive and strictly increasing, got {self.bucket_boundaries!r}")
    return values


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Optimisation, run length, saving and logging."""
  workdir: str = "workdir"
  batch_size: int = 32
  optimizer: str = "adam"
  learning_rate: float = 0.002
  lr_schedule: str = "exponential"  # the decay after warmup (ops.optim.decay_factor)
  warmup_steps: int = 0  # > 0: the learning rate rises linearly from 0 over this many steps
  decay_steps: int = 100000  # the schedule's length scale (cosine: the steps to reach 0)
  decay_rate: float = 0.95  # exponential: the factor per decay_steps
  staircase: bool = False
  adam_beta2: float = 0.999  # Adam's second-moment decay (0.98: the Transformer's)
  adam_epsilon: float = 1e-8  # Adam's denominator floor
  max_grad_norm: float = 5.0  # 0 turns clipping off
  num_epochs: int = 40
  max_steps: int = 0  # 0: no limit other than num_epochs
  save_every: int = 100
  max_bad_steps: int = 10  # consecutive non-finite (skipped) steps before the run stops
  keep_checkpoints: int = 5
  log_every: int = 20
  seed: int = 1234
  deterministic: bool = False  # tf.config.experimental.enable_op_determinism
  # XLA-compile the step (all of it unless the embedding is on the CPU): True, False, or
  # AUTO: compiled where the step runs on a GPU (seq2seq.step.choice)
  jit_compile: object = AUTO
  # a compiled step's XLA cache: compiled steps saved here and reused by later runs; AUTO:
  # WORKDIR/xla_cache; "": none
  xla_cache_dir: str = AUTO
  xla_autotune: bool = False  # with jit_compile: XLA:GPU's Triton GEMM and fusion autotuning
  # with jit_compile: before the first step, compile every bucket's step, this many buckets at
  # a time (seq2seq.step.compile_ahead); 0: each bucket compiles at its first batch
  compile_ahead: int = 4
  # with the embedding on the CPU and a GPU present: host tensors in page-locked memory, so
  # that the table's rows and their gradients move by DMA (seq2seq.runtime.host_memory)
  pinned_host_memory: bool = False
  precision: str = "fp32"  # bf16: bfloat16 activations and matmuls, float32 weights and loss
  strategy: str = "default"  # tf.distribute strategy; batch_size is the global batch
  devices: str = ""  # mirrored: comma-separated devices; "" = every visible GPU (else the CPU)
  num_sampled: int = 0  # > 0: sampled softmax over this many candidates in training; 0 = full
  label_smoothing: float = 0.0  # training loss against (1 - eps) one-hot + eps uniform
  plateau_patience: int = 0  # > 0: scale the learning rate by plateau_factor after this many
  plateau_factor: float = 0.5  # epochs without a new best validation loss (and again after as many)
  early_stopping: int = 0  # > 0: stop after this many epochs without a new best validation loss
  keep_best: int = 1  # checkpoints of the lowest validation losses kept in WORKDIR/best

  def __post_init__(self):
    _numbers(self)
    _check(bool(self.workdir), "workdir", "must be a folder path")
    _choice(self, "optimizer", OPTIMIZERS)
    _choice(self, "lr_schedule", LR_SCHEDULES)
    _check(self.warmup_steps >= 0, "warmup_steps",
           f"must be >= 0 (0 = no warmup), got {self.warmup_steps}")
    _choice(self, "precision", PRECISIONS)
    _choice(self, "strategy", STRATEGIES)
    _check(not self.devices or self.strategy == "mirrored", "devices",
           f"is only used with --strategy=mirrored (got --strategy={self.strategy})")
    _positive(self, "batch_size", "learning_rate", "decay_steps", "decay_rate", "num_epochs",
              "save_every", "keep_checkpoints", "log_every", "max_bad_steps", "keep_best")
    _check(0.0 < self.adam_beta2 < 1.0, "adam_beta2",
           f"must be in (0, 1), got {self.adam_beta2}")
    _check(self.adam_epsilon > 0, "adam_epsilon", f"must be > 0, got {self.adam_epsilon}")
    _check(self.max_grad_norm >= 0, "max_grad_norm", f"must be >= 0, got {self.max_grad_norm}")
    _check(self.max_steps >= 0, "max_steps", f"must be >= 0, got {self.max_steps}")
    _check(self.compile_ahead >= 0, "compile_ahead",
           f"must be >= 0 (0 = compile each bucket at its first batch), got {self.compile_ahead}")
    _check(self.seed >= 0, "seed", f"must be in [0, {MAX_INT}], got {self.seed}")
    _check(self.num_sampled >= 0, "num_sampled",
           f"must be >= 0 (0 = full softmax), got {self.num_sampled}")
    _check(0.0 <= self.label_smoothing < 1.0, "label_smoothing",
           f"must be in [0, 1), got {self.label_smoothing}")
    _check(not (self.label_smoothing and self.num_sampled), "label_smoothing",
           "applies to the full softmax; it cannot be combined with --num_sampled")
    _check(self.plateau_patience >= 0, "plateau_patience",
           f"must be >= 0 (0 = off), got {self.plateau_patience}")
    _check(0.0 < self.plateau_factor <= 1.0, "plateau_factor",
           f"must be in (0, 1], got {self.plateau_factor}")
    _check(self.early_stopping >= 0, "early_stopping",
           f"must be >= 0 (0 = off), got {self.early_stopping}")
    _check(self.jit_compile is True or self.jit_compile is False or self.jit_compile == AUTO,
           "jit_compile", f"must be auto, true or false; got {self.jit_compile!r}")
    _check(self.xla_cache_dir in ("", AUTO) or self.jit_compile is not False, "xla_cache_dir",
           "keeps the XLA-compiled step; it needs --jit_compile=true or auto")
    _check(not self.xla_autotune or self.jit_compile is not False, "xla_autotune",
           "tunes the XLA-compiled step; it needs --jit_compile=true or auto")

  def check_vocabulary_size(self, vocab_size):
    """Checks what depends on the vocabulary, known once the data is read. Raises ConfigError."""
    _check(self.num_sampled < vocab_size, "num_sampled",
           f"{self.num_sampled} candidates must be fewer than the vocabulary's {vocab_size} "
           "tokens; lower --num_sampled, or use 0 (the full softmax)")


@dataclasses.dataclass(frozen=True)
class DecodeConfig:
  """How chat, decoding and the export pick the reply: greedy, beam search or sampling."""
  beam_width: int = 1  # > 1: beam search
  length_penalty: float = 0.6  # GNMT alpha: scores are log P / ((5 + |Y|) / 6) ** alpha
  n_best: int = 1  # beam search: replies shown, best first
  temperature: float = 0.0  # > 0: sample from softmax(logits / temperature)
  top_k: int = 0  # sampling: only among the k most likely tokens (0 = all)
  decode_input: str = ""  # --mode=decode: one source sentence per line
  decode_output: str = ""  # --mode=decode: the best reply to each line, line by line
  decode_reference: str = ""  # --mode=decode: reference lines; corpus BLEU is reported
  export_dir: str = ""  # --mode=export: the SavedModel folder; "" = WORKDIR/export
  plot_attention: str = ""  # chat, decode: a PNG of the attention behind a reply (FILE.png)
  checkpoint: str = "auto"  # which one inference reads: auto (best if any, else latest), latest, best
  average_checkpoints: int = 1  # > 1: inference uses the mean weights of this many of them
  ensemble: str = ""  # chat, decode, export: more workdirs (comma-separated) decoding with this one
  # chat, decode, export: the longest input read and reply written, in tokens; 0 = the trained
  # --max_length (training drops longer pairs; this lets such a model decode longer text)
  decode_max_length: int = 0

  def __post_init__(self):
    _numbers(self)
    _choice(self, "checkpoint", CHECKPOINTS)
    _positive(self, "average_checkpoints")
    _positive(self, "beam_width", "n_best")
    _check(self.length_penalty >= 0, "length_penalty", f"must be >= 0, got {self.length_penalty}")
    _check(self.temperature >= 0, "temperature", f"must be >= 0, got {self.temperature}")
    _check(self.top_k >= 0, "top_k", f"must be >= 0, got {self.top_k}")
    _check(self.decode_max_length >= 0, "decode_max_length",
           f"must be >= 0 (0 = the trained --max_length), got {self.decode_max_length}")
    _check(self.n_best <= self.beam_width, "n_best",
           f"{self.n_best} is more than beam_width {self.beam_width}")
    _check(self.beam_width == 1 or self.temperature == 0, "temperature",
           "sampling (temperature > 0) and beam search (beam_width > 1) exclude each other")
    _check(self.top_k == 0 or self.temperature > 0, "top_k",
           "top-k applies to sampling: set --temperature > 0 (1 samples the model's distribution)")
    _check(not self.plot_attention or not self.ensemble, "plot_attention",
           "draws one model's attention; an ensemble (--ensemble) averages several")
    _check(not self.plot_attention or self.beam_width == 1, "plot_attention",
           "draws the attention of greedy and sampled replies; beam search (--beam_width > 1) "
           "does not track it")

  def max_length_for(self, data_config):
    """The longest input read and reply written (--model=lm: continuation generated), in
    tokens: --decode_max_length, or when it is 0 the --max_length of `data_config` (the
    workdir's trained data settings)."""
    return self.decode_max_length or data_config.max_length

  def check_lm(self):
    """Checks what --model=lm generation (--mode=chat) supports. Raises ConfigError."""
    _check(self.beam_width == 1, "beam_width",
           "--model=lm continues text greedily or by sampling (--temperature > 0); beam search "
           "is seq2seq's")

  def check_ready(self):
    """Checks what --mode=decode needs. Raises ConfigError."""
    _check(bool(self.decode_input), "decode_input", "--mode=decode needs --decode_input=FILE")
    _check(bool(self.decode_output), "decode_output", "--mode=decode needs --decode_output=FILE")


class NoAttention(ValueError):
  """Attention alignments were asked of a model without attention."""


def check_attention(model_config):
  """Raises `NoAttention` unless `model_config` is a seq2seq model with attention, so that its
  alignments can be collected (`decoding.decode`) and drawn (--plot_attention)."""
  if model_config.model != "seq2seq" or model_config.attention == "none":
    what = (f"--model={model_config.model}" if model_config.model != "seq2seq"
            else "--attention=none")
    raise NoAttention(f"attention alignments need a seq2seq model with attention, and this one "
                      f"has none ({what}); train one with --attention=luong, luong_scaled, "
                      "bahdanau or bahdanau_norm")


def split_list(text):
  """'a, b,,c' -> ('a', 'b', 'c'): the comma-separated lists of flags."""
  return tuple(item.strip() for item in text.split(",") if item.strip())


@dataclasses.dataclass(frozen=True)
class PrepareConfig:
  """--mode=prepare: raw input -> a prepared folder of splits, vocabulary and report.

  Tokenisation (lowercase, filters), the length filter and the vocabulary size come from
  DataConfig, so that training reads the prepared folder with the settings that made it.
  """
  input: str = ""  # GLOB[,GLOB]; for chatterbot, "" is the embedded corpus
  input_format: str = "reddit"
  target_input: str = ""  # parallel: the target-side file(s), aligned line by line with input
  output_dir: str = "prepared"
  pairs_header: bool = False  # pairs: the first line of each file is a header
  # Reddit filters.
  skip_authors: str = ("AutoModerator,autotldr,BotDefense,RemindMeBot,WikiTextBot,"
                       "TweetPoster,RepostSentinel,SaveVideo,sneakpeekbot")
  min_score: int = 2  # a reply needs this score (`ups` in old dumps without `score`)
  subreddits: str = ""  # allow list; "" = all
  skip_subreddits: str = ""  # deny list
  skip_urls: bool = True
  best_reply_only: bool = True  # a parent with many replies keeps only its best-scored one
  # Splits, by a stable hash of the pair.
  val_fraction: float = 0.01
  test_fraction: float = 0.01
  # Subwords.
  tokenizer: str = "word"
  sentencepiece_type: str = "bpe"
  # Resources.
  max_words_in_memory: int = 500000  # distinct words counted in memory before spilling to disk
  progress_seconds: float = 10.0  # seconds between progress lines (0 = none)
  parse_workers: int = -1  # reddit: parse processes; -1 = one per core (at most 4), 0 = none
  # Runner: this machine, or an Apache Beam pipeline (Reddit input only).
  prepare_runner: str = "local"
  beam_options: str = ""  # Beam pipeline options, e.g. "--runner=DirectRunner --direct_num_workers=2"
  output_shards: int = 0  # beam: files per split; 0 = one per 256 MB of input; 1 = train.tsv

  def __post_init__(self):
    _numbers(self)
    _choice(self, "input_format", INPUT_FORMATS)
    _choice(self, "tokenizer", TOKENIZERS)
    _choice(self, "sentencepiece_type", SENTENCEPIECE_TYPES)
    _choice(self, "prepare_runner", PREPARE_RUNNERS)
    _check(self.prepare_runner == "local" or self.input_format == "reddit", "prepare_runner",
           f"beam runs the Reddit prepare only; --input_format={self.input_format} runs with "
           "--prepare_runner=local")
    _check(not self.beam_options or self.prepare_runner == "beam", "beam_options",
           "is only used with --prepare_runner=beam")
    _check(self.output_shards >= 0, "output_shards", f"must be >= 0, got {self.output_shards}")
    _check(not self.output_shards or self.prepare_runner == "beam", "output_shards",
           "is only used with --prepare_runner=beam (the local runner writes one file a split)")
    _check(bool(self.output_dir), "output_dir", "must be a folder path")
    for name in ("val_fraction", "test_fraction"):
      value = getattr(self, name)
      _check(0.0 <= value < 1.0, name, f"must be in [0, 1), got {value}")
    _check(self.val_fraction + self.test_fraction < 1.0, "test_fraction",
           "val_fraction + test_fraction must leave some pairs for training")
    _check(not self.target_input or self.input_format == "parallel", "target_input",
           "is only used with --input_format=parallel")
    _positive(self, "max_words_in_memory")
    _check(self.parse_workers >= -1, "parse_workers", f"must be >= -1, got {self.parse_workers}")
    _check(self.progress_seconds >= 0, "progress_seconds", f"must be >= 0, got {self.progress_seconds}")
    overlap = set(map(str.lower, split_list(self.subreddits))) & set(
        map(str.lower, split_list(self.skip_subreddits)))
    _check(not overlap, "skip_subreddits",
           f"{', '.join(sorted(overlap))} is both allowed (--subreddits) and denied")

  def check_ready(self):
    """Checks what --mode=prepare needs beyond the defaults. Raises ConfigError."""
    _check(bool(self.input) or self.input_format == "chatterbot", "input",
           f"--mode=prepare with --input_format={self.input_format} needs --input=GLOB[,GLOB]")
    _check(self.input_format != "parallel" or bool(self.target_input), "target_input",
           "--input_format=parallel needs --target_input (the aligned target-side file)")


@dataclasses.dataclass(frozen=True)
class LaunchConfig:
  """launch.py: local multi_worker processes, all restarted when one dies (seq2seq.distributed.supervisor)."""
  num_workers: int = 2
  max_restarts: int = 3  # group restarts before giving up, so that a crash loop ends
  grace_s: float = 30.0  # seconds workers get to exit after SIGTERM before SIGKILL
  gpus_per_worker: int = 0  # N: worker i sees only visible GPUs [i*N, (i+1)*N); 0: all of them

  def __post_init__(self):
    _numbers(self)
    _positive(self, "num_workers")
    _check(self.gpus_per_worker >= 0, "gpus_per_worker",
           f"must be >= 0, got {self.gpus_per_worker}")
    _check(self.max_restarts >= 0, "max_restarts", f"must be >= 0, got {self.max_restarts}")
    _check(self.grace_s >= 0, "grace_s", f"must be >= 0, got {self.grace_s}")


@dataclasses.dataclass(frozen=True)
class ServeConfig:
  """--mode=serve: the chat page and JSON API over the exported SavedModel (seq2seq.serve)."""
  host: str = "127.0.0.1"  # the address to listen on; 0.0.0.0 opens it to the network
  port: int = 8080  # 0: any free port (the line "serving on http://..." names it)
  max_queue: int = 32  # requests waiting for the model; more are answered 503
  request_timeout: float = 30.0  # seconds a request may wait and run; then it is answered 504
  max_beam_width: int = 10  # the widest beam a request may ask for

  def __post_init__(self):
    _numbers(self)
    _check(bool(self.host), "host", "must be an address to listen on, e.g. 127.0.0.1")
    _check(0 <= self.port <= 65535, "port", f"must be in [0, 65535] (0 = any free port), "
                                            f"got {self.port}")
    _positive(self, "max_queue", "request_timeout", "max_beam_width")


@dataclasses.dataclass(frozen=True)
class RunConfig:
  model: ModelConfig = ModelConfig()
  data: DataConfig = DataConfig()
  train: TrainConfig = TrainConfig()
  prepare: PrepareConfig = PrepareConfig()
  decode: DecodeConfig = DecodeConfig()
  serve: ServeConfig = ServeConfig()

  def __post_init__(self):
    _check(not self.train.num_sampled or self.model.model == "seq2seq", "num_sampled",
           f"the sampled softmax is not supported with --model={self.model.model} yet; use 0")
    _check(not self.model.tie_embeddings or self.train.strategy == "default", "tie_embeddings",
           f"trains on one device so far; use --strategy=default (got "
           f"--strategy={self.train.strategy}) or drop --tie_embeddings")
    _check(self.model.model != "lm" or self.train.strategy == "default", "strategy",
           f"--model=lm trains on one device so far; use --strategy=default (got "
           f"--strategy={self.train.strategy})")

  def check_training(self):
    """Checks what --mode=train needs across sections. Raises ConfigError."""
    for name in ("plateau_patience", "early_stopping"):
      _check(not getattr(self.train, name) or bool(self.data.val_data), name,
             "acts on the validation loss: give --val_data (or set 0)")

  def to_json(self):
    return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)


def replace(config, **changes):
  """dataclasses.replace for a RunConfig: each change names 'section.field' or a unique field."""
  sections = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
  for key, value in changes.items():
    section, _, field = key.rpartition(".")
    if not section:
      owners = [s for s, obj in sections.items() if field in {f.name for f in dataclasses.fields(obj)}]
      if len(owners) != 1:
        raise ConfigError(field, "unknown config field")
      section = owners[0]
    sections[section] = dataclasses.replace(sections[section], **{field: value})
  return RunConfig(**sections)


def field_names():
  """{field name: section} for every field of RunConfig."""
  return {f.name: section.name for section in dataclasses.fields(RunConfig)
          for f in dataclasses.fields(section.type)}
