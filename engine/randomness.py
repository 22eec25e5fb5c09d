"""Random streams: one seeded generator per computation, so that what a computation draws does
not depend on what other threads draw at the same time.

Seeding PyTorch's global generator (`torch.manual_seed` inside `fork_rng`) is not enough in a
server: the dashboard runs each browser session's script in its own thread, and two seeded
computations at the same moment would draw from each other's stream. Inside

    with random_stream(seed, device):
        bounds = model.elbo(x, k=100)

every draw the engine makes without an explicit generator (reparameterised posterior samples,
prior samples, ...) comes from that computation's own generator instead of the global one. The
stream lives in a context variable, so it belongs to the thread (and task) that opened it;
outside any stream the global generator is used as before (training seeds that one).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch

_STREAM: ContextVar[torch.Generator | None] = ContextVar("latent_atlas_random_stream", default=None)


@contextmanager
def random_stream(seed: int, device: torch.device | str | None = None) -> Iterator[torch.Generator]:
    """Draw from a generator of our own, seeded with `seed`, on `device` (the CPU by default;
    a model's draws on another device need a generator there)."""
    generator = torch.Generator(device=torch.device(device) if device is not None else "cpu")
    generator.manual_seed(int(seed))
    token = _STREAM.set(generator)
    try:
        yield generator
    finally:
        _STREAM.reset(token)


def stream(generator: torch.Generator | None = None) -> torch.Generator | None:
    """The generator a draw should use: the one passed explicitly, else the current stream's,
    else None (PyTorch's global generator)."""
    return generator if generator is not None else _STREAM.get()


@contextmanager
def forked_global(generator: torch.Generator | None) -> Iterator[None]:
    """For the few draws PyTorch offers no generator argument for (Gamma variates): inside a
    stream, a fork of the global generator seeded from the stream, else nothing to do. The fork
    is restored afterwards, but another thread drawing from the global generator meanwhile
    would see it: keep what runs inside short."""
    if generator is None:
        yield
        return
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())
    with torch.random.fork_rng(devices=[generator.device] if generator.device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield
