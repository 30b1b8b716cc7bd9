"""Summary statistics: hand-made tables with known answers, hand-computed tests, and real
probes on real images."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_config
from scipy.stats import binomtest

from visual_ablation.analyses import inference, stats
from visual_ablation.probes import metrics
from visual_ablation.probes.metrics import METRICS

T_975_DF2 = 4.302652729911275  # t quantile 0.975 with 2 degrees of freedom (tables)


def test_t_interval_of_one_two_three():
    mean, std, low, high = inference.t_interval(np.array([1.0, 2.0, 3.0]))
    half = T_975_DF2 * 1.0 / math.sqrt(3)
    assert (mean, std) == (2.0, 1.0)
    assert low == pytest.approx(2.0 - half) and high == pytest.approx(2.0 + half)


def test_corrected_resampled_t_interval():
    """Nadeau & Bengio: with overlapping test sets the variance of the mean over runs is
    std^2 (1/n + n_test/n_train), not std^2 / n."""
    mean, std, low, high = inference.t_interval(np.array([1.0, 2.0, 3.0]), overlap=0.25)
    half = T_975_DF2 * 1.0 * math.sqrt(1 / 3 + 0.25)
    assert low == pytest.approx(2.0 - half) and high == pytest.approx(2.0 + half)


def test_t_interval_edge_cases():
    assert np.isnan(inference.t_interval(np.array([0.7]))[1])  # one run: no spread
    assert inference.t_interval(np.array([0.5, 0.5, 0.5])) == (0.5, 0.0, 0.5, 0.5)


def test_holm_adjusts_in_step_down_order():
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> monotone: 0.06
    adjusted = inference.holm(np.array([0.01, 0.04, 0.03, 0.005]))
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(inference.holm(np.array([0.5, np.nan, 0.4])), [0.8, np.nan, 0.8])
    assert inference.holm(np.array([0.9, 0.8]))[0] == 1.0  # capped at 1


@pytest.mark.parametrize("b,c", [(0, 3), (1, 9), (7, 2), (12, 12), (0, 1), (30, 55)])
def test_sign_flip_test_of_one_run_is_mcnemars_exact_test(b, c):
    """One run: per-image differences are +1 (only the other model right), -1 (only the
    reference right) or 0. The exact two-sided McNemar test is a binomial test of b
    against b + c at 1/2 (Dietterich 1998)."""
    differences = np.array([1] * b + [-1] * c + [0] * 150)
    assert inference.sign_flip_p(differences) == pytest.approx(binomtest(b, b + c, 0.5).pvalue)


def test_sign_flip_test_by_hand_over_runs():
    # 3 images that 3 runs all get wrong (-3 each): 8 equally likely sign patterns, 2 of
    # them as extreme (all -, all +): p = 1/4
    assert inference.sign_flip_p(np.array([-3, -3, -3] + [0] * 197)) == pytest.approx(0.25)
    # -3, -3, +1: sums of +-3 +-3 +-1 as extreme as |-5|: (-3-3-1, -3-3+1, 3+3+1, 3+3-1)
    assert inference.sign_flip_p(np.array([-3, -3, 1])) == pytest.approx(4 / 8)
    assert inference.sign_flip_p(np.zeros(10, dtype=int)) == 1.0


def test_sign_flip_normal_approximation_meets_the_exact_test():
    rng = np.random.default_rng(0)
    differences = rng.choice([-2, -1, 0, 1, 2], size=1990, p=[0.2, 0.25, 0.1, 0.2, 0.25])
    exact = inference.sign_flip_p(differences)
    assert np.abs(differences).sum() > 2000
    stats_limit = inference.EXACT_LIMIT
    try:
        inference.EXACT_LIMIT = 10**9
        reference = inference.sign_flip_p(differences)
    finally:
        inference.EXACT_LIMIT = stats_limit
    assert exact == pytest.approx(reference, rel=0.05)


def predictions(correct: np.ndarray, n_classes: int = 8, seed: int = 0) -> dict:
    """Per-image predictions [runs, n] of a model that is right where `correct` is."""
    rng = np.random.default_rng(seed)
    runs, n = correct.shape
    label = np.tile(np.arange(n) % n_classes, (runs, 1))
    wrong = (label + 1 + rng.integers(0, n_classes - 1, size=label.shape)) % n_classes
    predicted = np.where(correct, label, wrong)
    confidence = np.where(correct, 0.8, 0.6)
    return {
        "image": np.tile(np.arange(n), (runs, 1)),
        "label": label,
        "predicted": predicted,
        "p_true": np.where(correct, confidence, 0.05),
        "confidence": confidence,
    }


def test_the_same_three_wrong_images_in_every_run_are_not_significant():
    """The case a t-test over runs marked significant (p = 0): every one of 3 runs loses
    the same 3 of 200 test images (-0.015 in each run). That is well inside test-sampling
    noise: the image-level test says so."""
    base = np.random.default_rng(1).random(200) < 0.8
    reference = np.tile(base, (3, 1))
    other = reference.copy()
    lost = np.flatnonzero(base)[:3]
    other[:, lost] = False
    tested = inference.image_level_differences(predictions(reference), predictions(other), 8)
    assert tested["accuracy_p"] == pytest.approx(0.25)
    replicates = tested["replicates"]["accuracy"]
    assert np.mean(replicates) == pytest.approx(-0.015, abs=0.002)
    # the bootstrap's spread: about sqrt(3) / 200 (a Poisson count of 3 lost images)
    assert np.std(replicates) == pytest.approx(math.sqrt(3) / 200, rel=0.15)
    assert tested["n_images"] == 200


def test_weighted_metrics_with_unit_weights_are_the_runs_metrics():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 6, 300)
    logits = rng.normal(size=(300, 6)) + 1.5 * np.eye(6)[y]
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    plain = metrics.classification_metrics(y, proba)
    weighted = inference.weighted_metrics(
        np.ones((1, 300)),
        y,
        proba.argmax(axis=1),
        proba[np.arange(300), y],
        proba.max(axis=1),
        6,
    )
    for metric in METRICS:
        assert weighted[metric][0] == pytest.approx(plain[metric], rel=1e-10), metric
    # a weight of 2 is the image listed twice
    twice = np.r_[np.arange(300), np.arange(50)]
    doubled = metrics.classification_metrics(y[twice], proba[twice])
    w = np.ones((1, 300))
    w[0, :50] = 2
    weighted = inference.weighted_metrics(
        w, y, proba.argmax(axis=1), proba[np.arange(300), y], proba.max(axis=1), 6
    )
    for metric in ("accuracy", "balanced_accuracy", "macro_f1", "nll"):
        assert weighted[metric][0] == pytest.approx(doubled[metric], rel=1e-10), metric


def _table(accuracy: dict) -> pd.DataFrame:
    """Run rows of (representation, layer) or (representation, layer, trained on)."""
    rows = []
    for key, values in accuracy.items():
        rep, layer, trained_on = (*key, key[0])[:3]
        for run, acc in enumerate(values):
            row = {"dataset": "d", "backbone": "b", "representation": rep}
            transfer = "none" if trained_on == rep else "as-trained"
            row |= {"train_representation": trained_on, "transfer": transfer}
            row |= {"target": "class", "layer": layer}
            row |= {"probe": "linear", "run": run, "best_epoch": 5, "epochs": 20}
            row |= {"train_seconds": 1.0, "n_classes": 8, "n_train": 600, "n_test": 200}
            row |= {m: acc for m in METRICS}
            rows.append(row)
    return pd.DataFrame(rows)


def loader(models: dict) -> stats.PredictionLoader:
    """models: {representation or (representation, trained on): {layer: predictions}}."""

    def load(dataset, backbone, representation, trained_on, transfer, target, probe):
        model = models.get((representation, trained_on)) or models[representation]
        layers = sorted(model)
        per_layer = [model[layer] for layer in layers]
        out = {"runs": np.arange(3), "layers": np.array(layers)}
        out |= {key: per_layer[0][key] for key in ("image", "label")}
        for key in ("predicted", "p_true", "confidence"):
            out[key] = np.stack([p[key] for p in per_layer], axis=1)
        return out

    return load


def test_summary_means_cis_and_image_level_differences():
    rng = np.random.default_rng(5)
    original = rng.random((3, 200)) < 0.8
    gray = original & (rng.random((3, 200)) < 0.75)  # loses about a fifth: -0.2
    models = {
        "original": {"l1": predictions(original), "l2": predictions(original)},
        "gray": {"l1": predictions(gray), "l2": predictions(original)},  # l2: no change
    }
    acc = lambda c: list(c.mean(axis=1))  # noqa: E731
    table = _table(
        {
            ("original", "l1"): acc(original),
            ("gray", "l1"): acc(gray),
            ("original", "l2"): acc(original),
            ("gray", "l2"): acc(original),
        }
    )
    summary = stats.summarise(table, loader(models), reference="original")
    summary = summary.set_index(["representation", "layer"])
    first = summary.loc[("original", "l1")]
    mean, std, low, high = inference.t_interval(np.array(acc(original)))
    assert (first["n_runs"], first["accuracy_mean"], first["accuracy_ci_low"]) == (3, mean, low)
    assert np.isnan(first["accuracy_diff"])  # the reference is not compared with itself

    lossy = summary.loc[("gray", "l1")]
    assert lossy["n_pairs"] == 3 and lossy["n_test_images"] == 200
    true_diff = float((gray.mean(axis=1) - original.mean(axis=1)).mean())
    assert lossy["accuracy_diff"] == pytest.approx(true_diff)
    assert lossy["accuracy_diff_ci_low"] < true_diff < lossy["accuracy_diff_ci_high"]
    assert lossy["accuracy_diff_ci_high"] < -0.1
    votes = (gray.astype(int) - original.astype(int)).sum(axis=0)
    assert lossy["accuracy_p"] == pytest.approx(inference.sign_flip_p(votes))
    assert lossy["accuracy_p"] < 1e-10
    # Holm over the family's two comparisons (l1: tiny, l2: 1.0)
    assert lossy["accuracy_p_holm"] == pytest.approx(2 * lossy["accuracy_p"])
    same = summary.loc[("gray", "l2")]
    assert same["accuracy_diff"] == 0 and same["accuracy_p"] == 1.0
    assert same["accuracy_diff_ci_low"] == same["accuracy_diff_ci_high"] == 0


def test_transfer_rows_are_compared_with_the_reference_in_a_family_of_their_own():
    rng = np.random.default_rng(6)
    original = rng.random((3, 200)) < 0.8
    gray = original & (rng.random((3, 200)) < 0.9)  # trained on gray: -0.08
    moved = original & (rng.random((3, 200)) < 0.5)  # original's heads on gray: -0.4
    models = {
        "original": {"l1": predictions(original)},
        "gray": {"l1": predictions(gray)},
        ("gray", "original"): {"l1": predictions(moved)},
    }
    acc = lambda c: list(c.mean(axis=1))  # noqa: E731
    table = _table(
        {
            ("original", "l1"): acc(original),
            ("gray", "l1"): acc(gray),
            ("gray", "l1", "original"): acc(moved),
        }
    )
    summary = stats.summarise(table, loader(models), reference="original")
    summary = summary.set_index(["representation", "train_representation"])
    assert len(summary) == 3
    within, transferred = summary.loc[("gray", "gray")], summary.loc[("gray", "original")]
    for row, model in ((within, gray), (transferred, moved)):
        true_diff = float((model.mean(axis=1) - original.mean(axis=1)).mean())
        assert row["accuracy_diff"] == pytest.approx(true_diff)
        votes = (model.astype(int) - original.astype(int)).sum(axis=0)
        assert inference.sign_flip_p(votes) <= row["accuracy_p"] < 1e-3
        # each is the only comparison of its family: Holm leaves its p as it is
        assert row["accuracy_p_holm"] == pytest.approx(row["accuracy_p"])
    assert transferred["accuracy_diff"] < within["accuracy_diff"] < 0
    assert np.isnan(summary.loc[("original", "original")]["accuracy_diff"])


def test_resampled_runs_widen_the_interval_over_runs():
    table = _table({("original", "l1"): [0.80, 0.82, 0.84]})
    plain = stats.summarise(table, reference=None).iloc[0]
    corrected = stats.summarise(table, reference=None, resampled=True).iloc[0]
    half = T_975_DF2 * 0.02 * math.sqrt(1 / 3 + 200 / 600)
    assert corrected["accuracy_ci_high"] == pytest.approx(0.82 + half)
    assert corrected["accuracy_ci_high"] > plain["accuracy_ci_high"]


def test_summary_without_reference_has_no_differences():
    summary = stats.summarise(_table({("original", "l1"): [0.8, 0.8, 0.9]}), reference=None)
    assert summary["accuracy_diff"].isna().all()
    assert (summary["n_pairs"] == 0).all()


def test_a_real_large_effect_stays_significant(tmp_path):
    """Real probes on real images: a linear probe on the digits' pixels, trained on the
    original images and on phase-scrambled ones (shape removed), 3 resampled runs. The
    drop must be significant after Holm over a family as large as the default run's
    effnet one (7 representations x 8 layers)."""
    from visual_ablation.data import preparation
    from visual_ablation.features import extraction
    from visual_ablation.plan.config import resolve
    from visual_ablation.probes import training

    exp = resolve(
        tiny_config(
            results_dir=str(tmp_path),
            datasets={"digits": {"source": "sklearn-digits", "n": 900}},
            representations=["original", "phase_scramble"],
            backbones={"pixels": {"model": "pixels", "image_size": 16}},
            split={"val": 0.15, "test": 0.2, "seed": 0, "resample": True},
            probes={"linear": {"hidden": 0, "lr": 0.003}},
        )
    )
    preparation.prepare(exp.data_spec("digits"), exp.data_store("digits"), progress=False)
    found = {}
    for rep in exp.representations:
        path = exp.feature_store("digits", "pixels", rep)
        spec = exp.feature_spec("digits", "pixels", rep)
        extraction.extract(exp.data_store("digits"), path, spec, device="cpu", progress=False)
        found[rep] = training.train_store(
            path,
            exp.data_store("digits"),
            spec,
            exp.data_spec("digits"),
            exp.probe_spec("linear"),
            exp.split,
            [0, 1, 2],
            device="cpu",
        )
    table = pd.DataFrame([row for rows, _, _ in found.values() for row in rows])
    summary = stats.summarise(
        table, lambda d, b, rep, tr, v, t, p: found[rep][1], reference="original", resampled=True
    )
    scrambled = summary.set_index("representation").loc["phase_scramble"]
    assert scrambled["accuracy_diff"] < -0.2
    assert scrambled["accuracy_p"] * 56 < 0.05  # Holm's largest factor in such a family
    assert scrambled["accuracy_diff_ci_high"] < 0


def test_a_family_tested_together_and_in_threads_equals_each_comparison_alone():
    """`summarise` tests every comparison that shares the reference's predictions in one
    pass (the models' sums side by side) and spreads the runs over threads: each row's
    interval and p-values are those of its own `image_level_differences`, and the summary
    is the same, bit for bit, whatever the thread count."""
    rng = np.random.default_rng(7)
    runs, n, layers = 3, 300, ("l1", "l2")
    original = {layer: rng.random((runs, n)) < 0.8 for layer in layers}
    models, accuracy = {}, {}
    for rep, keep in (("original", 1.0), ("gray", 0.9), ("blur", 0.7)):
        for trained_on, extra in ((rep, 1.0), ("original", 0.8)):
            if rep == "original" and trained_on != rep:
                continue
            key = (rep, trained_on)
            correct = {
                layer: original[layer] & (rng.random((runs, n)) < keep * extra) for layer in layers
            }
            if rep == "original":
                correct = original
            models[key] = {layer: predictions(correct[layer], seed=len(models)) for layer in layers}
            for layer in layers:
                accuracy[(rep, layer, trained_on)] = list(correct[layer].mean(axis=1))
    models["original"] = models[("original", "original")]
    table = _table(accuracy)
    one = stats.summarise(table, loader(models), reference="original")
    three = stats.summarise(table, loader(models), reference="original", threads=3)
    pd.testing.assert_frame_equal(one, three, check_exact=True)
    z = stats.sps.norm.ppf(0.975)
    compared = one[one["n_pairs"] > 0]
    assert len(compared) == 8  # 2 representations x 2 layers, within and transferred
    for _, row in compared.iterrows():
        key = (row["representation"], row["train_representation"])
        alone = inference.image_level_differences(
            models["original"][row["layer"]], models[key][row["layer"]], 8
        )
        for metric in METRICS:
            se = np.nanstd(alone["replicates"][metric], ddof=1)
            mean = row[f"{metric}_diff"]
            # the family's bootstrap sums are float32 in another order than the lone
            # comparison's (another BLAS kernel on another CPU): the standard error agrees
            # to float32's precision, which the replicates' variance amplifies (measured:
            # 1.1e-6 on an AVX2 machine); 1e-4 still tells another replicate draw apart
            assert row[f"{metric}_diff_ci_low"] == pytest.approx(mean - z * se, rel=1e-4)
            assert row[f"{metric}_diff_ci_high"] == pytest.approx(mean + z * se, rel=1e-4)
        assert row["accuracy_p"] >= alone["accuracy_p"]
        assert row["n_test_images"] == n


def test_a_fixed_test_set_gets_the_plain_interval_and_a_redrawn_one_the_corrected():
    table = _table({("original", "l1"): [0.80, 0.82, 0.84]})
    other = table.assign(dataset="e")
    both = pd.concat([table, other], ignore_index=True)
    summary = stats.summarise(both, reference=None, resampled=["d"]).set_index("dataset")
    half = T_975_DF2 * 0.02 * math.sqrt(1 / 3 + 200 / 600)
    assert summary.loc["d", "accuracy_ci_high"] == pytest.approx(0.82 + half)
    assert summary.loc["e", "accuracy_ci_high"] == pytest.approx(
        0.82 + T_975_DF2 * 0.02 / math.sqrt(3)
    )


def test_selectivity_is_class_minus_control_accuracy_run_by_run():
    classes = _table({("original", "l1"): [0.80, 0.82, 0.84], ("grayscale", "l1"): [0.7] * 3})
    control = _table({("original", "l1"): [0.30, 0.30, 0.36]}).assign(target="control")
    summary = stats.summarise(pd.concat([classes, control], ignore_index=True), reference=None)
    row = summary[(summary["target"] == "class") & (summary["representation"] == "original")]
    row = row.iloc[0]
    assert row["control_accuracy_mean"] == pytest.approx(0.32)
    # per run: 0.50, 0.52, 0.48 -> mean 0.50, std 0.02
    assert row["selectivity_mean"] == pytest.approx(0.50)
    assert row["selectivity_ci_high"] == pytest.approx(0.50 + T_975_DF2 * 0.02 / math.sqrt(3))
    # no control for grayscale, none on the control rows themselves
    others = summary[(summary["target"] == "control") | (summary["representation"] != "original")]
    assert others["selectivity_mean"].isna().all()


def test_the_paired_interval_has_the_standard_error_of_a_mean_over_images():
    """Known answer: one run of n independent per-image differences has the standard error
    sd / sqrt(n); two runs on the same images with the same differences are one
    observation of each image (the same weights), not two; a constant difference has a
    zero-width interval."""
    from visual_ablation.analyses.inference import paired_interval

    rng = np.random.default_rng(0)
    n = 2000
    image = np.arange(n)[None]
    first = rng.integers(0, 2, size=(1, n)).astype(float)
    second = rng.integers(0, 2, size=(1, n)).astype(float)
    mean, low, high = paired_interval(image, first, second)
    se = (first - second).std(ddof=1) / np.sqrt(n)
    assert mean == pytest.approx((first - second).mean())
    assert (high - low) / (2 * 1.959964) == pytest.approx(se, rel=0.1)
    twice = paired_interval(np.repeat(image, 2, 0), np.repeat(first, 2, 0), np.repeat(second, 2, 0))
    assert twice[0] == pytest.approx(mean)
    assert (twice[2] - twice[1]) == pytest.approx(high - low, rel=0.1)
    assert paired_interval(image, first + 0.25, first) == pytest.approx((0.25, 0.25, 0.25))


def test_selectivity_with_predictions_gets_the_image_level_paired_interval():
    rng = np.random.default_rng(3)
    right = {"class": rng.random((3, 200)) < 0.8, "control": rng.random((3, 200)) < 0.3}
    by_target = {t: {"l1": predictions(c)} for t, c in right.items()}

    def load(dataset, backbone, representation, trained_on, transfer, target, probe):
        return loader({"original": by_target[target]})(
            dataset, backbone, representation, trained_on, transfer, target, probe
        )

    classes = _table({("original", "l1"): list(right["class"].mean(axis=1))})
    control = _table({("original", "l1"): list(right["control"].mean(axis=1))})
    table = pd.concat([classes, control.assign(target="control")], ignore_index=True)
    row = stats.summarise(table, load, reference=None).iloc[0]
    expected = inference.paired_interval(
        np.tile(np.arange(200), (3, 1)), right["class"], right["control"]
    )
    assert row["selectivity_mean"] == pytest.approx(expected[0])
    assert (row["selectivity_ci_low"], row["selectivity_ci_high"]) == pytest.approx(expected[1:])
    # the same 200 images in every run: about the standard error of a mean over 200
    # images' differences (sd about 0.6), not over 600
    half = (expected[2] - expected[1]) / 2
    assert 0.5 < half / (1.96 * 0.6 / np.sqrt(200)) < 1.5
