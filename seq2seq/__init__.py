"""seq2seq: a low-level TensorFlow 2 training engine for recurrent sequence models.

The public research API is re-exported here.
"""
from seq2seq.cells import DropoutWrapper, GRUCell, GRUState, LSTMCell, LSTMState, RNNCore, StackedCells
from seq2seq.config import ConfigError, DataConfig, ModelConfig, RunConfig, TrainConfig
from seq2seq.model import Seq2Seq
from seq2seq.unroll import static_unroll

__version__ = "0.1.0"

__all__ = [
    "ConfigError", "DataConfig", "DropoutWrapper", "GRUCell", "GRUState", "LSTMCell",
    "LSTMState", "ModelConfig", "RNNCore", "RunConfig", "Seq2Seq", "StackedCells",
    "TrainConfig", "static_unroll", "__version__",
]
