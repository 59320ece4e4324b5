"""--mode=serve's parts without a model: request checks, the worker's queue, stale exports."""
import json
import os
import re
import threading
import time

import pytest

from seq2seq import config as config_lib
from seq2seq.infer import export
from seq2seq.serve import exported
from seq2seq.serve import http_api
from seq2seq.serve import requests
from seq2seq.serve import worker as worker_lib
from tests import helpers


def _query(**fields):
  return requests.parse_query(dict({"text": "hello"}, **fields), max_beam_width=10,
                              has_attention=True)


def test_defaults_are_greedy_without_attention():
  assert _query() == requests.Query("hello", 1, 1, 0.0, 0, 0, False)


def test_sampling_draws_a_seed_unless_given():
  seeds = {_query(temperature=0.7).seed for _ in range(5)}
  assert len(seeds) > 1
  assert _query(temperature=0.7, seed=42).seed == 42
  assert _query(seed=42).seed == 0  # greedy: the seed draws nothing, so batches share it


def test_ints_are_numbers_for_temperature():
  assert _query(temperature=1).temperature == 1.0


@pytest.mark.parametrize("fields, message", [
    ({"text": ""}, r'"text" is empty'),
    ({"text": " \t\n"}, r'"text" is empty'),
    ({"text": None}, r'"text" must be a string, got null'),
    ({"text": ["a"]}, r'"text" must be a string'),
    ({"text": "a" * 2001}, r'"text" has 2001 characters; at most 2000'),
    ({"text": "a\x00b"}, r"NUL"),
    ({"beam_width": "5"}, r'"beam_width" must be an integer, got "5"'),
    ({"beam_width": 2.0}, r'"beam_width" must be an integer, got 2.0'),
    ({"beam_width": True}, r'"beam_width" must be an integer, got true'),
    ({"beam_width": 0}, r'"beam_width" must be in \[1, 10\]'),
    ({"beam_width": 11}, r'"beam_width" must be in \[1, 10\] \(the server\'s --max_beam_width\)'),
    ({"beam_width": 2, "n_best": 3}, r'"n_best": 3 is more than beam_width 2'),
    ({"n_best": 0}, r'"n_best": must be > 0'),
    ({"temperature": -1}, r'"temperature": must be >= 0'),
    ({"temperature": 0.5, "beam_width": 3}, r"exclude each other"),
    ({"top_k": 5}, r'"top_k": top-k applies to sampling: set temperature > 0'),
    ({"seed": -1}, r'"seed" must be in \[0, '),
    ({"attention": 1}, r'"attention" must be true or false'),
    ({"beam": 3}, r'unknown field "beam"; the fields are text, beam_width'),
])
def test_bad_fields_are_named(fields, message):
  body = dict({"text": "hello"}, **fields)
  with pytest.raises(requests.BadRequest, match=message):
    requests.parse_query(body, max_beam_width=10, has_attention=True)


def test_attention_of_a_model_without_it_is_refused():
  with pytest.raises(requests.BadRequest, match="this model has no attention"):
    requests.parse_query({"text": "hi", "attention": True}, 10, has_attention=False)


def test_missing_text_is_named():
  with pytest.raises(requests.BadRequest, match=r'"text" is missing'):
    requests.parse_query({}, 10, True)


@pytest.mark.parametrize("body, message", [
    (b'{"text": "a"', r"not valid JSON: Expecting ',' delimiter at line 1 column 13"),
    (b"", r"not valid JSON"),
    (b'["a"]', r"the body is a JSON list, not an object"),
    (b'{"text": "a", "temperature": NaN}', r"holds NaN, which is not JSON"),
    (b'{"temperature": Infinity}', r"holds Infinity"),
    (b'{"text": "caf\xe9"}', r"not UTF-8 text \(invalid continuation byte at byte 13\)"),
])
def test_bodies_that_are_not_a_json_object_are_named(body, message):
  with pytest.raises(requests.BadRequest, match=message):
    requests.parse_json(body)


class _Slow:
  """A batch function that records its batches and waits for `release` before answering."""

  def __init__(self):
    self.batches, self.release = [], threading.Event()

  def __call__(self, queries):
    self.batches.append([q.text for q in queries])
    self.release.wait(10)
    if any(q.text == "fail" for q in queries):
      raise RuntimeError("model failure")
    return [{"echo": q.text} for q in queries]


def _submit_in_thread(worker, query, results):
  def run():
    try:
      results[query.text] = worker.submit(query)
    except Exception as e:  # pylint: disable=broad-except
      results[query.text] = e
  thread = threading.Thread(target=run)
  thread.start()
  return thread


def _wait_until(condition):
  deadline = time.monotonic() + 10
  while not condition():
    assert time.monotonic() < deadline
    time.sleep(0.01)


def _busy_worker(max_queue, *queries):
  """(answer, worker, results, threads): the worker busy with "first", `queries` waiting."""
  answer = _Slow()
  worker = worker_lib.Worker(answer, max_queue=max_queue, timeout=10, log=helpers.quiet)
  results = {}
  threads = [_submit_in_thread(worker, _query(text="first"), results)]
  _wait_until(lambda: answer.batches)  # the worker is busy with "first"
  threads += [_submit_in_thread(worker, query, results) for query in queries]
  _wait_until(lambda: worker.waiting == len(queries))
  return answer, worker, results, threads


def test_full_queue_is_busy_and_waiting_requests_share_a_batch():
  answer, worker, results, threads = _busy_worker(
      2, _query(text="second"), _query(text="third"))
  with pytest.raises(worker_lib.Busy, match="2 requests are waiting"):
    worker.submit(_query(text="fourth"))
  answer.release.set()
  for thread in threads:
    thread.join(10)
  assert results == {t: {"echo": t} for t in ("first", "second", "third")}
  assert answer.batches == [["first"], ["second", "third"]]
  worker.stop(10)


def test_batches_hold_requests_of_one_setting_only():
  answer, worker, _, threads = _busy_worker(
      8, _query(text="beam", beam_width=2), _query(text="greedy"))
  answer.release.set()
  for thread in threads:
    thread.join(10)
  assert sorted(map(tuple, answer.batches)) == [("beam",), ("first",), ("greedy",)]
  worker.stop(10)


def test_a_late_request_times_out_and_is_skipped():
  answer = _Slow()
  worker = worker_lib.Worker(answer, max_queue=4, timeout=0.3, log=helpers.quiet)
  results = {}
  first = _submit_in_thread(worker, _query(text="first"), results)
  _wait_until(lambda: answer.batches)
  with pytest.raises(worker_lib.TimedOut, match=r"within the server's limit of 0.3 s"):
    worker.submit(_query(text="late"))
  answer.release.set()
  first.join(10)
  worker.stop(10)
  assert answer.batches == [["first"]]  # "late" was answered 504 and never run


def test_a_failing_batch_fails_its_requests_only():
  answer, lines = _Slow(), []
  answer.release.set()
  worker = worker_lib.Worker(answer, max_queue=4, timeout=10, log=lines.append)
  with pytest.raises(RuntimeError, match="model failure"):
    worker.submit(_query(text="fail"))
  assert worker.submit(_query(text="fine")) == {"echo": "fine"}
  assert lines == ["error: decoding 1 request(s) failed: RuntimeError: model failure"]
  worker.stop(10)


def test_stop_answers_what_is_queued():
  answer = _Slow()
  worker = worker_lib.Worker(answer, max_queue=4, timeout=10, log=helpers.quiet)
  results = {}
  threads = [_submit_in_thread(worker, _query(text=t), results) for t in ("a", "b")]
  _wait_until(lambda: sum(map(len, answer.batches)) + worker.waiting >= 2)  # both in one batch, too
  answer.release.set()
  worker.stop(10)
  for thread in threads:
    thread.join(10)
  assert results == {"a": {"echo": "a"}, "b": {"echo": "b"}}


def _fake_export(workdir, **info):
  folder = os.path.join(workdir, "export")
  os.makedirs(os.path.join(folder, "assets.extra"))
  with open(os.path.join(folder, export.INFO_FILE), "w", encoding="utf-8") as f:
    json.dump(dict({"format": export.INFO_FORMAT, "checkpoint": "auto",
                    "average_checkpoints": 1}, **info), f)
  return folder


def _checkpoint_file(workdir, name, age_s):
  os.makedirs(os.path.join(workdir, "checkpoints"), exist_ok=True)
  path = os.path.join(workdir, "checkpoints", name)
  with open(path, "w", encoding="utf-8"):
    pass
  stamp = time.time() - age_s
  os.utime(path, (stamp, stamp))


def test_stale_reason(tmp_path):
  workdir = str(tmp_path / "run")
  run_config = helpers.tiny_config(workdir, "pairs.tsv")
  assert exported.stale_reason(run_config) == f"there is no export in {workdir}/export"
  _checkpoint_file(workdir, "ckpt-1.index", age_s=100)
  folder = _fake_export(workdir)
  assert exported.stale_reason(run_config) == ""
  assert "--checkpoint=auto --average_checkpoints=1" in exported.stale_reason(
      config_lib.replace(run_config, checkpoint="latest"))
  _checkpoint_file(workdir, "ckpt-2.index", age_s=-100)  # written after the export
  assert exported.stale_reason(run_config) == (
      f"{folder} is older than the checkpoint file {workdir}/checkpoints/ckpt-2.index")
  os.remove(os.path.join(folder, export.INFO_FILE))
  assert "is not an export of this version" in exported.stale_reason(run_config)


def test_the_page_is_one_file_with_no_external_assets():
  page = http_api.chat_page().decode("utf-8")
  assert page.startswith("<!DOCTYPE html>")
  assert not re.search(r"""(src|href)\s*=|@import|url\(|https?://(?!www\.w3\.org/2000/svg)""",
                       page), "the page must work offline: everything inline"
  for call in ("/v1/info", "/v1/reply"):
    assert f'"{call}"' in page
