"""Latent Atlas engine: data, models, training, inference, diagnostics and the run store.

The engine is a plain PyTorch library; it never imports the dashboard.

Its modules have one order, bottom to top; a module imports only its own package, the
packages below it and, inside a layer, a package that does not import it back (no cycles,
also none inside functions; `tests/test_layers.py` checks it):

0. errors, limits, numerics, randomness (per-computation random streams), threads (CPU thread
   counts), images, device, hamiltonian (the HMC kernel), processes (background jobs)
1. sequence, data
2. models
3. inference, diagnostics, traversal
4. store, training
5. projection, loading, importing, cli
"""

from engine.errors import AtlasError

__all__ = ["AtlasError"]
__version__ = "0.1.0"
