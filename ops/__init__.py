"""Pure numeric TensorFlow functions used by the engine.

Nothing here owns variables or reads configuration: every function takes tensors and returns
tensors, so that a cell, a fused variant or a test can call the same math. `ops.native`
builds and loads the engine's C++ kernels (`ops/kernels`), fast paths whose callers keep a
reference in these functions.
"""
from ops import cell_math, clipping, losses, optim

__all__ = ["cell_math", "clipping", "losses", "optim"]
