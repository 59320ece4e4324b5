"""A seq2seq replica's backward pass in stages, so that the all-reduce of one stage's
gradients can run while the next stage's backward pass does.

The training forward pass is three stages:
  encoder: source vectors -> encoder outputs and state (`Seq2Seq.encode_embedded`);
  decoder: those and the target vectors -> decoder outputs [B, Tt, H]
           (`Seq2Seq.outputs_from_encoded`);
  loss:    decoder outputs -> the loss, through the projection (`train_step.loss_from_outputs`).
Each runs under a tape of its own from gradient-stopped inputs, so that each stage's backward
pass is a call of its own: loss, then decoder, then encoder. After each, an XLA optimization
barrier holds the gradient handed down together with the stage's weight gradients: XLA must
finish those (a stage's large weight-gradient GEMMs) before the next stage's backward pass
starts, and their all-reduce can start then. Without the barriers XLA puts every
weight-gradient GEMM, and so every all-reduce, after the whole recurrent backward pass (the
thunk order of a 2-GPU step, `benchmarks/README.md`), and nothing hides the all-reduce.
"""
import collections

import tensorflow as tf
# TensorFlow-internal name: XLA's optimization barrier (as `seq2seq.fast.activations`).
from tensorflow.compiler.tf2xla.python import xla as tf2xla  # pylint: disable=g-direct-tensorflow-import

from seq2seq.step import train_step as train_step_lib

# The gradients complete after one stage's backward pass: `dense` {index in the dense
# variables: gradient}, `rows` {index in `train_step.trainable_tables`: (values [N, E],
# indices [N])}, the rows of every lookup of the table, flattened.
Stage = collections.namedtuple("Stage", "dense rows")


def in_order(first, then):
  """`then` (a nest of tensors; None entries kept), made to wait for `first` (a nest) by an
  XLA optimization barrier: inside an XLA program nothing that reads the result starts before
  all of `first` is computed. -> `then`'s values."""
  tensors = lambda nest: [t for t in tf.nest.flatten(nest, expand_composites=True)
                          if t is not None]
  first, then_flat = tensors(first), tf.nest.flatten(then, expand_composites=True)
  held = [t for t in then_flat if t is not None]
  if not first or not held:
    return then
  held = iter(tf2xla.optimization_barrier(*first, *held)[len(first):])
  return tf.nest.pack_sequence_as(then, [t if t is None else next(held) for t in then_flat],
                                  expand_composites=True)


def _gradients(tape, targets, output_gradients, variables, inputs):
  """(gradients of `variables`, of `inputs`) from `tape`: `targets` [flat] with their
  incoming gradients; targets that receive none are left out (a None output gradient would
  be taken as ones)."""
  pairs = [(t, g) for t, g in zip(targets, output_gradients) if g is not None]
  if not pairs:
    return [None] * len(variables), [None] * len(inputs)
  gradients = tape.gradient([t for t, _ in pairs], list(variables) + list(inputs),
                            output_gradients=[g for _, g in pairs])
  return gradients[:len(variables)], gradients[len(variables):]


def staged_loss_and_gradients(model, batch, embedded, lookups, dense_variables,
                              loss_from_outputs):
  """The replica's loss and its gradients, stage by stage (module docstring). Inside an XLA
  program.

  Args:
    model: a `Seq2Seq`; dropout is on (training=True).
    batch: the replica's `data.Batch` [B, ...].
    embedded: (source vectors [B, Ts, E], target vectors [B, Tt, E]), looked up by
      `lookups` = `train_step.seq2seq_lookups(model)`.
    dense_variables: the trainable variables other than the tables.
    loss_from_outputs: decoder outputs [B, Tt, H] -> the loss (float32 scalar).

  Returns:
    (loss, stages): the `Stage`s in backward order: loss, decoder, encoder. Each dense
    variable and table is in the last stage (in backward order) that reads it, with the sum
    of every stage's part; the tables' rows as `train_step.loss_and_gradients` gives them.
  """
  source_embedded, target_embedded = embedded
  with tf.GradientTape() as encoder_tape:
    encoder_tape.watch(source_embedded)
    encoded = model.encode_embedded(source_embedded, batch.source_length, training=True)
  encoded_in = tf.nest.map_structure(tf.stop_gradient, encoded)
  with tf.GradientTape() as decoder_tape:
    decoder_tape.watch([encoded_in, target_embedded])
    outputs = model.outputs_from_encoded(encoded_in, batch.source_length, target_embedded,
                                         training=True)
  outputs_in = tf.stop_gradient(outputs)
  with tf.GradientTape() as loss_tape:
    loss_tape.watch(outputs_in)
    loss = loss_from_outputs(outputs_in)

  encoded_flat, encoded_in_flat = tf.nest.flatten(encoded), tf.nest.flatten(encoded_in)
  loss_part, (d_outputs,) = _gradients(loss_tape, [loss], [tf.ones_like(loss)],
                                       dense_variables, [outputs_in])
  d_outputs = in_order(loss_part, d_outputs)
  decoder_part, d_decoder_inputs = _gradients(decoder_tape, [outputs], [d_outputs],
                                              dense_variables, encoded_in_flat + [target_embedded])
  d_encoded, d_target = d_decoder_inputs[:-1], d_decoder_inputs[-1]
  d_encoded = in_order((decoder_part, d_target), d_encoded)
  encoder_part, (d_source,) = _gradients(encoder_tape, encoded_flat, d_encoded,
                                         dense_variables, [source_embedded])
  # Backward-order stage of each lookup's vectors: the source's in the encoder's, the
  # target's in the decoder's.
  return loss, _stages([loss_part, decoder_part, encoder_part], [d_source, d_target], [2, 1],
                       batch, lookups)


def _stages(parts, lookup_gradients, lookup_stages, batch, lookups):
  """`Stage`s from each stage's dense gradients `parts` [stage][variable] (None where the
  stage does not read the variable), and the gradient of each lookup's vectors
  (`lookup_gradients`, in the order of `lookups`), read in stage `lookup_stages[lookup]`."""
  stages = [Stage({}, {}) for _ in parts]
  for index, gradients in enumerate(zip(*parts)):
    reading = [s for s, g in enumerate(gradients) if g is not None]
    if reading:
      stages[reading[-1]].dense[index] = tf.add_n(
          [train_step_lib.dense_gradient(gradients[s]) for s in reading])
  rows = train_step_lib.table_rows(lookups, batch, lookup_gradients)
  for index, table in enumerate(train_step_lib.trainable_tables(lookups)):
    last = max(stage for stage, (embedding, _) in zip(lookup_stages, lookups)
               if embedding.table is table)
    stages[last].rows[index] = rows[index]
  return stages
