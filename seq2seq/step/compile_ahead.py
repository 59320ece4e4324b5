"""Every bucket's compiled step, compiled before the first step, several at a time.

XLA compiles a program for each padded length (bucket) at the first batch of that length, on
the thread that calls the step, and the step's Python traces once for all lengths where the
unroll allows it (`train_step.BucketedFunction`). Left to the batches, the compilations come
one after another as each bucket first appears. Here the loop runs one step of every length
before training, on parallel threads: TensorFlow releases the variables' locks before XLA
compiles a program (so that different shapes compile at once), and each thread waits only
for its own compilation. With an XLA cache (--xla_cache_dir) the same calls load the
compiled programs instead.

Those steps must leave no trace: each batch has NaN target weights, so its loss is NaN, and
a step whose loss is not finite keeps every variable, every optimizer slot and the step
counter (`pipeline`). What else a step changes is restored here: the dropout generators'
state, which every step advances. Each step kind says how to run its steps of a length
(`warm_up_calls`): `train_step.BucketedFunction`, `lookahead.LookaheadStep`,
`resident_batches.ResidentBatches`.
"""
import concurrent.futures
import time

import numpy as np

from seq2seq.data import batches as batches_lib


def unapplied_batch(rows, length):
  """A `Batch` (NumPy) of `rows` rows padded to source `length`, whose step changes nothing.

  Its ids are 0 (PAD), its sources all of `length` tokens, and its target weights NaN, so
  the step's loss and gradient norm are NaN and the step keeps every old value.
  """
  ids = lambda t: np.zeros([rows, t], np.int32)
  return batches_lib.Batch(
      source=ids(length), source_length=np.full([rows], length, np.int32),
      decoder_input=ids(length + 1), target=ids(length + 1),
      target_weight=np.full([rows, length + 1], np.nan, np.float32))


def compile_buckets(step, lengths, rows, generators=(), threads=4):
  """Compiles `step` for every padded length in `lengths`, `threads` lengths at a time.

  Args:
    step: a step with `warm_up_calls(lengths, rows)`, which returns one call per length,
      () -> the outputs of an unapplied step of that length, the loss first.
    lengths: the buckets' padded source lengths.
    rows: the batch size the step is traced for.
    generators: the `tf.random.Generator`s the step draws from (dropout): their state is
      restored afterwards.
    threads: how many lengths compile at once.

  Returns:
    The seconds it took, every compiled step run to its end.
  """
  states = [generator.state.read_value() for generator in generators]
  start = time.perf_counter()
  try:
    calls = step.warm_up_calls(tuple(lengths), int(rows))
    with concurrent.futures.ThreadPoolExecutor(max(1, int(threads))) as pool:
      # Reading the loss waits for that step's program to have compiled and run.
      for future in [pool.submit(lambda call=call: float(call()[0])) for call in calls]:
        future.result()
  finally:  # also where a step failed (out of memory): the steps that ran changed nothing
    for generator, state in zip(generators, states):
      generator.reset(state)
  return time.perf_counter() - start
