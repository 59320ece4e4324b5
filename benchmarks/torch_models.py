"""PyTorch peers of the engine's benchmark models, written as PyTorch users write them.

Each computes what the engine computes (`seq2seq.models`, `seq2seq.step.train_step`) and can
start from the engine's weights (`load_engine`), so a test checks that both do the same work:

- `Seq2SeqPeer`: cuDNN `nn.LSTM` encoder and decoder stacks over a shared `nn.Embedding`, the
  decoder starting from the encoder's final states (read at each source length through a
  packed sequence), dropout on the embeddings and on every layer's output.
- `AttentionPeer`, as OpenNMT-py writes it: a cuDNN bidirectional `nn.LSTM` encoder, its final
  states bridged to the decoder's size (the engine's `Bridge`), and a decoder loop over time of
  an `nn.LSTMCell` stack with Luong "general" attention and input feeding (OpenNMT-py's
  `InputFeedRNNDecoder`, `StackedLSTM` and `GlobalAttention`).
- `LanguageModelPeer`: one `nn.LSTM` stack whose final state the caller carries into the next
  window.

The losses are `sequence_loss` (the weighted mean cross entropy, PAD weighted 0) and
`sampled_sequence_loss` (`ops.losses.sampled_sequence_loss`: S shared log-uniform candidates,
accidental hits removed, log expected counts subtracted). Shapes: B batch, T time, E embedding,
H hidden, V vocabulary, L layers.

The engine's LSTM (`ops.cell_math.lstm_step`) has one bias and gate blocks i, g, f, o with the
forget bias added at run time; `nn.LSTM` has two biases and blocks i, f, g, o. `lstm_parameters`
converts; the engine's bias (forget bias included) goes to `bias_ih` and `bias_hh` starts at 0.
"""
import dataclasses
import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional
from torch.nn.utils import rnn as rnn_utils


@dataclasses.dataclass
class PeerBatch:
  """A seq2seq batch on the device, rows sorted by decreasing source length, as OpenNMT-py's
  iterator gives them (`sort_within_batch`), so the encoder packs it without a host sync.

  source [B, Ts], decoder_input and target [B, Tt]: int64 ids; target_weight [B, Tt] float32;
  source_length [B] int64 on the device; host_length [B] int64 on the host (for packing).
  """
  source: torch.Tensor
  source_length: torch.Tensor
  host_length: torch.Tensor
  decoder_input: torch.Tensor
  target: torch.Tensor
  target_weight: torch.Tensor


def peer_batch(batch, device):
  """A `seq2seq.data.batches.Batch` of NumPy arrays -> `PeerBatch` on `device`."""
  order = np.argsort(-batch.source_length, kind="stable")
  ids = lambda array: torch.as_tensor(np.asarray(array)[order], dtype=torch.int64, device=device)
  return PeerBatch(source=ids(batch.source), source_length=ids(batch.source_length),
                   host_length=torch.as_tensor(batch.source_length[order], dtype=torch.int64),
                   decoder_input=ids(batch.decoder_input), target=ids(batch.target),
                   target_weight=torch.as_tensor(batch.target_weight[order], device=device))


def lstm_parameters(w_input, w_hidden, bias, forget_bias=1.0):
  """The engine's LSTM weights -> (weight_ih [4H, I], weight_hh [4H, H], bias_ih [4H],
  bias_hh [4H]) of `nn.LSTM` / `nn.LSTMCell`.

  Args:
    w_input: [I, 4H], w_hidden: [H, 4H], bias: [4H], gate blocks i, g, f, o (NumPy).
    forget_bias: added to the forget gate's pre-activation by the engine at run time.
  """
  def reorder(array):  # blocks i, g, f, o -> i, f, g, o along the last axis
    i, g, f, o = np.split(np.asarray(array, np.float32), 4, axis=-1)
    return np.concatenate([i, f, g, o], axis=-1)
  bias = np.asarray(bias, np.float32).copy()
  hidden = bias.shape[0] // 4
  bias[2 * hidden:3 * hidden] += forget_bias  # the f block of i, g, f, o
  return (reorder(w_input).T, reorder(w_hidden).T, reorder(bias), np.zeros_like(bias))


def _copy(parameter, value):
  with torch.no_grad():
    parameter.copy_(torch.as_tensor(np.ascontiguousarray(value), dtype=parameter.dtype))


def load_lstm(module, layers, forget_bias, suffix=""):
  """Copies engine cells' weights [(w_input, w_hidden, bias)] into `nn.LSTM` layers
  (`suffix` "_reverse" for the backward direction) or, with `suffix` None, into a list of
  `nn.LSTMCell`s."""
  for layer, weights in enumerate(layers):
    names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    values = lstm_parameters(*weights, forget_bias)
    for name, value in zip(names, values):
      if suffix is None:
        _copy(getattr(module[layer], name), value)
      else:
        _copy(getattr(module, f"{name}_l{layer}{suffix}"), value)


class Projected(nn.Module):
  """What the peers share: the embedding, dropout and the softmax projection."""

  def __init__(self, vocab, embed, hidden, keep_prob):
    super().__init__()
    self.embedding = nn.Embedding(vocab, embed)
    self.dropout = nn.Dropout(1.0 - keep_prob)
    self.projection = nn.Linear(hidden, vocab)

  def load_shared(self, weights):
    """The engine's table [V, E], projection kernel [H, V] and bias [V]."""
    _copy(self.embedding.weight, weights["embedding"])
    _copy(self.projection.weight, np.asarray(weights["projection_kernel"]).T)
    _copy(self.projection.bias, weights["projection_bias"])


class Seq2SeqPeer(Projected):
  """The seq2seq workloads' model; `forward(batch)` -> decoder outputs [B, Tt, H]."""

  def __init__(self, vocab, embed, hidden, layers, keep_prob=1.0):
    super().__init__(vocab, embed, hidden, keep_prob)
    stack = lambda: nn.LSTM(embed, hidden, layers, batch_first=True, dropout=1.0 - keep_prob)
    self.encoder, self.decoder = stack(), stack()

  def forward(self, batch):
    source = self.dropout(self.embedding(batch.source))
    packed = rnn_utils.pack_padded_sequence(source, batch.host_length, batch_first=True)
    _, state = self.encoder(packed)  # each [L, B, H], read at each row's length
    outputs, _ = self.decoder(self.dropout(self.embedding(batch.decoder_input)), state)
    return self.dropout(outputs)

  def load_engine(self, weights):
    self.load_shared(weights)
    load_lstm(self.encoder, weights["encoder"], weights["forget_bias"])
    load_lstm(self.decoder, weights["decoder"], weights["forget_bias"])


class LuongAttention(nn.Module):
  """OpenNMT-py's `GlobalAttention` with `attn_type="general"`, for one query step.

      score[b, s] = h W_in . m[b, s]; a = softmax over the valid s; c = sum_s a m
      output = tanh([c; h] W_out)          (no biases, as OpenNMT-py's "general")
  """

  def __init__(self, query_size, memory_size, output_size):
    super().__init__()
    self.linear_in = nn.Linear(query_size, memory_size, bias=False)
    self.linear_out = nn.Linear(memory_size + query_size, output_size, bias=False)

  def forward(self, query, memory, mask):
    """query [B, Q], memory [B, Ts, M], mask [B, Ts] bool (True: valid) -> [B, A]."""
    scores = torch.bmm(memory, self.linear_in(query).unsqueeze(2)).squeeze(2)
    alignments = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
    context = torch.bmm(alignments.unsqueeze(1).to(memory.dtype), memory).squeeze(1)
    return torch.tanh(self.linear_out(torch.cat([context, query.to(context.dtype)], -1)))

  def load_engine(self, memory_kernel, output_kernel):
    """The engine's `Attention` ("luong"): memory kernel [M, Q] (keys = m W_a, so the score
    is h W_a^T m), output kernel [Q + M, A] over [h; c]."""
    _copy(self.linear_in.weight, memory_kernel)
    query_size = self.linear_in.in_features
    output_kernel = np.asarray(output_kernel)
    _copy(self.linear_out.weight,
          np.concatenate([output_kernel[query_size:], output_kernel[:query_size]]).T)


class AttentionPeer(Projected):
  """The `m30k_attention` model as OpenNMT-py writes it; `forward(batch)` -> [B, Tt, H]."""

  def __init__(self, vocab, embed, hidden, layers, keep_prob=1.0):
    super().__init__(vocab, embed, hidden, keep_prob)
    self.encoder = nn.LSTM(embed, hidden, layers, batch_first=True, bidirectional=True,
                           dropout=1.0 - keep_prob)
    # The engine's bridge: per layer and state field (h, c), [h_fw; h_bw] W + b.
    self.bridge = nn.ModuleList(nn.ModuleList(nn.Linear(2 * hidden, hidden) for _ in range(2))
                                for _ in range(layers))
    self.decoder = nn.ModuleList(nn.LSTMCell(embed + hidden if layer == 0 else hidden, hidden)
                                 for layer in range(layers))
    self.attention = LuongAttention(hidden, 2 * hidden, hidden)

  def encode(self, batch):
    """-> (memory [B, Ts, 2H], zero past each length; the decoder's [(h, c)] per layer)."""
    source = self.dropout(self.embedding(batch.source))
    packed = rnn_utils.pack_padded_sequence(source, batch.host_length, batch_first=True)
    outputs, (hidden, cell) = self.encoder(packed)
    memory, _ = rnn_utils.pad_packed_sequence(outputs, batch_first=True,
                                              total_length=batch.source.shape[1])
    both = lambda state, layer: torch.cat([state[2 * layer], state[2 * layer + 1]], -1)
    state = [(bridge[0](both(hidden, layer)), bridge[1](both(cell, layer)))
             for layer, bridge in enumerate(self.bridge)]
    return self.dropout(memory), state

  def forward(self, batch):
    memory, state = self.encode(batch)
    steps = memory.shape[1]
    mask = torch.arange(steps, device=memory.device)[None, :] < batch.source_length[:, None]
    feed = memory.new_zeros(memory.shape[0], self.attention.linear_out.out_features)
    outputs = []
    for inputs in self.embedding(batch.decoder_input).unbind(1):
      layer_input = self.dropout(torch.cat([inputs, feed.to(inputs.dtype)], -1))
      next_state = []
      for cell, (h, c) in zip(self.decoder, state):
        h, c = cell(layer_input, (h, c))
        next_state.append((h, c))
        layer_input = self.dropout(h)
      state = next_state
      feed = self.attention(layer_input, memory, mask)
      outputs.append(feed)
    return self.dropout(torch.stack(outputs, 1))

  def load_engine(self, weights):
    self.load_shared(weights)
    load_lstm(self.encoder, weights["encoder"], weights["forget_bias"])
    load_lstm(self.encoder, weights["encoder_backward"], weights["forget_bias"], "_reverse")
    load_lstm(self.decoder, weights["decoder"], weights["forget_bias"], None)
    for layer_bridge, layer_weights in zip(self.bridge, weights["bridge"]):
      for linear, (kernel, bias) in zip(layer_bridge, layer_weights):
        _copy(linear.weight, np.asarray(kernel).T)
        _copy(linear.bias, bias)
    self.attention.load_engine(weights["attention_memory_kernel"],
                               weights["attention_output_kernel"])


class LanguageModelPeer(Projected):
  """The LM workloads' model; `forward(inputs [B, T], state)` -> (outputs [B, T, H], final
  state ([L, B, H], [L, B, H])), which the caller detaches and carries into the next window."""

  def __init__(self, vocab, embed, hidden, layers, keep_prob=1.0):
    super().__init__(vocab, embed, hidden, keep_prob)
    self.stack = nn.LSTM(embed, hidden, layers, batch_first=True, dropout=1.0 - keep_prob)

  def forward(self, inputs, state):
    outputs, state = self.stack(self.dropout(self.embedding(inputs)), state)
    return self.dropout(outputs), state

  def load_engine(self, weights):
    self.load_shared(weights)
    load_lstm(self.stack, weights["encoder"], weights["forget_bias"])


def sequence_loss(logits, targets, weights):
  """sum(w * xent) / sum(w) of logits [B, T, V] (cross entropy in float32), targets [B, T],
  weights [B, T]: the mean loss per real target token."""
  crossent = functional.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(),
                                      reduction="none")
  weights = weights.flatten().float()
  return (crossent * weights).sum() / weights.sum()


def log_uniform_sample(num_sampled, vocab, device):
  """[S] int64 ids from P(k) = log((k + 2) / (k + 1)) / log(V + 1), by the inverse CDF, as
  `ops.losses.log_uniform_sample` draws them (another generator, the same law)."""
  u = torch.rand(num_sampled, device=device)
  ids = torch.floor(torch.exp(u * math.log(vocab + 1.0))).long() - 1
  return ids.clamp(0, vocab - 1)


def log_expected_count(ids, num_sampled, vocab):
  """log(S P(k)) of each id under `log_uniform_sample`'s law."""
  k = ids.float()
  return (torch.log(torch.log1p(1.0 / (k + 1.0))) + math.log(num_sampled)
          - math.log(math.log(vocab + 1.0)))


def sampled_sequence_loss(outputs, targets, weights, kernel, bias, sampled):
  """The engine's sampled softmax loss (`ops.losses.sampled_sequence_loss`) given its [S]
  candidates `sampled`: outputs [B, T, H], targets and weights [B, T], the projection's
  `nn.Linear` weight [V, H] and bias [V]. Only [B*T, S] candidate logits are formed."""
  vocab, num_sampled = kernel.shape[0], sampled.shape[0]
  flat, labels = outputs.flatten(0, 1), targets.flatten()
  columns = functional.embedding(torch.cat([labels, sampled]), kernel).to(flat.dtype)
  true_columns, sampled_columns = columns[:labels.shape[0]], columns[labels.shape[0]:]
  true_logits = ((flat * true_columns).sum(-1).float() + bias[labels].float()
                 - log_expected_count(labels, num_sampled, vocab))
  sampled_logits = ((flat @ sampled_columns.T).float() + bias[sampled].float()
                    - log_expected_count(sampled, num_sampled, vocab)[None, :])
  hits = labels[:, None] == sampled[None, :]
  sampled_logits = sampled_logits.masked_fill(hits, torch.finfo(torch.float32).min)
  logits = torch.cat([true_logits[:, None], sampled_logits], 1)  # the label is class 0
  crossent = functional.cross_entropy(logits, torch.zeros_like(labels), reduction="none")
  weights = weights.flatten().float()
  return (crossent * weights).sum() / weights.sum()
