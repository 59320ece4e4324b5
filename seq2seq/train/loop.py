"""The training loop: resume, step, log, summarise, validate, checkpoint, stop on signals.

NumPy, logging and Python side effects stay here, outside the compiled step.
"""
import contextlib
import dataclasses
import time
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from ops import losses
from seq2seq.data import datasets
from seq2seq.data import fingerprint
from seq2seq.distributed import distributed_step
from seq2seq.distributed import distribution
from seq2seq import errors
from seq2seq.models import encoder_decoder as model_lib
from seq2seq.models import language_model
from seq2seq.runtime import checkpoints
from seq2seq.runtime import interrupts
from seq2seq.runtime import summaries
from seq2seq.runtime import workdir as workdir_lib
from seq2seq.runtime import workdir_lock
from seq2seq.step import choice as step_choice
from seq2seq.step import compile_ahead
from seq2seq.step import device_prefetch
from seq2seq.step import lookahead as lookahead_lib
from seq2seq.step import optimizers
from seq2seq.step import resident_batches
from seq2seq.step import train_step as train_step_lib
from seq2seq.train import lm_run
from seq2seq.train import validation_record


@dataclasses.dataclass
class TrainResult:
  step: int
  epoch: int
  last_loss: float
  checkpoint: str
  resumed_from: str
  stopped_by_signal: int  # 0, or the signal number that stopped the run
  val_loss: float = float("nan")

  @property
  def exit_code(self):
    return 128 + self.stopped_by_signal if self.stopped_by_signal else 0


class TrainingDiverged(errors.UserError, RuntimeError):
  """--max_bad_steps consecutive steps had a non-finite loss or gradient norm."""


def evaluate(eval_step, schedule):
  """(mean loss per target token, perplexity) over every batch of `schedule`."""
  total_loss = total_tokens = 0.0
  for batch in schedule.batches(epoch=0):
    loss_sum, tokens = eval_step(batch)
    total_loss += float(loss_sum)
    total_tokens += float(tokens)
  loss = total_loss / max(total_tokens, 1.0)
  return loss, losses.perplexity(loss)


def run_epoch(step, windows, initial_state):
  """Runs `step` over the windows of one epoch, carrying the state from each to the next.

  Args:
    step: (inputs, targets, state) -> (loss, ..., final state), e.g.
      `train_step.make_lm_train_step`'s.
    windows: from `language_model.lm_windows`.
    initial_state: the state of the first window (zeros: each epoch starts afresh).

  Returns:
    (mean loss per token over the epoch, perplexity, the final state).
  """
  state = initial_state
  total = 0.0
  for inputs, targets in windows:
    loss, *_, state = step(tf.constant(inputs), tf.constant(targets), state)
    total += float(loss)
  mean = total / len(windows)
  return mean, losses.perplexity(mean), state


def train_lm(model, optimizer, ids, batch_size, num_steps, num_epochs, max_grad_norm=5.0,
             log=print):
  """The bare loop, for library use: trains on the token stream `ids`, the state reset to
  zeros at every epoch. (train.py runs LM mode through `train`, with checkpoints, resume,
  summaries, signals and validation.)

  Returns:
    the list of per-epoch mean training losses.
  """
  windows = language_model.lm_windows(ids, batch_size, num_steps)
  model.build()
  optimizer.build(model.trainable_variables)
  step = train_step_lib.make_lm_train_step(model, optimizer, max_grad_norm)
  history = []
  for epoch in range(num_epochs):
    loss, ppl, _ = run_epoch(step, windows, model.initial_state(batch_size))
    log(f"epoch {epoch + 1}/{num_epochs}: loss={loss:.4f} ppl={ppl:.2f}")
    history.append(loss)
  return history


def _format_duration(seconds):
  seconds = int(max(seconds, 0))
  hours, rest = divmod(seconds, 3600)
  return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class _RateMeter:
  """Tokens/s, seconds per batch and ETA over the steps since the last report.

  The ETA uses the last window's pace, so the one-off tracing of each bucket's step at the
  start does not inflate it for the rest of the run.
  """

  def __init__(self, start_step):
    self.window_time = time.perf_counter()
    self.window_step = start_step
    self.window_tokens = 0.0

  def add_tokens(self, tokens):
    self.window_tokens += tokens

  def report(self, step, total_steps):
    now = time.perf_counter()
    steps = max(step - self.window_step, 1)
    elapsed = max(now - self.window_time, 1e-9)
    tokens_per_sec = self.window_tokens / elapsed
    per_batch = elapsed / steps
    self.window_time, self.window_step, self.window_tokens = now, step, 0.0
    return tokens_per_sec, per_batch, per_batch * (total_steps - step)


class _LossWindow:
  """The training loss of the steps since the last report, as the progress line gives it: the
  mean per target token over those steps, and their largest gradient norm.

  One batch's loss says little of the run: batches of long and short pairs (or of rare and
  common words) differ by several nats at the same point of training, so a line reading one
  batch jumps whenever it lands on another bucket. Skipped (non-finite) steps are left out.
  """

  def __init__(self):
    self.loss_sum = self.tokens = 0.0
    self.grad_norm = None

  def add(self, loss, tokens, grad_norm):
    self.loss_sum += loss * tokens
    self.tokens += tokens
    self.grad_norm = grad_norm if self.grad_norm is None else max(self.grad_norm, grad_norm)

  def report(self, loss, grad_norm):
    """(mean loss, largest norm) of the window, or the given step's `loss` and `grad_norm`
    when it holds none; starts a new window."""
    if self.tokens > 0:
      loss, grad_norm = self.loss_sum / self.tokens, self.grad_norm
    self.__init__()
    return loss, grad_norm


def train(run_config, log=print):
  """Trains (or resumes) the run described by `run_config`; returns a `TrainResult`.

  One loop serves both models (`Trainee`): --model=seq2seq over bucketed pairs, and
  --model=lm over windows of running text, its carried state checkpointed with the rest.

  The workdir is locked (WORKDIR/lock) for the whole run and released on any exit.

  A step with a non-finite loss or gradient norm is skipped (no update; see
  `train_step.make_train_step`), counted and logged, and no checkpoint is written at a skipped
  step; after `max_bad_steps` consecutive skipped steps the run stops with `TrainingDiverged`,
  leaving the last good checkpoint as the latest.

  Raises:
    workdir_lock.WorkdirLocked: another live run holds the workdir.
    workdir.WorkdirError: the workdir is not a writable folder, its config.json is damaged,
      or its vocabulary is missing while checkpoints remain.
    corpus.DataError, workdir.WorkdirMismatch, checkpoints.CheckpointError,
    distribution.StrategyError, config.ConfigError (--num_sampled not below the vocabulary
    size): before any step.
    distribution.PeerLost: under multi_worker, a step failed because a peer worker is gone.
    checkpoints.CheckpointWriteError: a checkpoint could not be written; the run stops and the
      earlier checkpoints stay valid.
    TrainingDiverged: too many consecutive non-finite steps.
  """
  train_config = run_config.train
  workdir_lib.check_folder(train_config.workdir, writing=True)
  # First: multi_worker configures collectives, which must precede any other TF op.
  strategy = distribution.make_strategy(train_config.strategy, train_config.devices)
  distributed = train_config.strategy != "default"
  worker = distribution.WorkerDir(train_config.workdir, strategy)
  try:
    # Each worker locks the folder it writes to: the chief the workdir, others their own.
    with workdir_lock.WorkdirLock(worker.path, log):
      return TrainingRun(run_config, strategy, distributed, worker,
                         distribution.worker_log(log, strategy)).run()
  finally:
    worker.cleanup()


@dataclasses.dataclass
class Trainee:
  """What the loop trains: everything that differs between --model=seq2seq and --model=lm.

  schedule: `batches(epoch, start)` (the batches of an epoch from `start` on),
    `batches_per_epoch`, and a settable `seed` (the data order a resumed run keeps).
  step: batch -> (loss, grad_norm, finite), the engine's step (`train_step.make_update_step`);
    under a strategy, (batch, stop votes) -> (loss, grad_norm, finite, summed stop votes)
    (`distributed_step`).
  tokens: batch -> target tokens in it (for tok/s).
  validate: () -> (loss, perplexity) on the validation data; None without it.
  start_epoch: called before the first batch of each epoch (not when resuming mid-epoch).
  checkpointed: {name: object} saved in checkpoints beside model, optimizer and progress.
  device: where `step` reads its inputs (`_batch_device`); None: from the host.
  on_device: batch -> the batch as `step` takes it on `device`, made ahead of the step on a
    background thread (`device_prefetch`); None: `step` takes the NumPy batch.
  resident: the schedule's batches kept on `device` (`resident_batches`); then `step` takes
    a `resident_batches.Planned` and gathers its batch there, and `on_device` is not used.
  lookahead: `step` takes (batch, the next batch or None), and looks the next one up ahead
    (`lookahead.LookaheadStep`).
  flush: applies any update `step` held back; called before the tables are read otherwise
    (checkpoints, validation).
  compile_ahead: threads -> (seconds, padded lengths): compiles the step of every bucket
    before the first step, `threads` at a time (`compile_ahead.compile_buckets`); None where
    nothing is compiled per bucket (no XLA, the LM's one window shape, a strategy).
  """
  model: tf.Module
  optimizer: optimizers.Optimizer
  vocabulary: object
  schedule: object
  step: Callable
  tokens: Callable
  validate: Optional[Callable] = None
  start_epoch: Callable = lambda: None
  checkpointed: dict = dataclasses.field(default_factory=dict)
  device: Optional[str] = None
  on_device: Optional[Callable] = None
  resident: Optional[resident_batches.ResidentBatches] = None
  lookahead: bool = False
  flush: Callable = lambda: None
  compile_ahead: Optional[Callable] = None


# A single device reads the steps' outputs (loss, norm, finite) every this many steps, and
# wherever the loop logs, saves or stops (`TrainingRun.run_step`).
SETTLE_EVERY = 32


@contextlib.contextmanager
def _epoch_feed(trainee, epoch, start):
  """Iterates (target tokens, what `trainee.step` takes) over `epoch`'s batches from `start`
  on: planned batches that the step gathers on the device, or batches moved ahead of it."""
  if trainee.resident is not None:
    yield ((planned.tokens, planned) for planned in trainee.resident.epoch(epoch, start))
    return
  with device_prefetch.Prefetcher(trainee.schedule.batches(epoch, start=start),
                                  trainee.on_device) as batches:
    feed = ((trainee.tokens(batch), given) for batch, given in batches)
    yield _with_next(feed) if trainee.lookahead else feed


def _with_next(feed):
  """(tokens, (given, the next item's given or None)) for each (tokens, given) of `feed`."""
  items = iter(feed)
  current = next(items, None)
  while current is not None:
    following = next(items, None)
    yield current[0], (current[1], None if following is None else following[1])
    current = following


def _batch_device(run_config, strategy, distributed):
  """The device a step reads its batches on (`train_step.device_batch`), or None where it
  takes them from the host: a compiled step whose lookups run on this worker's one GPU."""
  if not (run_config.train.jit_compile and run_config.model.embedding_device == "gpu"):
    return None
  devices = (list(strategy.extended.worker_devices) if distributed else
             [device.name for device in tf.config.list_logical_devices("GPU")[:1]])
  if len(devices) != 1 or tf.DeviceSpec.from_string(devices[0]).device_type != "GPU":
    return None
  return devices[0]


def _looks_ahead(run_config):
  """Whether a one-device step with its tables on the host looks the next batch up while the
  device runs (`lookahead.LookaheadStep`): where it is compiled for a GPU. On a CPU alone
  there is no device time to hide the host's work in."""
  return (run_config.train.jit_compile and run_config.model.embedding_device == "cpu"
          and bool(tf.config.list_logical_devices("GPU")))


def _seq2seq_trainee(run_config, strategy, distributed, log, learning_rate_scale=None):
  """Pairs in buckets, the encoder-decoder, and its (possibly distributed) step."""
  train_config = run_config.train
  training_data = datasets.load_training_data(run_config, log)
  # Its batch size, lowered to the number of pairs where it is larger (datasets.fit_batch_size).
  train_config = dataclasses.replace(train_config, batch_size=training_data.train.batch_size)
  train_config.check_vocabulary_size(len(training_data.vocabulary))
  with strategy.scope():
    model = model_lib.build_model(run_config, training_data.vocabulary, log)
    optimizer = optimizers.make_optimizer(train_config, model.trainable_variables,
                                          learning_rate_scale)
  if distributed:
    step = distributed_step.make_distributed_train_step(
        model, optimizer, train_config.max_grad_norm, strategy,
        jit_compile=train_config.jit_compile, num_sampled=train_config.num_sampled,
        seed=train_config.seed, label_smoothing=train_config.label_smoothing,
        batch_size=train_config.batch_size)
  else:
    step = train_step_lib.make_train_step(model, optimizer, train_config.max_grad_norm,
                                          jit_compile=train_config.jit_compile,
                                          num_sampled=train_config.num_sampled,
                                          seed=train_config.seed,
                                          label_smoothing=train_config.label_smoothing,
                                          batch_size=train_config.batch_size,
                                          lookahead=_looks_ahead(run_config))
  eval_step = train_step_lib.make_eval_step(model, train_config.batch_size)
  validate = None
  if training_data.val is not None:
    validate = lambda: evaluate(eval_step, training_data.val)
  on_device = resident = None
  device = _batch_device(run_config, strategy, distributed)
  if device is not None and not distributed:
    resident = resident_batches.ResidentBatches(training_data.train, step.fn, device,
                                                train_config.batch_size)
    step = resident.step
  elif device is not None:
    rows = train_config.batch_size
    on_device = lambda batch: train_step_lib.device_batch(
        train_step_lib.pad_rows(batch, rows), device)
  lookahead = isinstance(step, lookahead_lib.LookaheadStep)
  compiled = None
  if train_config.jit_compile and not distributed:
    compiled = _bucket_compiler(resident or step, training_data.train, train_config.batch_size,
                                model.dropout_generator)
  return Trainee(model, optimizer, training_data.vocabulary, training_data.train,
                 (lambda given: step(*given)) if lookahead else step,
                 tokens=lambda batch: float(batch.target_weight.sum()), validate=validate,
                 device=device, on_device=on_device, resident=resident, lookahead=lookahead,
                 flush=step.flush if lookahead else lambda: None, compile_ahead=compiled)


def _bucket_compiler(step, schedule, rows, generator):
  """`Trainee.compile_ahead` of a one-device seq2seq `step` (with `warm_up_calls`) over the
  buckets of `schedule` that hold pairs."""
  lengths = tuple(sorted(set(schedule.bucket_of)))
  def compile_buckets(threads):
    seconds = compile_ahead.compile_buckets(step, lengths, rows, [generator], threads)
    return seconds, lengths
  return compile_buckets


def _lm_trainee(run_config, strategy, distributed, log, learning_rate_scale=None):
  """Windows of running text, the language model, and its step carrying the state.

  The carried state is checkpointed (`carried_state`), so a run resumed mid-epoch continues
  from the exact state the interrupted run had reached; it is reset at each epoch's start.
  """
  # (RunConfig refuses --strategy other than default with an LM: `distributed` is False.)
  train_config = run_config.train
  training_data = lm_run.load_data(run_config, log)
  model = language_model.LanguageModel(run_config.model, len(training_data.vocabulary),
                                       seed=train_config.seed,
                                       compute_dtype=model_lib.COMPUTE_DTYPES[train_config.precision])
  model.build()
  optimizer = optimizers.make_optimizer(train_config, model.trainable_variables,
                                        learning_rate_scale)
  carried = language_model.CarriedState(model, train_config.batch_size)
  step = train_step_lib.make_carried_step(
      train_step_lib.make_lm_train_step(model, optimizer, train_config.max_grad_norm,
                                        jit_compile=train_config.jit_compile), carried)
  eval_step = language_model.make_lm_eval_step(model)
  validate = None
  if training_data.val is not None:
    val = training_data.val
    validate = lambda: language_model.evaluate(eval_step, val.windows,
                                               model.initial_state(val.batch_size))
  device = _batch_device(run_config, strategy, distributed)
  on_device = None
  if device is not None:
    on_device = lambda window: train_step_lib.device_batch(window, device)
  return Trainee(model, optimizer, training_data.vocabulary, training_data.train,
                 step=lambda window: step(tf.convert_to_tensor(window[0]),
                                          tf.convert_to_tensor(window[1])),
                 tokens=lambda window: float(window[0].size), validate=validate,
                 start_epoch=carried.reset, checkpointed={"carried_state": carried},
                 device=device, on_device=on_device)


class TrainingRun:
  """`train` under `strategy`; this worker writes under `worker.path`.

  `__init__` builds the trainee and restores the latest checkpoint; `run` trains until the
  last step, a signal or early stopping, and returns the `TrainResult`. The loop's state
  lives on the object: the counters (`step`, `epoch`, `position`, also in `progress`, which
  checkpoints hold), the stop signal (`stopping`), the skipped-step counts and the steps whose
  outputs were not read yet (`unsettled`).
  """

  def __init__(self, run_config, strategy, distributed, worker, log):
    self.strategy, self.distributed, self.log = strategy, distributed, log
    self.train_config = train_config = run_config.train
    if train_config.deterministic:
      tf.config.experimental.enable_op_determinism()
    if distributed:
      # Every variable, the embedding tables included, is mirrored on the replicas' devices
      # (see seq2seq/distributed/distribution.py); "gpu" placement means the replica's own device.
      run_config = dataclasses.replace(
          run_config, model=dataclasses.replace(run_config.model, embedding_device="gpu"),
          train=dataclasses.replace(train_config, workdir=worker.path))
      log(f"strategy: {train_config.strategy}, {strategy.num_replicas_in_sync} replicas in "
          f"sync, global batch {train_config.batch_size}"
          + ("" if worker.chief else f"; writing to the temporary {worker.path}"))
    choice = step_choice.choose(run_config)  # auto resolved: what this machine trains with
    log(step_choice.describe(choice))
    self.run_config = run_config = choice.run_config
    workdir_lib.check_or_save_config(run_config)
    self._restore(self._build_trainee())
    self._announce()
    summary_dir = lambda split: workdir_lib.summary_dir(run_config.train.workdir, split)
    self.train_writer = summaries.ScalarWriter(summary_dir("train"))
    self.val_writer = summaries.ScalarWriter(summary_dir("val"))
    self.loss_t, self.loss, self.val_loss = None, float("nan"), float("nan")
    self.meter = _RateMeter(self.step)
    self.loss_window = _LossWindow()
    self.bad_in_a_row = self.bad_total = 0
    self.stopping = None  # the signal the run stops for: this process's, or any worker's
    self.stop = None  # the `interrupts.StopOnSignal` while `run` runs
    self.unsettled = []  # (step number, outputs, tokens) of the steps not yet read
    # Reading a step's outputs waits for all the work queued on the device (TensorFlow's
    # device-to-host copy waits for the compute stream), so the device idles while the loop
    # then queues the next step. One device reads them every `SETTLE_EVERY` steps; workers
    # read every step, to take in the stop votes after the step that carries them.
    self.settle_every = 1 if distributed else SETTLE_EVERY
    self.votes_on_device = device_prefetch.ConstantsOnDevice(self.trainee.device)

  def _build_trainee(self):
    """Builds the model, optimizer, data and step (`Trainee`); -> the validation record."""
    run_config = self.run_config
    build = _lm_trainee if run_config.model.model == "lm" else _seq2seq_trainee
    with self.strategy.scope():
      record = validation_record.ValidationRecord()
    self.trainee = build(run_config, self.strategy, self.distributed, self.log,
                         record.learning_rate_scale)
    return record

  def _restore(self, record):
    """Makes the checkpointer and restores the latest checkpoint, if any, with the loop's
    counters (`progress`) and the data order."""
    train_config, run_config, trainee = self.train_config, self.run_config, self.trainee
    with self.strategy.scope():
      progress = checkpoints.Progress(data_seed=train_config.seed)
    checkpointer = checkpoints.Checkpointer(
        workdir_lib.checkpoint_dir(run_config.train.workdir), trainee.model, trainee.optimizer,
        progress, train_config.keep_checkpoints,
        restore_directory=workdir_lib.checkpoint_dir(train_config.workdir),
        extras=trainee.checkpointed, optional_extras={"validation": record}, log=self.log)
    self.best = checkpoints.BestCheckpoint(checkpointer, keep=train_config.keep_best)
    resumed_from = checkpointer.restore_latest(vocabulary=(
        len(trainee.vocabulary), workdir_lib.vocab_path(run_config.train.workdir)))
    trainee.schedule.seed = int(progress.data_seed.numpy())  # a resumed run keeps its data order
    self.step, self.epoch, self.position = (int(v.numpy()) for v in (
        progress.step, progress.epoch, progress.position))
    self.order = fingerprint.resume_note(
        run_config, trainee.schedule, self.step if resumed_from else None, train_config.workdir,
        run_config.train.workdir)
    self.per_epoch = trainee.schedule.batches_per_epoch
    self.total_steps = train_config.num_epochs * self.per_epoch
    if train_config.max_steps:
      self.total_steps = min(self.total_steps, train_config.max_steps)
    self.record, self.progress, self.checkpointer = record, progress, checkpointer
    self.resumed_from = self.checkpoint = resumed_from
    self.saved_step = self.step if resumed_from else -1
    self.early_stop = bool(train_config.early_stopping) and (
        int(record.stale_epochs.numpy()) >= train_config.early_stopping)

  def _announce(self):
    """Logs the model, the run's length, where it resumes and whether it already stopped."""
    model, model_config = self.trainee.model, self.run_config.model
    parameters = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    self.log(f"model: {model_config.cell} {model_config.num_layers}x{model_config.hidden_size}"
             f", vocab {model.vocab_size}, {parameters:,} trainable parameters; "
             f"{self.per_epoch} batches an epoch, {self.total_steps} steps in all")
    if note := model.tying_note():
      self.log(note)
    if self.resumed_from:
      self.log(f"Resuming from {self.resumed_from} at step {self.step} (epoch {self.epoch + 1}"
               f", batch {self.position} of {self.per_epoch}), {self.order}")
    if self.early_stop:
      self.log(f"early stopping: this run already stopped after "
               f"{int(self.record.stale_epochs.numpy())} epochs without a new best validation "
               f"loss (--early_stopping={self.train_config.early_stopping}); raise it to train on")

  def save(self):
    """Writes a checkpoint of the current step; -> its path."""
    self.trainee.flush()
    self.saved_step = self.step
    return self.checkpointer.save()

  def validate(self):
    """The validation loss (NaN without --val_data), and whether early stopping ends the run.

    A new best loss saves WORKDIR/best; plateaus scale the learning rate (validation_record).
    """
    if self.trainee.validate is None:
      return float("nan"), False
    self.trainee.flush()
    train_config, record = self.train_config, self.record
    val_loss, val_ppl = self.trainee.validate()
    verdict = record.observe(val_loss, self.step, train_config.plateau_patience,
                             train_config.plateau_factor, train_config.early_stopping)
    if verdict.improved:
      note = f"; new best, saved {self.best.save()}"
    else:
      note = (f"; best {float(record.best_loss.numpy()):.4f} at step "
              f"{int(record.best_step.numpy())}, {verdict.stale_epochs} epoch(s) ago")
    if verdict.learning_rate_cut:
      note += (f"; learning rate scaled by {train_config.plateau_factor} (now x"
               f"{float(record.learning_rate_scale.numpy()):.3g})")
    self.log(f"validation after epoch {self.epoch + 1}: loss={val_loss:.4f} ppl={val_ppl:.2f}"
             f"{note}")
    self.val_writer.write(self.step, {"loss": val_loss, "perplexity": val_ppl,
                                      "best_loss": float(record.best_loss.numpy())})
    if verdict.stop:
      self.log(f"early stopping: {verdict.stale_epochs} epochs without a new best validation "
               f"loss (--early_stopping={train_config.early_stopping})")
    return val_loss, verdict.stop

  def settle(self, number, outputs, tokens=0.0):
    """Reads step `number`'s outputs (waiting for it): adds an applied step's loss over
    `tokens` target tokens to the progress line's window, counts a skipped step, raises
    TrainingDiverged after too many in a row, and takes in the workers' stop votes.
    Returns whether its update was applied."""
    loss_t, norm_t, finite_t = outputs[:3]
    if self.distributed:  # every worker stops after the same step (see seq2seq/runtime/interrupts.py)
      self.stopping = self.stopping or self.stop.agreed(outputs[3].numpy())
    if bool(finite_t):
      self.bad_in_a_row = 0
      self.loss_window.add(float(loss_t), float(tokens), float(norm_t))
      return True
    self.bad_in_a_row += 1
    self.bad_total += 1
    self.log(f"step {number}: non-finite loss={float(loss_t)} grad_norm={float(norm_t)}; "
             f"update skipped ({self.bad_in_a_row} in a row, {self.bad_total} in this run)")
    max_bad_steps = self.train_config.max_bad_steps
    if self.bad_in_a_row >= max_bad_steps:
      raise TrainingDiverged(
          f"stopped at step {number}: {self.bad_in_a_row} consecutive steps had a non-finite "
          f"loss or gradient norm (--max_bad_steps={max_bad_steps}); the latest checkpoint, "
          f"{self.checkpointer.latest or 'none'}, holds the last good parameters. Try a "
          f"lower --learning_rate or --max_grad_norm, or check the data.")
    return False

  def settle_unread(self, keep_latest=False):
    """Settles the unread steps in order (all but the latest with `keep_latest`); returns
    the last one's `settle`."""
    finite = None
    unsettled = self.unsettled
    for unread in unsettled[:-1] if keep_latest else unsettled:
      finite = self.settle(*unread)
    del unsettled[:-1 if keep_latest else len(unsettled)]
    return finite

  def run(self):
    """Trains to the end, a signal or early stopping; saves and returns the `TrainResult`."""
    with interrupts.StopOnSignal() as self.stop, \
         distribution.peer_loss_raises(self.strategy):
      if self._trains_on():
        self.compile_ahead()
      while self._trains_on():
        if self.position == 0:
          self.trainee.start_epoch()
        with _epoch_feed(self.trainee, self.epoch, self.position) as feed:
          for tokens, given in feed:
            if self.run_step(tokens, given):
              break
        self.settle_unread()  # a schedule that ended before its batches_per_epoch
        if self.position >= self.per_epoch:  # the epoch ran to its end
          self.end_epoch()
      if self.loss_t is not None:
        self.loss = float(self.loss_t)
      if self.checkpoint is None or self.step != self.saved_step:
        # After skipped steps too: their parameters are the last good ones.
        self.checkpoint = self.save()
    return self.finish()

  def _trains_on(self):
    """Whether steps remain to be run: no step limit, epoch limit, signal or early stop hit."""
    return (self.step < self.total_steps and self.epoch < self.train_config.num_epochs
            and self.stopping is None and not self.early_stop)

  def compile_ahead(self):
    """Compiles (or loads from the XLA cache) the step of every bucket before the first step,
    --compile_ahead buckets at a time, and says how long it took."""
    threads = self.train_config.compile_ahead
    if self.trainee.compile_ahead is None or not threads:
      return
    try:
      seconds, lengths = self.trainee.compile_ahead(threads)
    except tf.errors.ResourceExhaustedError:
      # Steps of several lengths at once need more memory than training's one at a time.
      self.log(f"compiling {threads} buckets' steps at once ran out of memory; each bucket "
               "compiles at its first batch instead (--compile_ahead=1 compiles them ahead "
               "one at a time)")
      return
    self.log(f"compiled the step of {len(lengths)} buckets (padded lengths "
             f"{', '.join(map(str, lengths))}), {min(threads, len(lengths))} at a time, in "
             f"{seconds:.1f} s")

  def run_step(self, tokens, given):
    """Runs one step on `given` (`tokens` target tokens); reads its outputs where the loop
    logs, saves or stops, and logs and saves there. -> whether the epoch's loop ends here."""
    train_config, progress = self.train_config, self.progress
    if self.distributed:
      outputs = self.trainee.step(given, self.votes_on_device(self.stop.vote()))
    else:
      outputs = self.trainee.step(given)
      self.stopping = self.stop.requested
    self.loss_t = outputs[0]
    self.step += 1
    self.position += 1
    progress.step.assign(self.step)
    progress.position.assign(self.position)
    self.meter.add_tokens(tokens)
    self.unsettled.append((self.step, outputs, tokens))
    log_now = self.step % train_config.log_every == 0 or self.step == self.total_steps
    save_now = self.step % train_config.save_every == 0
    if not (log_now or save_now or self.stopping is not None or self.step >= self.total_steps
            or self.position >= self.per_epoch):
      # The latest step stays unread, so that the device never waits for the host.
      if len(self.unsettled) > self.settle_every:
        self.settle_unread(keep_latest=True)
      return False
    # Where the loop logs, saves or stops, it reads the step's own outputs at once.
    finite = self.settle_unread()
    # A skipped step is neither logged as progress nor saved.
    if finite and log_now:
      self.log_progress(outputs)
    if finite and save_now:
      self.checkpoint = self.save()
    return self.stopping is not None or self.step >= self.total_steps

  def log_progress(self, outputs):
    """Logs and summarises the loss (the mean per target token since the last line), the
    largest gradient norm, the learning rate and the pace, at a settled step."""
    loss, grad_norm = self.loss_window.report(float(outputs[0]), float(outputs[1]))
    lr = float(self.trainee.optimizer.current_learning_rate())
    tokens_per_sec, per_batch, eta = self.meter.report(self.step, self.total_steps)
    self.log(f"{self.step}/{self.total_steps} (epoch {self.epoch + 1}/"
             f"{self.train_config.num_epochs}) loss={loss:.4f} "
             f"ppl={losses.perplexity(loss):.2f} grad_norm={grad_norm:.3f} lr={lr:.3g} "
             f"tok/s={tokens_per_sec:.0f} time/batch={per_batch:.3f}s "
             f"ETA={_format_duration(eta)}")
    self.train_writer.write(self.step, {
        "loss": loss, "perplexity": losses.perplexity(loss), "grad_norm": grad_norm,
        "learning_rate": lr, "tokens_per_sec": tokens_per_sec,
        "seconds_per_batch": per_batch})

  def end_epoch(self):
    """Validates after a whole epoch and moves the counters to the next epoch's start."""
    self.val_loss, self.early_stop = self.validate()
    self.epoch += 1
    self.position = 0
    self.progress.epoch.assign(self.epoch)
    self.progress.position.assign(0)

  def finish(self):
    """Flushes the summaries, logs how the run ended; -> the `TrainResult`."""
    # Or a signal during the last step or the save:
    self.stopping = stopping = self.stopping or self.stop.requested
    self.train_writer.flush()
    self.val_writer.flush()
    if stopping:
      by = "" if self.stop.requested == stopping else " (received by another worker)"
      self.log(f"stopped by signal {stopping}{by} at step {self.step}; saved {self.checkpoint}")
    else:
      self.log(f"done at step {self.step}; saved {self.checkpoint}")
    return TrainResult(step=self.step, epoch=self.epoch, last_loss=self.loss,
                       checkpoint=self.checkpoint, resumed_from=self.resumed_from or "",
                       stopped_by_signal=stopping or 0, val_loss=self.val_loss)
