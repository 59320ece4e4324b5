"""The HTTP layer: the chat page at `/`, the JSON API under `/v1/`, on the standard library's
`ThreadingHTTPServer` (a thread a connection; the model itself runs on `worker.Worker`'s).

    GET  /             the chat page (static/chat.html)
    GET  /v1/health    {"status": "ok", "waiting": N, "max_queue": M}
    GET  /v1/info      the export's facts (model, vocabulary size, step, when trained) and the
                       server's limits
    POST /v1/reply     a `requests.Query` body -> {"replies": [{"text", "score"}], ...}

Every error is a JSON object {"error": message} with its status: 400 a bad request, 404 an
unknown path, 405 a wrong method, 411 no Content-Length, 413 a body over
`requests.MAX_BODY_BYTES`, 503 the queue is full, 504 past --request_timeout, 500 a failure
of the server's own (logged; the server keeps running).
"""
import http
import http.server
import importlib.resources
import json
import os
import sys
import time

from seq2seq.serve import requests as requests_lib
from seq2seq.serve import worker as worker_lib

SOCKET_TIMEOUT_S = 20  # a client that stops sending mid-request frees its thread after this
MAX_DISCARD_BYTES = 16 * 1024 * 1024  # a refused body up to this size is read to its end


def chat_page():
  """The bytes of the chat page (package data: no build step, no external assets)."""
  return importlib.resources.files("seq2seq.serve").joinpath("static/chat.html").read_bytes()


class App:
  """What the handler serves: the model's worker, the facts of /v1/info, the limits."""

  def __init__(self, worker, info, has_attention, serve_config, log=print):
    self.worker, self.has_attention, self.log = worker, has_attention, log
    self.max_beam_width = serve_config.max_beam_width
    self.max_queue = serve_config.max_queue
    self.page = chat_page()
    # Names, not paths: the page may be open to the network (--host=0.0.0.0).
    public = {k: v for k, v in info.items() if k != "workdir"}
    public["checkpoints"] = [os.path.basename(p) for p in info.get("checkpoints", [])]
    self.info = dict(public, attention=has_attention, limits={
        "max_beam_width": serve_config.max_beam_width, "max_queue": serve_config.max_queue,
        "request_timeout_s": serve_config.request_timeout,
        "max_text_chars": requests_lib.MAX_TEXT_CHARS,
        "max_body_bytes": requests_lib.MAX_BODY_BYTES})
    self.stopping = False

  def health(self):
    return 200, {"status": "stopping" if self.stopping else "ok",
                 "waiting": self.worker.waiting, "max_queue": self.max_queue}

  def reply(self, body):
    """(status, JSON object) for a POST /v1/reply body (bytes)."""
    started = time.monotonic()
    try:
      query = requests_lib.parse_query(requests_lib.parse_json(body), self.max_beam_width,
                                       self.has_attention)
      answer = self.worker.submit(query)
    except requests_lib.BadRequest as e:
      return e.status, {"error": str(e)}
    except worker_lib.Busy as e:
      return 503, {"error": str(e)}
    except worker_lib.TimedOut as e:
      return 504, {"error": str(e)}
    except Exception as e:  # pylint: disable=broad-except
      # The model failed on this batch (the worker logged it); the server goes on.
      return 500, {"error": f"the model failed on this request ({type(e).__name__}: {e})"}
    settings = {"beam_width": query.beam_width, "n_best": query.n_best,
                "temperature": query.temperature, "top_k": query.top_k}
    if query.temperature > 0:
      settings["seed"] = query.seed
    return 200, dict(answer, text=query.text, settings=settings,
                     elapsed_ms=round(1000 * (time.monotonic() - started), 1))


class Handler(http.server.BaseHTTPRequestHandler):
  """Routes a request to `server.app` (an `App`) and writes its JSON (or the page)."""

  server_version = "seq2seq-serve"
  timeout = SOCKET_TIMEOUT_S

  def do_GET(self):  # pylint: disable=invalid-name
    path = self.path.split("?", 1)[0]
    if path in ("/", "/index.html"):
      self._send(200, self.server.app.page, "text/html; charset=utf-8")
    elif path == "/v1/health":
      self._json(*self.server.app.health())
    elif path == "/v1/info":
      self._json(200, self.server.app.info)
    elif path == "/v1/reply":
      self._json(405, {"error": "POST a JSON object to /v1/reply"}, {"Allow": "POST"})
    else:
      self._json(404, {"error": f"no page {path}; try /, /v1/health, /v1/info or POST "
                                "/v1/reply"})

  def do_POST(self):  # pylint: disable=invalid-name
    path = self.path.split("?", 1)[0]
    if path != "/v1/reply":
      allowed = "GET" if path in ("/", "/index.html", "/v1/health", "/v1/info") else None
      if allowed:
        self._json(405, {"error": f"{path} answers GET"}, {"Allow": allowed})
      else:
        self._json(404, {"error": f"no page {path}; POST to /v1/reply"})
      return
    body = self._body()
    if body is not None:
      self._json(*self.server.app.reply(body))

  def _body(self):
    """The request's body, or None once an error is sent (no or a bad Content-Length, or a
    body over the limit, which is refused unread)."""
    length = self.headers.get("Content-Length")
    if length is None:
      self._json(411, {"error": "the request needs a Content-Length header"})
      return None
    try:
      size = int(length)
      if size < 0:
        raise ValueError(length)
    except ValueError:
      self._json(400, {"error": f"Content-Length {length!r} is not a byte count"})
      return None
    if size > requests_lib.MAX_BODY_BYTES:
      self._discard(size)
      self._json(413, {"error": f"the body has {size} bytes; at most "
                                f"{requests_lib.MAX_BODY_BYTES} are read"})
      return None
    return self.rfile.read(size)

  def _discard(self, size):
    """Reads and drops a refused body of up to MAX_DISCARD_BYTES (a socket closed with unread
    data is reset, and the client might never read the answer); a larger one is left unread
    and the connection closed after the answer."""
    self.close_connection = True
    if size > MAX_DISCARD_BYTES:
      return
    while size > 0:
      chunk = self.rfile.read(min(size, 1 << 16))
      if not chunk:
        return
      size -= len(chunk)

  def send_error(self, code, message=None, explain=None):
    """The errors the standard library's parsing sends (a bad request line, an unsupported
    method, a header too long) as JSON too."""
    self.close_connection = True
    phrase = message or http.HTTPStatus(code).phrase
    self._json(code, {"error": f"{phrase} ({explain})" if explain else phrase})

  def _json(self, status, value, headers=None):
    self._send(status, json.dumps(value, ensure_ascii=False).encode("utf-8"),
               "application/json; charset=utf-8", headers)

  def _send(self, status, body, content_type, headers=None):
    self.send_response(status)
    self.send_header("Content-Type", content_type)
    self.send_header("Content-Length", str(len(body)))
    self.send_header("Cache-Control", "no-store")
    for name, value in (headers or {}).items():
      self.send_header(name, value)
    self.end_headers()
    self.wfile.write(body)

  def log_message(self, format, *args):  # pylint: disable=redefined-builtin
    self.server.app.log(f"{self.address_string()} {format % args}")


class Server(http.server.ThreadingHTTPServer):
  """`ThreadingHTTPServer` holding the `App`; closing waits for the requests in flight."""

  daemon_threads = False  # server_close joins the handler threads: answers are not cut off
  block_on_close = True
  # Connections the kernel holds before they are accepted; socketserver's 5 resets the
  # sixth of a burst of clients connecting at once.
  request_queue_size = 128

  def __init__(self, address, app):
    self.app = app
    super().__init__(address, Handler)

  def handle_error(self, request, client_address):
    """A failure of the server's own: one line in the log, and the server goes on."""
    kind, error, _ = sys.exc_info()
    self.app.log(f"error: a request from {client_address[0]} failed: "
                 f"{kind.__name__ if kind else ''}: {error}")
