"""The benchmark workloads: their sizes, FLOPs and synthetic inputs, without TensorFlow.

`benchmarks.train_step` (TensorFlow) and `benchmarks.torch_peers` (PyTorch, in a process of
its own) read the same definitions here, so both time the same shapes on the same batch.

FLOPs per step (forward + backward = 3x forward, 2 FLOPs per multiply-add):
    6 * B * T * (sum over layers of 4H(I + H)  +  H * V)
with the recurrent part counted twice for seq2seq (encoder and decoder of T steps each).
For the attention workload (`attention_flops`) the encoder is bidirectional (two directions,
upper layers reading 2H), the decoder's first layer reads E + H (input feeding), and each
decoder step adds the Luong scores and context over T source steps (2 * 2 * T * 2H), the
attentional layer (3H * H) and, once per source step, the keys (2H * H). A workload trained
with a sampled softmax of S candidates (`NUM_SAMPLED`) scores S + 1 columns a token, so
V is replaced by S + 1.
"""
import collections

import numpy as np

from seq2seq.data import batches

WORKLOADS = {
    # name: (kind, B, T, E, H, V, layers)
    "seed_b20": ("seq2seq", 20, 20, 1024, 1024, 20000, 2),
    "seed_b256": ("seq2seq", 256, 20, 1024, 1024, 20000, 2),
    "ptb_large": ("lm", 20, 35, 1500, 1500, 10000, 2),
    "ptb_large_b128": ("lm", 128, 35, 1500, 1500, 10000, 2),
    "cpu_small": ("seq2seq", 32, 20, 256, 256, 8000, 2),
    # configs/multi30k_attention.flags: bidirectional encoder, Luong attention, input feeding.
    "m30k_attention": ("attention", 64, 20, 256, 512, 14000, 2),
    # A Reddit chatbot's vocabulary, trained as `--max_vocab=100000 --num_sampled=1024`.
    "reddit_100k": ("seq2seq", 256, 20, 1024, 1024, 100000, 2),
}
# The training loss of a workload: a sampled softmax over this many candidates
# (`ops.losses.sampled_sequence_loss`, train.py --num_sampled); the others the full softmax.
NUM_SAMPLED = {"reddit_100k": 1024}
# The PyTorch peers (`benchmarks.torch_peers`), name: (autocast to bfloat16, TF32 allowed).
TORCH_VARIANTS = {"torch_fp32": (False, False), "torch_tf32": (False, True),
                  "torch_bf16": (True, True)}
SIZES = ("batch", "steps", "embed", "hidden", "vocab", "layers")  # WORKLOADS' B, T, E, H, V, layers
LMWindow = collections.namedtuple("LMWindow", ["inputs", "targets"])


class OverrideError(ValueError):
  """A --override pair that is not SIZE=N."""


def parse_override(pairs):
  """['batch=4', 'hidden=32'] -> {'batch': 4, 'hidden': 32}; OverrideError on a bad pair."""
  sizes = {}
  for pair in pairs:
    name, _, value = pair.partition("=")
    if name not in SIZES or not value.isdigit() or int(value) <= 0:
      raise OverrideError(f"--override: {pair!r} is not SIZE=N with SIZE among "
                          f"{', '.join(SIZES)} and N > 0")
    sizes[name] = int(value)
  return sizes


def sizes(workload, override=()):
  """(kind, B, T, E, H, V, layers) of `workload`, with the --override pairs applied."""
  kind, *values = WORKLOADS[workload]
  replaced = parse_override(override)
  return (kind, *(replaced.get(name, value) for name, value in zip(SIZES, values)))


def num_sampled(workload, vocab):
  """The sampled-softmax candidates of `workload` (0: the full softmax), at most V / 2 so that
  a workload shrunk by --override still samples fewer candidates than its vocabulary."""
  return min(NUM_SAMPLED.get(workload, 0), vocab // 2)


def attention_flops(batch, steps, embed, hidden, vocab, layers):
  """FLOPs of one train step of the attention workload (module docstring)."""
  lstm = lambda inputs: 4 * hidden * (inputs + hidden)
  encoder = 2 * sum(lstm(embed if layer == 0 else 2 * hidden) for layer in range(layers))
  decoder = sum(lstm(embed + hidden if layer == 0 else hidden) for layer in range(layers))
  attention = 2 * 2 * steps * 2 * hidden + 3 * hidden * hidden + 2 * hidden * hidden
  return 6 * batch * steps * (encoder + decoder + attention + hidden * vocab)


def model_flops(kind, batch, steps, embed, hidden, vocab, layers, sampled=0):
  """FLOPs of one train step, by the formula in the module docstring; `sampled` is the
  number of sampled-softmax candidates (0: the full softmax)."""
  scored = sampled + 1 if sampled else vocab
  if kind == "attention":
    return attention_flops(batch, steps, embed, hidden, scored, layers)
  recurrent = sum(4 * hidden * ((embed if layer == 0 else hidden) + hidden)
                  for layer in range(layers))
  if kind == "seq2seq":
    recurrent *= 2
  return 6 * batch * steps * (recurrent + hidden * scored)


def synthetic_batch(batch, steps, vocab, seed=0):
  """A fixed padded batch: lengths uniform in [T/2, T], ids uniform over the real words."""
  rng = np.random.default_rng(seed)
  lengths = rng.integers(steps // 2, steps + 1, size=batch)
  examples = [(list(rng.integers(4, vocab, n)), list(rng.integers(4, vocab, m)))
              for n, m in zip(lengths, rng.permutation(lengths))]
  # The seq2seq decoder runs T + 1 steps (<GO> .. / .. <EOS>); trim so both sides have T.
  return batches.pad_batch([(s, t[:steps - 1]) for s, t in examples], steps)


def synthetic_window(batch, steps, vocab, seed=0):
  """A fixed LM window: inputs [B, T] uniform over the real words, targets shifted by one."""
  ids = np.random.default_rng(seed).integers(4, vocab, (batch, steps + 1)).astype(np.int32)
  return LMWindow(ids[:, :-1], ids[:, 1:])
