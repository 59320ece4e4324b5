"""The body of `POST /v1/reply`, checked: every mistake is a `BadRequest` naming the field.

    {"text": "hello", "beam_width": 5, "n_best": 3, "temperature": 0.0, "top_k": 0,
     "seed": 42, "attention": false}

Only "text" is required. beam_width > 1 runs beam search and returns its n_best replies;
temperature > 0 samples one reply (among the top_k most likely words, 0 = all), drawing with
"seed" (random when absent, and returned so that a reply can be drawn again); "attention"
asks for the alignments behind each reply of a model with attention.
"""
import collections
import json
import random

from seq2seq import config as config_lib

MAX_BODY_BYTES = 64 * 1024  # a larger body is refused unread (413)
MAX_TEXT_CHARS = 2000  # far beyond what a model trained on sentences reads (it cuts the rest)
MAX_SEED = 2 ** 63 - 1

# One checked request. `key` is what requests must share to be decoded in one batch.
Query = collections.namedtuple(
    "Query", ["text", "beam_width", "n_best", "temperature", "top_k", "seed", "attention"])
_FIELDS = {"text": str, "beam_width": int, "n_best": int, "temperature": float, "top_k": int,
           "seed": int, "attention": bool}
_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


class BadRequest(ValueError):
  """A request the server will not run; the message says what to change (status 400)."""

  def __init__(self, message, status=400):
    super().__init__(message)
    self.status = status


def batch_key(query):
  """The settings a batch shares: everything but the text."""
  return query[1:]


def _reject_constant(name):
  raise BadRequest(f"the body holds {name}, which is not JSON; send finite numbers")


def parse_json(body):
  """bytes -> the JSON object they hold. Raises BadRequest."""
  try:
    value = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
  except UnicodeDecodeError as e:
    raise BadRequest(f"the body is not UTF-8 text ({e.reason} at byte {e.start})") from None
  except json.JSONDecodeError as e:
    raise BadRequest(f"the body is not valid JSON: {e.msg} at line {e.lineno} column "
                     f"{e.colno}; send an object such as {{\"text\": \"hello\"}}") from None
  if not isinstance(value, dict):
    raise BadRequest(f"the body is a JSON {type(value).__name__}, not an object; send an "
                     "object such as {\"text\": \"hello\"}")
  return value


def _typed(body, name, default):
  """body[name] checked against its type (ints are not bools; a float field takes ints)."""
  value = body.get(name, default)
  expected = _FIELDS[name]
  fits = (isinstance(value, (int, float)) and not isinstance(value, bool)
          if expected is float else type(value) is expected)
  if not fits:
    raise BadRequest(f'"{name}" must be {_TYPE_NAMES[expected]}, got {json.dumps(value)}')
  return value


def _text(body):
  if "text" not in body:
    raise BadRequest('"text" is missing: send {"text": "your line"}')
  text = _typed(body, "text", "")
  if not text.strip():
    raise BadRequest('"text" is empty: type a line with at least one word')
  if len(text) > MAX_TEXT_CHARS:
    raise BadRequest(f'"text" has {len(text)} characters; at most {MAX_TEXT_CHARS} are read '
                     "(the model reads the first words only): send a shorter line")
  if "\x00" in text:
    raise BadRequest('"text" holds a NUL character (\\u0000); send plain text')
  return text


def parse_query(body, max_beam_width, has_attention):
  """The `Query` of a parsed body (`parse_json`).

  Raises:
    BadRequest: an unknown field, a value of the wrong type or out of range, settings that
      exclude each other (as for the flags: `config.DecodeConfig`), or attention asked of a
      model without it or of beam search.
  """
  unknown = sorted(set(body) - set(_FIELDS))
  if unknown:
    raise BadRequest(f'unknown field "{unknown[0]}"; the fields are {", ".join(_FIELDS)}')
  text = _text(body)
  beam_width, n_best = _typed(body, "beam_width", 1), _typed(body, "n_best", 1)
  temperature, top_k = float(_typed(body, "temperature", 0.0)), _typed(body, "top_k", 0)
  if not 1 <= beam_width <= max_beam_width:
    raise BadRequest(f'"beam_width" must be in [1, {max_beam_width}] (the server\'s '
                     f"--max_beam_width), got {beam_width}")
  try:  # the combinations the flags refuse, refused alike
    config_lib.DecodeConfig(beam_width=beam_width, n_best=n_best, temperature=temperature,
                            top_k=top_k)
  except config_lib.ConfigError as e:
    raise BadRequest(f'"{e.field}": ' + str(e).split(": ", 1)[1].replace("--", "")) from None
  seed = _typed(body, "seed", random.randrange(2 ** 31) if temperature > 0 else 0)
  if not 0 <= seed <= MAX_SEED:
    raise BadRequest(f'"seed" must be in [0, {MAX_SEED}], got {seed}')
  if temperature == 0:
    seed = 0  # greedy and beam search draw nothing: one batch serves every seed
  attention = _typed(body, "attention", False)
  if attention and not has_attention:
    raise BadRequest('"attention": this model has no attention (or is an ensemble), so there '
                     "is none to show; leave it out")
  return Query(text, beam_width, n_best, temperature, top_k, seed, attention)
