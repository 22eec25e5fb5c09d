"""The DCT-VAE (seed004 App. C, E, F): the VDVAE-style HVAE of engine.models.hvae whose
top latent is a context z_L = f(x), a deterministic, non-trainable function of the image
(engine.models.context: quantised low DCT coefficients, or a quantised average pool), with a
diffusion prior p_γ(z_L) trained jointly with the VAE.

- Context injection (App. E, Fig. 8): z_L is decoded to an image x_context in [0, 1]; at the
  start of every resolution R of the top-down pass the state gets
  conv_R(AvgPool(2 x_context - 1) to R x R) added, a 3x3 convolution per resolution (1x1 at
  2x2 and below). With `normalise_state` it is added after the normalisation.
- The prior over the context (App. C): a DDPM (engine.models.diffusion) over z_L, T steps,
  linear β from 1/T to 2/T, x-parametrisation, with a one-level U-Net (Table 6, MNIST: 32
  channels, 3 residual blocks). Its bound L_DDGM (eq. 13) with the discretised Gaussian of
  bin width b = 2 / 2^bits (eqs. 14-15) stands in for ln p_γ(z_L) in the ELBO: L_0 and one
  sampled step while training (unbiased), every step in eval mode.
- The context is a latent group "context" (first, the top of the hierarchy), so generic pages
  see it: `encode` gives it a Gaussian of mean f(x) and a fixed variance exp(-20) (standard
  deviation 4.5e-5, far inside the narrowest bin, 2/256), standing for the repo's Dirac
  posterior; `decode` reads z["context"]; `sample` draws it from the diffusion prior at the
  temperature and quantises it, then the layers below. The ELBO's "KL" for the context is
  -L_DDGM: the context is discrete and q puts all its mass on f(x), so log q = 0 and the ELBO
  stays a lower bound on ln p(x).
- No noise-space (HMC) methods: z_L is discrete and has no prior noise to reparameterise, and
  the NoiseSpace methods take no x to hold it at f(x); HMC refuses the model with a message.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import AtlasError
from engine.models.base import ELBOResult, LatentGroup, Latents
from engine.models.context import DCTContext, bin_width, make_context, quantise
from engine.models.diffusion import VARIANCES, GaussianDiffusion, check_steps, linear_betas
from engine.models.hvae import HVAE, HVAEConfig
from engine.models.latents import checked_latents, leading_shape
from engine.models.posteriors import DiagonalGaussian
from engine.models.unet import UNet, UNetConfig
from engine.randomness import stream

CONTEXT = "context"
DIRAC_LOGVAR = -20.0  # the context posterior's log-variance: a point mass at f(x), for generic tools


@dataclass
class DCTVAEConfig(HVAEConfig):
    encoder: str = "16x3,16d2,8x3,8d2,4x3"
    decoder: str = "4x4,8m4,8x3,16m8,16x4"
    context: str = "dct"  # "dct" or "pool" (App. F)
    context_size: int = 4  # kept coefficients (or pooled pixels) per side
    context_bits: int = 2  # 2^bits levels per value (MNIST and OMNIGLOT: 2)
    prior_steps: int = 7  # T of the diffusion prior (Table 6: 7 on MNIST)
    prior_width: int = 32  # U-Net channels, one level (Table 6: 32)
    prior_blocks: int = 3  # residual blocks (Table 6: 3)
    prior_variance: str = "learned"  # the repo's x-parametrised prior also predicts a log-variance
    prior_dropout: float = 0.0
    family: str = field(default="dctvae", init=False)

    def __post_init__(self):
        super().__post_init__()
        make_context(self.context, self.input_shape, self.context_size, self.context_bits)  # checks
        check_steps(self.prior_steps)
        UNetConfig(widths=(self.prior_width,), blocks=self.prior_blocks, dropout=self.prior_dropout)  # checks
        if self.prior_variance not in VARIANCES:
            raise AtlasError(f"unknown prior_variance {self.prior_variance!r}; use one of {', '.join(VARIANCES)}")

    def summary(self) -> str:
        c = self.input_shape[0]
        what = "DCT coefficients" if self.context == "dct" else "average-pooled pixels"
        return (
            f"DCT-VAE: {super().summary()}; top latent a {c}x{self.context_size}x{self.context_size} context of "
            f"{what} on {2**self.context_bits} levels with a {self.prior_steps}-step diffusion prior"
        )


class DCTVAE(HVAE):
    """See the module docstring."""

    encode_noise = latents_from_noise = log_joint_noise = None  # not a NoiseSpace model

    def __init__(self, config: DCTVAEConfig):
        super().__init__(config)
        c = config.input_shape[0]
        self.context = make_context(config.context, config.input_shape, config.context_size, config.context_bits)
        self.context_shape = (c, config.context_size, config.context_size)
        starts = [b.res for i, b in enumerate(self.dec_specs) if i == 0 or b.up_from]
        self.context_in = nn.ModuleDict(
            {str(r): nn.Conv2d(c, config.width, 3 if r > 2 else 1, padding=1 if r > 2 else 0) for r in starts}
        )
        learned = config.prior_variance == "learned"
        self.context_denoiser = UNet(
            UNetConfig(
                in_channels=c,
                out_channels=2 * c if learned else c,
                widths=(config.prior_width,),
                blocks=config.prior_blocks,
                dropout=config.prior_dropout,
            )
        )
        self.context_prior = GaussianDiffusion(linear_betas(config.prior_steps), "x", config.prior_variance)
        self.latent_groups = [LatentGroup(CONTEXT, (math.prod(self.context_shape),), "layer"), *self.latent_groups]

    def initialize(self, train_data) -> None:
        """The DCT context's per-coefficient scale from the training set (the pool has none)."""
        if isinstance(self.context, DCTContext):
            self.context.initialize(train_data)

    # -- the context --------------------------------------------------------------------
    def context_log_prior(self, z: torch.Tensor, fixed_noise: bool = False) -> torch.Tensor:
        """L_DDGM(z) (seed004 eq. 13, discretised L_0 of eqs. 14-15), a lower bound on ln p_γ(z)
        for contexts z (batch, C, size, size): (batch,). One sampled step while training, every
        step in eval mode. `fixed_noise`: every step, with one noise draw per step from a fixed
        seed shared by all examples, so that the value is a deterministic function of z."""
        b = bin_width(self.config.context_bits)
        if fixed_noise:
            fixed = torch.Generator().manual_seed(0)
            return self.context_prior.bound(self.context_denoiser, z, b, True, fixed, shared_noise=True).total
        return self.context_prior.bound(self.context_denoiser, z, b, not self.training, stream()).total

    def sample_context(
        self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """n contexts from the diffusion prior at `temperature`, quantised: (n, C, size, size)."""
        device = self.start.device
        y0, _ = self.context_prior.sample(
            self.context_denoiser, (n, *self.context_shape), temperature, stream(generator), device=device
        )
        return quantise(y0, self.config.context_bits)

    def _enter_layer(self, i: int, y: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        y = super()._enter_layer(i, y)
        res = self.dec_specs[i].res
        if context is not None and (i == 0 or self.dec_specs[i].up_from):
            y = y + self.context_in[str(res)](F.adaptive_avg_pool2d(2 * context - 1, res))
        return y

    # -- the HVAE's passes with the context --------------------------------------------
    def bottom_up(self, x: torch.Tensor, norms: list | None = None) -> dict:
        """The HVAE's activations, and f(x) (batch, C, size, size) under "context"."""
        acts = super().bottom_up(x, norms)
        acts[CONTEXT] = self.context.encode(x)
        return acts

    def top_down(
        self,
        acts: dict | None,
        n: int,
        z: Latents | None = None,
        *,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        context: torch.Tensor | None = None,
        **options,
    ) -> tuple[torch.Tensor, list[dict]]:
        """HVAE.top_down (its other options by name) with x_context decoded from the context
        z_L: z["context"] when given, else f(x) from `acts`, else a draw from the diffusion
        prior at `temperature`."""
        if context is None:
            if z is not None and CONTEXT in z:
                context = z[CONTEXT].reshape(n, *self.context_shape)
            elif acts is not None:
                context = acts[CONTEXT]
            else:
                context = self.sample_context(n, temperature, generator)
            context = self.context.decode(context)
        return super().top_down(acts, n, z, temperature=temperature, generator=generator, context=context, **options)

    # -- the LatentModel interface --------------------------------------------------------
    def encode(self, x: torch.Tensor) -> dict[str, DiagonalGaussian]:
        """The layers' posteriors (HVAE.encode) after the context's point mass at f(x)."""
        layers = super().encode(x)
        mean = self.context.encode(x).flatten(1)
        return {CONTEXT: DiagonalGaussian(mean, torch.full_like(mean, DIRAC_LOGVAR)), **layers}

    def decode_one_group(self, base: Latents, group: str, z: torch.Tensor) -> torch.Tensor:
        """decode() of n latents that differ in `group` only; every layer runs on all n, since
        the context enters at every resolution (the HVAE's shortcut does not carry it)."""
        n = z.shape[0]
        return self.decode({g.name: z if g.name == group else base[g.name].expand(n, -1) for g in self.latent_groups})

    def elbo(self, x: torch.Tensor, k: int = 1, chunk: int | None = None) -> ELBOResult:
        """The HVAE's ELBO with the context's term -L_DDGM(f(x)) under kl["context"]; for k > 1
        the importance-weighted bound over the layers below the (deterministic) context."""
        if k != 1:
            return super().elbo(x, k, chunk)  # through log_weights, which adds the context's term
        result = super().elbo(x)
        prior = self.context_log_prior(self.context.encode(x))
        return ELBOResult(total=result.total + prior, recon=result.recon, kl={CONTEXT: -prior, **result.kl})

    def log_weights(self, x: torch.Tensor, k: int, chunk: int | None = None):
        """HVAE.log_weights plus L_DDGM(f(x)), the same for all k draws (q's context is f(x))."""
        log_w, recon, kl = super().log_weights(x, k, chunk)
        prior = self.context_log_prior(self.context.encode(x))
        return log_w + prior, recon, kl - prior

    def log_joint(self, x: torch.Tensor, z: Latents | torch.Tensor) -> torch.Tensor:
        """log p(x | z) + sum_l log p(z_l | z_<l) + L_DDGM(z["context"]): the context's term is
        the diffusion bound, a lower bound on ln p_γ(z_L), not its exact log-density. It is
        taken over every step with noise from a fixed seed, so the value is a deterministic
        function of z; z values (..., batch, size) -> (..., batch)."""
        z = checked_latents(self, z)
        lead = leading_shape(z, self.latent_groups)
        size = self.latent_groups[0].size
        context = z[CONTEXT].expand(*lead, size).reshape(-1, *self.context_shape)
        prior = self.context_log_prior(context, fixed_noise=True)
        return super().log_joint(x, z) + prior.view(*lead)
