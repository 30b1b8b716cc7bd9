"""Transfer: the heads a train job keeps, applied to a store by a numpy-only job, give
the train job's own test probabilities on its own store, and test the same images on
another store; shape bias from decisions."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import build_stores, tiny_config

from visual_ablation.analyses import inference, shape_bias
from visual_ablation.features import feature_store
from visual_ablation.plan.config import resolve
from visual_ablation.probes import run_files, training, transfer

CONFIG = tiny_config(
    datasets={"digits": {"source": "sklearn-digits", "n": 600}},
    representations=["original", "lowpass"],
    backbones={
        "effnet": {
            "model": "efficientnet_lite0",
            "weights": "none",
            "layers": ["stem", "blocks.1"],
            "image_size": 16,
        },
    },
    split={"val": 0.15, "test": 0.2, "seed": 0, "resample": True},
    probes={"linear": {"hidden": 0, "max_epochs": 30}, "mlp": {"hidden": 32, "max_epochs": 30}},
    runs=2,
)


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    root = tmp_path_factory.mktemp("transfer")
    exp = resolve({**CONFIG, "results_dir": str(root)})
    build_stores(exp, "digits", [("effnet", rep) for rep in exp.representations])
    return exp


def trained(exp, probe: str, tmp_path):
    rows, predictions, heads = training.train_store(
        feature_path=exp.feature_store("digits", "effnet", "original"),
        data_path=exp.data_store("digits"),
        feature_spec=exp.feature_spec("digits", "effnet", "original"),
        data_spec=exp.data_spec("digits"),
        probe_spec=exp.probe_spec(probe),
        split_spec=exp.split,
        runs=[0, 1],
        device="cpu",
    )
    # two run groups' files, as two train jobs of one run each would write them
    paths = []
    for run in (0, 1):
        path = str(tmp_path / f"{probe}.run{run}.heads.npz")
        chosen = [h for h in heads if h.run == run]
        run_files.write_heads(chosen, [r for r in rows if r["run"] == run], path)
        paths.append(path)
    return rows, predictions, paths


def applied(exp, representation: str, heads_paths: list[str], variant: str = "as-trained"):
    (result,) = transfer.transfer_store(
        heads_paths,
        exp.feature_store("digits", "effnet", representation),
        exp.data_store("digits"),
        exp.feature_spec("digits", "effnet", representation),
        exp.data_spec("digits"),
        target="class",
        variants=[variant],
    )
    return result


@pytest.mark.parametrize("probe", ["linear", "mlp"])
def test_heads_on_their_own_store_give_the_train_jobs_predictions(experiment, probe, tmp_path):
    rows, predictions, paths = trained(experiment, probe, tmp_path)
    again, repeated = applied(experiment, "original", paths)
    assert [list(r) for r in again] == [run_files.COLUMNS] * len(rows)
    for row, other in zip(rows, again, strict=True):
        for key in ("run", "layer", "best_epoch", "epochs", "n_test", "train_representation"):
            assert row[key] == other[key]
        for metric in ("accuracy", "balanced_accuracy", "macro_f1"):
            assert other[metric] == row[metric]
        assert other["nll"] == pytest.approx(row["nll"], rel=1e-5)
    assert np.array_equal(repeated["image"], predictions["image"])
    assert np.array_equal(repeated["predicted"], predictions["predicted"])
    np.testing.assert_allclose(repeated["p_true"], predictions["p_true"], atol=1e-5)


def test_heads_tested_on_another_store_are_rows_of_that_representation(experiment, tmp_path):
    rows, predictions, paths = trained(experiment, "mlp", tmp_path)
    moved, moved_predictions = applied(experiment, "lowpass", paths)
    assert {r["representation"] for r in moved} == {"lowpass"}
    assert {r["train_representation"] for r in moved} == {"original"}
    # the same test images, other features: other decisions on some of them
    assert np.array_equal(moved_predictions["image"], predictions["image"])
    assert not np.array_equal(moved_predictions["predicted"], predictions["predicted"])
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in moved)


def test_restandardised_heads_undo_a_shift_of_the_feature_statistics(
    experiment, tmp_path, monkeypatch
):
    rows, predictions, paths = trained(experiment, "linear", tmp_path)
    # on the store they were trained on, re-standardising changes nothing: the same rows'
    # statistics, the same predictions
    same, same_predictions = applied(experiment, "original", paths, "restandardised")
    assert {r["transfer"] for r in same} == {"restandardised"}
    assert np.array_equal(same_predictions["predicted"], predictions["predicted"])
    # a store whose every feature is scaled and shifted (an ablation that moves the
    # statistics and keeps the information): the heads as trained collapse, the
    # re-standardised heads decide as on the original
    original = feature_store.read(
        experiment.feature_store("digits", "effnet", "original"),
        experiment.feature_spec("digits", "effnet", "original"),
    )
    rng = np.random.default_rng(0)
    shifted = {}
    for layer, x in original.items():
        scale = rng.uniform(0.2, 3.0, x.shape[1]).astype(np.float32)
        shifted[layer] = x * scale + 5.0 * x.std(0) + 1.0
    monkeypatch.setattr(transfer.feature_store, "read", lambda path, spec: shifted)
    as_trained, _ = applied(experiment, "original", paths, "as-trained")
    undone, undone_predictions = applied(experiment, "original", paths, "restandardised")
    agree = (undone_predictions["predicted"] == predictions["predicted"]).mean()
    assert agree > 0.99
    for row, before, after in zip(rows, as_trained, undone, strict=True):
        assert after["accuracy"] == pytest.approx(row["accuracy"], abs=0.01)
        assert before["accuracy"] < row["accuracy"] - 0.2
    with pytest.raises(ValueError, match="unknown transfer 'adapted'"):
        applied(experiment, "original", paths, "adapted")


def test_heads_of_a_layer_the_store_lacks_are_refused_naming_it(experiment, tmp_path):
    import json

    _, _, paths = trained(experiment, "linear", tmp_path)
    with np.load(paths[0]) as archive:
        values = {k.replace("/stem/", "/blocks.9/"): archive[k] for k in archive.files}
    rows = json.loads(str(values["rows"]))
    for row in rows:
        row["layer"] = "blocks.9" if row["layer"] == "stem" else row["layer"]
    values["rows"] = np.array(json.dumps(rows))
    renamed = str(tmp_path / "renamed.heads.npz")
    np.savez(renamed, **values)
    with pytest.raises(ValueError, match=r"lacks layer\(s\) blocks\.9 .*rerun the train job"):
        applied(experiment, "lowpass", [renamed])


def test_shape_bias_counts_decisions_that_follow_shape_or_cue():
    shape = np.array([[1, 1, 0, 0, 0, 1], [1, 0, 0, 0, 1, 1]], dtype=bool)
    cue = np.array([[0, 0, 1, 0, 1, 0], [0, 1, 1, 0, 0, 0]], dtype=bool)
    value, low, high = shape_bias.shape_bias(shape, cue, inference.bootstrap_weights(6, 2))
    assert value == pytest.approx(6 / 10)
    assert low <= value <= high and 0.0 <= low and high <= 1.0
    assert shape_bias.shape_bias(shape, np.zeros_like(cue))[0] == 1.0
    assert np.isnan(shape_bias.shape_bias(np.zeros_like(shape), np.zeros_like(cue))[0])


def test_a_layer_that_follows_either_cue_no_more_than_a_guesser_gets_no_shape_bias():
    rng = np.random.default_rng(0)
    runs, n, k = 3, 400, 8
    label = rng.integers(k, size=(runs, n))
    cue = (label + rng.integers(1, k, size=(runs, n))) % k  # always another class
    guessed = rng.integers(k, size=(runs, n))  # a guesser: either cue in 2/K of images
    measured = shape_bias.decisions(guessed == label, guessed == cue, 2 / k)
    assert measured["either_fraction"] == pytest.approx(2 / k, abs=0.03)
    assert measured["either_ci_low"] <= 2 / k <= measured["either_ci_high"]
    assert np.isnan(measured["shape_bias"]) and "no shape bias" in measured["note"]
    # a layer that follows the shape in 3 of 4 images and the cue otherwise: measured
    follows = np.where(rng.random((runs, n)) < 0.75, label, cue)
    measured = shape_bias.decisions(follows == label, follows == cue, 2 / k)
    assert measured["either_fraction"] == 1.0 and measured["note"] == ""
    assert measured["shape_bias"] == pytest.approx(0.75, abs=0.03)
    assert measured["shape_bias_ci_low"] < 0.75 < measured["shape_bias_ci_high"]
