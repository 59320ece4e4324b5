"""One thread runs the model; requests wait for it in a bounded queue, with a time limit.

TensorFlow runs one call on all cores, so calls side by side would only share them and
finish later; one worker thread serialises them, and decodes waiting requests that share
their settings as one batch. A full queue is refused at once (503) rather than making every
client wait longer, and a request that waited past its time limit is answered 504 and
skipped when its turn comes.
"""
import collections
import queue
import threading
import time

from seq2seq.serve import requests as requests_lib

MAX_BATCH = 32  # texts decoded in one call


class Busy(Exception):
  """The queue is full (503)."""


class TimedOut(Exception):
  """The request's time limit passed before its answer was ready (504)."""


class _Job:
  """One request in the queue: its query, its deadline and, once done, its answer."""

  def __init__(self, query, deadline):
    self.query, self.deadline = query, deadline
    self.done = threading.Event()
    self.answer = self.error = None


class Worker:
  """Runs `answer(queries) -> answers` (`model.ServedModel.answer`) on its own thread.

  Args:
    answer: the batch function; every query of a batch has the same `requests.batch_key`.
    max_queue: requests that may wait; `submit` refuses more.
    timeout: seconds from `submit` until a request is answered 504.
    log: where a failed batch is reported.
  """

  def __init__(self, answer, max_queue, timeout, log=print):
    self._answer, self._timeout, self._log = answer, timeout, log
    self._queue = queue.Queue(max_queue)
    self._thread = threading.Thread(target=self._run, name="model-worker", daemon=True)
    self._thread.start()

  @property
  def waiting(self):
    return self._queue.qsize()

  def submit(self, query):
    """The answer to `query` (a `requests.Query`), waiting at most `timeout` seconds.

    Raises:
      Busy: the queue is full.
      TimedOut: the answer was not ready in time.
      Exception: what the model raised for this batch.
    """
    job = _Job(query, time.monotonic() + self._timeout)
    try:
      self._queue.put_nowait(job)
    except queue.Full:
      raise Busy(f"{self._queue.maxsize} requests are waiting for the model; try again in a "
                 "moment") from None
    if not job.done.wait(self._timeout):
      raise TimedOut(f"no answer within the server's limit of {self._timeout:g} s "
                     "(--request_timeout); the server is busy or the request is slow")
    if job.error is not None:
      raise job.error
    return job.answer

  def stop(self, grace):
    """Answers what is queued, then ends the thread (waiting at most `grace` seconds)."""
    self._queue.put(None)  # blocks while the queue is full: the worker is draining it
    self._thread.join(grace)

  def _take(self):
    """The jobs to run next (waiting for the first), or None to stop. Jobs already past
    their deadline are dropped (their clients have been answered 504)."""
    jobs = [self._queue.get()]
    while len(jobs) < MAX_BATCH:
      try:
        jobs.append(self._queue.get_nowait())
      except queue.Empty:
        break
    stop = None in jobs
    now = time.monotonic()
    jobs = [job for job in jobs if job is not None and job.deadline > now]
    return jobs, stop

  def _run(self):
    while True:
      jobs, stop = self._take()
      groups = collections.defaultdict(list)
      for job in jobs:
        groups[requests_lib.batch_key(job.query)].append(job)
      for group in groups.values():
        self._run_batch(group)
      if stop:
        return

  def _run_batch(self, jobs):
    try:
      answers = self._answer([job.query for job in jobs])
    except Exception as e:  # pylint: disable=broad-except
      # The worker outlives a failed call: its requests get the error, the next ones run.
      self._log(f"error: decoding {len(jobs)} request(s) failed: {type(e).__name__}: {e}")
      for job in jobs:
        job.error = e
        job.done.set()
      return
    for job, answer in zip(jobs, answers):
      job.answer = answer
      job.done.set()
