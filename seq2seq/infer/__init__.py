"""Inference from a trained workdir: restore, decode, beam search, chat, export."""
