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
"""
import tensorflow as tf

from ops import clipping
from seq2seq import data
from seq2seq import distribution
from seq2seq import interrupts
from seq2seq import optimizers
from seq2seq import train_step as train_step_lib


def _slice(batch, start, end):
  return data.Batch(*(field[start:end] for field in batch))


def make_distributed_train_step(model, optimizer, max_grad_norm, strategy, jit_compile=False,
                                num_sampled=0, seed=0, label_smoothing=0.0):
  """step(global batch, stop votes) -> (loss, grad_norm, finite, summed stop votes).

  Args:
    model: a built `Seq2Seq` whose variables were created under `strategy.scope()`.
    optimizer: a `seq2seq.optimizers.Optimizer` built under `strategy.scope()`.
    max_grad_norm: clip to this global norm; 0 for no clipping.
    strategy: a MirroredStrategy, MultiWorkerMirroredStrategy or TPUStrategy.
    jit_compile: XLA-compile each replica's forward and backward pass (the region of
      `train_step.loss_and_gradients`), and each device's clipping and update. The embedding
      lookup and the all-reduce stay outside: collectives and `merge_call` cannot run inside
      an XLA cluster.
    num_sampled, seed: the sampled softmax of `train_step.make_train_step`. Every replica
      draws the same candidates (the seed is the mirrored step counter's), so the replicas'
      losses still add up to the one-device loss of the global batch.
    label_smoothing: as in `train_step.make_train_step`.

  Returns:
    A `BucketedFunction` step(batch, stop_votes) for a global batch [B, T] (the same on every
    worker) and this worker's `interrupts.StopOnSignal.vote()` ([len(interrupts.SIGNALS)]
    float32). It returns, as `train_step.make_train_step`, the global-batch loss before the
    update, the global norm before clipping, and whether the update was applied (a step with
    a NaN/Inf loss or norm changes nothing); and the votes summed over every replica of every
    worker, by the same all-reduce call as the gradients, so that all workers see the same
    sums after the same step and stop together (`StopOnSignal.agreed`).
  """
  lookups = train_step_lib.seq2seq_lookups(model)
  tables = train_step_lib.trainable_tables(lookups)
  table_refs = {t.ref() for t in tables}
  variables = list(model.trainable_variables)
  dense_variables = [v for v in variables if v.ref() not in table_refs]

  def forward_backward(local, embedded, global_weight, sampling_seed):
    """One replica's share of the global mean: (loss, dense gradients, one pair per table).
    The pair is (row gradients [N, E], ids [N]), or with `jit_compile` (the rows summed into
    [V, E], lookup counts [V])."""
    def loss_fn(batch, embedded):
      token_losses = train_step_lib.training_loss(
          model, batch, *embedded, num_sampled, sampling_seed, average=False,
          label_smoothing=label_smoothing)
      return tf.reduce_sum(token_losses) / global_weight, ()

    loss, _, dense, rows = train_step_lib.loss_and_gradients(loss_fn, local, embedded, lookups,
                                                             dense_variables)
    if jit_compile:  # each table's rows summed into [V, E] and counted: [V]
      rows = [optimizers.summed_rows(values, indices, table.shape[0])
              for table, (values, indices) in zip(tables, rows)]
    return loss, dense, rows

  if jit_compile:
    forward_backward = tf.function(forward_backward, jit_compile=True, autograph=False)

  def clip_and_apply(loss, dense, rows, copies, slots, iterations, learning_rate):
    """On one device, from the reduced gradients: the global norm, and the clipped update of
    that device's copies if the loss and norm are finite. -> (grad_norm, finite)."""
    if jit_compile:  # the rows written densely, as the compiled one-device step does
      table_gradients = [optimizers.TouchedRows(gradient, lookups > 0)
                         for gradient, lookups in rows]
      grad_norm = tf.linalg.global_norm(dense + [g.gradient for g in table_gradients])
    else:
      table_gradients = [tf.IndexedSlices(values, indices, table.shape)
                         for table, (values, indices) in zip(tables, rows)]
      grad_norm = clipping.global_norm_with_rows(
          dense, [(values, indices, table.shape[0]) for table, (values, indices) in
                  zip(tables, rows)])
    scale = clipping.clip_scale(grad_norm, max_grad_norm)
    gradient_of = {t.ref(): g for t, g in zip(tables, table_gradients)}
    dense_iter = iter(dense)  # in the order of `variables`, tables left out
    gradients = [gradient_of[v.ref()] if v.ref() in gradient_of else next(dense_iter)
                 for v in variables]
    finite = train_step_lib.is_finite_step(loss, grad_norm)
    optimizer.update_copies(train_step_lib.scale_gradients(gradients, scale), copies, slots,
                            iterations, learning_rate, condition=finite)
    return grad_norm, finite

  if jit_compile:
    clip_and_apply = tf.function(clip_and_apply, jit_compile=True, autograph=False)

  def apply_on_each_device(strategy, loss, dense, rows):
    """Cross-replica: every local device updates its own copies from its (identical) reduced
    gradients, in one function per device, compiled with the pass when `jit_compile`."""
    results = []
    for index, device in enumerate(strategy.extended.worker_devices):
      local = lambda value, i=index: strategy.experimental_local_results(value)[i]
      iterations = local(optimizer.iterations)
      with tf.device(device):
        results.append(clip_and_apply(
            local(loss), [local(g) for g in dense],
            [tuple(local(part) for part in table_rows) for table_rows in rows],
            [local(v) for v in variables],
            {name: [local(s) for s in copies] for name, copies in optimizer.slots.items()},
            iterations, optimizer.learning_rate_at(iterations)))
    return results[0]

  def replica_step(batch, global_weight, stop_votes):
    context = tf.distribute.get_replica_context()
    start, end = distribution.replica_rows(tf.shape(batch.source)[0],
                                           context.replica_id_in_sync_group,
                                           context.num_replicas_in_sync)
    local = _slice(batch, start, end)
    embedded = [embedding(ids_fn(local)) for embedding, ids_fn in lookups]
    loss, dense, rows = forward_backward(
        local, embedded, global_weight,
        train_step_lib.sampling_seed(seed, optimizer) if num_sampled else None)
    if not jit_compile:
      # Embedding rows as IndexedSlices: the all-reduce gathers every replica's rows. (Compiled,
      # the tables' dense sums and counts are all-reduced instead: the gather of rows of
      # varying count pads and unpads them, which waits on the device twice a step.)
      rows = [tf.IndexedSlices(values, indices, tf.shape(table, out_type=tf.int64))
              for table, (values, indices) in zip(tables, rows)]
    # (The votes, an input of the step, are copied into the replica first: a multi-worker
    # all-reduce reads its destination from where each value lives.)
    dense, rows, loss, stop_votes = context.all_reduce(
        tf.distribute.ReduceOp.SUM, (dense, rows, loss, tf.identity(stop_votes)))
    if not jit_compile:
      rows = [(g.values, g.indices) for g in rows]
    grad_norm, finite = context.merge_call(apply_on_each_device, args=(loss, dense, rows))
    return loss, grad_norm, finite, stop_votes

  def step(batch, stop_votes):
    global_weight = tf.reduce_sum(batch.target_weight)
    results = strategy.run(replica_step, args=(batch, global_weight, stop_votes))
    # Every replica holds the same all-reduced values: take this worker's first, with no
    # further collective (a second one would be one more place for a lost peer to fail).
    loss, grad_norm, finite, votes = (strategy.experimental_local_results(r)[0]
                                      for r in results)
    return loss, grad_norm, finite, votes

  return train_step_lib.BucketedFunction(
      step, extra_signature=[tf.TensorSpec([len(interrupts.SIGNALS)], tf.float32)])
