"""`serve`: export if needed, load, listen, answer until SIGINT or SIGTERM, then stop cleanly."""
import errno
import signal
import threading

from seq2seq import errors
from seq2seq.runtime import interrupts
from seq2seq.runtime import workdir as workdir_lib
from seq2seq.serve import exported
from seq2seq.serve import http_api
from seq2seq.serve import model as model_lib
from seq2seq.serve import worker as worker_lib


class ServeError(errors.UserError, RuntimeError):
  """The server cannot start as asked; the message says what to change."""


def _listen(serve_config):
  """The bound `http_api.Server` (its `app` still to be set), bound before the model loads
  so that a taken port is reported at once. Raises ServeError (address taken, not allowed,
  unknown)."""
  try:
    return http_api.Server((serve_config.host, serve_config.port), None)
  except OSError as e:
    advice = {errno.EADDRINUSE: "another program listens there: stop it or pick another "
                                "--port (0 picks a free one)",
              errno.EACCES: "ports below 1024 need privileges: pick --port=8080 or another "
                            "above 1023",
              errno.EADDRNOTAVAIL: "this machine has no such address: use --host=127.0.0.1 "
                                   "(or 0.0.0.0 for every interface)"}.get(
                                       e.errno, "check --host and --port")
    raise ServeError(f"cannot listen on --host={serve_config.host} --port={serve_config.port}: "
                     f"{e.strerror or e}; {advice}") from None


class _Stop:
  """SIGINT and SIGTERM set `signal_name` and `event`; the previous handlers come back on
  exit."""

  def __init__(self):
    self.event, self.signal_name, self._previous = threading.Event(), None, {}

  def __enter__(self):
    for signum in (signal.SIGINT, signal.SIGTERM):
      self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    self.signal_name = signal.Signals(signum).name
    self.event.set()

  def __exit__(self, *exc):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)


def serve(run_config, log=print):
  """Serves the workdir's SavedModel (`exported.ensure_export`) on --host:--port until SIGINT
  or SIGTERM; then stops taking connections, answers the requests in flight and returns 0.

  Raises:
    ServeError: a language model (not exportable), or the address cannot be used.
    export.ExportError, restore.NoCheckpoint: as `export.export_trained`.
  """
  trained_config = workdir_lib.trained_settings(run_config)
  if trained_config.model.model != "seq2seq":
    raise ServeError(f"--mode=serve serves seq2seq models; {run_config.train.workdir} holds a "
                     f"--model={trained_config.model.model} (talk to it with --mode=chat)")
  serve_config = run_config.serve
  server = _listen(serve_config)
  try:
    with interrupts.sigterm_raises():  # an export stopped midway leaves the old one whole
      model = model_lib.ServedModel(exported.ensure_export(trained_config, log))
      model.warm_up()
  except BaseException:
    server.server_close()
    raise
  worker = worker_lib.Worker(model.answer, serve_config.max_queue, serve_config.request_timeout,
                             log)
  server.app = http_api.App(worker, model.info, model.has_attention, serve_config, log)
  with _Stop() as stop:
    host, port = server.server_address[:2]
    thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    thread.start()
    log(f"serving on http://{host}:{port}/ (the chat page; the API under /v1/); "
        "Ctrl-C or SIGTERM stops it")
    while not stop.event.wait(0.5):  # short waits: signal handlers run between them
      pass
    log(f"stopping ({stop.signal_name}): answering the requests in flight")
    server.app.stopping = True
    server.shutdown()  # no new connections
    worker.stop(serve_config.request_timeout)
    server.server_close()  # joins the handler threads
  log("stopped")
  return 0
