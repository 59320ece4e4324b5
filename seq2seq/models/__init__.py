"""The models train.py builds, the encoder-decoder and the LM, each on the fast layer's
unroll where its cells have a fast form and on the reference unroll elsewhere."""
