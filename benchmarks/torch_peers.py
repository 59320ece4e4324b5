"""Times PyTorch peers of the train-step workloads, as `benchmarks.train_step` times the engine.

    python -m benchmarks.torch_peers --workloads=seed_b256 --variants=torch_bf16,torch_tf32
    python -m benchmarks.torch_peers --workloads=m30k_attention --steps=3 \
        --override=batch=4,hidden=32,embed=32,vocab=200          # a CPU smoke test

`benchmarks.train_step --variants=...,torch_bf16` runs this in a process of its own (TensorFlow
and PyTorch in one process would share one GPU's memory) and puts its rows in its table.

Each step is the engine's: the model of `benchmarks.torch_models` (the same sizes, dropout
places and loss), global-norm clipping at 5 and Adam at 1e-3 (`fused=True` on CUDA), on the
batch of `benchmarks.workloads` (rows sorted by source length, as OpenNMT-py's iterator gives
them). Differences a PyTorch user gets by default: the embedding's Adam update is dense (the
engine updates the looked-up rows only), `nn.LSTM` has two biases (each counted in the norm),
and a step with a non-finite loss is applied (the engine skips it).

Variants: `torch_fp32` (TF32 off), `torch_tf32` (float32 weights, TF32 matmuls and cuDNN), and
`torch_bf16` (`torch.autocast` to bfloat16, TF32 for what stays float32). Each prints one JSON
line with the fields of the engine's rows: the first step, the median of --steps steps each
waited for (`loss.item()`), the mean of --steps more issued back to back with one wait at the
end, tokens and positions a second, the model's TFLOP/s, and the peak memory.
"""
import argparse
import json
import resource
import statistics
import sys
import time

import torch
from torch import nn

from benchmarks import torch_models
from benchmarks import workloads

VARIANTS = workloads.TORCH_VARIANTS  # name: (autocast to bfloat16, TF32 allowed)
MAX_GRAD_NORM = 5.0
LEARNING_RATE = 1e-3
MODELS = {"seq2seq": torch_models.Seq2SeqPeer, "attention": torch_models.AttentionPeer,
          "lm": torch_models.LanguageModelPeer}


def build(workload, keep_prob, device, override=()):
  """(model on `device`, loss_fn(inputs) -> float32 loss, the step's inputs, real target
  tokens a step) of `workload`. An LM's loss_fn carries its final state into the next call."""
  kind, batch, steps, embed, hidden, vocab, layers = workloads.sizes(workload, override)
  model = MODELS[kind](vocab, embed, hidden, layers, keep_prob).to(device)
  if kind == "lm":
    window = workloads.synthetic_window(batch, steps, vocab)
    inputs = [torch.as_tensor(x, dtype=torch.int64, device=device) for x in window]
    return model, lm_loss(model, batch, hidden, layers, device), inputs, float(batch * steps)
  inputs = torch_models.peer_batch(workloads.synthetic_batch(batch, steps, vocab), device)
  sampled = workloads.num_sampled(workload, vocab)
  return (model, seq2seq_loss(model, sampled), inputs,
          float(inputs.target_weight.sum().item()))


def seq2seq_loss(model, sampled=0, candidates=None):
  """loss_fn(batch) of a seq2seq peer: the full softmax, or the sampled softmax over
  `sampled` fresh log-uniform candidates a step (or the fixed [S] `candidates`)."""
  def loss_fn(batch):
    outputs = model(batch)
    if not sampled:
      return torch_models.sequence_loss(model.projection(outputs), batch.target,
                                        batch.target_weight)
    ids = candidates if candidates is not None else torch_models.log_uniform_sample(
        sampled, model.projection.out_features, outputs.device)
    return torch_models.sampled_sequence_loss(outputs, batch.target, batch.target_weight,
                                              model.projection.weight, model.projection.bias, ids)
  return loss_fn


def lm_loss(model, batch, hidden, layers, device):
  """loss_fn((inputs, targets)) of the LM peer, the final state carried (detached: truncated
  backpropagation) into the next call, as the engine's LM step carries it."""
  zeros = torch.zeros(layers, batch, hidden, device=device)
  carried = [(zeros, zeros)]

  def loss_fn(window):
    inputs, targets = window
    outputs, (h, c) = model(inputs, carried[0])
    carried[0] = (h.detach(), c.detach())
    return torch_models.sequence_loss(model.projection(outputs), targets,
                                      torch.ones_like(targets, dtype=torch.float32))
  return loss_fn


def make_optimizer(model, device):
  """Adam at `LEARNING_RATE` (the engine's betas and epsilon), fused on CUDA."""
  return torch.optim.Adam(model.parameters(), lr=LEARNING_RATE, betas=(0.9, 0.999), eps=1e-8,
                          fused=device.type == "cuda")


def make_step(model, loss_fn, optimizer, bf16):
  """step(inputs) -> (loss, global gradient norm before clipping), both tensors on the device:
  forward (under bfloat16 autocast with `bf16`), backward, clip to `MAX_GRAD_NORM`, Adam."""
  device_type = next(model.parameters()).device.type

  def step(inputs):
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
      loss = loss_fn(inputs)
    loss.backward()
    norm = nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM, foreach=True)
    optimizer.step()
    return loss.detach(), norm
  return step


def set_tf32(allowed):
  """TF32 for float32 matmuls and cuDNN (`allowed`), or full float32."""
  torch.backends.cuda.matmul.allow_tf32 = allowed
  torch.backends.cudnn.allow_tf32 = allowed


def time_steps(step, inputs, steps, warmup):
  """(first step s, median s of `steps` steps each waited for, mean s of `steps` more issued
  back to back and waited for at the end), as `benchmarks.train_step` times the engine."""
  start = time.perf_counter()
  float(step(inputs)[0])
  first = time.perf_counter() - start
  for _ in range(warmup):
    float(step(inputs)[0])
  waited = []
  for _ in range(steps):
    start = time.perf_counter()
    float(step(inputs)[0])
    waited.append(time.perf_counter() - start)
  start = time.perf_counter()
  for _ in range(steps):
    loss = step(inputs)[0]
  float(loss)
  return first, statistics.median(waited), (time.perf_counter() - start) / steps


def peak_memory_mb(device):
  if device.type == "cuda":
    return torch.cuda.max_memory_allocated(device) / 2**20
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # host RSS


def measure(workload, variant, args, device):
  """One JSON-ready row of `variant` on `workload`, in the fields of the engine's rows."""
  bf16, tf32 = VARIANTS[variant]
  set_tf32(tf32)
  torch.manual_seed(0)
  if device.type == "cuda":
    torch.cuda.reset_peak_memory_stats(device)
  model, loss_fn, inputs, target_tokens = build(workload, args.keep_prob, device, args.override)
  step = make_step(model, loss_fn, make_optimizer(model, device), bf16)
  first, median, pipelined = time_steps(step, inputs, args.steps, args.warmup)
  kind, batch, steps, embed, hidden, vocab, layers = workloads.sizes(workload, args.override)
  sampled = workloads.num_sampled(workload, vocab)
  flops = workloads.model_flops(kind, batch, steps, embed, hidden, vocab, layers, sampled)
  return {
      "workload": workload, "variant": variant, "step_ms": 1e3 * median,
      "pipelined_step_ms": 1e3 * pipelined, "target_tokens_per_sec": target_tokens / median,
      "positions_per_sec_pipelined": batch * steps / pipelined,
      "model_tflops": flops / median / 1e12, "first_step_s": first,
      "peak_memory_mb": peak_memory_mb(device), "batch": batch,
      "sizes": dict(zip(workloads.SIZES, (batch, steps, embed, hidden, vocab, layers))),
      "num_sampled": sampled, "keep_prob": args.keep_prob,
      "precision": "bf16" if bf16 else "fp32", "tf32": tf32,
      "optimizer": f"Adam(fused={device.type == 'cuda'})",
      "device": "GPU" if device.type == "cuda" else "CPU",
      "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU",
      "torch_version": torch.__version__,
  }


def parse_args(argv):
  parser = argparse.ArgumentParser(prog="python -m benchmarks.torch_peers",
                                   description=__doc__.split("\n\n")[0])
  comma_list = lambda text: [item for item in text.split(",") if item]
  parser.add_argument("--workloads", type=comma_list, default=["cpu_small"],
                      help=f"among {', '.join(workloads.WORKLOADS)}")
  parser.add_argument("--variants", type=comma_list, default=["torch_bf16"],
                      help=f"among {', '.join(VARIANTS)}")
  parser.add_argument("--steps", type=int, default=30)
  parser.add_argument("--warmup", type=int, default=3)
  parser.add_argument("--keep_prob", type=float, default=0.8)
  parser.add_argument("--override", type=comma_list, default=[],
                      help="SIZE=N pairs, as benchmarks.train_step --override")
  parser.add_argument("--output", default="", help="also append the JSON lines to this file")
  args = parser.parse_args(argv)
  for name in args.workloads:
    if name not in workloads.WORKLOADS:
      parser.error(f"--workloads: unknown workload {name!r}")
  for name in args.variants:
    if name not in VARIANTS:
      parser.error(f"--variants: unknown variant {name!r}; choose among {', '.join(VARIANTS)}")
  try:
    workloads.parse_override(args.override)
  except workloads.OverrideError as error:
    parser.error(str(error))
  if args.steps < 1 or args.warmup < 0:
    parser.error("--steps must be at least 1 and --warmup at least 0")
  return args


def main(argv=None):
  args = parse_args(sys.argv[1:] if argv is None else argv)
  device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
  for workload in args.workloads:
    for variant in args.variants:
      line = json.dumps(measure(workload, variant, args, device))
      print(line, flush=True)
      if args.output:
        with open(args.output, "a", encoding="utf-8") as f:
          f.write(line + "\n")


if __name__ == "__main__":
  main()
