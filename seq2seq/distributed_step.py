"""The train step under a multi-replica `tf.distribute.Strategy` (`strategy.run`).

Each replica trains on its slice of the global batch (`distribution.replica_rows`). Its loss
is its summed weighted cross entropy divided by the GLOBAL weight sum, so the replicas'
losses and gradients add up to those of one device on the whole batch. Gradients are summed
across replicas with the replica context's all-reduce: dense ones as tensors, embedding rows
as `IndexedSlices` (gathered, duplicates summed by the update). Every replica then holds the
same reduced gradients, computes the same global norm (embedding rows included) and clip
factor, and `merge_call` + `strategy.extended.update` applies the optimizer rule to each
replica's copy of each variable and its slots: mirrored copies stay identical without a
broadcast.
"""
import tensorflow as tf

from ops import clipping
from seq2seq import data
from seq2seq import distribution
from seq2seq import train_step as train_step_lib


def _slice(batch, start, end):
  return data.Batch(*(field[start:end] for field in batch))


def make_distributed_train_step(model, optimizer, max_grad_norm, strategy, num_sampled=0,
                                seed=0, label_smoothing=0.0):
  """step(global batch) -> (loss, grad_norm, finite), as `train_step.make_train_step`.

  Args:
    model: a built `Seq2Seq` whose variables were created under `strategy.scope()`.
    optimizer: a `seq2seq.optimizers.Optimizer` built under `strategy.scope()`.
    max_grad_norm: clip to this global norm; 0 for no clipping.
    strategy: a MirroredStrategy, MultiWorkerMirroredStrategy or TPUStrategy.
    num_sampled, seed: the sampled softmax of `train_step.make_train_step`. Every replica
      draws the same candidates (the seed is the mirrored step counter's), so the replicas'
      losses still add up to the one-device loss of the global batch.

  Returns:
    A `BucketedFunction` step(batch) for a global batch [B, T] (the same on every worker):
    the global-batch loss before the update, the global norm before clipping, and whether the
    update was applied (a step with a NaN/Inf loss or norm changes nothing).
  """
  table_refs = {t.ref() for t in model.embedding_tables()}
  variables = list(model.trainable_variables)

  def apply_updates(strategy, gradients, finite):
    """Cross-replica: each replica's copy of each variable gets its (identical) gradient."""
    for var, grad in zip(variables, gradients):
      index = optimizer.index_of(var)
      if isinstance(grad, tuple):  # embedding rows: (values [N, E], indices [N])
        fn = lambda v, values, indices, ok, i=index: train_step_lib.run_if(
            ok, lambda: optimizer.update_component(tf.IndexedSlices(values, indices, v.shape),
                                                   v, i))
        strategy.extended.update(var, fn, args=grad + (finite,), group=False)
      else:
        fn = lambda v, g, ok, i=index: train_step_lib.run_if(
            ok, lambda: optimizer.update_component(g, v, i))
        strategy.extended.update(var, fn, args=(grad, finite), group=False)

  def replica_step(batch, global_weight):
    context = tf.distribute.get_replica_context()
    start, end = distribution.replica_rows(tf.shape(batch.source)[0],
                                           context.replica_id_in_sync_group,
                                           context.num_replicas_in_sync)
    local = _slice(batch, start, end)
    with tf.GradientTape() as tape:
      source_embedded, target_embedded = model.embed(local.source, local.decoder_input)
      token_losses = train_step_lib.training_loss(
          model, local, source_embedded, target_embedded, num_sampled,
          train_step_lib.sampling_seed(seed, optimizer) if num_sampled else None, average=False,
          label_smoothing=label_smoothing)
      loss = tf.reduce_sum(token_losses) / global_weight
    gradients = tape.gradient(loss, variables)
    dense = [train_step_lib.dense_gradient(g) for v, g in zip(variables, gradients)
             if v.ref() not in table_refs]
    # Embedding rows: the tape gives an IndexedSlices of the looked-up rows (both lookups of a
    # shared table concatenated); the all-reduce gathers every replica's rows.
    slices = []
    for var, grad in zip(variables, gradients):
      if var.ref() in table_refs:
        grad = grad if isinstance(grad, tf.IndexedSlices) else tf.IndexedSlices(
            tf.reshape(grad, [-1, var.shape[-1]]), tf.range(var.shape[0]), tf.shape(var))
        slices.append(grad)
    dense, slices, total_loss = context.all_reduce(tf.distribute.ReduceOp.SUM,
                                                   (dense, slices, loss))
    grad_norm = clipping.global_norm_with_rows(
        dense, [(g.values, g.indices, g.dense_shape[0]) for g in slices])
    scale = clipping.clip_scale(grad_norm, max_grad_norm)
    dense_iter, slices_iter = iter(dense), iter(slices)
    scaled = []
    for var in variables:
      if var.ref() in table_refs:
        grad = next(slices_iter)
        scaled.append((grad.values * scale, grad.indices))
      else:
        scaled.append(next(dense_iter) * scale)
    finite = train_step_lib.is_finite_step(total_loss, grad_norm)
    context.merge_call(apply_updates, args=(scaled, finite))
    return loss, grad_norm, finite

  def step(batch):
    global_weight = tf.reduce_sum(batch.target_weight)
    per_replica_loss, per_replica_norm, per_replica_finite = strategy.run(
        replica_step, args=(batch, global_weight))
    loss = strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica_loss, axis=None)
    grad_norm = strategy.experimental_local_results(per_replica_norm)[0]
    finite = strategy.experimental_local_results(per_replica_finite)[0]  # the same everywhere
    train_step_lib.run_if(finite, optimizer.finish_step)
    return loss, grad_norm, finite

  return train_step_lib.BucketedFunction(step)
