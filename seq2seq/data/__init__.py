"""Reading text, tokenising, the vocabulary, batching (no TensorFlow model code)."""
