"""Shared test setup: run from the repo root so `seq2seq`, `ops` and `train.py` import."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def pytest_collection_modifyitems(items):
  """tf.test.TestCase.test_session is a deprecated helper, not a test: don't collect it."""
  items[:] = [item for item in items if item.name != "test_session"]
