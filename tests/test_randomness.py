"""Random streams (engine.randomness): a seeded computation draws only from its own generator,
so what it returns does not depend on the global generator or on other threads drawing."""

import threading
from pathlib import Path

import pytest
import torch

from engine.loading import evaluate_bounds, load_run_model
from engine.models import family_kind
from engine.randomness import random_stream, stream
from engine.store import Run, RunStore

DEMOS = [info for info in RunStore(Path(__file__).resolve().parent.parent / "assets" / "runs").list_runs()]
LATENT_DEMOS = [info for info in DEMOS if family_kind(info.model) == "latent"]


def draws(model, x):
    """Everything random a page asks a model for: a one-sample ELBO, an IWAE bound, prior samples."""
    with torch.no_grad():
        return [model.elbo(x).total, model.elbo(x, k=4).total, model.sample(3)]


@pytest.mark.parametrize("info", LATENT_DEMOS, ids=[info.id.split("-", 2)[-1] for info in LATENT_DEMOS])
def test_every_demo_family_draws_only_from_the_stream(info):
    loaded = load_run_model(Run.from_dir(info.dir, readonly=True))
    x = loaded.spec.load_data("test").batch(torch.arange(6))
    torch.manual_seed(1)
    before = torch.get_rng_state()
    with random_stream(7):
        first = draws(loaded.model, x)
    assert torch.equal(torch.get_rng_state(), before)  # the global generator was not drawn from
    torch.manual_seed(2)  # another global state: the stream's draws are the same
    with random_stream(7):
        again = draws(loaded.model, x)
    for a, b in zip(first, again):
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
    with random_stream(8):
        other = draws(loaded.model, x)
    assert not torch.equal(first[0], other[0])  # and the seed matters: the ELBO's draw is random


def test_streams_nest_and_belong_to_their_thread():
    assert stream() is None
    with random_stream(1) as outer:
        assert stream() is outer
        with random_stream(2) as inner:
            assert stream() is inner
        assert stream() is outer
        seen = []
        worker = threading.Thread(target=lambda: seen.append(stream()))
        worker.start()
        worker.join()
        assert seen == [None]  # another thread does not draw from this computation's stream
    explicit = torch.Generator()
    assert stream(explicit) is explicit


def test_concurrent_seeded_bounds_equal_the_sequential_ones():
    """Two sessions of a server computing seeded bounds at the same moment (the README's old
    limitation) get exactly what each gets alone."""
    info = next(i for i in LATENT_DEMOS if i.model == "vae")
    loaded = load_run_model(Run.from_dir(info.dir, readonly=True))
    data = loaded.spec.load_data("test")
    alone = [evaluate_bounds(loaded.model, data, k=20, n=200, seed=seed) for seed in (0, 1)]
    results: dict[int, list] = {0: [], 1: []}
    barrier = threading.Barrier(2)

    def session(seed):
        barrier.wait()
        for _ in range(3):
            results[seed].append(evaluate_bounds(loaded.model, data, k=20, n=200, seed=seed))

    workers = [threading.Thread(target=session, args=(seed,)) for seed in (0, 1)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert results[0] == [alone[0]] * 3 and results[1] == [alone[1]] * 3
    assert alone[0] != alone[1]
