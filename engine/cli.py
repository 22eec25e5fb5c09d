"""`latent-atlas`: train models, list runs, evaluate checkpoints, start the dashboard."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from engine.errors import AtlasError

REPO_ROOT = Path(__file__).resolve().parent.parent


def parse_value(text: str):
    """A command-line value as JSON where it parses (numbers, lists, true), else a string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_assignments(items: list[str]) -> dict[str, dict]:
    """['model.latent_dim=4', 'train.lr=3e-4'] -> {'model': {'latent_dim': 4}, 'train': {...}}"""
    out: dict[str, dict] = {}
    for item in items:
        key, sep, value = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot or not name:
            raise AtlasError(f"--set expects SECTION.KEY=VALUE (e.g. model.latent_dim=4), got {item!r}")
        if section == "data":
            out.setdefault("data", {}).setdefault("options", {})[name] = parse_value(value)
        else:
            out.setdefault(section, {})[name] = parse_value(value)
    return out


def cmd_train(args) -> int:
    from engine.store import RunStore
    from engine.training import RunSpec, resume, train
    from engine.training.distributed import is_main_process

    overrides = parse_assignments(args.set)
    for section, name, value in (
        ("model", "arch", args.arch),
        ("model", "latent_dim", args.latent_dim),
        ("model", "likelihood", args.likelihood),
        ("model", "objective", args.objective),
        ("model", "beta", args.beta),
        ("train", "steps", args.steps),
        ("train", "batch_size", args.batch_size),
        ("train", "lr", args.lr),
        ("train", "seed", args.seed),
        ("train", "device", args.device),
        ("train", "ema_decay", args.ema),
    ):
        if value is not None:
            overrides.setdefault(section, {})[name] = value
    if args.quiet:
        overrides.setdefault("train", {})["progress"] = False

    if args.resume:
        run = RunStore(args.runs_dir).open_run(args.resume)
        run = resume(run, steps=overrides.get("train", {}).get("steps"))
    else:
        if args.preset:
            data_opts = overrides.pop("data", {}).get("options", {})
            spec = RunSpec.from_preset(args.preset, overrides)
            spec.data["options"].update(data_opts)
            if args.dataset:
                spec.data = {"name": args.dataset, "options": data_opts}
        else:
            if not args.dataset:
                raise AtlasError("give --preset NAME, or --dataset NAME (with --model); see --help")
            spec = RunSpec.from_dict(
                {
                    "family": args.model,
                    "model": overrides.get("model", {}),
                    "data": {"name": args.dataset, "options": overrides.get("data", {}).get("options", {})},
                    "train": overrides.get("train", {}),
                }
            )
        run = train(spec, runs_root=args.runs_dir, name=args.name)
    if not is_main_process():  # another process of a torchrun job: rank 0 reports the run
        return 0
    status = run.status
    print(f"run {run.id}: {status.state}{' (' + status.reason + ')' if status.reason else ''} -> {run.dir}")
    return 0


def cmd_families(args) -> int:
    from engine.models import FAMILIES, FAMILY_KINDS, PLUGINS

    for name in FAMILIES:
        source = f"plugin {PLUGINS.sources[name]}" if name in PLUGINS.sources else "built in"
        print(f"{name:<10} {FAMILY_KINDS[name]:<10} {source}")
    for error in PLUGINS.errors:
        print(f"skipped plugin {error}")
    return 1 if PLUGINS.errors else 0


def cmd_runs(args) -> int:
    from engine.store import RunStore

    infos = RunStore(args.runs_dir).list_runs()
    if args.json:
        print(json.dumps([dataclasses.asdict(info) for info in infos], indent=2, default=str))
        return 0
    if not infos:
        print(f"no runs in {args.runs_dir}")
        return 0
    print(f"{'run':44} {'state':12} {'model':8} {'dataset':14} {'step':>7}  test/elbo (icl: test/nll)")
    for info in infos:
        elbo = info.metrics.get("test/elbo")
        nll = info.metrics.get("test/nll")  # sequence models: next-token NLL per observation
        score = f"{elbo:.2f}" if elbo is not None else f"nll {nll:.4f}" if nll is not None else ""
        step = "-" if info.latest_step is None else info.latest_step
        print(f"{info.id:44} {info.status:12} {info.model or '-':8} {info.dataset or '-':14} {step:>7}  {score}")
        if info.reason:
            print(f"    {info.reason}")
    return 0


def cmd_eval(args) -> int:
    from engine.loading import evaluate_bounds, load_run_model
    from engine.models import family_kind
    from engine.store import Run, RunStore

    path = Path(args.run)
    run = Run.from_dir(path) if path.is_dir() else RunStore(args.runs_dir).open_run(args.run)
    checkpoint = "latest" if args.checkpoint == "latest" else int(args.checkpoint)
    loaded = load_run_model(run, checkpoint, device=args.device)
    data = loaded.spec.load_data(args.split)
    if family_kind(loaded.spec.family) == "sequence":
        return eval_sequence_model(args, run, loaded, data)
    result = evaluate_bounds(loaded.model, data, k=args.k, n=args.n, batch_size=args.batch_size)
    result.update(run=run.id, step=loaded.step, weights=loaded.weights, split=args.split)
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{run.id} step {loaded.step} ({loaded.weights} weights), {result['n']} {args.split} examples:\n"
            f"  ELBO          {result['elbo']:.3f} nats\n"
            f"  IWAE (k={args.k:<4}) {result['iwae']:.3f} nats"
        )
    return 0


def eval_sequence_model(args, run, loaded, data) -> int:
    """A sequential predictor has no ELBO: its next-token NLL against the Bayes predictive."""
    result = loaded.model.evaluation_metrics(data, args.n)
    result.update(run=run.id, step=loaded.step, weights=loaded.weights, split=args.split, n=min(args.n, len(data)))
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{run.id} step {loaded.step} ({loaded.weights} weights), {result['n']} {args.split} sequences "
            f"(a sequential predictor: no ELBO or IWAE bound; --k is not used):\n"
            f"  next-token NLL         {result['nll']:.4f} nats per observation\n"
            f"  Bayes predictive NLL   {result['bayes_nll']:.4f} nats per observation (the best possible)\n"
            f"  gap                    {result['nll_gap']:.4f}"
        )
    return 0


def cmd_publish(args) -> int:
    from engine.store import RunStore
    from engine.training.publish import publish_run

    run = RunStore(args.runs_dir).open_run(args.run)
    copy = publish_run(run, args.to, name=args.name, all_checkpoints=args.all_checkpoints)
    size = sum(f.stat().st_size for f in copy.dir.rglob("*") if f.is_file())
    print(f"published {run.id} -> {copy.dir} ({size / 1e6:.2f} MB)")
    return 0


def cmd_data_fetch(args) -> int:
    from engine.data import fashion_mnist

    folder = fashion_mnist.fetch(args.to, base_url=args.url, say=print)
    print(f"{args.dataset}: the files are in {folder}")
    return 0


def cmd_adapt(args) -> int:
    from engine.adapters import adapt

    options = parse_assignments(args.option).get("adapter", {})
    data = {
        "name": local_dataset(args.data, args.runs_dir),
        "options": parse_assignments(args.set).get("data", {}).get("options", {}),
    }
    run = adapt(args.kind, args.folder, args.runs_dir, data, name=args.name or "", **options)
    print(f"added {run.id} to {args.runs_dir}: a finished run of the family {run.config['family']}")
    return 0


def local_dataset(name: str, runs_root: str) -> str:
    """A dataset a run may name: an embedded one as it is, a file (file:PATH) elsewhere on this
    machine checked and copied in among the runs root's uploaded datasets (a run reads no file
    outside them), the copy there already being used again."""
    from engine.limits import MAX_UPLOAD_BYTES
    from engine.store.uploads import DATA_DIR, save_dataset, suggest_name

    if not name.startswith("file:"):
        return name
    path = Path(name[len("file:") :]).expanduser().resolve()
    folder = (Path(runs_root) / DATA_DIR).resolve()
    if path.is_relative_to(folder):
        return f"file:{path}"
    if not path.is_file():
        raise AtlasError(f"--data names {path}, which is not a file")
    if path.stat().st_size > MAX_UPLOAD_BYTES:
        raise AtlasError(f"{path} is larger than the {MAX_UPLOAD_BYTES >> 20} MB a dataset may be")
    copy = folder / (suggest_name(path.name) + path.suffix.lower())  # where save_dataset keeps an npz or csv
    data = path.read_bytes()
    if copy.is_file() and copy.read_bytes() == data:
        return f"file:{copy}"
    saved = save_dataset(runs_root, suggest_name(path.name), data, path.name)
    print(f"copied {path} to {saved.path} (a run reads its data from the runs root)")
    return saved.dataset


def cmd_app(args) -> int:
    from engine.limits import MAX_UPLOAD_MB  # torch-free: the server starts without waiting for torch

    main_py = REPO_ROOT / "app" / "main.py"
    if not main_py.exists():
        raise AtlasError(f"the dashboard is not installed: {main_py.name} is missing from app/")
    env = {**os.environ, "LATENT_ATLAS_RUNS_DIR": str(Path(args.runs_dir).resolve())}
    if args.model:  # the user's own code, by their choice: imported here and in every process of the app
        if not args.data:
            raise AtlasError("--model needs --data NAME: the dataset to explore the model on (its input shape)")
        from engine.models.plugins import FACTORY_ENV

        os.environ[FACTORY_ENV] = env[FACTORY_ENV] = args.model
        from engine.adapters import add_model_run

        run = add_model_run(args.model, args.runs_dir, {"name": args.data, "options": {}})
        print(f"the model of {args.model} is the run {run.id}", flush=True)
    if args.threads is not None:
        if args.threads < 1:
            raise AtlasError(f"--threads must be at least 1, got {args.threads}")
        env["LATENT_ATLAS_THREADS"] = str(args.threads)
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(main_py),
        "--server.address",
        args.host,
        "--server.port",
        str(args.port),
        "--server.headless",
        "true" if args.headless else "false",
        "--server.maxUploadSize",
        str(MAX_UPLOAD_MB),  # MB; the engine's upload checks have the same limit
        "--server.enableXsrfProtection",
        "true",  # an upload must carry the token of the app's own page
        "--browser.gatherUsageStats",
        "false",
        "--client.toolbarMode",
        "minimal",
        # Streamlit's default runs a full gc.collect(2) after every script and fragment run; over
        # the dashboard's heap it held the GIL for about 0.1-0.3 s while the server was still sending
        # the run's messages, the slow mode of the live sliders (benchmarks/slider_latency.py)
        "--runner.postScriptGC",
        "false",
        # Streamlit's file watcher is for editing the app: each session scans sys.modules on the event
        # loop after its runs whenever an import added modules, and polls every watched source file;
        # with eight sessions it took more of the event loop than the sessions' own messages
        # (benchmarks/concurrent_sessions.py). --watch brings it back, for work on the pages.
        "--server.fileWatcherType",
        "auto" if args.watch else "none",
    ]
    print(f"Latent Atlas on http://{args.host}:{args.port}  (runs: {args.runs_dir})", flush=True)
    # replace this process with the server, so that signals (Ctrl-C, terminate) reach it
    os.execve(sys.executable, command, env)


LIGHT_COMMANDS = ("app", "runs")  # commands whose parsing needs neither the presets nor torch


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line. For a command in LIGHT_COMMANDS the train and data
    subcommands are built without their choices (the presets, the dataset's address), whose
    modules import torch: `latent-atlas app` then starts the server at once."""
    if command in LIGHT_COMMANDS:
        PRESETS, FASHION_MNIST_URL = {}, None
    else:
        from engine.data.fashion_mnist import BASE_URL as FASHION_MNIST_URL
        from engine.training.presets import PRESETS

    parser = argparse.ArgumentParser(prog="latent-atlas", description=__doc__)
    parser.add_argument(
        "--runs-dir", default=os.environ.get("LATENT_ATLAS_RUNS_DIR", "runs"), help="the runs root (default ./runs)"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "train",
        help="train a model (a named preset, or options)",
        description="Train a model. Presets: " + "; ".join(f"{k}: {v['about']}" for k, v in PRESETS.items()),
    )
    p.add_argument("--preset", choices=sorted(PRESETS), help="a named recipe")
    p.add_argument("--model", default="vae", help="model family (default vae)")
    p.add_argument("--dataset", help="dataset name, e.g. digits, facet-digits, shapes, wine, mixed")
    p.add_argument("--arch", choices=["mlp", "conv"])
    p.add_argument("--latent-dim", type=int)
    p.add_argument("--likelihood", choices=["bernoulli", "gaussian"])
    p.add_argument("--objective", choices=["elbo", "beta-vae", "beta-tcvae"])
    p.add_argument("--beta", type=float)
    p.add_argument("--steps", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--ema", type=float, help="keep an EMA of the weights with this decay, e.g. 0.999")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="any other setting, e.g. --set model.hidden=[512,256] --set data.size=16",
    )
    p.add_argument("--name", help="a hint for the run id")
    p.add_argument("--resume", metavar="RUN_ID", help="continue a run from its latest checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--threads",
        type=int,
        help="CPU threads for torch (default: automatic, the cores other processes leave free; "
        "or $LATENT_ATLAS_THREADS)",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("families", help="list the model families, the plugins' among them, and broken plugins")
    p.set_defaults(func=cmd_families)

    p = sub.add_parser("runs", help="list runs in the runs root")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("eval", help="test ELBO and IWAE bound of a checkpoint (sequence models: test NLL)")
    p.add_argument("run", help="a run id in the runs root, or a run directory")
    p.add_argument("--checkpoint", default="latest", help="a step number or 'latest'")
    p.add_argument("--k", type=int, default=1000, help="importance samples for the IWAE bound")
    p.add_argument("--n", type=int, default=500, help="number of test examples")
    p.add_argument("--split", default="test", choices=["train", "test"])
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--threads",
        type=int,
        help="CPU threads for torch (default: automatic, the cores other processes leave free; "
        "or $LATENT_ATLAS_THREADS)",
    )
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("publish", help="copy a run with its final weights only (e.g. as a demo model)")
    p.add_argument("run", help="a run id in the runs root")
    p.add_argument("--to", required=True, help="the runs root to copy into, e.g. assets/runs")
    p.add_argument("--name", help="a hint for the new run id")
    p.add_argument(
        "--all-checkpoints",
        action="store_true",
        help="keep the weights of every checkpoint the run kept, not only the latest",
    )
    p.set_defaults(func=cmd_publish)

    p = sub.add_parser("data", help="get the files of a dataset that is not bundled (fashion-mnist)")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    p = data_sub.add_parser(
        "fetch",
        help="download a dataset's files, each checked against its published MD5 sum",
        description="Download Fashion-MNIST's four files from the links in its README, each checked "
        "against the published MD5 sum before it is kept. Debian users may instead install the package "
        "dataset-fashion-mnist.",
    )
    p.add_argument("dataset", choices=["fashion-mnist"])
    p.add_argument(
        "--to",
        help="the folder to put them in (default: $LATENT_ATLAS_FASHION_MNIST, else "
        "$XDG_CACHE_HOME/latent-atlas/fashion-mnist, by default ~/.cache/latent-atlas/fashion-mnist)",
    )
    p.add_argument("--url", default=FASHION_MNIST_URL, help=f"where the files are (default {FASHION_MNIST_URL})")
    p.set_defaults(func=cmd_data_fetch)

    p = sub.add_parser("app", help="start the dashboard")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default localhost only)")
    p.add_argument("--port", type=int, default=8501)
    p.add_argument("--headless", action="store_true", help="do not open a browser")
    p.add_argument(
        "--watch",
        action="store_true",
        help="rerun the pages when their source files change (for working on the dashboard; off by "
        "default: the watcher costs every session CPU on the server)",
    )
    p.add_argument(
        "--threads",
        type=int,
        help="CPU threads for the dashboard and the jobs it starts (default: half the cores for the "
        "server, automatic for training and map jobs; or $LATENT_ATLAS_THREADS)",
    )
    p.add_argument(
        "--model",
        metavar="PACKAGE.MODULE:FACTORY",
        help="also explore the model this function of your code returns (it runs your code; see "
        "engine/models/plugins.py); needs --data",
    )
    p.add_argument("--data", help="with --model: the dataset to explore it on, e.g. digits")
    p.set_defaults(func=cmd_app)

    p = sub.add_parser("adapt", help="add a model trained elsewhere (pythae, diffusers, vdvae) as a run")
    p.add_argument("kind", choices=["pythae", "diffusers", "vdvae"])
    p.add_argument("folder", help="the folder the model was saved in")
    p.add_argument("--data", required=True, help="the dataset to explore it on (of the model's input shape)")
    p.add_argument("--name", help="a hint for the run id")
    p.add_argument("--set", action="append", default=[], metavar="data.KEY=VALUE", help="a dataset option")
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="adapter.KEY=VALUE",
        help="an adapter's option, e.g. adapter.hps=cifar10 for vdvae",
    )
    p.set_defaults(func=cmd_adapt)
    return parser


THREADED_COMMANDS = ("train", "eval")  # commands that compute with torch: they choose their threads


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = command_of(argv)
    args = build_parser(command).parse_args(argv)
    try:
        if command in THREADED_COMMANDS:
            from engine.threads import configure_process

            print(configure_process(args.threads).describe(), file=sys.stderr, flush=True)
        return args.func(args)
    except AtlasError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def command_of(argv: list[str]) -> str | None:
    """The subcommand named in argv (after the global --runs-dir option), or None."""
    rest = list(argv)
    while rest and rest[0].startswith("-"):
        option = rest.pop(0)
        if option == "--runs-dir" and rest:
            rest.pop(0)
    return rest[0] if rest else None


if __name__ == "__main__":
    sys.exit(main())
