"""Diffusion training steps/s and sampling images/s: Latent Atlas's DDPM against diffusers'.

Both sides model 16x16 one-channel images with a U-Net of three resolutions (32, 64, 64
channels, GroupNorm of 8 groups, one residual block per resolution on the way down) and a
linear β schedule of T = 250 steps (β from 4e-4 to 0.08, the presets' digits-ddpm):

- ours: `engine.models.ddpm.DDPM` (the U-Net of engine/models/unet.py, ε-loss);
- diffusers: `UNet2DModel` (DownBlock2D / UpBlock2D, layers_per_block=1, which puts two
  residual blocks per resolution on the way up and strided convolutions between) with
  `DDPMScheduler`; the training step is theirs as their training example writes it
  (add_noise, the U-Net, MSE on ε).

The two U-Nets are not the same network: the JSON records both parameter counts, and the
ratios hold for these two configurations only.

(a) training: forward + loss + backward + Adam step on batches of 64, in short blocks of
    steps interleaved (ours, theirs; theirs, ours; ...); medians of the blocks' steps/s and
    the median of the per-round ratios.
(b) sampling: ancestral sampling of 64 images through all T steps, interleaved repeats,
    images/s and the median ratio.

Usage (from the repository root):
    .venv/bin/pip install -r benchmarks/requirements.txt
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/diffusion_speed.py           # ~4 minutes on one thread
    .venv/bin/python benchmarks/diffusion_speed.py --quick                     # smoke test

Results go to benchmarks/results/diffusion_speed.json (see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from benchmarks.common import display_path, environment, loadavg  # noqa: E402
from engine.models.ddpm import DDPM, DDPMConfig  # noqa: E402
from engine.store.atomic import atomic_write_json  # noqa: E402

try:
    import diffusers
    from diffusers import DDPMScheduler, UNet2DModel
except ImportError as err:  # pragma: no cover - a setup problem, not a benchmark result
    sys.exit(f"diffusers is not importable ({err}); run: .venv/bin/pip install -r benchmarks/requirements.txt")

T = 250
BATCH = 64
SIDE = 16
WIDTHS = (32, 64, 64)
OUT_DEFAULT = REPO / "benchmarks" / "results" / "diffusion_speed.json"


def build_ours() -> DDPM:
    torch.manual_seed(0)
    return DDPM(DDPMConfig(input_shape=(1, SIDE, SIDE), steps=T, widths=WIDTHS, dropout=0.0))


def build_theirs() -> tuple[UNet2DModel, DDPMScheduler]:
    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=SIDE,
        in_channels=1,
        out_channels=1,
        block_out_channels=WIDTHS,
        layers_per_block=1,
        down_block_types=("DownBlock2D",) * 3,
        up_block_types=("UpBlock2D",) * 3,
        norm_num_groups=8,
    )
    betas = build_ours().diffusion.betas
    scheduler = DDPMScheduler(
        num_train_timesteps=T, beta_start=betas[0].item(), beta_end=betas[-1].item(), beta_schedule="linear"
    )
    return unet, scheduler


def ours_train_step(model: DDPM, opt, x: torch.Tensor) -> None:
    loss, _ = model.training_loss(x)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def theirs_train_step(unet: UNet2DModel, scheduler: DDPMScheduler, opt, x: torch.Tensor) -> None:
    y = x * 2 - 1
    noise = torch.randn_like(y)
    t = torch.randint(0, T, (len(y),))
    pred = unet(scheduler.add_noise(y, noise, t), t).sample
    loss = F.mse_loss(pred, noise)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


@torch.no_grad()
def theirs_sample(unet: UNet2DModel, scheduler: DDPMScheduler, n: int) -> torch.Tensor:
    scheduler.set_timesteps(T)
    x = torch.randn(n, 1, SIDE, SIDE)
    for t in scheduler.timesteps:
        x = scheduler.step(unet(x, t).sample, t, x).prev_sample
    return ((x + 1) / 2).clamp(0, 1)


def timed(fn, repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps-per-block", type=int, default=10)
    parser.add_argument("--sampling-rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one short round of each, written nowhere")
    parser.add_argument("--out", type=Path, default=OUT_DEFAULT)
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.steps_per_block, args.sampling_rounds = 1, 2, 1
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    load_at_start = loadavg()

    ours = build_ours()
    unet, scheduler = build_theirs()
    ours_opt = torch.optim.Adam(ours.parameters(), lr=2e-4)
    theirs_opt = torch.optim.Adam(unet.parameters(), lr=2e-4)
    x = torch.rand(BATCH, 1, SIDE, SIDE)
    for _ in range(2):  # warm-up
        ours_train_step(ours, ours_opt, x)
        theirs_train_step(unet, scheduler, theirs_opt, x)

    train = {"ours": [], "theirs": [], "ratio": []}
    for r in range(args.rounds):
        order = ("ours", "theirs") if r % 2 == 0 else ("theirs", "ours")
        rates = {}
        for side in order:
            step = (
                (lambda: ours_train_step(ours, ours_opt, x))
                if side == "ours"
                else (lambda: theirs_train_step(unet, scheduler, theirs_opt, x))
            )
            rates[side] = args.steps_per_block / timed(step, args.steps_per_block)
            train[side].append(rates[side])
        train["ratio"].append(rates["ours"] / rates["theirs"])
        print(f"train round {r}: ours {rates['ours']:.2f} steps/s, diffusers {rates['theirs']:.2f}", flush=True)

    ours.eval()
    unet.eval()
    sample = {"ours": [], "theirs": [], "ratio": []}
    for r in range(args.sampling_rounds):
        order = ("ours", "theirs") if r % 2 == 0 else ("theirs", "ours")
        rates = {}
        for side in order:
            fn = (lambda: ours.sample(BATCH)) if side == "ours" else (lambda: theirs_sample(unet, scheduler, BATCH))
            rates[side] = BATCH / timed(fn, 1)
            sample[side].append(rates[side])
        sample["ratio"].append(rates["ours"] / rates["theirs"])
        print(f"sampling round {r}: ours {rates['ours']:.2f} images/s, diffusers {rates['theirs']:.2f}", flush=True)

    def summary(d: dict, unit: str) -> dict:
        return {
            f"ours_{unit}": d["ours"],
            f"diffusers_{unit}": d["theirs"],
            f"ours_median_{unit}": statistics.median(d["ours"]),
            f"diffusers_median_{unit}": statistics.median(d["theirs"]),
            "median_ratio_ours_over_diffusers": statistics.median(d["ratio"]),
        }

    result = {
        "what": __doc__.split("\n")[0],
        "setup": {"T": T, "batch": BATCH, "image": [1, SIDE, SIDE], "widths": list(WIDTHS)},
        "parameters": {
            "ours": sum(p.numel() for p in ours.parameters()),
            "diffusers": sum(p.numel() for p in unet.parameters()),
        },
        "training": summary(train, "steps_per_s"),
        "sampling": summary(sample, "images_per_s"),
        "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__},
        "environment": environment(load_at_start),
    }
    if args.quick:
        print(result)
        return 0
    atomic_write_json(args.out, result)
    print(f"wrote {display_path(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
