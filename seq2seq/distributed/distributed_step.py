"""The train step under a multi-replica `tf.distribute.Strategy` (`strategy.run`).

Each replica trains on its slice of the global batch (`distribution.replica_rows`). Its loss
is its summed weighted cross entropy divided by the GLOBAL weight sum, so the replicas'
losses and gradients add up to those of one device on the whole batch. Gradients are summed
across replicas with the replica context's all-reduce: dense ones as tensors; embedding rows
as `IndexedSlices` (gathered, duplicates summed by the update), or, with `jit_compile`, as
each table's [V, E] row sums and [V] lookup counts (static shapes, no host round trip).
Then `merge_call` hands the reduced gradients to one function per local device
(`strategy.extended.worker_devices`), which computes the global norm (embedding rows
included) and clip factor and applies the optimizer rule to that device's copies of the
variables, their slots and the step counter: mirrored copies stay identical without a
broadcast. With `jit_compile` that function is XLA-compiled, as the forward and backward pass
are; a per-variable `strategy.extended.update` would leave each update's few ops outside any
compiled region.

With `jit_compile` and every replica of the worker on a GPU, each replica's whole step
(lookups, forward, backward, the all-reduce, clipping and the update of its copies) is ONE XLA
program instead: XLA lowers the all-reduce (`CollectiveReduceV2`) to its own NCCL all-reduce
(TF resolves the group and hands XLA the NCCL communicator, also across worker processes), so
the host launches one program per GPU a step. The gradients go in three all-reduces, each
started when its stage of the backward pass (loss and projection, decoder, encoder) is done,
under the next stage (`staged_backward`). XLA compiles collectives for GPUs only: on CPUs the
all-reduce stays between two compiled regions.
"""
import functools
import itertools

import tensorflow as tf

from seq2seq.data import batches
from seq2seq.distributed import distribution
from seq2seq.distributed import staged_backward
from seq2seq.runtime import interrupts
from seq2seq.step import optimizers
from seq2seq.step import pipeline
from seq2seq.step import train_step as train_step_lib


def _replica_slice(batch, replica, replicas):
  """Replica `replica`'s rows of the global `batch` (`distribution.replica_rows`): static
  bounds when the batch size is."""
  rows = batch.source.shape[0]
  start, end = distribution.replica_rows(tf.shape(batch.source)[0] if rows is None else rows,
                                         replica, replicas)
  return batches.Batch(*(field[start:end] for field in batch))


def all_reduce_in_xla_possible(strategy):
  """Whether every replica of this worker runs on a GPU, so that an XLA program can hold the
  all-reduce (each worker of a multi-worker job decides alike when the workers are alike)."""
  return all(tf.DeviceSpec.from_string(d).device_type == "GPU"
             for d in strategy.extended.worker_devices)


_xla_group_keys = itertools.count(2**30)  # apart from the strategies' keys (10000 * n + k)


def _summed_in_xla(values, group_size, group_key, instance_keys):
  """`values` (a nest of tensors) summed over the `group_size` replicas of `group_key`, by
  collectives that XLA compiles into the calling replica's program (one NCCL all-reduce each;
  XLA may combine them). `instance_keys`: an iterator of keys unique within the program."""
  if group_size == 1:  # nothing to add up (and no collective to compile: CPUs have none)
    return values
  flat = tf.nest.flatten(values)
  summed = [tf.raw_ops.CollectiveReduceV2(
      input=value, group_size=tf.constant(group_size), group_key=tf.constant(group_key),
      instance_key=tf.constant(next(instance_keys)), ordering_token=[], merge_op="Add",
      final_op="Id", communication_hint="nccl") for value in flat]
  return tf.nest.pack_sequence_as(values, summed)


def gathers_rows(replicas, slot, num_rows):
  """Whether the one-program step all-reduces a table's looked-up rows, each replica's in a
  slot of `slot` rows ([replicas x slot, E], an all-gather by all-reduce), rather than its
  dense [num_rows, E] row sums: when that is fewer rows (seed_b256 on 2 GPUs: 10,240 against
  20,000)."""
  return replicas * slot < num_rows


def _rows_in_slot(values, indices, replica, replicas, slot):
  """(values [R x slot, E], ids [R x slot], present [R x slot]): replica `replica`'s row
  gradients `values` [N, E] (N <= slot) and ids `indices` [N] in its slot, zero elsewhere;
  `present` marks its real entries. Summed over the replicas, every replica's rows and ids
  lie side by side, to be summed into the table's gradient (`optimizers.summed_rows`)."""
  count = values.shape[0]
  before, after = replica * slot, (replicas - 1 - replica) * slot + slot - count
  return (tf.pad(values, [[before, after], [0, 0]]), tf.pad(indices, [[before, after]]),
          tf.pad(tf.ones([count], tf.float32), [[before, after]]))


def make_distributed_train_step(model, optimizer, max_grad_norm, strategy, jit_compile=False,
                                num_sampled=0, seed=0, label_smoothing=0.0,
                                all_reduce_in_xla=None, batch_size=0, staged_all_reduce=None):
  """step(global batch, stop votes) -> (loss, grad_norm, finite, summed stop votes).

  Args:
    model: a built `Seq2Seq` whose variables were created under `strategy.scope()`.
    optimizer: a `seq2seq.step.optimizers.Optimizer` built under `strategy.scope()`.
    max_grad_norm: clip to this global norm; 0 for no clipping.
    strategy: a MirroredStrategy, MultiWorkerMirroredStrategy or TPUStrategy.
    jit_compile: XLA-compile each replica's step: as one program with `all_reduce_in_xla`;
      otherwise its forward and backward pass (the region of
      `train_step.loss_and_gradients`) and each device's clipping and update, with the
      embedding lookups, the all-reduce and `merge_call` between them.
    num_sampled, seed: the sampled softmax of `train_step.make_train_step`. Every replica
      draws the same candidates (the seed is the mirrored step counter's), so the replicas'
      losses still add up to the one-device loss of the global batch.
    label_smoothing: as in `train_step.make_train_step`.
    all_reduce_in_xla: with `jit_compile`, compile each replica's whole step, all-reduce
      included, as one XLA program. None: when `all_reduce_in_xla_possible(strategy)`.
    batch_size: the global batch: smaller ones are padded to it with rows of zero weight and
      the step is traced for exactly this many rows, as `train_step.make_train_step` does
      (each bucket compiles once); 0 leaves the batch size free.
    staged_all_reduce: in the one program, all-reduce the gradients in three parts, each
      started as soon as its stage of the backward pass (loss and projection, decoder,
      encoder) is done, under the next stage's backward pass (`staged_backward`); else all
      at the end of the backward pass. None: with more than one replica (with one there is
      nothing to overlap, and the stages' barriers only bind XLA's scheduling).

  Returns:
    A `BucketedFunction` step(batch, stop_votes) for a global batch [B, T] (the same on every
    worker) and this worker's `interrupts.StopOnSignal.vote()` ([len(interrupts.SIGNALS)]
    float32). It returns, as `train_step.make_train_step`, the global-batch loss before the
    update, the global norm before clipping, and whether the update was applied (a step with
    a NaN/Inf loss or norm changes nothing); and the votes summed over every replica of every
    worker, by the same all-reduce call as the gradients, so that all workers see the same
    sums after the same step and stop together (`StopOnSignal.agreed`).
  """
  if all_reduce_in_xla is None:
    all_reduce_in_xla = all_reduce_in_xla_possible(strategy)
  replicated = _ReplicatedStep(model, optimizer, max_grad_norm, strategy, jit_compile,
                               num_sampled, seed, label_smoothing)
  if jit_compile and all_reduce_in_xla:
    run_replica = _OneProgramStep(replicated, staged_all_reduce).replica_step
  else:
    run_replica = replicated.replica_step

  def step(batch, stop_votes):
    results = strategy.run(run_replica, args=(batch, stop_votes))
    # Every replica holds the same all-reduced values: take this worker's first, with no
    # further collective (a second one would be one more place for a lost peer to fail).
    loss, grad_norm, finite, votes = (strategy.experimental_local_results(r)[0]
                                      for r in results)
    return loss, grad_norm, finite, votes

  return train_step_lib.BucketedFunction(
      step, extra_signature=[tf.TensorSpec([len(interrupts.SIGNALS)], tf.float32)],
      pad_rows_to=batch_size)


class _ReplicatedStep:
  """A replica's step through the replica context: its share of the loss and gradients, the
  context's all-reduce, then `merge_call` to `apply_on_each_device`: the pieces
  `pipeline.run` takes. Also the parts `_OneProgramStep` reuses (the loss, the forward
  and backward pass, the clipped update of one device's copies).

  Args: those of `make_distributed_train_step`.
  """

  def __init__(self, model, optimizer, max_grad_norm, strategy, jit_compile, num_sampled,
               seed, label_smoothing):
    self.model, self.optimizer, self.strategy = model, optimizer, strategy
    self.max_grad_norm, self.jit_compile = max_grad_norm, jit_compile
    self.num_sampled, self.seed, self.label_smoothing = num_sampled, seed, label_smoothing
    self.lookups = train_step_lib.seq2seq_lookups(model)
    self.tables = train_step_lib.trainable_tables(self.lookups)
    table_refs = {t.ref() for t in self.tables}
    self.variables = list(model.trainable_variables)
    self.dense_variables = [v for v in self.variables if v.ref() not in table_refs]
    self._compiled_forward_backward = tf.function(self.forward_backward, jit_compile=True,
                                                  autograph=False)
    self._compiled_clip_and_apply = tf.function(self.clip_and_apply, jit_compile=True,
                                                autograph=False)

  def sampling_seed(self, iterations):
    """The sampled softmax's seed at step counter `iterations`; None for the full softmax."""
    return train_step_lib.sampling_seed(self.seed, iterations) if self.num_sampled else None

  def embed(self, local):
    """The looked-up vectors of the replica's batch `local`, one per lookup."""
    return [embedding(ids_fn(local)) for embedding, ids_fn in self.lookups]

  def replica_loss(self, local, outputs, global_weight, sampling_seed):
    """The replica's share of the global mean loss, from its decoder outputs [b, Tt, H]."""
    token_losses = train_step_lib.loss_from_outputs(
        self.model, local, outputs, self.num_sampled, sampling_seed, average=False,
        label_smoothing=self.label_smoothing)
    return tf.reduce_sum(token_losses) / global_weight

  def forward_backward(self, local, embedded, global_weight, sampling_seed, sum_rows):
    """One replica's share of the global mean: (loss, dense gradients, one pair per table).
    The pair is (row gradients [N, E], ids [N]), or with `sum_rows` (the rows summed into
    [V, E], lookup counts [V])."""
    def loss_fn(batch, embedded):
      outputs = self.model.outputs_from_embedded(embedded[0], batch.source_length,
                                                 embedded[1], training=True)
      return self.replica_loss(batch, outputs, global_weight, sampling_seed), ()

    loss, _, dense, rows = train_step_lib.loss_and_gradients(
        loss_fn, local, embedded, self.lookups, self.dense_variables)
    if sum_rows:  # each table's rows summed into [V, E] and counted: [V]
      rows = [optimizers.summed_rows(values, indices, table.shape[0])
              for table, (values, indices) in zip(self.tables, rows)]
    return loss, dense, rows

  def clip_and_apply(self, loss, dense, rows, copies, slots, iterations, learning_rate):
    """On one device, from the reduced gradients: the global norm, and the clipped update of
    that device's copies if the loss and norm are finite (`pipeline.clipped_update`).
    -> (grad_norm, finite, None)."""
    if self.jit_compile:  # the rows written densely, as the compiled one-device step does
      table_gradients = [optimizers.TouchedRows(gradient, lookups > 0)
                         for gradient, lookups in rows]
    else:
      table_gradients = [pipeline.Rows(values, indices, table.shape)
                         for table, (values, indices) in zip(self.tables, rows)]

    def update(clipped, finite):
      gradient_of = {t.ref(): g.slices() if isinstance(g, pipeline.Rows) else g
                     for t, g in zip(self.tables, clipped.tables)}
      dense_iter = iter(clipped.dense)  # in the order of `variables`, tables left out
      gradients = [gradient_of[v.ref()] if v.ref() in gradient_of else next(dense_iter)
                   for v in self.variables]
      self.optimizer.update_copies(gradients, copies, slots, iterations, learning_rate,
                                   condition=finite)

    return pipeline.clipped_update(
        self.max_grad_norm, update, loss,
        pipeline.Gradients(dense, table_gradients, as_rows=not self.jit_compile))

  def device_copies(self, index):
    """(variables, slots, step counter): this worker's device `index`'s copies of them."""
    copy = lambda value: self.strategy.experimental_local_results(value)[index]
    return ([copy(v) for v in self.variables],
            {name: [copy(s) for s in copies] for name, copies in self.optimizer.slots.items()},
            copy(self.optimizer.iterations))

  def apply_on_each_device(self, strategy, loss, dense, rows):
    """Cross-replica: every local device updates its own copies from its (identical) reduced
    gradients, in one function per device, compiled with the pass when `jit_compile`."""
    clip_and_apply = (self._compiled_clip_and_apply if self.jit_compile else
                      self.clip_and_apply)
    results = []
    for index, device in enumerate(strategy.extended.worker_devices):
      local = lambda value, i=index: strategy.experimental_local_results(value)[i]
      copies, slots, iterations = self.device_copies(index)
      with tf.device(device):
        results.append(clip_and_apply(
            local(loss), [local(g) for g in dense],
            [tuple(local(part) for part in table_rows) for table_rows in rows],
            copies, slots, iterations, self.optimizer.learning_rate_at(iterations)))
    return results[0]

  def replica_step(self, batch, stop_votes):
    """In a replica context: `pipeline.run` of the replica's rows of the global `batch`.
    -> (loss, grad_norm, finite, summed stop votes)."""
    batch = train_step_lib.int32_ids(batch)
    context = tf.distribute.get_replica_context()
    global_weight = tf.reduce_sum(batch.target_weight)  # of the global batch
    local = _replica_slice(batch, context.replica_id_in_sync_group,
                           context.num_replicas_in_sync)
    outputs = pipeline.run(
        lambda: self._gradients(local, global_weight, stop_votes),
        functools.partial(self._all_reduce, context),
        lambda loss, gradients: context.merge_call(self.apply_on_each_device,
                                                   args=(loss, *gradients)))
    return outputs.loss, outputs.grad_norm, outputs.finite, outputs.extra

  def _gradients(self, local, global_weight, stop_votes):
    """-> (loss, (dense gradients, rows), stop votes) of the replica, to be all-reduced."""
    forward_backward = (self._compiled_forward_backward if self.jit_compile else
                        self.forward_backward)
    loss, dense, rows = forward_backward(local, self.embed(local), global_weight,
                                         self.sampling_seed(self.optimizer.iterations),
                                         sum_rows=self.jit_compile)
    if not self.jit_compile:
      # Embedding rows as IndexedSlices: the all-reduce gathers every replica's rows.
      # (Compiled, the tables' dense sums and counts are all-reduced instead: the gather of
      # rows of varying count pads and unpads them, which waits on the device twice a step.)
      rows = [tf.IndexedSlices(values, indices, tf.shape(table, out_type=tf.int64))
              for table, (values, indices) in zip(self.tables, rows)]
    # (The votes, an input of the step, are copied into the replica first: a multi-worker
    # all-reduce reads its destination from where each value lives.)
    return loss, (dense, rows), tf.identity(stop_votes)

  def _all_reduce(self, context, loss, gradients, stop_votes):
    """`_gradients`' outputs summed over the replicas by the replica context."""
    dense, rows, loss, stop_votes = context.all_reduce(
        tf.distribute.ReduceOp.SUM, (*gradients, loss, stop_votes))
    if not self.jit_compile:
      rows = [(g.values, g.indices) for g in rows]
    return loss, (dense, rows), stop_votes


class _OneProgramStep:
  """Each replica's whole step as one XLA program (`_ReplicatedStep`'s parts, the all-reduce
  compiled in by `_summed_in_xla`), staged as `staged_all_reduce` of
  `make_distributed_train_step` says.

  Args:
    parts: the `_ReplicatedStep` of the same step.
    staged_all_reduce: as in `make_distributed_train_step`.
  """

  def __init__(self, parts, staged_all_reduce):
    self.parts = parts
    self.staged_all_reduce = staged_all_reduce
    self.group_key = next(_xla_group_keys)
    self._whole_replica_step = tf.function(self.whole_replica_step, jit_compile=True,
                                           autograph=False)

  def replica_step(self, batch, stop_votes):
    """In a replica context: the traced program of this replica (one trace per replica)."""
    context = tf.distribute.get_replica_context()
    replica = int(tf.get_static_value(context.replica_id_in_sync_group))
    return self._whole_replica_step(batch, tf.identity(stop_votes), replica)

  def local_index(self, replica):
    """Replica `replica` of the job is this worker's device copy `replica` mod its devices:
    workers number their replicas one after another."""
    return replica % len(self.parts.strategy.extended.worker_devices)

  def whole_replica_step(self, batch, stop_votes, replica):
    """Replica number `replica` (a Python int: one trace each) of the global `batch`: its
    step as one program. The replica's rows, the global weight, the learning rate and the
    sampling seed are computed in it too: each op left outside is one more the host launches
    a step, and an input made anew each step moves, which makes XLA update the recorded
    command buffers (CUDA graphs) that read it."""
    parts = self.parts
    replicas = parts.strategy.num_replicas_in_sync
    batch = train_step_lib.int32_ids(batch)  # ids given as int64 stay on the GPU
    local = _replica_slice(batch, replica, replicas)
    global_weight = tf.reduce_sum(batch.target_weight)
    copies, slot_copies, iterations = parts.device_copies(self.local_index(replica))
    learning_rate = parts.optimizer.learning_rate_at(iterations)
    sampling_seed = parts.sampling_seed(iterations)
    embedded = parts.embed(local)
    exchange = _RowExchange(parts, local, batch.source.shape[0], replica, replicas)
    outputs = pipeline.run(
        lambda: self._stages(local, embedded, global_weight, sampling_seed, stop_votes,
                             replicas),
        lambda loss, stages, stop_votes: self._summed(loss, stages, stop_votes, exchange,
                                                      replicas),
        lambda loss, gradients: parts.clip_and_apply(loss, *gradients, copies, slot_copies,
                                                     iterations, learning_rate))
    return outputs.loss, outputs.grad_norm, outputs.finite, outputs.extra

  def _stages(self, local, embedded, global_weight, sampling_seed, stop_votes, replicas):
    """-> (loss, [`staged_backward.Stage`], stop votes): the replica's gradients, in the
    stages of its backward pass, or in one."""
    parts = self.parts
    if self.staged_all_reduce or (self.staged_all_reduce is None and replicas > 1):
      loss, stages = staged_backward.staged_loss_and_gradients(
          parts.model, local, embedded, parts.lookups, parts.dense_variables,
          lambda outputs: parts.replica_loss(local, outputs, global_weight, sampling_seed))
    else:
      loss, dense, rows = parts.forward_backward(local, embedded, global_weight,
                                                 sampling_seed, sum_rows=False)
      stages = [staged_backward.Stage(dict(enumerate(dense)), dict(enumerate(rows)))]
    return loss, stages, stop_votes

  def _summed(self, loss, stages, stop_votes, exchange, replicas):
    """The stages' gradients (and the loss and votes, with the first) summed over the
    replicas, one all-reduce a stage. -> (loss, (dense gradients, rows), stop votes), each
    table's rows as (gradient [V, E], lookup counts [V])."""
    dense = [None] * len(self.parts.dense_variables)
    rows = [None] * len(self.parts.tables)
    instance_keys = itertools.count(1)
    summed = ()
    for number, stage in enumerate(stages):
      sending = (stage.dense,
                 {k: exchange.sent(k, *r) for k, r in stage.rows.items()},
                 (loss, stop_votes) if number == 0 else ())
      # Each part's all-reduce after the one before (XLA would otherwise combine parts
      # into an all-reduce that waits for the last of them).
      summed = _summed_in_xla(staged_backward.in_order(summed, sending), replicas,
                              self.group_key, instance_keys)
      for i, g in summed[0].items():
        dense[i] = g
      for k, r in summed[1].items():
        rows[k] = exchange.received(k, r)
      if number == 0:
        loss, stop_votes = summed[2]
    return loss, (dense, rows), stop_votes


class _RowExchange:
  """How one replica's program all-reduces each table's looked-up rows: in the replica's
  slot of every replica's rows side by side (`gathers_rows`), or summed into [V, E] and
  counted.

  Args:
    parts: the `_ReplicatedStep`.
    local: the replica's rows of the batch; global_rows: the global batch's rows (None when
      not static: then every table's rows are summed).
    replica, replicas: this replica's number, and how many there are.
  """

  def __init__(self, parts, local, global_rows, replica, replicas):
    self.tables = parts.tables
    self.replica, self.replicas = replica, replicas
    self.slots = _row_slots(parts.lookups, parts.tables, local, global_rows, replicas)
    self.gathered = [slot is not None and gathers_rows(replicas, slot, table.shape[0])
                     for slot, table in zip(self.slots, self.tables)]

  def sent(self, index, values, indices):
    """Table `index`'s rows as all-reduced: in this replica's slot, or summed into [V, E]
    and counted."""
    if self.gathered[index]:
      return _rows_in_slot(values, indices, self.replica, self.replicas, self.slots[index])
    return optimizers.summed_rows(values, indices, self.tables[index].shape[0])

  def received(self, index, summed):
    """Table `index`'s all-reduced rows -> (gradient [V, E], lookup counts [V])."""
    if self.gathered[index]:  # every replica's rows, side by side: sum them
      return optimizers.summed_rows(*summed[:2], self.tables[index].shape[0], summed[2])
    return summed


def _row_slots(lookups, tables, local, global_rows, replicas):
  """Per table, the most rows a replica looks up in it: ceil(B / R) rows of the global
  batch times the ids a row looks up (a shared table: of both lookups). None where B is not
  static."""
  if global_rows is None:
    return [None] * len(tables)
  ids_per_row = {t.ref(): 0 for t in tables}
  for embedding, ids_fn in lookups:
    if embedding.table.ref() in ids_per_row:
      ids_per_row[embedding.table.ref()] += ids_fn(local).shape[1:].num_elements()
  return [-(-global_rows // replicas) * ids_per_row[t.ref()] for t in tables]
