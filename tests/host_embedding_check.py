"""Run by test_host_embedding in a fresh process: 2 logical CPUs must be set before TF starts.

    python -m tests.host_embedding_check

CPU:0 is the host and CPU:1 stands for the accelerator. For each model (the encoder-decoder
with one shared table and with separate source and target tables, and the LM), precision
(fp32, bf16) and step (plain, XLA-compiled), it trains the same model for a few Adam steps
with its tables pinned to the host (--embedding_device=cpu: distinct rows looked up on CPU:0,
moved to CPU:1, their gradients moved back and applied on CPU:0) and with them on the
accelerator (--embedding_device=gpu, everything on CPU:1; compiled, the whole step is one XLA
program, its rows updated inside it). The encoder-decoder also trains with the pinned tables
looked up a batch ahead (`lookahead.LookaheadStep`), against both. The batches repeat ids within a batch and share ids
with the batch before. Prints one JSON line {case: {"max_diff": max |diff| over every
parameter, slot and the step counter against the accelerator placement's same step,
"max_diff_whole": against its compiled whole step, "devices": the devices of a table and of
a dense variable, pinned then not; a lookahead case has "max_diff_split", against the
pinned step run part after part, instead of "max_diff_whole"}, and "data": whether the batches repeat ids and share
them with the batch before}.
"""
import json

import numpy as np
import tensorflow as tf

VOCAB = 30
STEPS = 4


def _seq2seq_batches(batches_lib):
  rng = np.random.default_rng(3)
  made = []
  for _ in range(STEPS):
    examples = [(list(rng.integers(4, VOCAB, rng.integers(2, 7))),
                 list(rng.integers(4, VOCAB, rng.integers(2, 7)))) for _ in range(5)]
    made.append(batches_lib.pad_batch(examples, 6))
  return made


def _lm_windows():
  rng = np.random.default_rng(4)
  return [tf.constant(rng.integers(0, VOCAB, (3, 6)).astype(np.int32)) for _ in range(STEPS)]


def _train(kind, share, precision, jit_compile, embedding_device, lookahead=False):
  """(parameters and slots after STEPS Adam steps, the model); with `lookahead`, the seq2seq
  step is given each next batch (`lookahead.LookaheadStep`)."""
  # pylint: disable=import-outside-toplevel
  from seq2seq import config as config_lib
  from seq2seq.data import batches as batches_lib
  from seq2seq.models import encoder_decoder as model_lib
  from seq2seq.models import language_model
  from seq2seq.step import optimizers
  from seq2seq.step import train_step as train_step_lib
  config = config_lib.ModelConfig(num_layers=1, hidden_size=16, embedding_size=8, keep_prob=1.0,
                                  share_embeddings=share, embedding_device=embedding_device)
  compute_dtype = model_lib.COMPUTE_DTYPES[precision]
  with tf.device("/cpu:1"):
    if kind == "lm":
      model = language_model.LanguageModel(config, VOCAB, seed=5, compute_dtype=compute_dtype)
    else:
      model = model_lib.Seq2Seq(config, VOCAB, seed=5, compute_dtype=compute_dtype)
    model.build()
    optimizer = optimizers.Adam(0.01)
    optimizer.build(model.trainable_variables)
    if kind == "lm":
      step = train_step_lib.make_carried_step(
          train_step_lib.make_lm_train_step(model, optimizer, 0.5, jit_compile=jit_compile),
          language_model.CarriedState(model, 3))
      for window in _lm_windows():
        step(window[:, :-1], window[:, 1:])
    else:
      step = train_step_lib.make_train_step(model, optimizer, 0.5, jit_compile=jit_compile,
                                            lookahead=lookahead)
      batches = _seq2seq_batches(batches_lib)
      for batch, following in zip(batches, batches[1:] + [None]):
        step(batch, following) if lookahead else step(batch)
  values = [v.numpy() for v in model.trainable_variables]
  values += [s.numpy() for name in optimizer.slot_names for s in optimizer.slots[name]]
  return values + [optimizer.iterations.numpy()], model


def _max_diff(values, reference):
  return max(float(np.abs(np.asarray(a, np.float64) - b).max())
             for a, b in zip(values, reference))


def _devices(model):
  """The devices of the (first) table and of the projection kernel (a dense variable)."""
  table = getattr(model, "embedding", None) or model.source_embedding
  return [variable.device.split("device:")[-1]
          for variable in (table.table, model.projection_kernel)]


def main():
  cpu = tf.config.list_physical_devices("CPU")[0]
  tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
  report = {}
  for kind, share in (("seq2seq", True), ("seq2seq", False), ("lm", True)):
    for precision in ("fp32", "bf16"):
      runs = {(placement, jit_compile): _train(kind, share, precision, jit_compile, placement)
              for placement in ("cpu", "gpu") for jit_compile in (False, True)}
      for jit_compile in (False, True):
        host, host_model = runs["cpu", jit_compile]
        step = "xla" if jit_compile else "plain"
        name = f"{kind}{'' if share else '_separate'}_{precision}_{step}"
        report[name] = {
            "max_diff": _max_diff(host, runs["gpu", jit_compile][0]),
            "max_diff_whole": _max_diff(host, runs["gpu", True][0]),
            "devices": _devices(host_model) + _devices(runs["gpu", jit_compile][1])}
        if kind == "seq2seq":
          ahead, ahead_model = _train(kind, share, precision, jit_compile, "cpu", lookahead=True)
          report[name + "_lookahead"] = {
              "max_diff": _max_diff(ahead, runs["gpu", jit_compile][0]),
              "max_diff_split": _max_diff(ahead, host),
              "devices": _devices(ahead_model) + _devices(runs["gpu", jit_compile][1])}
  report["data"] = _overlaps()
  print(json.dumps(report))


def _overlaps():
  """Whether every batch (window) looks an id up more than once, and shares ids with the one
  before it: the cases a row update must get right (summed rows, rows read after an update)."""
  # pylint: disable=import-outside-toplevel
  from seq2seq.data import batches as batches_lib
  kinds = {"seq2seq": [np.concatenate([b.source.ravel(), b.decoder_input.ravel()])
                       for b in _seq2seq_batches(batches_lib)],
           "lm": [w[:, :-1].numpy().ravel() for w in _lm_windows()]}
  return {kind: {"repeats": all(len(set(ids)) < len(ids) for ids in batches),
                 "shared": all(set(a) & set(b) for a, b in zip(batches, batches[1:]))}
          for kind, batches in kinds.items()}


if __name__ == "__main__":
  main()
