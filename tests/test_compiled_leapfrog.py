"""engine.hamiltonian.compiled_leapfrog (torch.compile of the leapfrog trajectory): it must follow
the eager leapfrog step for step, and sample_hmc(compile=True) must draw what the eager sampler
draws from the same seed. One compilation (about 20-60 s on a 2-core CPU) serves the whole file."""

from __future__ import annotations

import torch

from engine.hamiltonian import compiled_leapfrog, init_state, leapfrog
from engine.inference.hmc import sample_hmc

SCALES = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)


def skewed_log_prob(z):
    """A non-Gaussian target (its gradient is not linear in z), so that a wrong gradient shows."""
    return (
        -0.5 * ((z / SCALES) ** 2).sum(-1)
        + 0.3 * torch.log1p(z[..., 0] ** 2)
        - 0.1 * z[..., 1] ** 3 / (1 + z[..., 1] ** 2)
    )


def test_compiled_leapfrog_follows_the_eager_trajectory_and_sampler():
    compiled = compiled_leapfrog(skewed_log_prob)
    assert compiled_leapfrog(skewed_log_prob) is compiled  # kept with the function, not compiled again
    g = torch.Generator().manual_seed(0)
    for chains in (5, 9):  # sizes are symbolic: one compilation for both
        z = torch.randn(2, chains, 3, generator=g, dtype=torch.float64)
        r = torch.randn(2, chains, 3, generator=g, dtype=torch.float64)
        step = 0.1 * (1 + torch.rand(2, chains, 1, generator=g, dtype=torch.float64))  # one step per chain
        inv_mass = 0.5 + torch.rand(2, chains, 3, generator=g, dtype=torch.float64)
        start = init_state(skewed_log_prob, z)
        want, r_want = leapfrog(skewed_log_prob, start, r, step, inv_mass, 7)
        got, r_got = compiled(skewed_log_prob, start, r, step, inv_mass, 7)
        assert not torch.allclose(want.z, z, atol=0.05)  # the trajectory went somewhere
        for a, b in ((got.z, want.z), (got.log_prob, want.log_prob), (got.grad, want.grad), (r_got, r_want)):
            torch.testing.assert_close(a, b, atol=1e-10, rtol=0)

    z0 = torch.randn(2, 6, 3, generator=g, dtype=torch.float64)
    settings = dict(num_warmup=30, num_samples=40, n_leapfrog=7, seed=3)
    eager = sample_hmc(skewed_log_prob, z0, **settings)
    fast = sample_hmc(skewed_log_prob, z0, compile=True, **settings)
    torch.testing.assert_close(fast.samples, eager.samples, atol=1e-8, rtol=0)
    torch.testing.assert_close(fast.accept_prob, eager.accept_prob, atol=1e-8, rtol=0)
    assert 0.3 < float(fast.mean_accept.mean()) < 1.0  # real Metropolis decisions, not all-accept
