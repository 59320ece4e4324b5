"""The fast layer: the built-in cores of the reference layer (`seq2seq.nn.cells`,
`seq2seq.nn.attention`), unrolled the same way, made fast.

Contract. `unroll.static_unroll`, `unroll.dynamic_unroll` and `unroll.unroll_from_config`
take the same arguments and give the same results (to rounding) as `seq2seq.nn.unroll`'s. When
every core in the unrolled stack is a built-in one (`cores.adapt`: the LSTM and GRU cells and
the dropout, variational dropout, residual, stacking and attention wrappers, exact types) the
unroll runs the core's `cores.FastCore` view, which reads the reference core's variables and
owns none: a checkpoint holds the same variables either way. Any other core (a user's cell,
a subclass) runs through `seq2seq.nn.unroll`.

What the fast view does, and where:
- `cores`: each cell's x W_x + b for all steps in one matmul, before the time loop
  (`precompute`); the steps' weights read once; time-major precomputed slices; dropout masks
  drawn for all steps at once (`presample`); zero rows and units appended for alignment.
- `recurrent_matmul`: h W_h with W_h's gradient as one matmul over the steps.
- `activations`: sigmoid and tanh spelled for a quick XLA compile, and the LSTM's
  elementwise half as one traced function with a recomputing gradient.
- `masks`: dropout masks behind an XLA optimization barrier.
- `unroll`: the reference loops fed those slices, and the cuBLAS alignment on a GPU.

`tests/test_fast_equivalence.py` checks this layer against the reference layer on the same
weights. Nothing in the reference layer imports this package.
"""
