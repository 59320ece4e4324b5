"""The reference layer: the cell contract and its cells, wrappers, unroll, attention, bridge
and embeddings, written plainly; nothing here imports the fast layer."""
