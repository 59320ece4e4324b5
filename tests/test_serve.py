"""--mode=serve end to end: a tiny attention model trained here, served by `train.py` on
127.0.0.1, asked through HTTP (replies, n-best, attention, bad requests, 20 clients at once),
opened in headless Chromium, and stopped by SIGINT and SIGTERM."""
import concurrent.futures
import http.client
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from seq2seq import config as config_lib
from seq2seq.data import vocab as vocab_lib
from seq2seq.infer import chat
from seq2seq.runtime import workdir as workdir_lib
from tests import chromium
from tests import helpers

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--num_layers=1", "--hidden_size=32", "--embedding_size=16", "--num_buckets=1",
        "--batch_size=16", "--max_length=6", "--attention=luong", "--learning_rate=0.01"]
TEXTS = ["a b c d", "h g f e", "c c a", "b d", "zebra a b"]
ENV = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")


class ServerProcess:
  """`train.py --mode=serve` in a subprocess; `lines` collects its output as it comes."""

  def __init__(self, workdir, *flags):
    self.process = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "train.py"), "--mode=serve", f"--workdir={workdir}",
         "--port=0", *flags], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    self.lines = []
    self._reader = threading.Thread(target=self._read, daemon=True)
    self._reader.start()
    self.url = None

  def _read(self):
    for line in self.process.stdout:
      self.lines.append(line.rstrip("\n"))

  @property
  def output(self):
    return "\n".join(self.lines)

  def wait_until_serving(self, timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and self.process.poll() is None:
      for line in self.lines:
        if line.startswith("serving on http://"):
          self.url = line.split()[2].rstrip("/")
          return self.url
      time.sleep(0.1)
    raise AssertionError(f"the server did not start:\n{self.output}")

  def stop(self, signum, timeout=60):
    """Sends `signum`; the exit status."""
    self.process.send_signal(signum)
    status = self.process.wait(timeout)
    self._reader.join(10)
    return status

  def kill(self):
    if self.process.poll() is None:
      self.process.kill()
      self.process.wait()


def request(url, path, body=None, raw=None):
  """(status, decoded JSON) of GET url+path, or POST of `body` (JSON) or `raw` bytes."""
  data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
  try:
    with urllib.request.urlopen(urllib.request.Request(url + path, data=data), timeout=60) as r:
      return r.status, json.loads(r.read())
  except urllib.error.HTTPError as e:
    return e.code, json.loads(e.read())


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A workdir trained for 150 steps on the reverse task (replies reverse the input)."""
  folder = tmp_path_factory.mktemp("serve")
  data = helpers.write_reverse_task(str(folder / "pairs.tsv"))
  run = str(folder / "run")
  result = subprocess.run(
      [sys.executable, os.path.join(ROOT, "train.py"), f"--workdir={run}", f"--data={data}",
       "--max_steps=150", *TINY], cwd=ROOT, env=ENV, capture_output=True, text=True,
      timeout=600)
  assert result.returncode == 0, result.stderr
  return run


@pytest.fixture(scope="module")
def server(workdir):
  process = ServerProcess(workdir)
  try:
    process.wait_until_serving()
    yield process
  finally:
    process.kill()


def _decoder(workdir, **decode):
  run_config = workdir_lib.trained_settings(
      config_lib.replace(config_lib.RunConfig(), workdir=workdir, **decode))
  return chat.make_decoder(run_config, helpers.quiet)


def test_first_serve_exports(server, workdir):
  assert f"exporting first: there is no export in {workdir}/export" in server.output
  assert os.path.isdir(os.path.join(workdir, "export"))


def test_health_and_info(server, workdir):
  assert request(server.url, "/v1/health") == (200, {"status": "ok", "waiting": 0,
                                                     "max_queue": 32})
  status, info = request(server.url, "/v1/info")
  assert status == 200
  assert info["step"] == 150
  assert info["checkpoints"] == ["ckpt-150"] and "workdir" not in info  # no paths shown
  vocabulary = vocab_lib.Vocabulary.load(workdir_lib.vocab_path(workdir))
  assert info["vocabulary_size"] == len(vocabulary)
  assert info["model"]["attention"] == "luong" and info["model"]["hidden_size"] == 32
  assert info["attention"] is True
  assert info["trained_at"].startswith(time.strftime("%Y-", time.gmtime()))
  assert info["limits"]["max_beam_width"] == 10


def test_replies_are_the_checkpoints(server, workdir):
  """Greedy replies, beam n-best and seeded samples as `chat.make_decoder` gives them."""
  greedy = _decoder(workdir).n_best_batch(TEXTS)
  beam = _decoder(workdir, beam_width=4, n_best=3).n_best_batch(TEXTS)
  sampler = _decoder(workdir, temperature=1.5, top_k=4, seed=77)
  # One text a request, so one text a batch: a seeded draw depends on the batch it is in.
  sampled = [sampler.n_best_batch([text])[0] for text in TEXTS]
  for text, want_greedy, want_beam, want_sampled in zip(TEXTS, greedy, beam, sampled):
    status, got = request(server.url, "/v1/reply", {"text": text})
    assert status == 200, got
    assert [r["text"] for r in got["replies"]] == [want_greedy[0][0]]
    status, got = request(server.url, "/v1/reply", {"text": text, "beam_width": 4, "n_best": 3})
    assert status == 200, got
    assert [r["text"] for r in got["replies"]] == [reply for reply, _ in want_beam]
    np.testing.assert_allclose([r["score"] for r in got["replies"]],
                               [score for _, score in want_beam], rtol=1e-4, atol=1e-4)
    status, got = request(server.url, "/v1/reply", {"text": text, "temperature": 1.5,
                                                    "top_k": 4, "seed": 77})
    assert got["replies"][0]["text"] == want_sampled[0][0]
    assert got["settings"]["seed"] == 77
  assert greedy[0][0][0] == "d c b a"  # the model learnt its task


def test_attention_is_the_decoders(server, workdir):
  want = _decoder(workdir).align("a b c d")
  status, got = request(server.url, "/v1/reply", {"text": "a b c d", "attention": True})
  assert status == 200, got
  assert got["replies"][0]["text"] == want.reply
  attention = got["replies"][0]["attention"]
  assert attention["source"] == want.source_words
  assert attention["output"] == want.output_words
  np.testing.assert_allclose(attention["weights"], want.weights, atol=1e-4)


def test_attention_of_each_beam_reply(server):
  """Beam replies come with the alignments of their own words (`beam_search` tracks them;
  test_beam_search.py checks them against the decoder)."""
  status, got = request(server.url, "/v1/reply", {"text": "h g f e", "beam_width": 4,
                                                  "n_best": 3, "attention": True})
  assert status == 200, got
  assert len(got["replies"]) == 3
  for reply in got["replies"]:
    attention = reply["attention"]
    assert attention["source"] == ["h", "g", "f", "e"]
    words = reply["text"].split()
    assert attention["output"] in (words, words + ["<EOS>"])
    weights = np.array(attention["weights"])
    assert weights.shape == (len(attention["output"]), 4)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-3)
  assert len({json.dumps(r["attention"]["weights"]) for r in got["replies"]}) > 1


@pytest.mark.parametrize("raw, status, message", [
    (b'{"text": ""}', 400, r'"text" is empty'),
    (b'{"text": 5}', 400, r'"text" must be a string, got 5'),
    (b'{"text": "a", "beam_width": "2"}', 400, r'"beam_width" must be an integer'),
    (b'{"text": "a", "beam_width": 11}', 400, r'"beam_width" must be in \[1, 10\]'),
    (b'{"text": "a", "n_best": 2}', 400, r'"n_best": 2 is more than beam_width 1'),
    (b'{"text": "a", "attention": 1}', 400, r'"attention" must be true or false'),
    (b'{"text": "a b"', 400, r"not valid JSON"),
    (b"[1, 2]", 400, r"a JSON list, not an object"),
    (b'{"text": "' + b"a " * 1500 + b'"}', 400, r"at most 2000 are read"),
    (b'{"text": "' + b"a" * 70000 + b'"}', 413, r"the body has 70012 bytes; at most 65536"),
])
def test_bad_requests_get_a_clear_message(server, raw, status, message):
  got_status, got = request(server.url, "/v1/reply", raw=raw)
  assert got_status == status
  assert list(got) == ["error"]
  assert re.search(message, got["error"]), got["error"]


def test_wrong_paths_methods_and_headers(server):
  assert request(server.url, "/v1/nothing")[0] == 404
  assert request(server.url, "/v1/reply")[0] == 405  # GET
  assert request(server.url, "/v1/info", {"text": "a"})[0] == 405  # POST
  host, port = server.url.split("//")[1].split(":")
  connection = http.client.HTTPConnection(host, int(port), timeout=30)
  connection.putrequest("POST", "/v1/reply")
  connection.endheaders()  # no Content-Length
  response = connection.getresponse()
  assert response.status == 411
  assert "Content-Length" in json.loads(response.read())["error"]
  connection = http.client.HTTPConnection(host, int(port), timeout=30)
  connection.request("PUT", "/v1/reply", body=b"{}")
  response = connection.getresponse()
  assert response.status == 501
  assert json.loads(response.read()) == {"error": "Unsupported method ('PUT')"}
  assert request(server.url, "/v1/health")[1]["status"] == "ok"  # still up


def test_twenty_clients_at_once(server):
  settings = [{}, {"beam_width": 3, "n_best": 2}]
  jobs = [dict({"text": TEXTS[i % len(TEXTS)]}, **settings[i % 2]) for i in range(20)]
  alone = [request(server.url, "/v1/reply", job) for job in jobs]
  with concurrent.futures.ThreadPoolExecutor(20) as pool:
    together = list(pool.map(lambda job: request(server.url, "/v1/reply", job), jobs))
  assert [status for status, _ in together] == [200] * 20
  texts = lambda answers: [[r["text"] for r in got["replies"]] for _, got in answers]
  scores = lambda answers: [[r["score"] for r in got["replies"]] for _, got in answers]
  assert texts(together) == texts(alone)
  for got, want in zip(scores(together), scores(alone)):  # batched: other float sums
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_the_page_in_chromium(server):
  """Headless Chromium opens the page, a line is typed, the reply appears, the screenshot
  is not blank."""
  executable = chromium.find()
  if executable is None:
    pytest.skip("Chromium was not found (install Debian's chromium package, or set $CHROMIUM "
                "to a Chrome or Chromium executable); the browser test needs it")
  browser = chromium.Browser(executable)
  try:
    browser.open(server.url + "/")
    browser.wait_for("document.getElementById('model').textContent.includes('step 150')")
    browser.evaluate("document.getElementById('message').focus()")
    browser.type_text("a b c d")
    browser.press_enter()
    reply = browser.wait_for(
        "(document.querySelector('.msg.bot.answered .text') || {}).textContent")
    assert reply == "d c b a"
    assert browser.evaluate("document.querySelector('.msg.me .text').textContent") == "a b c d"
    browser.evaluate("document.querySelector('.msg.bot.answered .tools button').click()")
    assert browser.wait_for("document.querySelectorAll('ol.nbest li').length") == 5
    browser.evaluate("[...document.querySelectorAll('.tools button')]"
                     ".find((b) => b.textContent === 'attention').click()")
    # One cell a source word (4) and output word (d c b a <EOS>).
    assert browser.wait_for("document.querySelectorAll('.heatmap rect').length") == 20
    png = browser.screenshot()
  finally:
    browser.close()
  from PIL import Image  # pylint: disable=import-outside-toplevel  (matplotlib's dependency)
  image = np.asarray(Image.open(io.BytesIO(png)).convert("L"), np.float32)
  assert image.shape[0] > 400 and image.shape[1] > 600
  assert image.std() > 10, "the screenshot is blank"
  assert (image < 60).mean() > 0.001  # dark pixels: text and the heat map's black cells


def test_a_taken_port_is_named(server, workdir):
  port = server.url.rsplit(":", 1)[1]
  result = subprocess.run(
      [sys.executable, os.path.join(ROOT, "train.py"), "--mode=serve", f"--workdir={workdir}",
       f"--port={port}"], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
  assert result.returncode == 1
  assert f"cannot listen on --host=127.0.0.1 --port={port}" in result.stderr
  assert "another program listens there" in result.stderr
  assert "Traceback" not in result.stderr


def _reply_or_refused(url, body):
  """The status of a POST /v1/reply, or "refused" where the connection was not taken."""
  try:
    return request(url, "/v1/reply", body)[0]
  except (urllib.error.URLError, ConnectionError):
    return "refused"


def test_sigint_answers_in_flight_and_exits_0(server):
  """Stopped mid-load, every request is answered 200 or never accepted; none is cut off."""
  body = {"text": "a b c d", "beam_width": 10, "n_best": 10}
  with concurrent.futures.ThreadPoolExecutor(8) as pool:
    pending = [pool.submit(_reply_or_refused, server.url, body) for _ in range(60)]
    pending[0].result()
    assert server.stop(signal.SIGINT) == 0, server.output
    statuses = [future.result() for future in pending]
  assert set(statuses) <= {200, "refused"}, statuses
  assert statuses.count(200) > 1
  assert "stopping (SIGINT): answering the requests in flight" in server.output
  assert server.lines[-1] == "stopped"


_IN_PROCESS = """
import json, os, signal, sys
from seq2seq import config as config_lib
from seq2seq.data import vocab as vocab_lib
from seq2seq.serve import server
found = {}
def log(line):
  print(line, flush=True)
  if line.startswith("serving on"):
    found["modules"] = sorted(m for m in sys.modules if m.split(".")[:2] in (
        ["seq2seq", "train"], ["seq2seq", "step"], ["seq2seq", "distributed"],
        ["seq2seq", "modes"]))
    found["tensorflow"] = "tensorflow" in sys.modules
    os.kill(os.getpid(), signal.SIGTERM)
status = server.serve(config_lib.replace(config_lib.RunConfig(), workdir=sys.argv[1], port=0),
                      log)
print(json.dumps(dict(found, status=status)))
"""


def test_serving_imports_no_training_code(server, workdir):
  del server  # its export is current: this one serves it as it is
  result = subprocess.run([sys.executable, "-c", _IN_PROCESS, workdir], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  found = json.loads(result.stdout.strip().splitlines()[-1])
  assert found == {"modules": [], "tensorflow": True, "status": 0}
  assert "(newer than every checkpoint)" in result.stdout


def test_a_newer_checkpoint_is_exported_again_and_sigterm_stops(workdir):
  newest = sorted(workdir_lib.checkpoint_files(workdir))[-1]
  later = time.time() + 5
  os.utime(newest, (later, later))  # as if training had written it after the export
  process = ServerProcess(workdir)
  try:
    url = process.wait_until_serving()
    assert f"is older than the checkpoint file {newest}" in process.output
    assert request(url, "/v1/reply", {"text": "a b c d"})[1]["replies"][0]["text"] == "d c b a"
    assert process.stop(signal.SIGTERM) == 0, process.output
  finally:
    process.kill()
  assert "stopping (SIGTERM)" in process.output and process.lines[-1] == "stopped"
