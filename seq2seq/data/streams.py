"""Reading plain or compressed files as numbered lines of bytes, in bounded memory.

A file is chosen a decompressor by its name: `.bz2`, `.xz` / `.lzma`, `.zst` (Reddit's dumps
are long-window zstd streams, so the window limit is 2^31), `.gz`; anything else is plain.
Concatenated streams (several bz2 streams or zstd frames in one file) are read to the end.

A truncated or corrupt compressed file raises `TruncatedStream` after every complete line
read before the damage has been yielded, so a caller keeps that part and moves on.
"""
import bz2
import lzma
import os
import zlib

_CHUNK = 1 << 20  # compressed bytes read at a time
ZSTD_MAX_WINDOW = 2 ** 31


class TruncatedStream(Exception):
  """A compressed file ended early or is corrupt; lines up to `last_line` were good."""

  def __init__(self, path, last_line, cause):
    super().__init__(f"{path}: truncated or corrupt compressed stream after line {last_line} "
                     f"({cause}); kept the {last_line} line(s) read before it")
    self.path = path
    self.last_line = last_line
    self.cause = str(cause)


def _zstd_decompressor():
  try:
    import zstandard  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise ImportError("reading .zst files needs the zstandard package: pip install zstandard"
                      ) from None
  return zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW).decompressobj()


def decompressor_factory(path):
  """A function returning a fresh decompressor object for `path`, or None for plain files."""
  name = path.lower()
  if name.endswith(".bz2"):
    return bz2.BZ2Decompressor
  if name.endswith((".xz", ".lzma")):
    return lzma.LZMADecompressor
  if name.endswith(".zst"):
    return _zstd_decompressor
  if name.endswith(".gz"):
    return lambda: zlib.decompressobj(16 + zlib.MAX_WBITS)
  return None


def _decompressed_chunks(f, factory, on_read):
  """Yields decompressed chunks of file object `f`; on_read(compressed, decompressed) counts."""
  if factory is None:
    while True:
      chunk = f.read(_CHUNK)
      if not chunk:
        return
      on_read(len(chunk), len(chunk))
      yield chunk
  decompressor, fed = factory(), False
  while True:
    raw = f.read(_CHUNK)
    if not raw:
      break
    on_read(len(raw), 0)
    while raw:
      out = decompressor.decompress(raw)
      fed = True
      if out:
        on_read(0, len(out))
        yield out
      if decompressor.eof:  # end of one stream / frame; another may follow
        raw = decompressor.unused_data
        decompressor, fed = factory(), False
      else:
        raw = b""
  if fed and not decompressor.eof:
    raise EOFError("the compressed stream ended before its end marker")


def read_lines(path, on_read=None):
  """Yields (line_number, line_bytes) of `path`, without the newline; numbers start at 1.

  Args:
    path: a plain or compressed file (see the module docstring).
    on_read: optional callback(compressed_bytes, decompressed_bytes) for progress.

  Raises:
    TruncatedStream: after the last good line, if the compressed data ends early or is corrupt.
    OSError: the file cannot be opened.
  """
  on_read = on_read or (lambda compressed, decompressed: None)
  factory = decompressor_factory(path)
  line_number = 0
  with open(path, "rb") as f:
    unfinished = b""
    try:
      for chunk in _decompressed_chunks(f, factory, on_read):
        lines = (unfinished + chunk).split(b"\n")
        unfinished = lines.pop()
        for line in lines:
          line_number += 1
          yield line_number, line
    except (EOFError, OSError, lzma.LZMAError, zlib.error, ValueError) as e:
      raise TruncatedStream(path, line_number, e) from None
    except Exception as e:  # zstandard.ZstdError, without importing zstandard here
      if type(e).__name__ != "ZstdError":
        raise
      raise TruncatedStream(path, line_number, e) from None
    if unfinished:
      line_number += 1
      yield line_number, unfinished


def read_blocks(path, on_read=None, block_bytes=1 << 20):
  """Yields (first_line_number, block) of `path`: `block` is bytes holding whole lines
  (newline-separated, without the final newline), about `block_bytes` long; numbers start at 1.

  The same lines as `read_lines`, in fewer, larger pieces, for handing to a worker process.
  A final line without a newline is its own last block.

  Raises:
    TruncatedStream: after the last good block, like `read_lines` (its `last_line` counts
      every complete line yielded before the damage).
  """
  on_read = on_read or (lambda compressed, decompressed: None)
  factory = decompressor_factory(path)
  next_line = 1
  with open(path, "rb") as f:
    pending = []  # decompressed chunks not yet yielded; only the last lacks a final newline
    size = 0
    try:
      for chunk in _decompressed_chunks(f, factory, on_read):
        pending.append(chunk)
        size += len(chunk)
        if size < block_bytes:
          continue
        data = b"".join(pending)
        end = data.rfind(b"\n")
        if end < 0:
          pending, size = [data], len(data)
          continue
        block = data[:end]
        rest = data[end + 1:]
        pending, size = ([rest], len(rest)) if rest else ([], 0)
        yield next_line, block
        next_line += block.count(b"\n") + 1
      error = None
    except (EOFError, OSError, lzma.LZMAError, zlib.error, ValueError) as e:
      error = e
    except Exception as e:  # zstandard.ZstdError, without importing zstandard here
      if type(e).__name__ != "ZstdError":
        raise
      error = e
    data = b"".join(pending)
    if error is not None:  # keep the complete lines before the damage, as read_lines does
      end = data.rfind(b"\n")
      if end >= 0:
        yield next_line, data[:end]
        next_line += data.count(b"\n", 0, end) + 1
      raise TruncatedStream(path, next_line - 1, error) from None
    if data:
      yield next_line, data[:-1] if data.endswith(b"\n") else data


def total_size(paths):
  """Bytes on disk of `paths` (compressed sizes), for progress and ETA."""
  return sum(os.path.getsize(p) for p in paths)
