"""tf.distribute: strategies, the replicated step, the multi-worker supervisor."""
