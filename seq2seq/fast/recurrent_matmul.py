"""The recurrent product h_t W_h of an unrolled sequence, with W_h's gradient as ONE matmul.

Differentiated step by step, h_t W_h gives W_h a gradient h_t^T d_t ([H, B] x [B, G]) at every
step, each added to the sum of the steps before: T small matmuls (K = B) in a chain. The sum is
one matmul over the steps stacked, [H, T*B] x [T*B, G], which a GPU runs at its full rate.
`RecurrentMatmul` computes the forward product as before and, in the backward pass, keeps each
step's (h_t, d_t) and returns their stacked product as the weight's gradient.

How: every step's product uses W_h with its gradient stopped, under a `tf.custom_gradient` that
records (h_t, d_t) and returns d_t W_h^T for h_t. Only the first step's product also takes W_h
as an input, and its gradient function returns the stacked matmul. Backpropagation reaches step
t only through step t + 1's state, so the first step's gradient function runs last, when every
step that has a gradient has been recorded.

Use one instance per unrolled sequence, its steps called in order, in one graph (a tf.function)
or eagerly. Not inside a `tf.while_loop` body: there the body is traced once for all steps.

Each step's d(h_t) = d_t W_h^T is one matmul, [B, G] x [G, H], or, with `gate_blocks` = k,
k products of W_h's column blocks (an LSTM's 4 gates, a GRU's 3), [k, B, G/k] x [k, G/k, H] as
one batched matmul, summed in float32. The same gradient up to rounding, in other GEMM
shapes: where cuBLAS runs the one matmul as a split-K kernel and a reduction (a large LM at a
large batch), the gate products and their sum, which XLA fuses into the step's gradient
kernel, are faster; where it does not, the step's gradient splits into more kernels and
loses what the GEMM gains. benchmarks/README.md has the measurements.
"""
import tensorflow as tf


class RecurrentMatmul:
  """hidden [B, H] @ weight [H, G] for each step of one unroll; W's gradient is one matmul.

  Args:
    weight: [H, G], the kernel as the steps use it (a variable's read, maybe cast to the
      compute dtype). Its gradient is returned in its dtype, summed over all steps.
    time_axis: the axis the steps are stacked on for that matmul: 1 ([B, T, ...]) or 0
      ([T, B, ...]). Use the axis of the unroll's slices: `tf.unstack`'s gradient stacks the
      gradients of its slices on it, and an LSTM's d_t is also the gradient of its
      precomputed slice t, so the two identical stacks are built once (common
      subexpressions).
    gate_blocks: 1: each step's d(h) is one matmul; k > 1: a batched matmul over the k column
      blocks of the weight, summed (see the module's docstring).
  """

  def __init__(self, weight, time_axis=1, gate_blocks=1):
    if time_axis not in (0, 1):
      raise ValueError(f"time_axis must be 0 or 1, got {time_axis}")
    self._time_axis = time_axis
    self._weight = tf.convert_to_tensor(weight)
    width = self._weight.shape[-1]
    if gate_blocks < 1 or width % gate_blocks:
      raise ValueError(f"gate_blocks must be >= 1 and divide the weight's {width} columns, "
                       f"got {gate_blocks}")
    self._frozen = tf.stop_gradient(self._weight)
    # [k, G/k, H] for d(h) per gate block: laid out once, not at each step
    self._frozen_blocks = (transposed_blocks(self._frozen, gate_blocks) if gate_blocks > 1
                           else None)
    self._num_steps = 0
    self._recorded = {}  # step index -> (hidden [B, H], d_product [B, G])

  @property
  def dtype(self):
    """The weight's dtype, which the hidden states must have."""
    return self._weight.dtype

  @property
  def gate_blocks(self):
    """Into how many column blocks d(h)'s product is split (1: one matmul)."""
    return 1 if self._frozen_blocks is None else self._frozen_blocks.shape[0]

  @property
  def num_steps(self):
    """The products made so far (steps of the unroll)."""
    return self._num_steps

  def __call__(self, hidden):
    """hidden [B, H] -> hidden @ weight, [B, G]."""
    index = self._num_steps
    self._num_steps += 1
    if index == 0:
      return self._first_product(hidden, self._weight)
    return self._later_product(hidden, index)

  def _backprop(self, index, hidden, d_product):
    """Records step `index`'s (h, d) and returns d(h) = d W^T."""
    self._recorded[index] = (hidden, d_product)  # replaces an earlier backward pass's
    if self._frozen_blocks is None:
      return tf.matmul(d_product, self._frozen, transpose_b=True)
    return blockwise_product(d_product, self._frozen_blocks)

  def weight_gradient(self):
    """Sum over the recorded steps of h_t^T d_t, [H, G], as one matmul; clears the records."""
    steps = sorted(self._recorded)
    stack = lambda part: tf.stack([self._recorded[t][part] for t in steps], self._time_axis)
    hidden, d_product = stack(0), stack(1)  # [B, T, H], [B, T, G] (or time-major)
    self._recorded.clear()
    return tf.matmul(tf.reshape(hidden, [-1, hidden.shape[-1]]),
                     tf.reshape(d_product, [-1, d_product.shape[-1]]), transpose_a=True)

  def _first_product(self, hidden, weight):

    @tf.custom_gradient
    def product(hidden, weight):

      def gradient(d_product):
        d_hidden = self._backprop(0, hidden, d_product)
        return d_hidden, self.weight_gradient()

      return tf.matmul(hidden, weight), gradient

    return product(hidden, weight)

  def _later_product(self, hidden, index):

    @tf.custom_gradient
    def product(hidden):
      return tf.matmul(hidden, self._frozen), lambda d: self._backprop(index, hidden, d)

    return product(hidden)


def transposed_blocks(weight, blocks):
  """weight [H, G] -> [k, G/k, H]: its k = `blocks` column blocks, each transposed."""
  rows, width = weight.shape
  return tf.transpose(tf.reshape(weight, [rows, blocks, width // blocks]), [1, 2, 0])


def blockwise_product(left, weight_blocks):
  """left [B, G] @ weight^T -> [B, H], from weight [H, G]'s `transposed_blocks` [k, G/k, H]:
  the k block products as one batched matmul, added in float32 (in the inputs' dtype when
  that is wider), returned in `left`'s dtype."""
  blocks, block, _ = weight_blocks.shape
  left_blocks = tf.transpose(tf.reshape(left, [-1, blocks, block]), [1, 0, 2])  # [k, B, G/k]
  products = tf.unstack(tf.matmul(left_blocks, weight_blocks), blocks, axis=0)  # k x [B, H]
  wide = tf.float32 if left.dtype.size < 4 else left.dtype
  return tf.cast(tf.add_n([tf.cast(p, wide) for p in products]), left.dtype)
