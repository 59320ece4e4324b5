"""Pure numeric TensorFlow functions used by the engine.

Nothing here owns variables or reads configuration: every function takes tensors and returns
tensors, so that a cell, a fused variant or a test can call the same math
(`recurrent_matmul.RecurrentMatmul` keeps, for one unroll, only the tensors its gradient needs).
"""
from ops import cell_math, clipping, losses, optim, recurrent_matmul

__all__ = ["cell_math", "clipping", "losses", "optim", "recurrent_matmul"]
