"""The progress line's loss: the mean per target token over the steps since the last line."""
import unittest

from seq2seq.train import loop


class LossWindowTest(unittest.TestCase):

  def test_token_weighted_mean_and_largest_norm(self):
    window = loop._LossWindow()  # pylint: disable=protected-access
    for loss, tokens, norm in ((3.5, 300, 0.6), (7.0, 100, 1.5), (4.0, 200, 0.9)):
      window.add(loss, tokens, norm)
    loss, norm = window.report(loss=9.9, grad_norm=9.9)
    self.assertAlmostEqual(loss, (3.5 * 300 + 7.0 * 100 + 4.0 * 200) / 600)
    self.assertEqual(norm, 1.5)

  def test_a_report_starts_a_new_window_and_an_empty_one_gives_the_step(self):
    window = loop._LossWindow()  # pylint: disable=protected-access
    window.add(2.0, 10, 0.5)
    window.report(0.0, 0.0)
    self.assertEqual(window.report(loss=1.25, grad_norm=0.75), (1.25, 0.75))
    window.add(6.0, 5, 0.1)
    self.assertEqual(window.report(0.0, 0.0), (6.0, 0.1))


if __name__ == "__main__":
  unittest.main()
