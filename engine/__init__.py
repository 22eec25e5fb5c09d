"""Latent Atlas engine: data, models, training, inference, diagnostics and the run store.

The engine is a plain PyTorch library; it never imports the dashboard.
"""

from engine.errors import AtlasError

__all__ = ["AtlasError"]
__version__ = "0.1.0"
