"""seq2seq: a low-level TensorFlow 2 training engine for recurrent sequence models.

The public research API is re-exported here. The names load lazily, so that importing
`seq2seq.config` (as train.py does to validate flags) does not import TensorFlow.
"""
import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "RNNCore": "seq2seq.cells", "LSTMCell": "seq2seq.cells", "LSTMState": "seq2seq.cells",
    "GRUCell": "seq2seq.cells", "GRUState": "seq2seq.cells",
    "DropoutWrapper": "seq2seq.cells", "StackedCells": "seq2seq.cells",
    "ResidualWrapper": "seq2seq.cells", "VariationalDropoutWrapper": "seq2seq.cells",
    "Attention": "seq2seq.attention", "AttentionWrapper": "seq2seq.attention",
    "AttentionState": "seq2seq.attention",
    "static_unroll": "seq2seq.unroll", "bidirectional_unroll": "seq2seq.unroll",
    "LanguageModel": "seq2seq.language_model",
    "Seq2Seq": "seq2seq.model",
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
