"""Task functions for the flows in ``examples/``; they ship with daskflow so that any
worker that has daskflow installed (the local cluster, the daskflow image) can run them."""
