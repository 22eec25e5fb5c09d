"""Training on several processes with PyTorch DDP, started by `torchrun`.

torchrun starts one process per GPU (or per CPU worker), on one machine or several, and
tells each its place in the environment: WORLD_SIZE, RANK and LOCAL_RANK. `launch` reads
them, joins the process group (NCCL on CUDA, gloo on the CPU) and leaves it again at the
end, also on an error. Outside torchrun it gives a one-process context, so the trainer
has a single code path. Rank 0 writes the run; the other ranks hold a `FollowerRun`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from engine.device import pick_device
from engine.errors import AtlasError
from engine.store.runs import Run

LAUNCH_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK")


@dataclass(frozen=True)
class Distributed:
    """This process's place in a training job; the default is a job of one process."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    rank: int = 0
    world_size: int = 1
    active: bool = False  # a process group is joined (under torchrun, even with one process)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_mean(self, values: dict[str, float]) -> dict[str, float]:
        """The mean over all processes of each value. Every process must pass the same names."""
        if not self.active:
            return dict(values)
        names = sorted(values)
        packed = torch.tensor([float(values[n]) for n in names], dtype=torch.float64, device=self.device)
        dist.all_reduce(packed)
        return dict(zip(names, (packed / self.world_size).tolist()))

    def barrier(self) -> None:
        if self.active:
            dist.barrier(device_ids=[self.device.index] if self.device.type == "cuda" else None)


def is_main_process() -> bool:
    """Rank 0 of a torchrun job, or a process that torchrun did not start."""
    return int(os.environ.get("RANK", "0")) == 0


@contextlib.contextmanager
def launch(device: str = "auto") -> Iterator[Distributed]:
    """The process group of a torchrun job for the time of a `with` block; outside
    torchrun, a one-process context on the device `device` names. A group that the
    caller joined already is used and left to the caller."""
    if "WORLD_SIZE" not in os.environ:
        yield Distributed(device=pick_device(device))
        return
    try:
        world_size, rank, local_rank = (int(os.environ[name]) for name in LAUNCH_VARIABLES)
    except (KeyError, ValueError) as err:
        raise AtlasError(
            f"WORLD_SIZE is set but {', '.join(LAUNCH_VARIABLES)} are not all integers ({err}); "
            "start several processes with torchrun, or unset WORLD_SIZE for one"
        ) from None
    target = rank_device(device, local_rank)
    joined_here = not dist.is_initialized()
    if joined_here:
        if target.type == "cuda":
            torch.cuda.set_device(target)
        backend = "nccl" if target.type == "cuda" else "gloo"
        dist.init_process_group(backend, device_id=target if target.type == "cuda" else None)
    try:
        yield Distributed(target, rank, world_size, active=True)
    finally:
        if joined_here and dist.is_initialized():
            dist.destroy_process_group()


def rank_device(preference: str, local_rank: int) -> torch.device:
    """cuda:LOCAL_RANK, or the CPU: under torchrun each process owns one GPU of its machine."""
    if preference == "cpu" or (preference == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if preference not in ("auto", "cuda"):
        raise AtlasError(
            f"under torchrun each process trains on cuda:LOCAL_RANK or on the CPU, so device {preference!r} "
            "cannot be used; give --device auto, cuda or cpu"
        )
    pick_device("cuda")  # refuses when no GPU is visible
    if local_rank >= torch.cuda.device_count():
        raise AtlasError(
            f"process {local_rank} on this machine has no GPU of its own ({torch.cuda.device_count()} visible); "
            "start at most that many processes per machine (--nproc_per_node), or train with --device cpu"
        )
    return torch.device("cuda", local_rank)


class FollowerRun:
    """What a process other than rank 0 holds in place of its run: it reads the run's
    checkpoints (to resume, when there is a run), and everything it would write is
    dropped, since rank 0 writes for the whole job."""

    def __init__(self, run: Run | None = None):
        self._run = run
        self.metrics = _DroppedMetrics()

    def latest_checkpoint(self):
        return self._run.latest_checkpoint() if self._run is not None else None

    def load_checkpoint(self, which, device="cpu"):
        return self._run.load_checkpoint(which, device=device)

    def set_status(self, state: str, reason: str = "") -> None:
        pass

    def save_checkpoint(self, *args, **kwargs) -> None:
        pass


class _DroppedMetrics:
    def log_scalars(self, *args, **kwargs) -> None:
        pass

    def log_image(self, *args, **kwargs) -> None:
        pass

    def truncate_after(self, step: int) -> None:
        pass
