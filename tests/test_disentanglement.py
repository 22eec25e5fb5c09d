"""Disentanglement scores (MIG, DCI, SAP, FactorVAE) on synthetic codes whose answer follows from
their construction. Most cases use a full factorial design: every combination of factor values
once per repeat, so each factor is exactly uniform and any two factors are exactly independent
in the sample, which makes the plug-in mutual informations between different factors exactly 0."""

import math

import numpy as np
import pytest
from scipy.stats import chi2

from engine.diagnostics.disentanglement import (
    dci,
    discretize,
    factor_entropies,
    factor_vae_score,
    mig,
    mutual_information_matrix,
    sap,
)
from engine.errors import AtlasError

pytestmark = pytest.mark.usefixtures("one_thread")


def full_factorial(sizes, repeat: int = 1) -> np.ndarray:
    """Every combination of values 0..s-1 of each factor, `repeat` times; int (repeat * prod, k)."""
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in sizes], indexing="ij"), -1).reshape(-1, len(sizes))
    return np.tile(grid, (repeat, 1))


def plugin_mi_bound(n: int, cells: int, tail: float = 1e-6) -> float:
    """Under independence 2n Î is the G statistic, asymptotically chi-squared with
    (rows - 1)(columns - 1) degrees of freedom: Î exceeds this with probability ~`tail`."""
    return chi2.ppf(1 - tail, cells) / (2 * n)


# ---- discretize, MI, entropies ----
# The nonlinear copies below (exp(v) of 4 values, exp(v / 2) of 5, v + v²/4 of 4) keep the smallest gap
# between values wider than range / 20, so with 20 equal-width bins each value has its own bin.


def test_discretize_matches_numpy_histogram_bins():
    rng = np.random.default_rng(0)
    codes = np.column_stack([rng.uniform(-2, 3, 500), rng.normal(size=500), np.full(500, 1.5)])
    binned = discretize(codes, bins=20)
    for i in range(2):
        edges = np.histogram(codes[:, i], bins=20)[1]
        np.testing.assert_array_equal(binned[:, i], np.digitize(codes[:, i], edges[1:-1]))
    assert np.all(binned[:, 2] == 0)  # a constant dimension is one bin
    # width 1 on [0, 10]: the maximum falls in the last bin
    np.testing.assert_array_equal(discretize(np.array([[0.0], [0.5], [1.0], [10.0]]), bins=10)[:, 0], [0, 0, 1, 9])


def test_mi_of_monotone_copies_is_the_factor_entropy_and_zero_across_factors():
    sizes = (3, 4, 5)
    f = full_factorial(sizes, repeat=3)
    codes = np.column_stack([f[:, 0], np.exp(f[:, 1]), 1.0 - 3.0 * f[:, 2]])
    np.testing.assert_allclose(mutual_information_matrix(codes, f), np.diag(np.log(sizes)), atol=1e-12)
    np.testing.assert_allclose(factor_entropies(f), np.log(sizes), rtol=1e-12)


def test_mi_of_a_code_that_merges_values_pairwise():
    f = full_factorial((4,), repeat=5)
    codes = (f // 2).astype(float)  # H(v) - H(v | z) = log 4 - log 2
    np.testing.assert_allclose(mutual_information_matrix(codes, f), [[math.log(2)]], rtol=1e-12)


def test_mi_of_independent_noise_stays_within_the_plugin_bias():
    rng = np.random.default_rng(1)
    n, bins, values = 4000, 20, 5
    factors = rng.integers(values, size=(n, 1))
    mi = mutual_information_matrix(rng.uniform(size=(n, 3)), factors, bins=bins)
    assert np.all(mi >= 0)
    assert np.all(mi < plugin_mi_bound(n, (bins - 1) * (values - 1)))


def test_factor_entropies_of_a_skewed_factor_with_any_integer_values():
    f = np.array([[7, -2], [7, 5], [7, -2], [3, 5]])
    expected = [-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)), math.log(2)]
    np.testing.assert_allclose(factor_entropies(f), expected, rtol=1e-12)


# ---- MIG ----


def test_mig_is_one_for_axis_aligned_copies():
    g = full_factorial((3, 4, 5, 4), repeat=2)  # the last column is a nuisance, not a factor
    codes = np.column_stack([g[:, 0], 2.0 * g[:, 1], g[:, 3] + 0.5, np.exp(g[:, 2] / 2)])
    result = mig(codes, g[:, :3])
    np.testing.assert_allclose(result.per_factor, 1.0, atol=1e-12)
    assert result.score == pytest.approx(1.0, abs=1e-12)
    assert result.mi.shape == (4, 3)


def test_mig_of_copies_with_noise_dims_is_one_up_to_the_plugin_bias():
    rng = np.random.default_rng(2)
    n, sizes = 3000, (3, 4, 5)
    f = np.column_stack([rng.integers(s, size=n) for s in sizes])
    codes = np.column_stack([f, rng.uniform(size=(n, 2))])
    result = mig(codes, f)
    # the runner-up is an independent dim: a noise dim (20 bins) or another factor's copy
    bound = plugin_mi_bound(n, (20 - 1) * (max(sizes) - 1))
    assert np.all(result.per_factor <= 1.0)
    assert np.all(result.per_factor >= 1.0 - bound / result.entropies)


def test_mig_is_zero_for_a_factor_copied_into_two_dims():
    f = full_factorial((3, 4, 5), repeat=2)
    both = np.column_stack(
        [f[:, 0], 3.0 * f[:, 0] - 1, f[:, 1], f[:, 1] + f[:, 1] ** 2 / 4, f[:, 2], -np.exp(f[:, 2] / 2)]
    )
    np.testing.assert_allclose(mig(both, f).per_factor, 0.0, atol=1e-12)
    first_only = np.column_stack([f[:, 0], 3.0 * f[:, 0] - 1, f[:, 1], f[:, 2]])
    result = mig(first_only, f)
    np.testing.assert_allclose(result.per_factor, [0.0, 1.0, 1.0], atol=1e-12)
    assert result.score == pytest.approx(2 / 3, abs=1e-12)


def test_mig_on_a_four_example_contingency_table():
    # v = (0, 0, 1, 1); z1 copies v, z2 = (0, 0, 0, 1).
    # I(z2; v) = H(z2) - H(z2 | v) = (log 4 - 3/4 log 3) - 1/2 log 2 = 3/2 log 2 - 3/4 log 3
    # MIG = (log 2 - I(z2; v)) / log 2 = 3/4 log2(3) - 1/2
    v = np.array([[0], [0], [1], [1]])
    codes = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    result = mig(codes, v, bins=2)
    np.testing.assert_allclose(result.mi[:, 0], [math.log(2), 1.5 * math.log(2) - 0.75 * math.log(3)], rtol=1e-12)
    assert result.score == pytest.approx(0.75 * math.log2(3) - 0.5, rel=1e-12)


# ---- DCI ----


@pytest.fixture(scope="module")
def dci_factors():
    """Balanced train (600) and test (270) factors with 3 values each: chance accuracy is 1/3."""
    rng = np.random.default_rng(3)
    train = full_factorial((3, 3), repeat=67)[:600]
    test = full_factorial((3, 3), repeat=30)
    return rng, train, test


def test_dci_of_axis_aligned_copies_is_near_one(dci_factors):
    rng, train, test = dci_factors

    def encode(f):
        return np.column_stack([f[:, 0], np.exp(f[:, 1]), rng.normal(size=len(f))])

    result = dci(encode(train), train, encode(test), test)
    assert result.informativeness == 1.0  # the copies determine the factors
    assert result.disentanglement > 0.95 and result.completeness > 0.95
    assert result.importance.shape == (3, 2) and np.all(result.importance >= 0)
    np.testing.assert_allclose(result.importance.sum(0), 1.0)
    assert result.per_code_disentanglement.shape == (3,) and result.per_factor_completeness.shape == (2,)


def test_dci_of_a_rotated_pair_is_lower(dci_factors):
    # each factor is (z1 ± z2)/√2: both dims are needed for either factor and by symmetry the ideal
    # importance is 1/2 : 1/2 with none on the noise dim. Then every code's row is uniform over the
    # 2 factors (D = 0), and every factor's column puts 1/2, 1/2, 0 on the 3 codes
    # (C = 1 - log 2 / log 3). Any split between 0.3 : 0.7 and 0.7 : 0.3 keeps 1 - H_2 below 0.12.
    rng, train, test = dci_factors

    def encode(f):
        return np.column_stack([(f[:, 0] + f[:, 1]) / 2**0.5, (f[:, 0] - f[:, 1]) / 2**0.5, rng.normal(size=len(f))])

    result = dci(encode(train), train, encode(test), test)
    assert result.informativeness == 1.0  # still informative, just not disentangled
    assert result.disentanglement < 0.12
    assert result.completeness == pytest.approx(1 - math.log(2) / math.log(3), abs=0.12)


def test_dci_informativeness_of_noise_is_chance(dci_factors):
    # the predictions ignore the exactly balanced test factors, so each is right with probability 1/3
    rng, train, test = dci_factors
    result = dci(rng.normal(size=(len(train), 3)), train, rng.normal(size=(len(test), 3)), test)
    sd = math.sqrt((1 / 3) * (2 / 3) / len(test))
    assert result.informativeness < 1 / 3 + 5 * sd


# ---- SAP ----


@pytest.mark.parametrize("sizes", [(3, 4, 5), (16, 16)])
def test_sap_of_copies_is_one_minus_chance(sizes):
    # a copy predicts its factor exactly; in a full factorial every bin of another factor's copy
    # holds this factor uniformly, the tie goes to value 0, and the accuracy is exactly 1/K
    f = full_factorial(sizes)
    codes = np.column_stack([-f[:, i] if i % 2 else f[:, i] for i in range(len(sizes))])
    test = np.random.default_rng(4).permutation(len(f))
    result = sap(codes, f, codes[test], f[test])
    expected = np.tile(1.0 / np.array(sizes, dtype=float), (len(sizes), 1))
    np.fill_diagonal(expected, 1.0)
    np.testing.assert_allclose(result.matrix, expected, atol=1e-12)
    assert result.score == pytest.approx(np.mean([1 - 1 / s for s in sizes]), abs=1e-12)


def test_sap_is_zero_when_two_dims_copy_each_factor():
    f = full_factorial((3, 4), repeat=3)
    codes = np.column_stack([f[:, 0], np.exp(f[:, 0]), f[:, 1], -(f[:, 1] ** 2)])
    result = sap(codes, f, codes, f)
    np.testing.assert_allclose(result.per_factor, 0.0, atol=1e-12)
    np.testing.assert_allclose(result.matrix[[0, 1], 0], 1.0)


# ---- FactorVAE score ----


def fixed_factor_sampler(sizes):
    """draw_with_fixed_factor for factors drawn uniformly: the "inputs" are the factors themselves."""

    def draw(k, n, rng):
        f = np.column_stack([rng.integers(s, size=n) for s in sizes])
        f[:, k] = rng.integers(sizes[k])
        return f

    return draw


def test_factor_vae_score_is_one_for_copies_and_prunes_collapsed_dims():
    sizes = (3, 4, 5)
    noise = np.random.default_rng(5)

    def encode(f):
        # a fixed factor's copy has zero variance in its batch, so every vote is right; the
        # constant last dim would be 0/0 if it were not pruned
        return np.column_stack([f * 0.5, noise.normal(size=(len(f), 2)), np.zeros(len(f))])

    result = factor_vae_score(encode, fixed_factor_sampler(sizes), sizes)
    assert result.score == result.eval_accuracy == result.train_accuracy == 1.0
    np.testing.assert_array_equal(result.active_dims, [True] * 5 + [False])
    np.testing.assert_array_equal(result.majority[:3], [0, 1, 2])
    assert result.votes.sum() == 400 and result.votes[3:].sum() == 0

    calls = []

    def draw_any(n, rng):
        calls.append(n)
        return np.column_stack([rng.integers(s, size=n) for s in sizes])

    with_any = factor_vae_score(encode, fixed_factor_sampler(sizes), sizes, n_var=1000, draw_any=draw_any)
    assert calls == [1000] and with_any.score == 1.0


def test_factor_vae_score_of_a_rotated_encoder_is_chance():
    # fixing either factor leaves (z1, z2) = ((c ± f)/√2, (c ∓ f)/√2) with the same spread in both
    # dims, so the vote's dim does not depend on the factor: each eval vote is right with p = 1/2
    sizes = (4, 4)
    noise = np.random.default_rng(6)

    def encode(f):
        rotated = np.column_stack([f[:, 0] + f[:, 1], f[:, 0] - f[:, 1]]) / 2**0.5
        return rotated + 1e-3 * noise.normal(size=rotated.shape)

    result = factor_vae_score(encode, fixed_factor_sampler(sizes), sizes)
    assert result.eval_accuracy < 0.5 + 5 * math.sqrt(0.25 / 400)


def test_factor_vae_score_of_pure_noise_is_chance():
    sizes = (3, 4, 5)
    noise = np.random.default_rng(7)
    result = factor_vae_score(lambda f: noise.normal(size=(len(f), 4)), fixed_factor_sampler(sizes), sizes)
    assert result.active_dims.all()
    assert result.eval_accuracy < 1 / 3 + 5 * math.sqrt((1 / 3) * (2 / 3) / 400)


# ---- bad inputs ----


def test_bad_codes_and_factors_are_explained():
    f = full_factorial((3, 4))
    codes = f.astype(float)
    with pytest.raises(AtlasError, match="at least 2 examples"):
        mig(codes[:1], f[:1])
    with pytest.raises(AtlasError, match="single value"):
        mig(codes, np.column_stack([f[:, 0], np.zeros(len(f), dtype=int)]))
    with pytest.raises(AtlasError, match="12 examples but codes has 11"):
        mig(codes[:11], f)
    nan = codes.copy()
    nan[5, 1] = np.nan
    with pytest.raises(AtlasError, match="non-finite values .*example 5, dim 1"):
        mutual_information_matrix(nan, f)
    with pytest.raises(AtlasError, match="integer factor values"):
        mig(codes, f.astype(float))
    with pytest.raises(AtlasError, match="2-D"):
        discretize(codes[:, 0])
    with pytest.raises(AtlasError, match="factors\\[:, None\\]"):
        factor_entropies(f[:, 0])
    with pytest.raises(AtlasError, match="at least 2 code dimensions"):
        mig(codes[:, :1], f)
    with pytest.raises(AtlasError, match="bins must be an integer >= 2"):
        discretize(codes, bins=1)
    with pytest.raises(AtlasError, match="same model"):
        dci(codes, f, codes[:, :1], f)
    with pytest.raises(AtlasError, match="at least 2 code dimensions"):
        sap(codes[:, :1], f, codes[:, :1], f)


def test_costs_are_bounded_before_allocating():
    huge = np.broadcast_to(np.zeros(1), (10**7, 3))  # a view: nothing allocated
    with pytest.raises(AtlasError, match="random subset"):
        discretize(huge)
    f = np.arange(300)[:, None] % 30
    with pytest.raises(AtlasError, match="contingency tables"):
        mutual_information_matrix(np.ones((300, 2)), f, bins=10**6)
    codes = np.broadcast_to(np.arange(10.0), (60000, 10))
    factors = np.arange(60000)[:, None] % 10
    with pytest.raises(AtlasError, match="fewer training examples"):
        dci(codes, factors, codes[:10], factors[:10])
    draw = fixed_factor_sampler((3, 3))
    with pytest.raises(AtlasError, match="fewer votes"):
        factor_vae_score(lambda x: x, draw, (3, 3), n_votes=10**6, batch=64)


def test_bad_factor_vae_callbacks_are_explained():
    draw = fixed_factor_sampler((3, 3))
    with pytest.raises(AtlasError, match="integers >= 2"):
        factor_vae_score(lambda x: x, draw, (3, 1))
    later = iter([False, True])  # right codes for the global variances, one dim short for the votes

    def encode(x):
        return x[:, :1] if next(later) else x

    with pytest.raises(AtlasError, match="must return \\(128, 2\\)"):
        factor_vae_score(encode, draw, (3, 3), n_votes=2, n_var=64)
    with pytest.raises(AtlasError, match="returned 5 inputs where 64"):
        factor_vae_score(lambda x: x, lambda k, n, rng: draw(k, 5, rng), (3, 3))
