"""Amnesic probing (INLP) on features whose answer is planted: a colour direction the
class head does not use, and one that carries the class."""

from __future__ import annotations

import numpy as np
import pytest

from visual_ablation.analyses import amnesic


def planted(n: int, colour_is_class: bool, seed: int = 0):
    """Standardised-like features [n, 40]: the class (8) and the colour (6) each as a
    one-hot block scaled up, plus Gaussian noise; with `colour_is_class`, the colour
    block is the class's own (8 colours, one per class) and nothing else carries it."""
    rng = np.random.default_rng(seed)
    y = rng.integers(8, size=n)
    colour = y.copy() if colour_is_class else rng.integers(6, size=n)
    z = rng.normal(0.0, 0.6, size=(n, 40))
    if colour_is_class:
        z[:, 8:16] += 2.0 * np.eye(8)[colour]
    else:
        z[:, :8] += 2.0 * np.eye(8)[y]
        z[:, 8:14] += 2.0 * np.eye(6)[colour]
    return z, y, colour


def class_head(z: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
    weights = amnesic.ridge_weights(z[:600], y[:600], z[600:800], y[600:800], 8)
    return [weights.astype(np.float32), np.zeros(8, np.float32)]


@pytest.mark.parametrize("colour_is_class", [False, True])
def test_removing_a_planted_colour_costs_the_class_head_only_where_it_carries_the_class(
    colour_is_class,
):
    z, y, colour = planted(1200, colour_is_class)
    head = class_head(z, y)
    train, val, test = slice(0, 600), slice(600, 800), slice(800, 1200)
    k = colour.max() + 1
    basis = amnesic.inlp_basis(z[train], colour[train], z[val], colour[val], 10, k)
    rows = (np.arange(600), np.arange(600, 800), np.arange(800, 1200))
    before = amnesic.factor_accuracy(z, colour, rows, k)
    after = amnesic.factor_accuracy(amnesic.removed(z, basis), colour, rows, k)
    assert before > 0.9  # the colour is decodable...
    assert after <= amnesic.chance_level(colour[800:], k)  # ...and gone once removed
    assert basis.shape[1] >= k - 1  # at least the span of the colours' centred means
    np.testing.assert_allclose(basis.T @ basis, np.eye(basis.shape[1]), atol=1e-8)
    intact = amnesic.head_accuracy(head, z[test], y[test])
    without = amnesic.head_accuracy(head, amnesic.removed(z[test], basis), y[test])
    random = amnesic.random_basis(40, basis.shape[1], [0])
    randomly = amnesic.head_accuracy(head, amnesic.removed(z[test], random), y[test])
    assert intact > 0.9
    if colour_is_class:
        assert without < 0.25 < 0.7 < randomly  # the head used the colour: it is lost
    else:
        assert without == pytest.approx(intact, abs=0.03)  # the head never used it
    assert randomly <= intact + 0.01


def test_a_random_basis_is_orthonormal_and_seeded():
    a = amnesic.random_basis(30, 5, [1, 2])
    np.testing.assert_allclose(a.T @ a, np.eye(5), atol=1e-10)
    assert np.array_equal(a, amnesic.random_basis(30, 5, [1, 2]))
    assert not np.allclose(a, amnesic.random_basis(30, 5, [1, 3]))
    assert amnesic.random_basis(30, 0, [1]).shape == (30, 0)
