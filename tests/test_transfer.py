"""Transfer: the heads a train job keeps, applied to a store by a numpy-only job, give
the train job's own test probabilities on its own store, and test the same images on
another store; shape bias from decisions."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import build_stores

from visual_ablation.analyses import inference, shape_bias
from visual_ablation.probes import run_files, training, transfer
from visual_ablation.spec.config import resolve

CONFIG = {
    "datasets": {"digits": {"source": "sklearn-digits", "n": 600}},
    "representations": ["original", "lowpass"],
    "backbones": {
        "effnet": {
            "model": "efficientnet_lite0",
            "weights": "none",
            "layers": ["stem", "blocks.1"],
            "image_size": 16,
        },
    },
    "split": {"val": 0.15, "test": 0.2, "seed": 0, "resample": True},
    "probes": {"linear": {"hidden": 0, "max_epochs": 30}, "mlp": {"hidden": 32, "max_epochs": 30}},
    "runs": 2,
}


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


def applied(exp, representation: str, heads_paths: list[str]):
    return transfer.transfer_store(
        heads_paths,
        exp.feature_store("digits", "effnet", representation),
        exp.data_store("digits"),
        exp.feature_spec("digits", "effnet", representation),
        exp.data_spec("digits"),
        target="class",
    )


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
