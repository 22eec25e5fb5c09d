"""Training any Latent Atlas model, visible top to bottom in `Trainer.fit`.

The data order is a pure function of (seed, step), and the checkpoint holds the weights,
the optimiser, the EMA and the random-number state, so a run resumed from a checkpoint
continues exactly the trajectory an uninterrupted run would have taken (on the CPU).

Under torchrun (see distributed.py) each of the world_size processes takes an equal,
contiguous shard of the step's global batch, and DDP averages the gradients; with
`micro_batches` > 1 each shard is cut again into pieces whose gradients add up (gradient
accumulation). Either way the update is the gradient of the mean loss over the global
batch, and each piece draws its noise from a seed of (seed, step, piece), so the result
does not depend on how the pieces are spread over processes.

A model that learns from labels (`LabelledTraining`, e.g. GM-DGM) on a training split with
a label regime (engine.data.label_regimes) draws two streams each step: `batch_size`
examples whose label is hidden and `labelled_batch_size` examples with their label, each
its own permutation per epoch. Both are sharded and cut into micro-batches alike, so every
piece's loss is a mean over its share of both and the update is still that of the whole.

A model whose latent is shared by its batch (`GroupedBatch`, e.g. UG-VAE's global beta) trains
on one group per step: the batch at `step` is a group of the training split's group order
(meta["group_order"], engine.data.groups; random groups when the data sets none) for that
step's epoch, seeded by (seed, epoch). Such a model's batch is never cut: a group split over
micro-batches or processes would give each piece its own posterior q(beta | piece) instead of
the group's, so micro_batches > 1 and world_size > 1 are refused. It is evaluated on random
groups of the test split of the same size.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from engine.data.base import Dataset
from engine.data.groups import GroupOrder, random_groups
from engine.device import pick_device, seed_everything
from engine.errors import AtlasError
from engine.images import image_grid
from engine.models.base import (
    DataInitialised,
    EvaluationMetrics,
    GroupedBatch,
    LabelledTraining,
    LatentModel,
    StepScheduled,
    Trainable,
)
from engine.store.runs import Run
from engine.threads import ThreadGovernor
from engine.training.checkpointing import pack_training_state, restore_training_state
from engine.training.distributed import Distributed
from engine.training.ema import EMA


@dataclass
class TrainConfig:
    steps: int = 3000
    batch_size: int = 128  # the global batch: split over the processes of a torchrun job
    labelled_batch_size: int = 64  # with a label regime: labelled examples drawn beside each batch
    micro_batches: int = 1  # > 1: each process's share is cut into this many pieces (gradient accumulation)
    lr: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float = 200.0  # clip the global gradient norm to this
    grad_skip: float = 0.0  # > 0: skip updates whose gradient norm exceeds it (VDVAE)
    ema_decay: float = 0.0  # > 0: keep an EMA of the weights with this decay
    max_nonfinite_in_row: int = 50  # stop the run after this many non-finite steps in a row
    log_every: int = 25
    eval_every: int = 500
    eval_examples: int = 1000
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # bfloat16 autocast on CUDA; ignored elsewhere
    progress: bool = True

    def __post_init__(self):
        for name in (
            "steps",
            "batch_size",
            "labelled_batch_size",
            "micro_batches",
            "log_every",
            "eval_every",
            "checkpoint_every",
            "keep_checkpoints",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise AtlasError(f"train.{name} must be a positive integer, got {value!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise AtlasError(f"train.lr must be a positive number, got {self.lr!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise AtlasError(f"train.ema_decay must be in [0, 1), got {self.ema_decay!r}")

    def to_dict(self) -> dict:
        return asdict(self)


class Trainer:
    """Trains `model` into `run`. `dist` is the process's place in a torchrun job (from
    `distributed.launch`); without it, one process on the device the config names. On a
    rank other than 0, `run` is a `FollowerRun`."""

    def __init__(
        self,
        model: nn.Module,
        train_data: Dataset,
        test_data: Dataset,
        config: TrainConfig,
        run: Run,
        dist: Distributed | None = None,
    ):
        if not isinstance(model, Trainable):
            raise AtlasError(f"a {type(model).__name__} has no training_loss, so it cannot be trained")
        if len(train_data) < config.batch_size:
            raise AtlasError(
                f"the training set has {len(train_data)} examples, fewer than batch_size={config.batch_size}; "
                "lower the batch size"
            )
        self.dist = dist if dist is not None else Distributed(device=pick_device(config.device))
        self.config = config
        self.run = run
        self.train_data, self.test_data = train_data, test_data
        self.labelled = LabelStreams.of(model, train_data, config)
        self.groups = GroupStream.of(model, train_data, config, self.dist.world_size)
        pieces = self.dist.world_size * config.micro_batches
        sizes = {"batch_size": config.batch_size}
        if self.labelled is not None and len(self.labelled.known):
            sizes["train.labelled_batch_size"] = config.labelled_batch_size
        for name, size in sizes.items():
            if size % pieces:
                raise AtlasError(
                    f"{name}={size} cannot be split evenly over {self.dist.world_size} process(es) "
                    f"with train.micro_batches={config.micro_batches}; make it a multiple of {pieces}"
                )
        self.device = self.dist.device
        seed_everything(config.seed)
        self.model = model.to(self.device)
        self.optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.ema = EMA(model, config.ema_decay) if config.ema_decay > 0 else None
        self.step = 0
        self.skipped = 0  # non-finite or over-threshold updates, over the whole run
        self.nonfinite_in_row = 0
        pool = len(train_data) if self.labelled is None else len(self.labelled.hidden)
        self.steps_per_epoch = pool // config.batch_size if self.groups is None else self.groups.steps_per_epoch
        self.use_amp = config.amp and self.device.type == "cuda"
        self.ddp: DistributedDataParallel | None = None  # made in fit, after the weights are final

    # -- data order -----------------------------------------------------------------------
    def batch_indices(self, step: int) -> torch.Tensor:
        """Indices of the minibatch at `step`: a fresh permutation each epoch, seeded
        by (seed, epoch), so any step's batch is known without replaying earlier ones.
        With a label regime, the batch is drawn from the examples whose label is hidden; for a
        grouped model it is a group of the data's group order."""
        if self.groups is not None:
            return self.groups.batch_indices(step)
        if self.labelled is not None:
            return self.labelled.hidden[
                epoch_batch(len(self.labelled.hidden), self.config.batch_size, step, self.config.seed)
            ]
        return epoch_batch(len(self.train_data), self.config.batch_size, step, self.config.seed)

    def inputs(self, step: int) -> tuple[torch.Tensor, ...]:
        """This process's share of the step's inputs on the device: (x,), or with a label
        regime (x, x_labelled, y_labelled)."""
        x = self.train_data.batch(self.shard(self.batch_indices(step)))
        if self.labelled is None:
            return (x.to(self.device, non_blocking=True),)
        idx = self.shard(self.labelled.batch_indices(step))
        x_l, y_l = self.train_data.batch(idx), self.labelled.labels[idx]
        return tuple(t.to(self.device, non_blocking=True) for t in (x, x_l, y_l))

    def shard(self, indices: torch.Tensor) -> torch.Tensor:
        """This process's contiguous share of the global batch `indices`."""
        n = len(indices) // self.dist.world_size
        return indices[self.dist.rank * n : (self.dist.rank + 1) * n]

    # -- the loop -------------------------------------------------------------------------
    def fit(self) -> Run:
        cfg = self.config
        if not self.resume() and isinstance(self.model, DataInitialised):
            # data-dependent initialisation (e.g. MFCVAE's mixture priors), fresh runs only
            with torch.no_grad(), torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.seed)
                self.model.initialize(self.train_data)
        if self.dist.active:  # wrapped now: DDP copies rank 0's weights and buffers to every process
            device_ids = [self.device] if self.device.type == "cuda" else None
            # some objectives leave parameters without a gradient on some steps (hhvaem's routed
            # stages); DDP then leaves their .grad at None, as one process would
            self.ddp = DistributedDataParallel(TrainingLoss(self.model), device_ids, find_unused_parameters=True)
        if self.dist.is_main:
            self.run.clear_stop_request()  # one left from before this process started is stale
        self.run.set_status("running")
        quiet = not (cfg.progress and self.dist.is_main)
        bar = tqdm(total=cfg.steps, initial=self.step, disable=quiet, unit="step", dynamic_ncols=True)
        window: dict[str, list[float]] = {}
        window_start, window_examples = time.perf_counter(), 0
        # an automatic thread count follows other processes starting and ending (engine.threads)
        governor = ThreadGovernor.for_process() if self.device.type == "cpu" else None
        try:
            while self.step < cfg.steps:
                inputs = self.inputs(self.step)
                if isinstance(self.model, StepScheduled):  # schedules that depend on the step (fade-ins)
                    self.model.set_step(self.step)
                metrics = self.train_step(inputs)
                self.step += 1
                window_examples += cfg.batch_size
                for name, value in metrics.items():
                    window.setdefault(name, []).append(value)
                stop = self.nonfinite_in_row >= cfg.max_nonfinite_in_row
                if self.step % cfg.log_every == 0 or self.step == cfg.steps or stop:
                    if governor is not None:
                        governor.update()  # the window just logged ran on the old count
                    elapsed = max(time.perf_counter() - window_start, 1e-9)
                    row = {name: mean_finite(vals) for name, vals in window.items()}
                    row.update(
                        samples_per_s=window_examples / elapsed, skipped=self.skipped, threads=torch.get_num_threads()
                    )
                    self.run.metrics.log_scalars(self.step, {f"train/{k}": v for k, v in row.items()})
                    bar.set_postfix(loss=f"{row.get('loss', float('nan')):.3g}", skipped=self.skipped)
                    window, window_start, window_examples = {}, time.perf_counter(), 0
                if self.step % cfg.log_every == 0 and (request := self.stop_requested()):
                    self.save_checkpoint()
                    if self.dist.is_main:
                        self.run.clear_stop_request()
                    self.run.set_status("interrupted", reason=f"{request} at step {self.step}")
                    self.dist.barrier()
                    return self.run
                if stop:
                    reason = f"stopped: {self.nonfinite_in_row} non-finite steps in a row at step {self.step}"
                    self.save_checkpoint()
                    self.run.set_status("failed", reason=reason)
                    return self.run
                if (self.step % cfg.eval_every == 0 or self.step == cfg.steps) and self.dist.is_main:
                    self.evaluate()
                if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                    self.save_checkpoint()
                bar.update(1)
        except KeyboardInterrupt:
            self.run.set_status("interrupted", reason=f"interrupted by the user at step {self.step}")
            raise
        except Exception as err:
            self.run.set_status("failed", reason=f"{type(err).__name__}: {err}")
            raise
        finally:
            bar.close()
        self.run.set_status("finished")
        self.dist.barrier()  # every process returns once rank 0 has written the end of the run
        return self.run

    def stop_requested(self) -> str | None:
        """The reason of a stop asked for from outside (Run.request_stop), as rank 0 reads it
        and every process learns it at the same step (so that none waits for the others)."""
        reason = self.run.stop_request() if self.dist.is_main else None
        if self.dist.active and not self.dist.all_reduce_mean({"stop": float(reason is not None)})["stop"]:
            return None
        return reason or ("stop requested" if self.dist.active else None)

    def train_step(self, inputs: torch.Tensor | tuple[torch.Tensor, ...]) -> dict[str, float]:
        """One update from this process's share of the global batch (x, or the tuple of
        `inputs(step)`); a non-finite loss or gradient skips it and is counted."""
        self.model.train()
        inputs = inputs if isinstance(inputs, tuple) else (inputs,)
        if self.ddp is None and self.config.micro_batches == 1:
            with self.autocast():
                loss, metrics = training_loss(self.model, inputs)
            self.optimizer.zero_grad(set_to_none=True)
            if not torch.isfinite(loss):
                return self._skip(loss.item())
            loss.backward()
            out = {name: float(v) for name, v in metrics.items()}
            out.update(loss=loss.item())
        else:
            out = self.accumulate(inputs)
            if not math.isfinite(out["loss"]):  # the mean over processes: all of them skip together
                return self._skip(out["loss"])
        # after DDP's all-reduce every process holds the same gradient, so the same norm and decisions
        params = [p for p in self.model.parameters() if p.grad is not None]
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        if grad_norm > self.config.grad_clip:  # scale only when clipping does something
            torch.nn.utils.clip_grads_with_norm_(params, self.config.grad_clip, grad_norm)
        if not torch.isfinite(grad_norm) or (0 < self.config.grad_skip < grad_norm):
            return self._skip(out["loss"], grad_norm.item())
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model)
        self.nonfinite_in_row = 0
        out.update(grad_norm=grad_norm.item())
        return out

    def accumulate(self, inputs: tuple[torch.Tensor, ...]) -> dict[str, float]:
        """The gradient of the mean loss over the global batch, from the `micro_batches` pieces
        of `inputs` here (each tensor cut alike) and those of the other processes (DDP averages
        them at the last backward); returns the metrics averaged over all pieces. Every piece
        runs backward even when its loss is not finite, since each process must join every
        all-reduce."""
        k = self.config.micro_batches
        pieces = list(zip(*(t.tensor_split(k) for t in inputs)))
        self.optimizer.zero_grad(set_to_none=True)
        total: dict[str, float] = {}
        reseed = len(pieces) > 1 or self.dist.world_size > 1
        for i, piece in enumerate(pieces):
            if reseed:
                torch.manual_seed(piece_seed(self.config.seed, self.step, self.dist.rank * len(pieces) + i))
            last = i == len(pieces) - 1
            with self.ddp.no_sync() if self.ddp is not None and not last else contextlib.nullcontext():
                with self.autocast():
                    loss, metrics = self.ddp(*piece) if self.ddp is not None else training_loss(self.model, piece)
                (loss / len(pieces)).backward()
            for name, value in {**metrics, "loss": loss.detach()}.items():
                total[name] = total.get(name, 0.0) + float(value) / len(pieces)
        return self.dist.all_reduce_mean(total)

    def autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.use_amp else contextlib.nullcontext()

    def _skip(self, loss: float, grad_norm: float | None = None) -> dict[str, float]:
        self.optimizer.zero_grad(set_to_none=True)
        self.skipped += 1
        finite = math.isfinite(loss) and (grad_norm is None or math.isfinite(grad_norm))
        self.nonfinite_in_row = 0 if finite else self.nonfinite_in_row + 1
        return {"loss": loss} if math.isfinite(loss) else {}

    # -- evaluation ------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Test ELBO per example (latent-variable models), the model's own evaluation metrics
        if it has any, and a grid of prior samples (image models), with the random stream of
        training left untouched."""
        model = self.eval_model()
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(self.config.seed + 7919)
            n = min(len(self.test_data), self.config.eval_examples)
            row = {}
            if isinstance(model, LatentModel):  # a sequential predictor has no ELBO: its metrics say how it does
                elbo = []
                for idx in self.eval_batches(n):
                    x = self.test_data.batch(idx).to(self.device)
                    elbo.append(model.elbo(x).total)
                row["test/elbo"] = torch.cat(elbo).mean().item()
            if isinstance(model, EvaluationMetrics):  # family-specific, e.g. per-facet accuracy
                row.update({f"test/{k}": v for k, v in model.evaluation_metrics(self.test_data, n).items()})
            if self.test_data.kind == "image":
                samples = model.sample(64)
                self.run.metrics.log_image(self.step, "samples", image_grid(samples, nrow=8))
        self.run.metrics.log_scalars(self.step, row)
        return row

    def eval_batches(self, n: int) -> list[torch.Tensor]:
        """The first n test examples in batches of 500; for a grouped model, whose bound is that
        of its batch as one group, random groups of the training group size (all n as one group
        when n is smaller)."""
        if self.groups is None:
            return [torch.arange(start, min(start + 500, n)) for start in range(0, n, 500)]
        if n < self.groups.size:
            return [torch.arange(n)]
        return list(random_groups(n, self.groups.size, seed=self.config.seed)[0])

    def eval_model(self) -> nn.Module:
        """The model with EMA weights when an EMA is kept, in eval mode."""
        if self.ema is None:
            return self.model.eval()
        shadow = type(self.model)(self.model.config).to(self.device)
        shadow.load_state_dict(self.ema.state_dict(self.model))
        return shadow.eval()

    # -- checkpoints ---------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        if not self.dist.is_main:  # every process holds the same state; rank 0 writes it
            return
        meta = {"step": self.step, "skipped": self.skipped, "nonfinite_in_row": self.nonfinite_in_row}
        tensors, meta = pack_training_state(self.model, self.optimizer, self.ema.shadow if self.ema else None, meta)
        self.run.save_checkpoint(self.step, tensors, meta, keep_last=self.config.keep_checkpoints)

    def resume(self) -> bool:
        """Continue from the run's latest checkpoint, if it has one, and drop metrics
        logged after it (they will be logged again). Returns whether it resumed."""
        latest = self.run.latest_checkpoint()
        if latest is None:
            return False
        tensors, meta = self.run.load_checkpoint(latest.step)
        restore_training_state(tensors, meta, self.model, self.optimizer, self.ema.shadow if self.ema else None)
        self.step, self.skipped = meta["step"], meta["skipped"]
        self.nonfinite_in_row = meta.get("nonfinite_in_row", 0)
        self.run.metrics.truncate_after(self.step)
        return True


class TrainingLoss(nn.Module):
    """A model's `training_loss` as `forward`, the call DDP hooks to all-reduce gradients."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return training_loss(self.model, inputs)


def training_loss(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, dict]:
    """The model's loss on (x,) or, with labels, on (x, x_labelled, y_labelled)."""
    return model.training_loss(*inputs) if len(inputs) == 1 else model.labelled_training_loss(*inputs)


def epoch_batch(n: int, batch_size: int, step: int, seed: int) -> torch.Tensor:
    """Positions in range(n) of the batch at `step`: epochs of n // batch_size batches, each
    epoch a fresh permutation seeded by (seed, epoch)."""
    epoch, position = divmod(step, n // batch_size)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    return perm[position * batch_size : (position + 1) * batch_size]


@dataclass
class LabelStreams:
    """The training split under a label regime: the positions whose label is `known` and
    `hidden`, and the labels (n,) of the regime's factor. The labelled stream's batches are
    their own permutations of `known`, seeded apart from the unlabelled stream's."""

    known: torch.Tensor
    hidden: torch.Tensor
    labels: torch.Tensor
    batch_size: int
    seed: int

    @classmethod
    def of(cls, model: nn.Module, data: Dataset, config: TrainConfig) -> LabelStreams | None:
        mask = data.meta.get("label_known")
        if mask is None:
            return None
        if not isinstance(model, LabelledTraining):
            raise AtlasError(
                f"the training data has a label regime ({data.meta.get('label_factor')!r} labels), but a "
                f"{type(model).__name__} does not learn from labels; drop the label_regime data option or "
                "choose a family that uses labels (gmdgm, ssvae)"
            )
        known, hidden = mask.nonzero().squeeze(1), (~mask).nonzero().squeeze(1)
        if len(hidden) < config.batch_size:
            raise AtlasError(
                f"{len(hidden)} training examples have no label, fewer than batch_size={config.batch_size}; "
                "lower the batch size or the labelled fraction"
            )
        if len(known) and len(known) < config.labelled_batch_size:
            raise AtlasError(
                f"only {len(known)} training examples keep their label, fewer than "
                f"train.labelled_batch_size={config.labelled_batch_size}; lower it or raise the labelled fraction"
            )
        labels = data.labels[data.meta["label_factor"]].values.long()
        return cls(known, hidden, labels, config.labelled_batch_size, config.seed + 104_729)

    def batch_indices(self, step: int) -> torch.Tensor:
        """The labelled examples at `step` (empty when no label is known, as in US)."""
        if not len(self.known):
            return self.known
        return self.known[epoch_batch(len(self.known), self.batch_size, step, self.seed)]


@dataclass
class GroupStream:
    """A grouped model's training batches: the group order's groups of `size` examples, the
    epoch's order seeded by (seed, epoch), one group per step."""

    order: GroupOrder
    size: int
    seed: int
    steps_per_epoch: int
    _cached: tuple[int, torch.Tensor] | None = None  # (epoch, its groups): one order per epoch, not per step

    @classmethod
    def of(cls, model: nn.Module, data: Dataset, config: TrainConfig, world_size: int) -> GroupStream | None:
        order = data.meta.get("group_order")
        if not isinstance(model, GroupedBatch):
            if order is not None:
                raise AtlasError(
                    f"the training data sets a group order (group_by={order.by!r}), but the batches of a "
                    f"{type(model).__name__} are not groups of a shared latent; drop the group options or "
                    "choose a grouped family (ugvae)"
                )
            return None
        name = type(model).__name__
        if config.micro_batches > 1:
            raise AtlasError(
                f"a {name}'s batch is one group whose examples share a latent, so it cannot be cut into "
                f"train.micro_batches={config.micro_batches} pieces (each would get its own group posterior); "
                "set micro_batches to 1 and choose a batch size (= group size) that fits in memory"
            )
        if world_size > 1:
            raise AtlasError(
                f"a {name}'s batch is one group whose examples share a latent, so it cannot be split over "
                f"{world_size} processes; train it in one process"
            )
        order = order if order is not None else GroupOrder("random", len(data))
        if order.size is not None and order.size != config.batch_size:
            raise AtlasError(
                f"the data's group_size={order.size} differs from train.batch_size={config.batch_size}, and a "
                f"{name}'s batch is its group; make them equal or drop group_size"
            )
        groups, _ = order.groups(config.batch_size, config.seed, 0)
        return cls(order, config.batch_size, config.seed, len(groups))

    def batch_indices(self, step: int) -> torch.Tensor:
        """The group (size,) at `step`: group `step mod steps_per_epoch` of its epoch's order."""
        epoch, position = divmod(step, self.steps_per_epoch)
        if self._cached is None or self._cached[0] != epoch:
            self._cached = (epoch, self.order.groups(self.size, self.seed, epoch)[0])
        return self._cached[1][position]


def piece_seed(seed: int, step: int, piece: int) -> int:
    """The seed of a piece of the global batch: the same whichever process computes it."""
    return int(np.random.SeedSequence([seed, step, piece]).generate_state(1)[0])


def mean_finite(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else float("nan")
