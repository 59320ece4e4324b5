"""A run's files and process: workdir, lock, checkpoints, signals, summaries, XLA setup."""
