"""Importance-weight summaries against hand-computed cases."""

import math

import pytest
import torch

from engine.errors import AtlasError
from engine.inference.importance import bound_curve, effective_sample_size, normalized_weights


def test_ess_of_equal_and_of_degenerate_weights():
    equal = torch.zeros(50, 3)
    torch.testing.assert_close(effective_sample_size(equal), torch.full((3,), 50.0))
    degenerate = torch.full((50, 1), -1e4)
    degenerate[7] = 0.0
    assert effective_sample_size(degenerate).item() == pytest.approx(1.0)
    # two weights 1 and 3: (1 + 3)^2 / (1 + 9) = 1.6
    two = torch.log(torch.tensor([[1.0], [3.0]]))
    assert effective_sample_size(two).item() == pytest.approx(1.6)


def test_normalized_weights_sum_to_one():
    log_w = torch.randn(20, 4) * 5
    torch.testing.assert_close(normalized_weights(log_w).sum(0), torch.ones(4))


def test_bound_curve_by_hand():
    log_w = torch.log(torch.tensor([[1.0], [3.0], [2.0], [2.0]]))  # (K = 4, batch = 1)
    curve = bound_curve(log_w, [1, 2, 4])
    expected = [
        sum(math.log(w) for w in (1, 3, 2, 2)) / 4,
        (math.log(2.0) + math.log(2.0)) / 2,
        math.log(2.0),
    ]
    torch.testing.assert_close(curve, torch.tensor(expected))
    with pytest.raises(AtlasError, match="pool has 4"):
        bound_curve(log_w, [5])
