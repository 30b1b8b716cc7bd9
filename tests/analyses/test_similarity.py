"""Linear CKA: Kornblith et al.'s own kernel form as the outside reference, its
invariances, and the per-layer table on real feature stores."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import build_stores, tiny_config

from visual_ablation.analyses import similarity
from visual_ablation.features import feature_store
from visual_ablation.plan.config import resolve


def kornblith_cka(x: np.ndarray, y: np.ndarray) -> float:
    """The paper's code path (google-research/representation_similarity, `gram_linear`,
    `center_gram`, `cka`, not debiased), in its kernel form: HSIC of centred Gram
    matrices."""

    def centred_gram(a):
        gram = a @ a.T
        means = gram.mean(0)
        means -= means.mean() / 2
        return gram - means[:, None] - means[None, :]

    k, l_ = centred_gram(x.astype(np.float64)), centred_gram(y.astype(np.float64))
    return float(k.ravel() @ l_.ravel() / (np.linalg.norm(k) * np.linalg.norm(l_)))


def test_linear_cka_equals_the_papers_kernel_form():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 30))
    y = x[:, :20] @ rng.normal(size=(20, 50)) + 0.5 * rng.normal(size=(200, 50))
    assert similarity.linear_cka(x, y) == pytest.approx(kornblith_cka(x, y), rel=1e-10)
    assert 0.2 < similarity.linear_cka(x, y) < 0.95


def test_linear_cka_is_one_up_to_rotation_and_scale_and_low_for_unrelated_features():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 16)).astype(np.float32)
    rotation, _ = np.linalg.qr(rng.normal(size=(16, 16)))
    assert similarity.linear_cka(x, x) == pytest.approx(1.0)
    assert similarity.linear_cka(x, 3.0 * x @ rotation + 7.0) == pytest.approx(1.0, abs=1e-6)
    unrelated = rng.normal(size=(500, 16))
    assert similarity.linear_cka(x, unrelated) < 0.1  # about dims / images
    with pytest.raises(ValueError, match="same images"):
        similarity.linear_cka(x, x[:10])


def unbiased_hsic(k: np.ndarray, l_: np.ndarray) -> float:
    """Song et al. (2012), eq. 5, on n x n kernel matrices, directly: the diagonals zeroed,
    then tr(KL) + 1'K1 1'L1 / ((n-1)(n-2)) - 2 / (n-2) 1'KL1, over n(n-3)."""
    n = len(k)
    k, l_ = k.copy(), l_.copy()
    np.fill_diagonal(k, 0)
    np.fill_diagonal(l_, 0)
    one = np.ones(n)
    return float(
        (
            np.trace(k @ l_)
            + (one @ k @ one) * (one @ l_ @ one) / ((n - 1) * (n - 2))
            - 2 / (n - 2) * (one @ k @ l_ @ one)
        )
        / (n * (n - 3))
    )


def test_debiased_cka_equals_the_unbiased_hsic_of_the_kernels():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(60, 12)) + 3.0  # not centred: the estimator must not care
    y = x[:, :5] @ rng.normal(size=(5, 40)) + rng.normal(size=(60, 40))
    k, l_ = x @ x.T, y @ y.T
    direct = unbiased_hsic(k, l_) / np.sqrt(unbiased_hsic(k, k) * unbiased_hsic(l_, l_))
    assert similarity.debiased_linear_cka(x, y) == pytest.approx(direct, rel=1e-9)
    assert similarity.debiased_linear_cka(x, x) == pytest.approx(1.0)


def test_debiased_cka_of_unrelated_wide_features_is_near_zero_where_the_biased_is_not():
    """n = 200 images, 400 features each side: the biased CKA of independent noise is
    about 0.7 (dims against images), the debiased one about 0, and under its null."""
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(200, 400)), rng.normal(size=(200, 400))
    assert similarity.linear_cka(x, y) > 0.5
    assert abs(similarity.debiased_linear_cka(x, y)) < 0.02
    null = similarity.debiased_null(x, y)
    assert 0 < null < 0.03
    related = x[:, :50] @ rng.normal(size=(50, 400))
    assert similarity.debiased_linear_cka(x, related) > 10 * null


def test_the_null_in_kernel_form_is_the_debiased_cka_of_shuffled_rows():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(120, 30)), rng.normal(size=(120, 50))
    y[:, :10] += x[:, :10]
    shuffles = np.random.default_rng(0)
    direct = [similarity.debiased_linear_cka(x, y[shuffles.permutation(120)]) for _ in range(20)]
    assert similarity.debiased_null(x, y, permutations=20) == pytest.approx(
        float(np.quantile(direct, 0.95)), rel=1e-9
    )


def test_a_layer_table_on_real_stores(tmp_path):
    exp = resolve(
        tiny_config(
            results_dir=str(tmp_path),
            datasets={"digits": {"source": "sklearn-digits", "n": 300}},
            representations=["original", "grayscale", "phase_scramble"],
            backbones={"pixels": {"model": "pixels", "image_size": 8}},
        )
    )
    build_stores(exp, "digits", [("pixels", rep) for rep in exp.representations])
    assert np.array_equal(similarity.image_rows(300), np.arange(300))
    sample = similarity.image_rows(300, limit=50)
    assert len(sample) == 50 and np.array_equal(sample, similarity.image_rows(300, limit=50))

    def table(rep):
        return similarity.layer_similarity(
            exp.feature_store("digits", "pixels", "original"),
            exp.feature_store("digits", "pixels", rep),
            exp.feature_spec("digits", "pixels", "original"),
            exp.feature_spec("digits", "pixels", rep),
        )

    grey, scrambled = table("grayscale"), table("phase_scramble")
    assert [r["layer"] for r in grey] == ["pixels"]
    assert grey[0]["n_images"] == 300
    # digits are grey already: grayscale changes nothing; scrambling the phase does
    assert grey[0]["cka"] == pytest.approx(1.0, abs=1e-4)
    assert scrambled[0]["cka"] < 0.5
    # the same as the formula on the stores' own values
    ref = feature_store.read(
        exp.feature_store("digits", "pixels", "original"),
        exp.feature_spec("digits", "pixels", "original"),
    )["pixels"]
    other = feature_store.read(
        exp.feature_store("digits", "pixels", "phase_scramble"),
        exp.feature_spec("digits", "pixels", "phase_scramble"),
    )["pixels"]
    assert scrambled[0]["cka"] == pytest.approx(kornblith_cka(ref, other), rel=1e-8)
    # the debiased CKA against the kernels of the same stored values, and its null below it
    k, l_ = ref.astype(np.float64) @ ref.T.astype(np.float64), other @ other.T.astype(np.float64)
    k, l_ = k.astype(np.float64), l_.astype(np.float64)
    direct = unbiased_hsic(k, l_) / np.sqrt(unbiased_hsic(k, k) * unbiased_hsic(l_, l_))
    assert scrambled[0]["cka_debiased"] == pytest.approx(direct, rel=1e-6)
    assert grey[0]["cka_debiased"] == pytest.approx(1.0, abs=1e-4)
    # pixels with every phase scrambled are unrelated to the originals: the debiased CKA
    # is at its permutation null, the biased one above it (its floor of n dims)
    assert scrambled[0]["cka_debiased"] < 2 * scrambled[0]["cka_null"] < 0.05
    assert scrambled[0]["cka"] > 3 * scrambled[0]["cka_debiased"]
    assert grey[0]["cka_null"] < 0.05
