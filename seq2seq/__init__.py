"""seq2seq: a low-level TensorFlow 2 training engine for recurrent sequence models.

The public research API is re-exported here. The names load lazily, so that importing
`seq2seq.config` (as train.py does to validate flags) does not import TensorFlow.
"""
import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "RNNCore": "seq2seq.nn.cells", "LSTMCell": "seq2seq.nn.cells", "LSTMState": "seq2seq.nn.cells",
    "GRUCell": "seq2seq.nn.cells", "GRUState": "seq2seq.nn.cells",
    "DropoutWrapper": "seq2seq.nn.cells", "StackedCells": "seq2seq.nn.cells",
    "ResidualWrapper": "seq2seq.nn.cells", "VariationalDropoutWrapper": "seq2seq.nn.cells",
    "Attention": "seq2seq.nn.attention", "AttentionWrapper": "seq2seq.nn.attention",
    "AttentionState": "seq2seq.nn.attention",
    "static_unroll": "seq2seq.nn.unroll", "bidirectional_unroll": "seq2seq.nn.unroll",
    "LanguageModel": "seq2seq.models.language_model",
    "Seq2Seq": "seq2seq.models.encoder_decoder",
    "ConfigError": "seq2seq.config", "ModelConfig": "seq2seq.config",
    "DataConfig": "seq2seq.config", "TrainConfig": "seq2seq.config",
    "RunConfig": "seq2seq.config", "DecodeConfig": "seq2seq.config",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name):
  if name in _EXPORTS:
    return getattr(importlib.import_module(_EXPORTS[name]), name)
  raise AttributeError(f"module 'seq2seq' has no attribute {name!r}")


def __dir__():
  return __all__
