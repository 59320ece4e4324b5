"""Counts the ops of the engine's traced train step: what bounds an unfused step on a GPU.

    python -m benchmarks.op_count                       # configs/multi30k_attention.flags' model
    python -m benchmarks.op_count --keep_prob=1.0 --length=22 --top=15

Traces `train_step.make_train_step` for one padded length (a bucket) and a fixed batch, as
training does, and counts the non-constant ops of its graph, the bodies of the functions it
calls (tf.cond branches, while loops, gradients) included. Each op is one host dispatch when
the step runs without XLA. Prints one JSON line, with the seconds spent building the model and
tracing the step (`trace_s`).
"""
import collections
import json
import time

from absl import app
from absl import flags
import tensorflow as tf

from seq2seq import config as config_lib
from seq2seq.models import encoder_decoder as model_lib
from seq2seq.step import optimizers
from seq2seq.step import train_step as train_step_lib

FLAGS = flags.FLAGS
flags.DEFINE_float("keep_prob", 0.6, "dropout keep probability")
flags.DEFINE_integer("length", 16, "the bucket: source length (the target is one longer)")
flags.DEFINE_integer("batch", 64, "rows of the fixed batch")
flags.DEFINE_integer("vocab", 14000, "vocabulary size")
flags.DEFINE_enum("precision", "fp32", ["fp32", "bf16"], "compute dtype")
flags.DEFINE_integer("top", 0, "also list the N most frequent op types")


def graph_op_counts(graph_def):
  """{op type: count} over a GraphDef's nodes and its function library, constants left out."""
  counts = collections.Counter(node.op for node in graph_def.node)
  for function in graph_def.library.function:
    counts.update(node.op for node in function.node_def)
  counts.pop("Const", None)
  return counts


def multi30k_step_graph(keep_prob=0.6, length=16, batch=64, vocab=14000, precision="fp32"):
  """The GraphDef of the train step of configs/multi30k_attention.flags' model for one bucket
  (bidirectional 2-layer LSTM encoder, Luong attention with input feeding, H=512, E=256,
  label smoothing 0.1, the batch padded to `batch` rows)."""
  config = config_lib.ModelConfig(num_layers=2, hidden_size=512, embedding_size=256,
                                  keep_prob=keep_prob, share_embeddings=False, encoder="bi",
                                  attention="luong")
  model = model_lib.Seq2Seq(config, vocab, seed=1,
                            compute_dtype=model_lib.COMPUTE_DTYPES[precision])
  model.build()
  optimizer = optimizers.make_optimizer(config_lib.TrainConfig(learning_rate=1e-3),
                                        model.trainable_variables)
  step = train_step_lib.make_train_step(model, optimizer, max_grad_norm=5.0,
                                        label_smoothing=0.1, batch_size=batch)
  # The signature's batch is static (`pad_rows_to`), as in training with --batch_size.
  signature = train_step_lib._batch_signature(length, batch)  # pylint: disable=protected-access
  function = tf.function(step.fn, input_signature=[signature],
                         autograph=False)  # as BucketedFunction traces it
  return function.get_concrete_function().graph.as_graph_def()


def main(argv):
  del argv
  start = time.perf_counter()
  graph_def = multi30k_step_graph(FLAGS.keep_prob, FLAGS.length, FLAGS.batch, FLAGS.vocab,
                                  FLAGS.precision)
  trace_s = time.perf_counter() - start  # building the model and tracing its step
  counts = graph_op_counts(graph_def)
  row = {"keep_prob": FLAGS.keep_prob, "length": FLAGS.length, "batch": FLAGS.batch,
         "precision": FLAGS.precision, "ops": sum(counts.values()), "trace_s": trace_s}
  if FLAGS.top:
    row["top"] = dict(counts.most_common(FLAGS.top))
  print(json.dumps(row), flush=True)


if __name__ == "__main__":
  app.run(main)
