"""The interface every Latent Atlas model implements, and the optional abilities some have.

Generic pages and tools (sample grids, traversals, the latent map, HMC, importance
weights) talk to models only through :class:`LatentModel`, so a new family works with
all of them once it implements these few methods.

What only some families can do is a small runtime-checkable Protocol below; generic code
asks `isinstance(model, ImportanceWeighted)` and the like, and a family gains the ability
by implementing the methods (or, for `MaskedLikelihood`, by declaring it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import torch

from engine.errors import AtlasError
from engine.models.posteriors import DiagonalGaussian, Posterior

GroupKind = Literal["facet", "layer", "global", "local"]


@dataclass(frozen=True)
class LatentGroup:
    """A named block of latent variables: a facet, a layer of a hierarchy, ..."""

    name: str
    shape: tuple[int, ...]
    kind: GroupKind = "global"
    categories: int = 0  # K for a group of one-hot codes (shape (..., K)); 0 for continuous latents

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass
class ELBOResult:
    """Per-example terms of a variational bound, each of shape (batch,), in nats.

    total = recon - sum(kl.values()) for k = 1. For k > 1, total is the importance-
    weighted bound (seed003 eq. 2.1) and recon / kl are averages over the k draws,
    reported for display only.
    """

    total: torch.Tensor
    recon: torch.Tensor
    kl: dict[str, torch.Tensor]
    k: int = 1

    @property
    def kl_total(self) -> torch.Tensor:
        return sum(self.kl.values())


Latents = dict[str, torch.Tensor]


@runtime_checkable
class LatentModel(Protocol):
    """A deep latent-variable model p(x, z) = p(x|z) p(z) with an encoder q(z|x).

    Latents are passed as {group name: tensor (..., batch, *group.shape)}; a single
    tensor is accepted where a model has one group. Extra leading dimensions (samples,
    chains) broadcast through decode and log_joint.
    """

    latent_groups: list[LatentGroup]

    def encode(self, x: torch.Tensor) -> dict[str, Posterior]:
        """Posterior per latent group for inputs x (batch, *shape)."""
        ...

    def decode(self, z: Latents | torch.Tensor) -> torch.Tensor:
        """Mean (mode) of p(x|z) in data space, shape (..., batch, *shape)."""
        ...

    def sample(
        self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None, **condition
    ) -> torch.Tensor:
        """n prior samples decoded to data space, shape (n, *shape); the same `generator`
        state draws the same latent noise, so a grid can be reproduced."""
        ...

    def elbo(self, x: torch.Tensor, k: int = 1) -> ELBOResult:
        """The ELBO (k = 1) or the importance-weighted bound (k > 1) per example."""
        ...

    def log_joint(self, x: torch.Tensor, z: Latents | torch.Tensor) -> torch.Tensor:
        """log p(x, z), differentiable in z, shape (..., batch)."""
        ...


# -- optional abilities ----------------------------------------------------------------------
@runtime_checkable
class ImportanceWeighted(Protocol):
    """Draws from the model's own proposal and their weights (engine.inference.importance)."""

    def log_weights(self, x: torch.Tensor, k: int, chunk: int | None = None) -> tuple[torch.Tensor, Any, Any]:
        """(log w, log p(x | z), log q(z | x) - log p(z)) for k draws z ~ q(z | x), each (k, batch);
        the last may be a dict per group."""
        ...


@runtime_checkable
class NoiseSpace(Protocol):
    """A hierarchy reparameterised by its prior's noise, z_l = mu_l(z_<l) + sigma_l(z_<l) eps_l
    with eps ~ N(0, I) (seed002 eq. 5.5), where HMC runs (seed002 §2.5, §5.2.4)."""

    def encode_noise(self, x: torch.Tensor) -> dict[str, DiagonalGaussian]:
        """The encoder's Gaussian over each group's noise eps, (batch, size) tensors."""
        ...

    def latents_from_noise(self, eps: Latents) -> Latents:
        """z(eps) by the prior's top-down pass; values (..., batch, size)."""
        ...

    def log_joint_noise(self, x: torch.Tensor, eps: Latents) -> torch.Tensor:
        """log p(x | z(eps)) + log N(eps; 0, I), (..., batch)."""
        ...


@runtime_checkable
class EmbeddedCodes(Protocol):
    """A model of discrete codes with an embedding per code (RRVQ-VAE): the latent map shows
    the posterior's expected embedding rather than the probabilities of the codes."""

    def code_embeddings(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """{group: (batch, size)} expected code embeddings of x."""
        ...


@runtime_checkable
class OneGroupDecoder(Protocol):
    """A faster decode of latents that differ in one group only (a traversal grid, an
    interpolation), which can share the work that does not depend on that group."""

    def decode_one_group(self, base: Latents, group: str, z: torch.Tensor) -> torch.Tensor:
        """decode() of z (n, size of `group`) with every other group at base[name] (its size,));
        (n, *input_shape)."""
        ...


@runtime_checkable
class MaskedLikelihood(Protocol):
    """A model whose log_joint(x, z, mask) scores only the entries of x where mask (batch, *shape)
    is 1: log p(x_observed, z) (inpainting, missing values). isinstance cannot see a method's
    parameters, so such a family declares the ability: `masked_likelihood = True` on the class."""

    masked_likelihood: ClassVar[Literal[True]]

    def log_joint(
        self, x: torch.Tensor, z: Latents | torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor: ...


@runtime_checkable
class ConditionalSampler(Protocol):
    """`sample(n, **condition)` accepts the conditions `sample_conditions` names, {name: allowed values}."""

    @property
    def sample_conditions(self) -> dict[str, list]: ...


@runtime_checkable
class ClusteredPrior(Protocol):
    """A mixture prior per latent group (a facet's clusters): log p(c_j | z_j)."""

    def responsibilities_log(self, j: int, z: torch.Tensor) -> torch.Tensor:
        """Group j's cluster log-responsibilities, z (..., d_j) -> (..., K_j)."""
        ...


@runtime_checkable
class WithLikelihood(Protocol):
    """A decoder read through an observation model (engine.models.likelihoods) with
    `log_prob(x, params)` and `mean(params)`."""

    likelihood: torch.nn.Module


@runtime_checkable
class Configured(Protocol):
    """A model built from a config dataclass holding the per-example input_shape."""

    config: Any


@runtime_checkable
class Trainable(Protocol):
    """What the trainer minimises."""

    def training_loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """A scalar loss and detached per-batch metrics."""
        ...


@runtime_checkable
class LabelledTraining(Protocol):
    """A model that also learns from labels (semi-supervised): on a training split with a
    label regime the trainer passes a batch whose labels are hidden and one with labels."""

    def labelled_training_loss(
        self, x: torch.Tensor, x_labelled: torch.Tensor, y_labelled: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """A scalar loss on the unlabelled batch x and the labelled batch (x_labelled, y_labelled
        class indices); the labelled one may be empty."""
        ...


@runtime_checkable
class GroupedBatch(Protocol):
    """A model with a latent shared by the examples of a batch (UG-VAE's global beta, seed002
    eq. 4.1): its training batch is one group, so the trainer draws each step's batch as one
    group of a group order (engine.data.groups) and never splits it over micro-batches or
    processes, which would change the group's posterior. isinstance cannot tell this from the
    methods, so such a family declares it: `group_is_batch = True` on the class."""

    group_is_batch: ClassVar[Literal[True]]


@runtime_checkable
class DataInitialised(Protocol):
    """Parameters set from the training data before the first step (fresh runs only)."""

    def initialize(self, train_data) -> None: ...


@runtime_checkable
class StepScheduled(Protocol):
    """Schedules that depend on the training step (fade-ins, annealing, training stages)."""

    def set_step(self, step: int) -> None: ...


@runtime_checkable
class EvaluationMetrics(Protocol):
    """Family-specific test metrics the trainer logs beside the test ELBO."""

    def evaluation_metrics(self, test_data, n: int) -> dict[str, float]: ...


@runtime_checkable
class FieldsFromData(Protocol):
    """A config class with fields the training data decides (N, a table's columns): the
    trainer sets them to `fields_from_data(train_data)` before building the model."""

    @classmethod
    def fields_from_data(cls, train_data) -> dict: ...


@runtime_checkable
class TabularImputer(Protocol):
    """A model of table rows with missing values whose posterior over the prior's flat noise
    is sampled by its own learned HMC (HH-VAEM; engine.inference.imputation)."""

    kinds: list[str]
    target: int
    hmc: torch.nn.Module  # hmc(log_prob, mean, std, chains, generator) -> chain with .final, .accept_prob

    def split_input(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]: ...

    def noise_start(self, values: torch.Tensor, observed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def noise_log_prob(self, values: torch.Tensor, observed: torch.Tensor): ...

    def h1_from_flat(self, e: torch.Tensor) -> torch.Tensor: ...

    def rows_from_h1(self, values: torch.Tensor, observed: torch.Tensor, h1: torch.Tensor) -> torch.Tensor: ...


# -- helpers every family and page uses -----------------------------------------------------------
def posterior_means(model: LatentModel, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """E[z | x] for every latent group."""
    return {name: q.mean for name, q in model.encode(x).items()}


def reconstruct(model: LatentModel, x: torch.Tensor) -> torch.Tensor:
    """Decode the posterior means of x: the model's deterministic reconstruction."""
    return model.decode(posterior_means(model, x))


def continuous_latents(model: LatentModel) -> bool:
    """Whether every latent group is continuous (no one-hot codes): what traversals and HMC need."""
    return not any(g.categories for g in model.latent_groups)


def sample_conditions(model: LatentModel) -> dict[str, list]:
    """The conditions a model's `sample` accepts, {name: allowed values}; {} if none."""
    return dict(model.sample_conditions) if isinstance(model, ConditionalSampler) else {}


def check_input_shape(x: torch.Tensor, input_shape: tuple[int, ...]) -> None:
    """Refuse inputs whose per-example shape is not the model's, saying what was expected."""
    if tuple(x.shape[1:]) != tuple(input_shape):
        raise AtlasError(
            f"this model expects inputs of shape (batch, {', '.join(map(str, input_shape))}), got {tuple(x.shape)}"
        )


def check_importance_samples(k: int) -> None:
    """Refuse a bound with fewer than one importance sample."""
    if k < 1:
        raise AtlasError(f"k must be a positive number of importance samples, got {k}")


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device
