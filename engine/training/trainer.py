"""Training any Latent Atlas model, visible top to bottom in `Trainer.fit`.

The data order is a pure function of (seed, step), and the checkpoint holds the weights,
the optimiser, the EMA and the random-number state, so a run resumed from a checkpoint
continues exactly the trajectory an uninterrupted run would have taken (on the CPU).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn
from tqdm import tqdm

from engine.data.base import Dataset
from engine.device import pick_device, seed_everything
from engine.errors import AtlasError
from engine.images import image_grid
from engine.store.runs import Run
from engine.training.checkpointing import pack_training_state, restore_training_state
from engine.training.ema import EMA


@dataclass
class TrainConfig:
    steps: int = 3000
    batch_size: int = 128
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
        for name in ("steps", "batch_size", "log_every", "eval_every", "checkpoint_every", "keep_checkpoints"):
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
    def __init__(self, model: nn.Module, train_data: Dataset, test_data: Dataset, config: TrainConfig, run: Run):
        if len(train_data) < config.batch_size:
            raise AtlasError(
                f"the training set has {len(train_data)} examples, fewer than batch_size={config.batch_size}; "
                "lower the batch size"
            )
        self.config = config
        self.run = run
        self.train_data, self.test_data = train_data, test_data
        self.device = pick_device(config.device)
        seed_everything(config.seed)
        self.model = model.to(self.device)
        self.optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.ema = EMA(model, config.ema_decay) if config.ema_decay > 0 else None
        self.step = 0
        self.skipped = 0  # non-finite or over-threshold updates, over the whole run
        self.nonfinite_in_row = 0
        self.steps_per_epoch = len(train_data) // config.batch_size
        self.use_amp = config.amp and self.device.type == "cuda"

    # -- data order -----------------------------------------------------------------------
    def batch_indices(self, step: int) -> torch.Tensor:
        """Indices of the minibatch at `step`: a fresh permutation each epoch, seeded
        by (seed, epoch), so any step's batch is known without replaying earlier ones."""
        epoch, position = divmod(step, self.steps_per_epoch)
        gen = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
        perm = torch.randperm(len(self.train_data), generator=gen)
        bs = self.config.batch_size
        return perm[position * bs : (position + 1) * bs]

    # -- the loop -------------------------------------------------------------------------
    def fit(self) -> Run:
        cfg = self.config
        if not self.resume() and hasattr(self.model, "initialize"):
            # data-dependent initialisation (e.g. MFCVAE's mixture priors), fresh runs only
            with torch.no_grad(), torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.seed)
                self.model.initialize(self.train_data)
        self.run.set_status("running")
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not cfg.progress, unit="step", dynamic_ncols=True)
        window: dict[str, list[float]] = {}
        window_start, window_examples = time.perf_counter(), 0
        try:
            while self.step < cfg.steps:
                x = self.train_data.batch(self.batch_indices(self.step)).to(self.device, non_blocking=True)
                if hasattr(self.model, "set_step"):  # schedules that depend on the step (fade-ins)
                    self.model.set_step(self.step)
                metrics = self.train_step(x)
                self.step += 1
                window_examples += x.shape[0]
                for name, value in metrics.items():
                    window.setdefault(name, []).append(value)
                stop = self.nonfinite_in_row >= cfg.max_nonfinite_in_row
                if self.step % cfg.log_every == 0 or self.step == cfg.steps or stop:
                    elapsed = max(time.perf_counter() - window_start, 1e-9)
                    row = {name: mean_finite(vals) for name, vals in window.items()}
                    row.update(samples_per_s=window_examples / elapsed, skipped=self.skipped)
                    self.run.metrics.log_scalars(self.step, {f"train/{k}": v for k, v in row.items()})
                    bar.set_postfix(loss=f"{row.get('loss', float('nan')):.3g}", skipped=self.skipped)
                    window, window_start, window_examples = {}, time.perf_counter(), 0
                if stop:
                    reason = f"stopped: {self.nonfinite_in_row} non-finite steps in a row at step {self.step}"
                    self.save_checkpoint()
                    self.run.set_status("failed", reason=reason)
                    return self.run
                if self.step % cfg.eval_every == 0 or self.step == cfg.steps:
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
        return self.run

    def train_step(self, x: torch.Tensor) -> dict[str, float]:
        """One update; a non-finite loss or gradient skips it and is counted."""
        self.model.train()
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if self.use_amp else contextlib.nullcontext()
        with autocast:
            loss, metrics = self.model.training_loss(x)
        self.optimizer.zero_grad(set_to_none=True)
        if not torch.isfinite(loss):
            return self._skip(loss)
        loss.backward()
        params = [p for p in self.model.parameters() if p.grad is not None]
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        if grad_norm > self.config.grad_clip:  # scale only when clipping does something
            torch.nn.utils.clip_grads_with_norm_(params, self.config.grad_clip, grad_norm)
        if not torch.isfinite(grad_norm) or (0 < self.config.grad_skip < grad_norm):
            return self._skip(loss, grad_norm)
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model)
        self.nonfinite_in_row = 0
        out = {name: float(v) for name, v in metrics.items()}
        out.update(loss=loss.item(), grad_norm=grad_norm.item())
        return out

    def _skip(self, loss: torch.Tensor, grad_norm: torch.Tensor | None = None) -> dict[str, float]:
        self.optimizer.zero_grad(set_to_none=True)
        self.skipped += 1
        finite = torch.isfinite(loss) and (grad_norm is None or torch.isfinite(grad_norm))
        self.nonfinite_in_row = 0 if finite else self.nonfinite_in_row + 1
        return {"loss": float(loss)} if torch.isfinite(loss) else {}

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
            if hasattr(model, "elbo"):  # a sequential predictor has none: its metrics say how it does
                elbo = []
                for start in range(0, n, 500):
                    idx = torch.arange(start, min(start + 500, n))
                    x = self.test_data.batch(idx).to(self.device)
                    elbo.append(model.elbo(x).total)
                row["test/elbo"] = torch.cat(elbo).mean().item()
            if hasattr(model, "evaluation_metrics"):  # family-specific, e.g. per-facet accuracy
                row.update({f"test/{k}": v for k, v in model.evaluation_metrics(self.test_data, n).items()})
            if self.test_data.kind == "image":
                samples = model.sample(64)
                self.run.metrics.log_image(self.step, "samples", image_grid(samples, nrow=8))
        self.run.metrics.log_scalars(self.step, row)
        return row

    def eval_model(self) -> nn.Module:
        """The model with EMA weights when an EMA is kept, in eval mode."""
        if self.ema is None:
            return self.model.eval()
        shadow = type(self.model)(self.model.config).to(self.device)
        shadow.load_state_dict(self.ema.state_dict(self.model))
        return shadow.eval()

    # -- checkpoints ---------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        meta = {"step": self.step, "skipped": self.skipped, "nonfinite_in_row": self.nonfinite_in_row}
        tensors, meta = pack_training_state(
            self.model, self.optimizer, self.ema.shadow if self.ema else None, meta
        )
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


def mean_finite(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else float("nan")
