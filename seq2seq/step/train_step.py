"""The compiled train and eval steps of both models; a seq2seq step is traced once per padded
length (bucket), or once for all of them where XLA compiles the dynamic unroll."""
import functools

import numpy as np
import tensorflow as tf

from ops import losses
from seq2seq.data import batches as batches_lib
from seq2seq.fast import unroll as fast_unroll
from seq2seq.step import compile_ahead
from seq2seq.step import lookahead as lookahead_lib
from seq2seq.step import optimizers
from seq2seq.step import pipeline
from seq2seq.step import split_step
from seq2seq.step import unique_rows


def _batch_signature(source_length, batch_size=None, ids_dtype=tf.int32):
  """TensorSpecs of a `Batch` whose source is padded to `source_length` (None: any length),
  of `batch_size` rows (None: any), its ids and lengths of `ids_dtype`."""
  ids = lambda t: tf.TensorSpec([batch_size, t], ids_dtype)
  target_length = None if source_length is None else source_length + 1
  return batches_lib.Batch(
      source=ids(source_length),
      source_length=tf.TensorSpec([batch_size], ids_dtype),
      decoder_input=ids(target_length),
      target=ids(target_length),
      target_weight=tf.TensorSpec([batch_size, target_length], tf.float32))


def device_batch(batch, device):
  """`batch` (a `batches_lib.Batch`, or any nest of arrays or tensors, such as an LM window)
  copied to `device`, its integer fields (ids, lengths) as int64.

  TensorFlow keeps a GPU's int32 tensors in host memory, so a step given int32 ids copies them
  into its XLA program on every call, and that copy waits for the work already queued on the
  GPU: the host cannot issue a step before the one ahead of it has finished. int64 tensors
  stay in GPU memory. The steps take either (`BucketedFunction` traces each dtype) and turn
  the ids back to int32 inside their program (`int32_ids`)."""
  with tf.device(device):
    return tf.nest.map_structure(
        lambda field: (tf.cast(field, tf.int64) if tf.as_dtype(field.dtype).is_integer
                       else tf.identity(field)), batch)


int32_ids = split_step.int32_ids


class BucketedFunction:
  """Calls `fn(batch, *extra)` through one `tf.function` per padded length.

  The static unroll is a Python loop, so the time dimension must be static. A bucket is
  traced exactly once. `extra_signature` gives the TensorSpecs of any arguments after the
  batch (the same for every bucket).

  With `any_length`, `fn` is traced once for every length (the time dimension None): for an
  XLA-compiled step over the dynamic unroll, which XLA compiles for each length with that
  length a constant, so that only the graph-to-HLO bridge and the compilation (or the XLA
  cache's load) are done per bucket, not the Python tracing and TensorFlow's graph passes
  (on `configs/multi30k_attention.flags`' model, 3 to 4 s a bucket on a CPU).

  With `pad_rows_to` = N, every batch (at most N rows) is padded to N rows of zero weight
  (`pad_rows`) and the signature's batch dimension is N. A fully static shape lets the
  gradient skip the shape arithmetic of broadcasting ops (Shape, BroadcastGradientArgs, Sum,
  Reshape): the attention step of `configs/multi30k_attention.flags` has 43% fewer non-constant
  ops, which is what bounds an unfused step on a GPU. XLA then also compiles each bucket once.
  Without it the batch dimension is None, so the last, smaller batch of an epoch does not
  retrace either.
  """

  def __init__(self, fn, extra_signature=(), pad_rows_to=0, any_length=False):
    self._fn = fn
    self._extra_signature = list(extra_signature)
    self._functions = {}  # (length, or None with `any_length`; ids dtype) -> tf.function
    self._lengths = set()
    self._pad_rows_to = int(pad_rows_to)
    self._any_length = bool(any_length)

  @property
  def fn(self):
    """The Python function it traces: fn(batch, *extra)."""
    return self._fn

  @property
  def traced_lengths(self):
    """The padded lengths it has run (each traced, or with `any_length` compiled, once)."""
    return tuple(sorted(self._lengths))

  def traced(self, length, ids_dtype=tf.int32):
    """The `tf.function` traced for batches of padded `length` with ids of `ids_dtype` (with
    `any_length`, the one of every length run)."""
    if length not in self._lengths:
      raise KeyError(f"no batch of padded length {length} has run")
    return self._functions[(None if self._any_length else length, tf.as_dtype(ids_dtype))]

  def __call__(self, batch, *extra):
    length = int(batch.source.shape[1])
    ids_dtype = tf.int64 if tf.as_dtype(batch.source.dtype) == tf.int64 else tf.int32
    function = self._function(length, ids_dtype)
    self._lengths.add(length)
    if self._pad_rows_to:
      rows = batch.source.shape[0]
      if rows > self._pad_rows_to:
        raise ValueError(f"a batch of {rows} rows, more than the {self._pad_rows_to} this step "
                         "was built for")
      batch = pad_rows(batch, self._pad_rows_to)
    return function(batches_lib.Batch(*batch), *extra)

  def warm_up_calls(self, lengths, rows):
    """For `compile_ahead.compile_buckets`: one call per padded length, the step of an
    unapplied batch of `rows` rows (a step with no `extra` arguments). The `tf.function`s
    are made here, before the calls run on parallel threads."""
    for length in lengths:
      self._function(length, tf.int32)
    return [functools.partial(self, compile_ahead.unapplied_batch(rows, length))
            for length in lengths]

  def _function(self, length, ids_dtype):
    """The `tf.function` that runs batches of padded `length` with ids of `ids_dtype`, made
    at its first use."""
    key = (None if self._any_length else length, ids_dtype)
    function = self._functions.get(key)
    if function is None:
      signature = _batch_signature(key[0], self._pad_rows_to or None, ids_dtype)
      function = tf.function(self._fn, input_signature=[signature] + self._extra_signature,
                             autograph=False)
      self._functions[key] = function
    return function


def pad_rows(batch, rows):
  """`batch` (NumPy) with rows appended up to `rows`: one <PAD> source token each (length 1,
  so attention has a position to attend to) and zero target weight.

  Every batch of a bucket then has one shape (see `BucketedFunction`). The loss, a weighted
  mean (or sum) over target tokens, and its gradients are unchanged.
  """
  missing = rows - batch.source.shape[0]
  if missing <= 0:
    return batch
  def grow(array, value=0):
    filler = np.full((missing,) + array.shape[1:], value, array.dtype)
    return np.concatenate([array, filler])
  return batches_lib.Batch(
      source=grow(batch.source), source_length=grow(batch.source_length, 1),
      decoder_input=grow(batch.decoder_input), target=grow(batch.target),
      target_weight=grow(batch.target_weight))


def training_loss(model, batch, source_embedded, target_embedded, num_sampled=0, seed=None,
                  average=True, label_smoothing=0.0):
  """The teacher-forced training loss of a batch, from looked-up vectors (`model.embed`).

  With `num_sampled` > 0 it is a sampled softmax (`losses.sampled_sequence_loss`) over the
  decoder outputs [B*T, H]: the [B*T, V] logits are never formed. Evaluation, validation and
  decoding use the exact softmax whatever `num_sampled` is.

  Args:
    model: a `Seq2Seq`; dropout is on (training=True).
    batch: a `batches_lib.Batch`; source_embedded [B, Ts, E], target_embedded [B, Tt, E].
    num_sampled: 0 for the full softmax, else the number of sampled candidates.
    seed: [2] int tensor of the sampler (with `num_sampled`).
    average: the mean loss per target token (a scalar), or else the weighted per-token
      losses [B, Tt] (whose sum a distributed step divides by the global weight).
    label_smoothing: eps of `losses.sequence_loss` (full softmax only).

  Returns:
    The loss, float32 (also with bfloat16 activations).
  """
  outputs = model.outputs_from_embedded(source_embedded, batch.source_length, target_embedded,
                                        training=True)
  return loss_from_outputs(model, batch, outputs, num_sampled, seed, average, label_smoothing)


def loss_from_outputs(model, batch, outputs, num_sampled=0, seed=None, average=True,
                      label_smoothing=0.0):
  """`training_loss` from the decoder outputs [B, Tt, H]: the projection and the loss."""
  if num_sampled:
    return losses.sampled_sequence_loss(
        outputs, batch.target, batch.target_weight, *model.projection(), num_sampled, seed,
        average_across_timesteps=average, average_across_batch=average)
  return losses.sequence_loss(model.project(outputs), batch.target, batch.target_weight,
                              average_across_timesteps=average, average_across_batch=average,
                              label_smoothing=label_smoothing)


def dense_gradient(gradient):
  """A dense variable's gradient as a tensor.

  The sampled softmax gathers columns of the projection bias, whose gradient is then an
  IndexedSlices with repeated rows; the global norm, the all-reduce and the dense update
  need it summed into the variable's shape.
  """
  return tf.convert_to_tensor(gradient)


def sampling_seed(seed, iterations):
  """The sampled-softmax seed of the next step: (run seed, the optimizer's step counter).

  The step counter is checkpointed and advances only on applied steps, so a resumed run
  draws the candidates an uninterrupted one would.
  """
  return tf.stack([tf.constant(seed, tf.int64), iterations])


def trainable_tables(lookups):
  """The distinct trainable tables of `lookups` ([(embeddings.Embedding, ids_fn)]), in order."""
  return [table for table in unique_rows.distinct_tables(lookups) if table.trainable]


def loss_and_gradients(loss_fn, inputs, embedded, lookups, dense_variables):
  """Forward and backward from looked-up vectors: the part of every step XLA may compile.

  Args:
    loss_fn, lookups: as in `make_update_step`; embedded: the looked-up vectors, one per lookup.
    dense_variables: the trainable variables other than the tables.

  Returns:
    (loss, extra, dense gradients as tensors, rows): rows holds, for each table of
    `trainable_tables(lookups)`, (values [N, E], indices [N]): the gradient of each looked-up
    row, flattened (a shared table gets the rows of both lookups; duplicates not yet summed).
  """
  with tf.GradientTape() as tape:
    tape.watch(embedded)
    loss, extra = loss_fn(inputs, embedded)
  gradients = tape.gradient(loss, dense_variables + list(embedded))
  count = len(dense_variables)
  dense_gradients = [dense_gradient(g) for g in gradients[:count]]
  return loss, extra, dense_gradients, table_rows(lookups, inputs, gradients[count:])


def table_rows(lookups, inputs, embedded_gradients):
  """For each table of `trainable_tables(lookups)`, (values [N, E], indices [N]): the
  gradients `embedded_gradients` (one [..., E] per lookup) of the vectors its lookups read
  and their ids, flattened (a shared table gets the rows of both lookups)."""
  rows = []
  for table in trainable_tables(lookups):
    reads = [(gradient, ids_fn) for (embedding, ids_fn), gradient in
             zip(lookups, embedded_gradients) if embedding.table is table]
    rows.append((tf.concat([tf.reshape(g, [-1, table.shape[-1]]) for g, _ in reads], 0),
                 tf.concat([tf.reshape(ids_fn(inputs), [-1]) for _, ids_fn in reads], 0)))
  return rows


def make_update_step(loss_fn, lookups, variables, optimizer, max_grad_norm, jit_compile=False,
                     rows_dtype=None, any_length=False):
  """The one-device train step: `pipeline.run` (forward, backward, global norm, clip,
  gated update) over any loss of looked-up vectors.

  With the tables pinned to the host (--embedding_device=cpu, the default), the embedding
  lookups and the embedding updates run outside the optional XLA region, on the CPU, one
  distinct row at a time (`unique_rows`: each row read, moved in `rows_dtype` and updated
  once); everything else (the forward pass from those rows, loss, backward pass, global norm,
  clipping, and the dense optimizer update) is one function, XLA-compiled when
  `jit_compile`. With every table on the accelerator and `jit_compile`, the whole step is one
  compiled function, lookups and row updates included: no host round trip inside the step.
  The embedding gradient is the gradient of the looked-up vectors, scattered to their ids:
  only those rows are updated ("lazy" Adam / RMSProp; in the compiled step through
  `optimizers.TouchedRows`). The same code runs with and without XLA, in fp32 or bf16 (the
  model decides its compute dtype; the loss is float32).

  A step whose loss or gradient norm is not finite (NaN or Inf) changes nothing: every write of
  the dense and embedding updates and of the optimizer's step counter keeps the old value when
  `finite` is false, inside the step (`step_pipeline`), so a bad batch never reaches the
  variables, the Adam / RMSProp slots, or a checkpoint.

  Args:
    loss_fn: (inputs, embedded) -> (loss, extra): the training forward pass from `embedded`,
      one [..., E] tensor per lookup; `extra` is any nest of tensors to hand back (the LM's
      final state; `()` for none).
    lookups: [(embeddings.Embedding, ids_fn)], ids_fn(inputs) -> int ids to look up. Tables
      that are not trainable (frozen) are looked up but not updated; a table named twice
      (shared) gets the rows of both lookups.
    variables: the model's trainable variables, tables included.
    optimizer: a `seq2seq.step.optimizers.Optimizer`; built here for `variables` if it is not yet.
    max_grad_norm: clip to this global norm; 0 for no clipping (the norm is still returned).
    jit_compile: compile the step with XLA (all of it when no table is pinned to the host).
    rows_dtype: the dtype the split step moves the tables' rows and row gradients in (the
      model's compute dtype: bfloat16 under --precision=bf16, whose activations are rounded
      to it anyway); None: the tables' own. The host applies them in the table's dtype.
    any_length: the compiled part of a split step is traced for inputs of any length after
      the second it sees (`BucketedFunction`'s `any_length`).

  Returns:
    step(inputs) -> (loss, grad_norm, finite, extra): the loss before the update, the global
    norm of all gradients (embedding rows included) before clipping, and whether the update
    was applied (both finite). Not wrapped in a `tf.function` of the caller's: callers trace
    it with their own input signature.
  """
  tables = trainable_tables(lookups)
  dense_variables = [v for v in variables if v.ref() not in {t.ref() for t in tables}]
  optimizer.build(variables)  # slots for all of them, before the two partial updates
  if jit_compile and not any(embedding.pinned_to_host for embedding, _ in lookups):
    gradients = functools.partial(_gradients, loss_fn, lookups, tables, dense_variables)
    return _whole_step(gradients, lookups, tables, dense_variables, optimizer, max_grad_norm)
  return split_step.SplitStep(
      lookups, dense_variables, optimizer, max_grad_norm, jit_compile, rows_dtype,
      functools.partial(_unique_row_gradients, loss_fn, lookups, dense_variables), any_length)


def _lookup(lookups, inputs):
  """The looked-up vectors of `inputs`, one per lookup (`make_update_step`)."""
  return [embedding(ids_fn(inputs)) for embedding, ids_fn in lookups]


def _gradients(loss_fn, lookups, tables, dense_variables, inputs, embedded):
  """The first stage of `pipeline.run` in the whole step: -> (loss, `pipeline.Gradients`,
  extra), the tables' gradients written densely, as `TouchedRows`."""
  loss, extra, dense_gradients, rows = loss_and_gradients(loss_fn, inputs, embedded, lookups,
                                                          dense_variables)
  table_gradients = [optimizers.touched_rows(values, indices, table.shape[0])
                     for table, (values, indices) in zip(tables, rows)]
  return loss, pipeline.Gradients(dense_gradients, table_gradients), extra


def _unique_row_gradients(loss_fn, lookups, dense_variables, inputs, rows, positions):
  """The first stage of `pipeline.run` in the split step: -> (loss, `pipeline.Gradients`,
  extra), each trainable table's gradient as `UniqueRows` of its distinct `rows` (one
  [C, E] per table of `unique_rows.distinct_tables`; `positions` as `unique_rows.look_up`).

  The rows are read in float32 (the table's dtype), so that a row looked up several times
  has its gradients summed in float32 whatever dtype it was moved in."""
  tables = unique_rows.distinct_tables(lookups)
  with tf.GradientTape() as tape:
    rows = [tf.cast(r, table.dtype) for r, table in zip(rows, tables)]
    trained = [r for r, table in zip(rows, tables) if table.trainable]
    tape.watch(trained)
    loss, extra = loss_fn(inputs, unique_rows.embedded(lookups, tables, rows, positions))
  gradients = tape.gradient(loss, dense_variables + trained)
  count = len(dense_variables)
  return loss, pipeline.Gradients(
      [dense_gradient(g) for g in gradients[:count]],
      [pipeline.UniqueRows(tf.convert_to_tensor(g)) for g in gradients[count:]]), extra


def _whole_step(gradients, lookups, tables, dense_variables, optimizer, max_grad_norm):
  """`make_update_step` with every table on the accelerator: one XLA program, lookups and
  row updates included."""
  def update_all(clipped, finite):
    optimizer.update(clipped.dense + clipped.tables, dense_variables + tables,
                     condition=finite)
    optimizer.finish_step(condition=finite)

  @tf.function(jit_compile=True, autograph=False)
  def whole_step(inputs):
    inputs = int32_ids(inputs)
    outputs = pipeline.run(
        lambda: gradients(inputs, _lookup(lookups, inputs)),
        pipeline.identity,
        functools.partial(pipeline.clipped_update, max_grad_norm, update_all))
    return outputs.loss, outputs.grad_norm, outputs.finite, outputs.extra

  return whole_step


def _seq2seq_reads(model):
  """Each embedding a `Seq2Seq` batch reads, with its ids: source, decoder input."""
  return [(model.source_embedding, lambda batch: batch.source),
          (model.target_embedding, lambda batch: batch.decoder_input)]


def seq2seq_lookups(model):
  """The lookups of a `Seq2Seq` batch (`make_update_step`): source ids, decoder input ids.

  A table tied to the output projection (--tie_embeddings) is left out: the projection reads
  all of it, so it is a dense variable like the projection's, looked up inside the step's
  differentiated function (`seq2seq_embedded`), and its one gradient sums both uses.
  """
  return [(embedding, ids) for embedding, ids in _seq2seq_reads(model)
          if not model.tied(embedding)]


def seq2seq_embedded(model, batch, embedded):
  """(source [B, Ts, E], target [B, Tt, E]) vectors of `batch`: those of `embedded` (one per
  `seq2seq_lookups`), and the tied table's looked up here."""
  given = iter(embedded)
  return tuple(embedding(ids(batch)) if model.tied(embedding) else next(given)
               for embedding, ids in _seq2seq_reads(model))


def make_train_step(model, optimizer, max_grad_norm, jit_compile=False, num_sampled=0, seed=0,
                    label_smoothing=0.0, batch_size=0, lookahead=False):
  """The seq2seq train step: `make_update_step` over a teacher-forced `Seq2Seq` batch.

  Args:
    model: a built `Seq2Seq`.
    optimizer: a `seq2seq.step.optimizers.Optimizer`, built for `model.trainable_variables`.
    max_grad_norm: clip to this global norm; 0 for no clipping (the norm is still returned).
    jit_compile: compile the dense part with XLA.
    num_sampled: > 0 trains with a sampled softmax over this many log-uniform candidates
      (see `training_loss`); 0 is the full softmax.
    seed: with `num_sampled`, the candidates of each step are drawn from (seed, step).
    label_smoothing: eps of the training loss (`losses.sequence_loss`); the returned loss
      includes it. Evaluation is the plain cross entropy.
    batch_size: smaller batches are padded to this many rows of zero weight, and the step is
      traced for exactly this many (see `BucketedFunction`); 0 leaves the batch size free.
    lookahead: with a table pinned to the host, a `lookahead.LookaheadStep`, which takes the
      next batch too and looks it up while the accelerator runs this one.

  Returns:
    step(batch) -> (loss, grad_norm, finite), as `make_update_step`: a `BucketedFunction`,
    traced once per padded length, or once for all of them where `jit_compile` compiles the
    dynamic unroll (`fast.unroll.any_length`); with `lookahead` (and a pinned table), a
    `lookahead.LookaheadStep`, step(batch, next_batch=None).
  """
  def loss_fn(batch, embedded):
    source_embedded, target_embedded = seq2seq_embedded(model, batch, embedded)
    loss = training_loss(model, batch, source_embedded, target_embedded, num_sampled,
                         sampling_seed(seed, optimizer.iterations) if num_sampled else None,
                         label_smoothing=label_smoothing)
    return loss, ()

  # Without XLA the step keeps one trace per length: a plain graph's shape arithmetic folds
  # away only where the shapes are static (`BucketedFunction`).
  any_length = jit_compile and fast_unroll.any_length(model.config)
  update = make_update_step(loss_fn, seq2seq_lookups(model), model.trainable_variables,
                            optimizer, max_grad_norm, jit_compile, rows_dtype=model.dtype,
                            # Called eagerly by `LookaheadStep`; inside `BucketedFunction`
                            # it is traced with the outer function's shapes.
                            any_length=any_length and lookahead)
  if lookahead and isinstance(update, split_step.SplitStep) and update.pinned:
    return lookahead_lib.LookaheadStep(
        update, functools.partial(pad_rows, rows=batch_size) if batch_size else None)
  return BucketedFunction(lambda batch: update(batch)[:3], pad_rows_to=batch_size,
                          any_length=any_length)


def make_lm_train_step(model, optimizer, max_grad_norm, jit_compile=False):
  """The language model's train step: `make_update_step` over one window of running text
  (`language_model.LanguageModel`, its state carried in from the window before).

  The embedding lookup and its sparse row update stay outside the optional XLA region, and
  the clipping by global norm (embedding rows included), the NaN/Inf gating and bf16 (the
  model's compute dtype) are the seq2seq step's, shared. The incoming state is an input of
  the step, so backpropagation is truncated at the window's start.

  Returns:
    step(inputs [B, T], targets [B, T], state) -> (loss, grad_norm, finite, final state): the
    mean loss per token before the update, the global norm before clipping, whether the
    update was applied, and the state the next window starts from.
  """
  tied = model.tied(model.embedding)  # then a dense variable, looked up inside (as seq2seq's)

  def loss_fn(window, embedded):
    inputs, targets, state = window
    vectors = model.embed(inputs) if tied else embedded[0]
    logits, final_state = model.logits_from_embedded(vectors, state, training=True)
    loss = losses.sequence_loss(logits, targets, tf.ones(tf.shape(targets), tf.float32))
    return loss, final_state

  lookups = [] if tied else [(model.embedding, lambda window: window[0])]
  update = make_update_step(loss_fn, lookups, model.trainable_variables, optimizer,
                            max_grad_norm, jit_compile, rows_dtype=model.dtype)

  @tf.function(autograph=False)
  def step(inputs, targets, state):
    return update((inputs, targets, state))
  return step


def make_carried_step(step, carried):
  """step(inputs, targets) -> (loss, grad_norm, finite) that reads and writes `carried` (a
  `language_model.CarriedState`); `step` is `make_lm_train_step`'s.

  After a skipped (non-finite) step the carried state is reset to zeros: that window's final
  state may itself be NaN, and would poison the rest of the epoch.
  """
  @tf.function(autograph=False)
  def carried_step(inputs, targets):
    loss, grad_norm, finite, final_state = step(inputs, targets, carried.read())
    carried.assign(final_state, keep=finite)
    return loss, grad_norm, finite
  return carried_step


def make_eval_step(model, batch_size=0):
  """A compiled step: (summed token cross entropy, number of target tokens) of a batch.

  `batch_size` > 0 pads and traces for that many rows, as `make_train_step`.
  """
  def step(batch):
    batch = int32_ids(batch)
    logits = model(batch.source, batch.source_length, batch.decoder_input, training=False)
    per_token = losses.sequence_loss(logits, batch.target, batch.target_weight,
                                     average_across_timesteps=False,
                                     average_across_batch=False)
    return tf.reduce_sum(per_token), tf.reduce_sum(batch.target_weight)

  return BucketedFunction(step, pad_rows_to=batch_size)
