"""Typed, frozen, validated configuration. Each default is defined here, once.

Entry points (train.py) convert their flags into these objects; the library never reads flags.
Field names match flag names, so a `ConfigError` names the flag to change.
"""
import dataclasses
import json

CELLS = ("lstm", "gru")
OPTIMIZERS = ("adam", "rmsprop", "sgd")
EMBEDDING_DEVICES = ("cpu", "gpu")
PRECISIONS = ("fp32", "bf16")


class ConfigError(ValueError):
  """A bad configuration value. `field` is the name of the offending field (and flag)."""

  def __init__(self, field, message):
    super().__init__(f"{field}: {message}")
    self.field = field


def _check(condition, field, message):
  if not condition:
    raise ConfigError(field, message)


def _positive(config, *names):
  for name in names:
    value = getattr(config, name)
    _check(value > 0, name, f"must be > 0, got {value}")


def _choice(config, name, choices):
  value = getattr(config, name)
  _check(value in choices, name, f"must be one of {', '.join(choices)}; got {value!r}")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """The network. These fields must match a checkpoint's to resume from it."""
  cell: str = "lstm"
  num_layers: int = 2
  hidden_size: int = 256
  embedding_size: int = 128
  keep_prob: float = 0.8  # dropout keep probability on each layer's output, training only
  forget_bias: float = 1.0
  share_embeddings: bool = True  # one embedding table for source and target
  embedding_device: str = "cpu"  # where the embedding table lives and is looked up
  pretrained_embeddings: str = ""  # GloVe / word2vec text file to initialise the table
  freeze_embeddings: bool = False  # keep a pretrained table fixed

  def __post_init__(self):
    _choice(self, "cell", CELLS)
    _choice(self, "embedding_device", EMBEDDING_DEVICES)
    _positive(self, "num_layers", "hidden_size", "embedding_size")
    _check(0.0 < self.keep_prob <= 1.0, "keep_prob", f"must be in (0, 1], got {self.keep_prob}")
    _check(not self.freeze_embeddings or self.pretrained_embeddings, "freeze_embeddings",
           "freezing needs --pretrained_embeddings (a frozen random table never learns)")

  def architecture(self):
    """The fields that shape the variables: a checkpoint is only usable if these match."""
    return {k: getattr(self, k) for k in
            ("cell", "num_layers", "hidden_size", "embedding_size", "share_embeddings")}


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

  def __post_init__(self):
    _check(bool(self.data), "data", "must name a corpus")
    _positive(self, "min_length", "max_length", "num_buckets")
    _check(self.max_vocab > 4, "max_vocab", f"must exceed the 4 special tokens, got {self.max_vocab}")
    _check(self.min_length <= self.max_length, "min_length",
           f"{self.min_length} is greater than max_length {self.max_length}")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Optimisation, run length, saving and logging."""
  workdir: str = "workdir"
  batch_size: int = 32
  optimizer: str = "adam"
  learning_rate: float = 0.002
  decay_steps: int = 100000
  decay_rate: float = 0.95
  staircase: bool = False
  max_grad_norm: float = 5.0  # 0 turns clipping off
  num_epochs: int = 40
  max_steps: int = 0  # 0: no limit other than num_epochs
  save_every: int = 100
  keep_checkpoints: int = 5
  log_every: int = 20
  seed: int = 1234
  deterministic: bool = False  # tf.config.experimental.enable_op_determinism
  jit_compile: bool = False  # XLA-compile the step (the embedding stays outside)
  precision: str = "fp32"  # bf16: bfloat16 activations and matmuls, float32 weights and loss

  def __post_init__(self):
    _check(bool(self.workdir), "workdir", "must be a folder path")
    _choice(self, "optimizer", OPTIMIZERS)
    _choice(self, "precision", PRECISIONS)
    _positive(self, "batch_size", "learning_rate", "decay_steps", "decay_rate", "num_epochs",
              "save_every", "keep_checkpoints", "log_every")
    _check(self.max_grad_norm >= 0, "max_grad_norm", f"must be >= 0, got {self.max_grad_norm}")
    _check(self.max_steps >= 0, "max_steps", f"must be >= 0, got {self.max_steps}")


@dataclasses.dataclass(frozen=True)
class RunConfig:
  model: ModelConfig = ModelConfig()
  data: DataConfig = DataConfig()
  train: TrainConfig = TrainConfig()

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
