"""Cells written against the plain cell contract, trained with --cell=seq2seq.contrib.MODULE:CLASS."""
