"""Amnesic probing (INLP and LEACE) on features whose answer is planted: a colour direction the
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
        assert without < 0.25 and randomly > 0.7  # the head used the colour: it is lost
    else:
        assert without == pytest.approx(intact, abs=0.03)  # the head never used it
    assert randomly <= intact + 0.01


def test_a_random_basis_is_orthonormal_and_seeded():
    a = amnesic.random_basis(30, 5, [1, 2])
    np.testing.assert_allclose(a.T @ a, np.eye(5), atol=1e-10)
    assert np.array_equal(a, amnesic.random_basis(30, 5, [1, 2]))
    assert not np.allclose(a, amnesic.random_basis(30, 5, [1, 3]))
    assert amnesic.random_basis(30, 0, [1]).shape == (30, 0)


def fits_of(z: np.ndarray) -> amnesic.RidgeFits:
    return amnesic.RidgeFits(z[:600], z[600:800], z[800:])


@pytest.mark.parametrize("colour_is_class", [False, True])
def test_after_leace_no_linear_probe_decodes_the_colour_and_an_unused_one_costs_nothing(
    colour_is_class,
):
    from sklearn.linear_model import LogisticRegression

    z, y, colour = planted(1200, colour_is_class)
    head = class_head(z, y)
    k = colour.max() + 1
    parts = (colour[:600], colour[600:800], colour[800:])
    erased_test, after, directions = amnesic.erase(fits_of(z), "leace", parts, int(k), 10)
    assert directions == k - 1  # LEACE changes the features along k - 1 directions
    assert after <= amnesic.chance_level(colour[800:], k)
    erased, _ = amnesic.leace_erased(fits_of(z), colour[:600], int(k))
    # a tuned logistic regression of the erased train rows: no better than the majority
    majority = np.bincount(colour[800:]).max() / 400
    for c in (0.01, 1.0, 100.0):
        fitted = LogisticRegression(C=c, max_iter=2000).fit(erased["train"], colour[:600])
        assert fitted.score(erased["test"], colour[800:]) <= majority + 0.05, c
    intact = amnesic.head_accuracy(head, z[800:], y[800:])
    without = amnesic.head_accuracy(head, erased_test, y[800:])
    if colour_is_class:
        assert without < 0.3  # the head used the colour: it is lost
    else:
        assert without == pytest.approx(intact, abs=0.02)  # the head never used it


def test_leace_in_the_span_coordinates_is_concept_erasures_eraser_on_the_features():
    """Where the train rows span the features (n > dim), erasing in their span's
    coordinates is the library's LEACE fitted on the features themselves."""
    import torch
    from concept_erasure import LeaceFitter

    z, _, colour = planted(1200, False)
    z = z - z[:600].mean(axis=0)  # centred on the train rows, as the standardised heads' z
    erased, directions = amnesic.leace_erased(fits_of(z), colour[:600], 6)
    fitter = LeaceFitter(40, 6, dtype=torch.float64, shrinkage=False, constrain_cov_trace=False)
    fitter.update(torch.from_numpy(z[:600]), torch.from_numpy(np.eye(6)[colour[:600]]))
    direct = fitter.eraser(torch.from_numpy(z[800:])).numpy()
    np.testing.assert_allclose(erased["test"], direct, atol=1e-8)
    assert directions == 5


def wide_planted(seed: int, parts: tuple[int, int, int], dim: int, k: int, scale: float):
    """Fewer rows than dimensions, as in the default stores: Gaussian features with a
    factor of k classes planted as a scaled one-hot block, centred on the train rows;
    (features, labels, the RidgeFits of the train, validation and test parts)."""
    rng = np.random.default_rng(seed)
    n_train, n_val, n_test = parts
    labels = rng.integers(k, size=n_train + n_val + n_test)
    z = rng.normal(size=(len(labels), dim))
    z[:, :k] += scale * np.eye(k)[labels]
    z -= z[:n_train].mean(axis=0)
    fits = amnesic.RidgeFits(z[:n_train], z[n_train : n_train + n_val], z[n_train + n_val :])
    return z, labels, fits


def test_the_closed_form_is_concept_erasures_eraser_in_the_span_coordinates():
    """n < dim: the library fitted on the train rows' span coordinates (U S), applied to
    every row's coordinates and mapped back, gives the closed form's features."""
    import torch
    from concept_erasure import LeaceFitter

    z, colour, fits = wide_planted(2, (120, 60, 80), 400, 5, 1.2)
    erased, directions = amnesic.leace_erased(fits, colour[:120], 5)
    keep = fits.eigenvalues > 1e-10 * fits.eigenvalues.max()
    vectors, root = fits.vectors[:, keep], np.sqrt(fits.eigenvalues[keep])
    fitter = LeaceFitter(
        len(root), 5, dtype=torch.float64, shrinkage=False, constrain_cov_trace=False
    )
    fitter.update(torch.from_numpy(vectors * root), torch.from_numpy(np.eye(5)[colour[:120]]))
    back = (vectors / root).T @ fits.train
    coordinates = fits.cross_test[:, keep] / root
    change = coordinates - fitter.eraser(torch.from_numpy(coordinates)).numpy()
    np.testing.assert_allclose(erased["test"], fits.test - change @ back, atol=1e-8)
    assert directions == int((fitter.eraser.proj_left.abs().sum(0) > 0).sum()) == 4


def test_leace_with_fewer_rows_than_dimensions_decorrelates_the_train_rows():
    """n < dim, as in the default stores: the erased train rows' covariance with the
    factor's one-hot labels is zero (LEACE's guarantee on the rows it was fitted on)."""
    z, colour, fits = wide_planted(1, (150, 70, 80), 500, 4, 1.5)
    erased, directions = amnesic.leace_erased(fits, colour[:150], 4)
    onehot = np.eye(4)[colour[:150]]
    covariance = (erased["train"] - erased["train"].mean(0)).T @ (onehot - onehot.mean(0))
    assert np.abs(covariance).max() < 1e-8 * np.abs(z[:150].T @ onehot).max()
    assert directions == 3
