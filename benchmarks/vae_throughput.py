"""Training throughput of Latent Atlas's VAE against pythae's VAE (clementchadebec/benchmark_VAE).

Both sides train the same MLP VAE (784-512-256-2x16 encoder, 16-256-512-784 decoder, SiLU,
Bernoulli likelihood / BCE summed over pixels and averaged over the batch, KL to N(0, I)),
with Adam(lr=1e-3), batch 128, on the same data, in the same process, with the same
torch thread count. Two measurements:

  (a) "bare step": forward + loss + backward + Adam step over pre-sliced batches of one
      pre-loaded tensor; short blocks of steps interleaved (ours, pythae; pythae, ours; ...),
      every block's samples/s, the medians, and the median of the per-round paired ratios.
      Datasets: scikit-learn digits at 28x28 (our `load_dataset("digits", size=28)`) and a
      synthetic 60,000 x 784 uniform-[0, 1] tensor.
  (b) "pipeline": our `Trainer.fit()` (SQLite metrics every 25 steps, eval every 500,
      checkpoint every 1000) against pythae's `TrainingPipeline` (its BaseTrainer), for the
      same number of epochs of digits, timed end to end (trainer construction included).

Both parts run at each thread count of --threads (default: 1 and the number of cores).

Usage (from the repository root):
    .venv/bin/pip install -r benchmarks/requirements.txt
    .venv/bin/python benchmarks/vae_throughput.py            # ~5-6 minutes on a quiet 2-core machine
    .venv/bin/python benchmarks/vae_throughput.py --quick    # smoke test

Results go to benchmarks/results/vae_throughput.json (see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import io
import json
import logging
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
import torch  # noqa: E402
from torch import nn  # noqa: E402

from benchmarks.common import Deadline, cpu_name, display_path, loadavg  # noqa: E402
from engine.models.vae import VAE, VAEConfig  # noqa: E402
from engine.store.atomic import atomic_write_json  # noqa: E402

try:
    import pythae
    from pythae.models import VAE as PythaeVAE
    from pythae.models import VAEConfig as PythaeVAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder
    from pythae.pipelines import TrainingPipeline
    from pythae.trainers import BaseTrainerConfig
except ImportError as err:  # pragma: no cover - a setup problem, not a benchmark result
    sys.exit(f"pythae is not importable ({err}); run: .venv/bin/pip install -r benchmarks/requirements.txt")

INPUT_SHAPE = (1, 28, 28)
N_IN = math.prod(INPUT_SHAPE)
HIDDEN = (512, 256)
LATENT = 16
BATCH = 128
LR = 1e-3
OUT_DEFAULT = REPO / "benchmarks" / "results" / "vae_throughput.json"


# -- the two models, identical layer sizes ---------------------------------------------------


def build_ours(seed: int) -> VAE:
    torch.manual_seed(seed)
    return VAE(VAEConfig(input_shape=INPUT_SHAPE, arch="mlp", hidden=HIDDEN, latent_dim=LATENT, likelihood="bernoulli"))


class MLPEncoder(BaseEncoder):
    """Flatten -> 784-512-256-(2*16) with SiLU between layers; mean and log-variance."""

    def __init__(self):
        BaseEncoder.__init__(self)
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(N_IN, HIDDEN[0]),
            nn.SiLU(),
            nn.Linear(HIDDEN[0], HIDDEN[1]),
            nn.SiLU(),
            nn.Linear(HIDDEN[1], 2 * LATENT),
        )

    def forward(self, x):
        mean, logvar = self.net(x).chunk(2, dim=-1)
        return ModelOutput(embedding=mean, log_covariance=logvar)


class MLPDecoder(BaseDecoder):
    """16-256-512-784 with SiLU between layers, then a sigmoid: pythae's "bce" loss takes
    probabilities (F.binary_cross_entropy), ours takes logits (..._with_logits)."""

    def __init__(self):
        BaseDecoder.__init__(self)
        self.net = nn.Sequential(
            nn.Linear(LATENT, HIDDEN[1]),
            nn.SiLU(),
            nn.Linear(HIDDEN[1], HIDDEN[0]),
            nn.SiLU(),
            nn.Linear(HIDDEN[0], N_IN),
        )

    def forward(self, z):
        return ModelOutput(reconstruction=torch.sigmoid(self.net(z)).view(-1, *INPUT_SHAPE))


def build_pythae(ours: VAE | None = None, seed: int = 0) -> PythaeVAE:
    """pythae's VAE with our layer sizes; with `ours`, starting from the same weights."""
    torch.manual_seed(seed)
    cfg = PythaeVAEConfig(input_dim=INPUT_SHAPE, latent_dim=LATENT, reconstruction_loss="bce")
    model = PythaeVAE(cfg, encoder=MLPEncoder(), decoder=MLPDecoder())
    if ours is not None:
        with torch.no_grad():
            for mine, theirs in ((ours.encoder, model.encoder), (ours.decoder, model.decoder)):
                a, b = list(mine.parameters()), list(theirs.parameters())
                assert [p.shape for p in a] == [p.shape for p in b], "layer sizes differ"
                for p, q in zip(a, b):
                    q.copy_(p)
    return model


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# -- data -----------------------------------------------------------------------------------------


def load_digits(seed: int = 0):
    """Our digits at 28x28: (train x, test x), float32 (n, 1, 28, 28) in [0, 1]."""
    from engine.data import load_dataset

    train = load_dataset("digits", split="train", seed=seed, size=28)
    test = load_dataset("digits", split="test", seed=seed, size=28)
    return train, test


def fixed_batches(x: torch.Tensor, seed: int = 0) -> list[torch.Tensor]:
    """Full batches of one fixed shuffle of x, as contiguous views (no copy per step)."""
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    x = x[perm].contiguous()
    return [x[i : i + BATCH] for i in range(0, len(x) - BATCH + 1, BATCH)]


# -- (a) the bare training step ------------------------------------------------------------------


class OursStepper:
    name = "latent_atlas"

    def __init__(self, model: VAE):
        self.model = model.train()
        self.opt = torch.optim.Adam(model.parameters(), lr=LR)

    def step(self, x):
        loss, _ = self.model.training_loss(x)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss


class PythaeStepper:
    name = "pythae"

    def __init__(self, model: PythaeVAE):
        self.model = model.train()
        self.opt = torch.optim.Adam(model.parameters(), lr=LR)

    def step(self, x):
        # what pythae's BaseTrainer.train_step / _optimizers_step do, minus the DataLoader
        out = self.model({"data": x})
        self.opt.zero_grad()  # set_to_none=True is torch's default
        out.loss.backward()
        self.opt.step()
        return out.loss


def timed_steps(stepper, batches, start: int, steps: int) -> tuple[float, float]:
    """(seconds, last loss) for `steps` updates beginning at batch `start` (cycling)."""
    gc.collect()
    n = len(batches)
    t0 = time.perf_counter()
    for i in range(start, start + steps):
        loss = stepper.step(batches[i % n])
    elapsed = time.perf_counter() - t0
    return elapsed, loss.item()


def bare_step_benchmark(
    name: str,
    batches,
    steps: int,
    warmup: int,
    repeats: int,
    max_repeats: int,
    budget_s: float,
    deadline: Deadline,
    seed: int,
) -> dict:
    """Interleaved repeats of `steps` updates per side: ours then pythae, then pythae then
    ours, ...; `repeats` rounds, more (up to `max_repeats`) while `budget_s` lasts, fewer
    (but at least 2) if a round no longer fits in 3 x `budget_s` or before the deadline.
    Each round gives one samples/s per side and one paired ratio (same round, same load)."""
    ours = build_ours(seed)
    theirs = build_pythae(ours, seed)  # same starting weights
    steppers = [OursStepper(ours), PythaeStepper(theirs)]
    for s in steppers:
        timed_steps(s, batches, 0, warmup)
    times = {s.name: [] for s in steppers}
    losses = {s.name: [] for s in steppers}
    cursor, t_start, r, last_round, cut_short = warmup, time.perf_counter(), 0, 0.0, False
    while r < max_repeats:
        elapsed = time.perf_counter() - t_start
        if r >= repeats and elapsed >= budget_s:
            break
        if r >= 2 and (elapsed + last_round > 3 * budget_s or last_round > deadline.remaining()):
            cut_short = r < repeats
            break
        t_round = time.perf_counter()
        order = steppers if r % 2 == 0 else steppers[::-1]
        for s in order:
            seconds, loss = timed_steps(s, batches, cursor, steps)
            times[s.name].append(seconds)
            losses[s.name].append(loss)
        last_round = time.perf_counter() - t_round
        cursor += steps
        r += 1
    result = {
        "dataset": name,
        "n_batches_cycled": len(batches),
        "steps_per_repeat": steps,
        "warmup_steps": warmup,
        "repeats": r,
        "cut_short_by_time_budget": cut_short,
        "batch_size": BATCH,
        "threads": torch.get_num_threads(),
        "wall_s": time.perf_counter() - t_start,
    }
    for s in steppers:
        sps = [steps * BATCH / t for t in times[s.name]]
        result[s.name] = {
            "median_samples_per_s": statistics.median(sps),
            "best_samples_per_s": max(sps),
            "samples_per_s": sps,
            "median_ms_per_step": 1e3 * statistics.median(times[s.name]) / steps,
            "best_ms_per_step": 1e3 * min(times[s.name]) / steps,
            "loss_after_each_repeat": losses[s.name],
        }
    paired = [tb / ta for ta, tb in zip(times["latent_atlas"], times["pythae"])]
    result["ratio_ours_over_pythae"] = (
        result["latent_atlas"]["median_samples_per_s"] / result["pythae"]["median_samples_per_s"]
    )
    result["ratio_ours_over_pythae_best"] = (
        result["latent_atlas"]["best_samples_per_s"] / result["pythae"]["best_samples_per_s"]
    )
    result["paired_ratios_ours_over_pythae"] = paired
    result["median_paired_ratio_ours_over_pythae"] = statistics.median(paired)
    return result


def equivalence_check(x: torch.Tensor, seed: int) -> dict:
    """Same weights and the same noise draw: the two losses (and gradients) must agree,
    which shows that both sides compute the same objective."""
    ours = build_ours(seed)
    theirs = build_pythae(ours, seed)
    torch.manual_seed(123)
    loss_a, _ = ours.training_loss(x)
    loss_a.backward()
    torch.manual_seed(123)
    loss_b = theirs({"data": x}).loss
    loss_b.backward()
    ga = torch.cat([p.grad.flatten() for m in (ours.encoder, ours.decoder) for p in m.parameters()])
    gb = torch.cat([p.grad.flatten() for m in (theirs.encoder, theirs.decoder) for p in m.parameters()])
    return {
        "loss_latent_atlas": loss_a.item(),
        "loss_pythae": loss_b.item(),
        "loss_rel_diff": abs(loss_a.item() - loss_b.item()) / abs(loss_b.item()),
        "grad_rel_diff": float((ga - gb).norm() / gb.norm()),
        "params_latent_atlas": n_params(ours),
        "params_pythae": n_params(theirs),
    }


# -- (b) the full training pipeline ----------------------------------------------------------------


def quiet_pythae_logs() -> None:
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("pythae"):
            logging.getLogger(name).setLevel(logging.WARNING)


def run_ours_pipeline(train, test, epochs: int, root: Path, seed: int, eval_every: int, checkpoint_every: int) -> dict:
    from engine.store import RunStore
    from engine.training.trainer import TrainConfig, Trainer

    steps_per_epoch = len(train) // BATCH  # our trainer uses full batches only
    cfg = TrainConfig(
        steps=epochs * steps_per_epoch,
        batch_size=BATCH,
        lr=LR,
        log_every=25,
        eval_every=eval_every,
        checkpoint_every=checkpoint_every,
        progress=False,
        device="cpu",
        seed=seed,
    )
    model = build_ours(seed)
    run = RunStore(root).create_run(
        {
            "family": "vae",
            "model": model.config.to_dict(),
            "data": {"name": "digits", "options": {"size": 28}},
            "train": cfg.to_dict(),
        },
        name_hint="bench",
    )
    gc.collect()
    t0 = time.perf_counter()
    Trainer(model, train, test, cfg, run).fit()
    seconds = time.perf_counter() - t0
    status = run.status.state
    samples = cfg.steps * BATCH
    return {
        "seconds": seconds,
        "steps": cfg.steps,
        "samples": samples,
        "samples_per_s": samples / seconds,
        "final_status": status,
        "checkpoints": [c.step for c in run.checkpoints()],
    }


def run_pythae_pipeline(
    train_x, test_x, epochs: int, root: Path, seed: int, with_eval: bool, steps_saving: int | None
) -> dict:
    model = build_pythae(None, seed)
    cfg = BaseTrainerConfig(
        output_dir=str(root),
        per_device_train_batch_size=BATCH,
        per_device_eval_batch_size=BATCH,
        num_epochs=epochs,
        learning_rate=LR,
        optimizer_cls="Adam",
        steps_saving=steps_saving,
        no_cuda=True,
        seed=seed,
    )
    quiet_pythae_logs()
    gc.collect()
    sink = io.StringIO()  # its tqdm bars (always on) go here instead of the terminal
    t0 = time.perf_counter()
    with contextlib.redirect_stderr(sink), contextlib.redirect_stdout(sink):
        pipeline = TrainingPipeline(model=model, training_config=cfg)
        pipeline(train_data=train_x, eval_data=test_x if with_eval else None)
    seconds = time.perf_counter() - t0
    steps_per_epoch = math.ceil(len(train_x) / BATCH)  # DataLoader(drop_last=False)
    samples = epochs * len(train_x)
    return {
        "seconds": seconds,
        "steps": epochs * steps_per_epoch,
        "samples": samples,
        "samples_per_s": samples / seconds,
    }


def pipeline_benchmark(
    train,
    test,
    epochs: int,
    repeats: int,
    max_repeats: int,
    budget_s: float,
    deadline: Deadline,
    expected_samples_per_s: float,
    seed: int,
) -> dict:
    """Rounds of the three variants (A B C, C B A, ...): `repeats` rounds, more (up to
    `max_repeats`) while `budget_s` lasts, fewer if the next round would pass the deadline
    (a round is predicted to take as long as the last one; the first from
    `expected_samples_per_s`). Zero rounds: {"skipped": reason}."""
    eval_every, checkpoint_every = 500, 1000
    steps_per_epoch = len(train) // BATCH
    steps_saving = max(1, round(checkpoint_every / steps_per_epoch))  # epochs between checkpoints
    variants = {
        "latent_atlas": lambda root: run_ours_pipeline(train, test, epochs, root, seed, eval_every, checkpoint_every),
        "pythae_eval_each_epoch": lambda root: run_pythae_pipeline(
            train.x, test.x, epochs, root, seed, True, steps_saving
        ),
        "pythae_no_eval": lambda root: run_pythae_pipeline(train.x, test.x, epochs, root, seed, False, steps_saving),
    }
    runs = {name: [] for name in variants}
    names = list(variants)
    t_start, r, cut_short = time.perf_counter(), 0, False
    predicted = 3 * epochs * len(train) / expected_samples_per_s
    while r < max_repeats:
        if r >= repeats and time.perf_counter() - t_start >= budget_s:
            break
        if predicted > deadline.remaining():
            cut_short = r < repeats
            break
        t_round = time.perf_counter()
        order = names if r % 2 == 0 else names[::-1]  # A B C, C B A, ...
        for name in order:
            with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
                runs[name].append(variants[name](Path(tmp)))
        predicted = time.perf_counter() - t_round
        r += 1
    if r == 0:
        return {
            "skipped": f"a round of the three variants was predicted to take {predicted:.0f} s, more than "
            f"the {max(0.0, deadline.remaining()):.0f} s left of --time-budget",
            "threads": torch.get_num_threads(),
            "epochs": epochs,
        }
    result = {
        "dataset": "digits 28x28",
        "train_examples": len(train),
        "test_examples": len(test),
        "epochs": epochs,
        "repeats": r,
        "cut_short_by_time_budget": cut_short,
        "batch_size": BATCH,
        "threads": torch.get_num_threads(),
        "wall_s": time.perf_counter() - t_start,
        "settings": {
            "latent_atlas": {
                "steps": epochs * steps_per_epoch,
                "log_every": 25,
                "eval_every": eval_every,
                "eval_examples": min(len(test), 1000),
                "checkpoint_every": checkpoint_every,
                "grad_clip": 200.0,
                "progress": False,
            },
            "pythae": {
                "num_epochs": epochs,
                "eval": "full test set after every epoch (eval variant) or "
                "none (then it keeps the best model on train)",
                "steps_saving_epochs": steps_saving,
                "final_model_saved": True,
                "progress_bars": "on (pythae cannot turn them off), written to a StringIO",
            },
        },
    }
    for name in names:
        sps = [r["samples_per_s"] for r in runs[name]]
        result[name] = {
            "median_samples_per_s": statistics.median(sps),
            "best_samples_per_s": max(sps),
            "samples_per_s": sps,
            "runs": runs[name],
        }
    ours = result["latent_atlas"]["median_samples_per_s"]
    for other in ("pythae_eval_each_epoch", "pythae_no_eval"):
        paired = [a["samples_per_s"] / b["samples_per_s"] for a, b in zip(runs["latent_atlas"], runs[other])]
        result[f"ratio_ours_over_{other}"] = ours / result[other]["median_samples_per_s"]
        result[f"median_paired_ratio_ours_over_{other}"] = statistics.median(paired)
    return result


# -- machine info, main ------------------------------------------------------------------------------


def machine_info(thread_counts: list[int]) -> dict:
    cpu = cpu_name()
    try:
        from importlib.metadata import version

        pydantic_version = version("pydantic")
    except Exception:
        pydantic_version = None
    import numpy

    return {
        "cpu_model": cpu,
        "cpu_count": os.cpu_count(),
        "affinity_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads_measured": thread_counts,
        "torch_default_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "torch_version": torch.__version__,
        "pythae_version": getattr(pythae, "__version__", None) or _dist_version("pythae"),
        "numpy_version": numpy.__version__,
        "pydantic_version": pydantic_version,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "device": "cpu",
    }


def _dist_version(name: str):
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--threads",
        default=None,
        help="comma-separated torch.set_num_threads values, each run for both sides and both "
        "parts (default: '1,N' with N the number of cores)",
    )
    p.add_argument(
        "--time-budget",
        type=float,
        default=540.0,
        help="seconds for the whole benchmark; repeats are cut short to fit (default 540)",
    )
    p.add_argument("--steps", type=int, default=50, help="(a) timed steps per side per repeat")
    p.add_argument("--warmup", type=int, default=20, help="(a) untimed steps per side first")
    p.add_argument("--repeats", type=int, default=10, help="(a) interleaved repeats")
    p.add_argument("--max-repeats", type=int, default=40, help="(a) maximum repeats, while --bare-budget lasts")
    p.add_argument("--bare-budget", type=float, default=15.0, help="(a) seconds per dataset and thread count")
    p.add_argument("--epochs", type=int, default=100, help="(b) epochs of digits per pipeline run")
    p.add_argument("--pipeline-repeats", type=int, default=3, help="(b) interleaved repeats")
    p.add_argument("--pipeline-max-repeats", type=int, default=5, help="(b) maximum repeats")
    p.add_argument("--pipeline-budget", type=float, default=100.0, help="(b) seconds per thread count")
    p.add_argument("--skip-synthetic", action="store_true", help="(a) on digits only")
    p.add_argument("--skip-pipeline", action="store_true")
    p.add_argument("--quick", action="store_true", help="tiny settings, to check that it runs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=OUT_DEFAULT)
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.warmup, args.repeats, args.max_repeats = 10, 5, 2, 2
        args.epochs, args.pipeline_repeats, args.pipeline_max_repeats = 3, 1, 1
    cores = os.cpu_count() or 1
    thread_counts = [int(t) for t in args.threads.split(",")] if args.threads else sorted({1, cores})

    deadline = Deadline(args.time_budget)
    started = time.perf_counter()
    result = {
        "benchmark": "vae_throughput",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(thread_counts),
        "loadavg_at_start": loadavg(),
        "args": {k: (display_path(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "notes": [
            "ratio > 1: Latent Atlas is faster. Paired ratios compare the two sides within one round.",
            "On a shared machine, other processes distort the numbers (with 2 threads and a busy core a "
            "step can take 50x longer): check loadavg_at_start/end and the spread of samples_per_s.",
            "pythae's 'bce' loss needs a sigmoid decoder and F.binary_cross_entropy; ours uses logits "
            "and binary_cross_entropy_with_logits. equivalence_check shows equal losses and gradients.",
        ],
        "model": {
            "encoder": f"{N_IN}-{HIDDEN[0]}-{HIDDEN[1]}-{2 * LATENT}",
            "decoder": f"{LATENT}-{HIDDEN[1]}-{HIDDEN[0]}-{N_IN}",
            "activation": "SiLU",
            "likelihood": "Bernoulli (BCE summed over pixels, mean over batch) + analytic KL",
            "optimizer": f"Adam lr={LR}",
            "batch_size": BATCH,
        },
    }
    print(
        f"threads={thread_counts} torch={torch.__version__} pythae={result['machine']['pythae_version']} "
        f"load={result['loadavg_at_start']}",
        flush=True,
    )

    train, test = load_digits(args.seed)
    digits_batches = fixed_batches(train.x, args.seed)
    result["equivalence_check"] = equivalence_check(digits_batches[0], args.seed)
    print("equivalence:", json.dumps(result["equivalence_check"]), flush=True)

    datasets = {"digits": ("digits 28x28 (train split)", digits_batches)}
    if not args.skip_synthetic:
        synth = torch.rand(60_000, *INPUT_SHAPE, generator=torch.Generator().manual_seed(args.seed))
        datasets["synthetic"] = ("synthetic uniform [0,1], 60000x784", fixed_batches(synth, 1))
    result["bare_step"], result["pipeline"], summary = {}, {}, {}
    for threads in thread_counts:
        torch.set_num_threads(threads)
        key_t = f"threads_{threads}"
        for key, (title, batches) in datasets.items():
            r = bare_step_benchmark(
                title,
                batches,
                args.steps,
                args.warmup,
                args.repeats,
                args.max_repeats,
                args.bare_budget,
                deadline,
                args.seed,
            )
            result["bare_step"].setdefault(key_t, {})[key] = r
            _report(f"bare step, {key}, {threads} thread(s)", r)
            summary[f"bare_{key}_{key_t}"] = {
                "ours_median_samples_per_s": round(r["latent_atlas"]["median_samples_per_s"]),
                "pythae_median_samples_per_s": round(r["pythae"]["median_samples_per_s"]),
                "ratio_ours_over_pythae": round(r["ratio_ours_over_pythae"], 3),
                "median_paired_ratio": round(r["median_paired_ratio_ours_over_pythae"], 3),
                "repeats": r["repeats"],
            }
        if args.skip_pipeline:
            continue
        expected = result["bare_step"][key_t]["digits"]["latent_atlas"]["median_samples_per_s"]
        pipe = pipeline_benchmark(
            train,
            test,
            args.epochs,
            args.pipeline_repeats,
            args.pipeline_max_repeats,
            args.pipeline_budget,
            deadline,
            expected,
            args.seed,
        )
        result["pipeline"][key_t] = pipe
        if "skipped" in pipe:
            print(f"pipeline, {threads} thread(s): skipped: {pipe['skipped']}", flush=True)
            summary[f"pipeline_{key_t}"] = {"skipped": pipe["skipped"]}
            continue
        print(
            f"pipeline (digits, {args.epochs} epochs, {threads} thread(s), {pipe['repeats']} repeats):"
            f" ours {pipe['latent_atlas']['median_samples_per_s']:.0f}"
            f" | pythae+eval {pipe['pythae_eval_each_epoch']['median_samples_per_s']:.0f}"
            f" | pythae no eval {pipe['pythae_no_eval']['median_samples_per_s']:.0f} samples/s;"
            f" ratios {pipe['ratio_ours_over_pythae_eval_each_epoch']:.3f}"
            f" / {pipe['ratio_ours_over_pythae_no_eval']:.3f}",
            flush=True,
        )
        summary[f"pipeline_{key_t}"] = {
            "ours_median_samples_per_s": round(pipe["latent_atlas"]["median_samples_per_s"]),
            "pythae_eval_each_epoch_median_samples_per_s": round(
                pipe["pythae_eval_each_epoch"]["median_samples_per_s"]
            ),
            "pythae_no_eval_median_samples_per_s": round(pipe["pythae_no_eval"]["median_samples_per_s"]),
            "ratio_ours_over_pythae_eval_each_epoch": round(pipe["ratio_ours_over_pythae_eval_each_epoch"], 3),
            "ratio_ours_over_pythae_no_eval": round(pipe["ratio_ours_over_pythae_no_eval"], 3),
            "repeats": pipe["repeats"],
        }
    datasets.clear()
    result["summary"] = summary

    result["loadavg_at_end"] = loadavg()
    result["total_seconds"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, result)
    print(f"wrote {args.out} ({result['total_seconds']:.0f} s)")
    return 0


def _report(title: str, r: dict) -> None:
    a, b = r["latent_atlas"], r["pythae"]
    print(
        f"{title}: ours {a['median_samples_per_s']:.0f} samples/s ({a['median_ms_per_step']:.2f} ms/step)"
        f" | pythae {b['median_samples_per_s']:.0f} ({b['median_ms_per_step']:.2f} ms/step)"
        f" | ratio {r['ratio_ours_over_pythae']:.3f} (paired {r['median_paired_ratio_ours_over_pythae']:.3f},"
        f" {r['repeats']} repeats)",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
