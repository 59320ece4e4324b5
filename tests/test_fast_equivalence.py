"""The fast layer (`seq2seq.fast`) against the reference layer on the same weights.

One SGD train step of a seq2seq model (stacked cells, residual, a bidirectional encoder,
attention with input feeding) is run twice from the same seed: with the model's unroll, which
takes the fast path for the built-in cores, and with the reference unroll
(`seq2seq.nn.unroll`, each step the core's `__call__`). The loss, the gradient norm and every
variable's update (minus its clipped gradient) must agree, eagerly and compiled with XLA.
Dropout is off: the fast layer draws the masks of all steps at once, a different (equally
distributed) draw, which `tests/test_wrappers.py` checks against NumPy.
"""
import contextlib
import functools
import types
from unittest import mock

from absl.testing import parameterized
import numpy as np
import pytest
import tensorflow as tf

from seq2seq import config as config_lib
from seq2seq.data import batches
from seq2seq.fast import cores as fast_cores
from seq2seq.models import encoder_decoder as model_lib
from seq2seq.nn import unroll
from tests import helpers

VOCAB, ROWS = 40, 5


def _reference_unroll_from_config(model_config):
  """`seq2seq.fast.unroll.unroll_from_config`, answered with the reference unrolls."""
  if model_config.unroll != "dynamic":  # auto outside a train step is static, as there
    return unroll.static_unroll
  return functools.partial(unroll.dynamic_unroll,
                           steps_per_iteration=model_config.unroll_steps or 1)


def _batch():
  rng = np.random.default_rng(1)
  examples = [(list(rng.integers(4, VOCAB, rng.integers(1, 6))),
               list(rng.integers(4, VOCAB, rng.integers(1, 6)))) for _ in range(ROWS)]
  return batches.pad_batch(examples, 5)


def _train_step(model_config, fast, jit_compile):
  """(loss, grad_norm, {variable: update}, fast views made) of one SGD step from seed 5."""
  model = model_lib.Seq2Seq(model_config, VOCAB, seed=5)
  model.build()
  adapted = []
  original_adapt = fast_cores.adapt

  def recording_adapt(core):
    adapted.append(original_adapt(core))
    return adapted[-1]

  with contextlib.ExitStack() as patches:
    patches.enter_context(mock.patch.object(fast_cores, "adapt", recording_adapt))
    if not fast:
      patches.enter_context(mock.patch.object(model_lib, "fast_unroll", types.SimpleNamespace(
          unroll_from_config=_reference_unroll_from_config)))
    loss, norm, updates = helpers.one_sgd_step(model, _batch(), jit_compile=jit_compile,
                                               batch_size=ROWS)
  return loss, norm, updates, [view for view in adapted if view is not None]


# Each case: the model options that differ; all cases stack 2 layers.
CASES = {
    "bi_attention_residual": dict(encoder="bi", attention="luong", residual=True),
    "uni_dynamic_k2": dict(unroll="dynamic", unroll_steps=2),
    "uni_static_per_gate": dict(per_gate_hidden_gradient=True),
}


class FastEquivalenceTest(tf.test.TestCase, parameterized.TestCase):
  """Eagerly, op by op."""

  def tearDown(self):
    tf.config.run_functions_eagerly(False)
    super().tearDown()

  @parameterized.product(cell=["lstm", "gru"], case=sorted(CASES))
  def test_same_loss_gradients_and_update(self, cell, case):
    self.check_same_step(cell, case, "eager")

  def check_same_step(self, cell, case, mode):
    model_config = config_lib.ModelConfig(cell=cell, num_layers=2, hidden_size=12,
                                          embedding_size=8, **CASES[case])
    jit_compile = mode == "xla"
    tf.config.run_functions_eagerly(mode == "eager")
    loss, norm, updates, fast_views = _train_step(model_config, True, jit_compile)
    self.assertNotEmpty(fast_views)  # the built-in cores ran fast...
    want_loss, want_norm, want_updates, reference_views = _train_step(model_config, False,
                                                                      jit_compile)
    self.assertEmpty(reference_views)  # ...and here through the reference unroll
    self.assertTrue(np.isfinite([loss, norm]).all())
    self.assertAllClose(want_loss, loss, rtol=1e-5)
    self.assertAllClose(want_norm, norm, rtol=1e-4)
    self.assertCountEqual(want_updates, updates)
    for name, want in want_updates.items():
      scale = np.abs(want).max()
      self.assertGreater(scale, 0.0, msg=name)  # every variable gets a gradient
      self.assertAllClose(want, updates[name], rtol=1e-4, atol=1e-3 * scale, msg=name)


@pytest.mark.slow
class CompiledFastEquivalenceTest(FastEquivalenceTest):
  """Compiled with XLA (`jit_compile=True`), as a GPU trains."""

  @parameterized.product(cell=["lstm", "gru"], case=sorted(CASES))
  def test_same_loss_gradients_and_update(self, cell, case):
    self.check_same_step(cell, case, "xla")


if __name__ == "__main__":
  tf.test.main()
