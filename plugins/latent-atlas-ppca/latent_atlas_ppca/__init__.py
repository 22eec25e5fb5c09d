"""Probabilistic PCA as a Latent Atlas family, written against the atlas's public model
interface only (engine.models.base, engine.models.posteriors)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from engine.errors import AtlasError
from engine.models.base import ELBOResult, LatentGroup, check_importance_samples, check_input_shape
from engine.models.plugins import PluginFamily
from engine.models.posteriors import DiagonalGaussian
from engine.numerics import LOG_2PI, logmeanexp


@dataclass
class PPCAConfig:
    input_shape: tuple[int, ...] = (1, 8, 8)
    latent_dim: int = 4
    family: str = field(default="ppca", init=False)

    def __post_init__(self):
        self.input_shape = tuple(int(s) for s in self.input_shape)
        if not isinstance(self.latent_dim, int) or not 1 <= self.latent_dim <= math.prod(self.input_shape):
            raise AtlasError(f"latent_dim must be an integer between 1 and the input's size, got {self.latent_dim!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        return f"probabilistic PCA with {self.latent_dim} latents and an amortised Gaussian encoder (a plugin)"


class PPCA(nn.Module):
    """x = W z + b + sigma eps; q(z | x) = N(A x + c, diag exp(s(x)))."""

    def __init__(self, config: PPCAConfig):
        super().__init__()
        self.config = config
        dims, d = math.prod(config.input_shape), config.latent_dim
        self.encoder = nn.Linear(dims, 2 * d)
        self.weight = nn.Parameter(0.01 * torch.randn(dims, d))
        self.bias = nn.Parameter(torch.zeros(dims))
        self.log_sigma = nn.Parameter(torch.zeros(()))
        self.latent_groups = [LatentGroup("z", (d,))]

    def encode(self, x: torch.Tensor) -> dict[str, DiagonalGaussian]:
        check_input_shape(x, self.config.input_shape)
        return {"z": DiagonalGaussian.from_output(self.encoder(x.flatten(1)))}

    def decode(self, z) -> torch.Tensor:
        z = z["z"] if isinstance(z, dict) else z
        return (z @ self.weight.T + self.bias).reshape(*z.shape[:-1], *self.config.input_shape)

    def sample(self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
        z = temperature * torch.randn(n, self.config.latent_dim, generator=generator, device=self.bias.device)
        return self.decode(z)

    def _log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log N(x; W z + b, sigma^2 I) summed over the pixels; z (..., batch, d) -> (..., batch)."""
        mean = z @ self.weight.T + self.bias
        var = torch.exp(2 * self.log_sigma)
        return -0.5 * (LOG_2PI + 2 * self.log_sigma + (x.flatten(1) - mean).pow(2) / var).sum(-1)

    def log_joint(self, x: torch.Tensor, z) -> torch.Tensor:
        z = z["z"] if isinstance(z, dict) else z
        return self._log_likelihood(x, z) - 0.5 * (LOG_2PI + z.pow(2)).sum(-1)

    def log_weights(self, x: torch.Tensor, k: int, chunk: int | None = None):
        q = self.encode(x)["z"]
        z = q.rsample(k)  # (k, batch, d)
        recon = self._log_likelihood(x, z)
        kl = q.log_prob(z) + 0.5 * (LOG_2PI + z.pow(2)).sum(-1)
        return recon - kl, recon, kl

    def elbo(self, x: torch.Tensor, k: int = 1) -> ELBOResult:
        check_importance_samples(k)
        if k == 1:
            q = self.encode(x)["z"]
            recon = self._log_likelihood(x, q.rsample())
            kl = q.kl_to_standard_normal()
            return ELBOResult(total=recon - kl, recon=recon, kl={"z": kl})
        log_w, recon, kl = self.log_weights(x, k)
        return ELBOResult(total=logmeanexp(log_w, 0), recon=recon.mean(0), kl={"z": kl.mean(0)}, k=k)

    def exact_log_likelihood(self, x: torch.Tensor) -> torch.Tensor:
        """log N(x; b, W W^T + sigma^2 I) per example, the model's marginal likelihood in closed form."""
        cov = self.weight @ self.weight.T + torch.exp(2 * self.log_sigma) * torch.eye(len(self.bias))
        return torch.distributions.MultivariateNormal(self.bias, cov).log_prob(x.flatten(1))

    def training_loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        result = self.elbo(x)
        metrics = {"elbo": result.total.mean(), "recon": result.recon.mean(), "kl/z": result.kl["z"].mean()}
        return -result.total.mean(), {name: value.detach() for name, value in metrics.items()}


FAMILY = PluginFamily("ppca", PPCAConfig, PPCA)


def fitted_digits(latent_dim: int = 6) -> PPCA:
    """A PPCA of the 8x8 digits fitted in closed form (Tipping & Bishop 1999), for
    `latent-atlas app --model latent_atlas_ppca:fitted_digits --data digits`: W from the top
    eigenvectors of the data's covariance, sigma^2 the mean of the other eigenvalues, and an
    encoder that is the exact posterior, N(M^-1 W^T (x - b), sigma^2 M^-1) with M = W^T W +
    sigma^2 I, diagonal because these W have orthogonal columns. Its ELBO is then log p(x)."""
    from engine.data import load_dataset

    x = torch.as_tensor(load_dataset("digits", split="train").x, dtype=torch.float64).flatten(1)
    mean = x.mean(0)
    eigenvalues, eigenvectors = torch.linalg.eigh(torch.cov((x - mean).T))
    eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.flip(1)
    sigma2 = eigenvalues[latent_dim:].mean()
    weight = eigenvectors[:, :latent_dim] * (eigenvalues[:latent_dim] - sigma2).clamp_min(0).sqrt()
    m = (weight * weight).sum(0) + sigma2  # the diagonal of W^T W + sigma^2 I
    model = PPCA(PPCAConfig(input_shape=(1, 8, 8), latent_dim=latent_dim))
    with torch.no_grad():
        d = latent_dim
        model.weight.copy_(weight)
        model.bias.copy_(mean)
        model.log_sigma.fill_(0.5 * math.log(sigma2))
        model.encoder.weight[:d].copy_(weight.T / m[:, None])
        model.encoder.bias[:d].copy_(-(weight.T @ mean) / m)
        model.encoder.weight[d:].zero_()
        model.encoder.bias[d:].copy_(torch.log(sigma2 / m))
    return model
