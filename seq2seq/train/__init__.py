"""The training loop: resume, step, log, validate, checkpoint, stop."""
