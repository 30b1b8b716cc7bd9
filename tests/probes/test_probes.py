"""Probe training on real feature stores: an outside reference, determinism, independence
of the batched heads, early stopping, and refusal of unusable features or splits."""

from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
import zarr
from conftest import build_stores, tiny_config

from visual_ablation.data import splits
from visual_ablation.data.splits import SplitError
from visual_ablation.features import feature_store
from visual_ablation.plan.config import resolve
from visual_ablation.plumbing import store
from visual_ablation.probes import (
    fitting,
    optimiser,
    run_files,
    stacking,
    standardisation,
    training,
)
from visual_ablation.probes.stacking import FeatureError

CONFIG = tiny_config(
    datasets={"digits": {"source": "sklearn-digits"}},  # all 1,797 images
    representations=["original"],
    backbones={
        "pixels": {"model": "pixels", "image_size": 16},
        "effnet": {
            "model": "efficientnet_lite0",
            "weights": "none",
            "layers": ["stem", "blocks.1"],
            "image_size": 16,
        },
    },
    split={"val": 0.15, "test": 0.2, "seed": 0, "resample": False},
    # the schema defaults: what the reference test is about
    probes={"linear": {"hidden": 0}, "mlp": {"hidden": 32, "max_epochs": 40}},
    runs=5,
)


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    root = tmp_path_factory.mktemp("probes")
    exp = resolve({**CONFIG, "results_dir": str(root)})
    build_stores(exp, "digits", [(backbone, "original") for backbone in exp.backbones], 512)
    return exp


def train_job(exp, backbone="pixels", probe="linear", run=0, feature_path=None, split=None):
    rows, _, _ = training.train_store(
        feature_path=feature_path or exp.feature_store("digits", backbone, "original"),
        data_path=exp.data_store("digits"),
        feature_spec=exp.feature_spec("digits", backbone, "original"),
        data_spec=exp.data_spec("digits"),
        probe_spec=exp.probe_spec(probe),
        split_spec=split or exp.split,
        runs=run,
        device="cpu",
    )
    return rows


def engines() -> list:
    """(device, engine) pairs the trainer's tests run on: both engines on the CPU, and
    CUDA's own (static, with CUDA graphs) where a GPU is (benchmarks/gpu.py runs them)."""
    import torch

    pairs = [("cpu", "eager"), ("cpu", "static")]
    if torch.cuda.is_available():
        pairs.append(("cuda", "auto"))
    return [pytest.param(d, e, id=f"{d}-{e}") for d, e in pairs]


def labels_and_split(exp):
    """The digits' labels, classes and the split every run shares (resample: false)."""
    labels, n_classes, *_ = training.read_labels(exp.data_store("digits"), exp.data_spec("digits"))
    return labels, splits.stratified_split(labels, 0.15, 0.2, 0, "digits"), n_classes


def test_linear_probe_matches_scikit_learn_logistic_regression(experiment):
    from sklearn.linear_model import LogisticRegression

    spec = experiment.feature_spec("digits", "pixels", "original")
    x = feature_store.read(experiment.feature_store("digits", "pixels", "original"), spec)["pixels"]
    labels, split, _ = labels_and_split(experiment)
    z = standardisation.standardise(x, split == splits.TRAIN)
    train, test = split == splits.TRAIN, split == splits.TEST
    reference = (
        LogisticRegression(max_iter=5000).fit(z[train], labels[train]).score(z[test], labels[test])
    )
    ours = np.mean(
        [train_row["accuracy"] for run in range(5) for train_row in train_job(experiment, run=run)]
    )
    print(f"probe {ours:.4f} vs LogisticRegression {reference:.4f}")
    assert reference > 0.9  # a real task, not chance
    assert abs(ours - reference) <= 0.015


def test_rows_have_the_design_columns_and_counts(experiment):
    rows = train_job(experiment, backbone="effnet", probe="mlp")
    assert [r["layer"] for r in rows] == ["stem", "blocks.1"]
    for row in rows:
        assert list(row) == run_files.COLUMNS
        assert (row["n_train"], row["n_val"], row["n_test"]) == (1167, 270, 360)
        assert row["n_train"] + row["n_val"] + row["n_test"] == 1797
        assert 1 <= row["best_epoch"] <= row["epochs"] <= 40
        assert 0.1 < row["accuracy"] <= 1.0 and row["nll"] > 0 and 0 <= row["ece"] <= 1
        assert row["probe"] == "mlp" and row["n_classes"] == 10


def test_same_run_gives_the_same_csv_and_another_run_does_not(experiment, tmp_path):
    first, again, other = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"
    run_files.write_csv(train_job(experiment, backbone="effnet", run=3), str(first))
    run_files.write_csv(train_job(experiment, backbone="effnet", run=3), str(again))
    run_files.write_csv(train_job(experiment, backbone="effnet", run=4), str(other))

    def without_timings(path):
        import csv

        rows = list(csv.DictReader(open(path)))
        return [{k: v for k, v in r.items() if k not in run_files.TIMING_COLUMNS} for r in rows]

    assert without_timings(first) == without_timings(again)
    assert without_timings(first) != without_timings(other)


def looped_reference(features, labels, split, n_classes, probe, run):
    """The plain PyTorch recipe, one head at a time: nn.Linear layers, torch.optim.AdamW,
    early stopping with the best state restored. Shares only the init and the run's
    minibatch order with fitting.train, which must give the same heads."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    results = {}
    y = {code: torch.from_numpy(labels[split == code].astype(np.int64)) for code in range(3)}
    for layer, values in features.items():
        z = standardisation.standardise(values, split == splits.TRAIN)
        x = {code: torch.from_numpy(z[split == code]) for code in range(3)}
        init = stacking.init_head(
            z.shape[1], n_classes, probe.hidden, stacking.head_seed(run, layer)
        )
        sizes = [z.shape[1], probe.hidden, n_classes] if probe.hidden else [z.shape[1], n_classes]
        linears = [nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
        with torch.no_grad():
            for i, linear in enumerate(linears):
                linear.weight.copy_(init[2 * i].T)
                linear.bias.copy_(init[2 * i + 1])
        model = nn.Sequential(linears[0], nn.ReLU(), linears[1]) if probe.hidden else linears[0]
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=probe.lr, weight_decay=probe.weight_decay
        )
        order = torch.Generator().manual_seed(run)
        best, best_epoch, epochs, state = float("inf"), 0, probe.max_epochs, None
        for epoch in range(1, probe.max_epochs + 1):
            perm = torch.randperm(len(y[0]), generator=order)
            for start in range(0, len(perm), probe.batch_size):
                rows = perm[start : start + probe.batch_size]
                loss = F.cross_entropy(model(x[0][rows]), y[0][rows])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            with torch.no_grad():
                val = F.cross_entropy(model(x[1]), y[1]).item()
            if val < best:
                best, best_epoch = val, epoch
                state = {k: v.clone() for k, v in model.state_dict().items()}
            if epoch - best_epoch >= probe.patience:
                epochs = epoch
                break
        model.load_state_dict(state)
        with torch.no_grad():
            proba = torch.softmax(model(x[2]).double(), dim=1).numpy()
        results[layer] = (best_epoch, epochs, proba)
    return results


@pytest.mark.parametrize("device,engine", engines())
@pytest.mark.parametrize("hidden", [0, 8])
def test_batched_heads_and_runs_match_a_looped_plain_pytorch_reference(
    experiment, hidden, device, engine
):
    spec = experiment.feature_spec("digits", "effnet", "original")
    feats = feature_store.read(experiment.feature_store("digits", "effnet", "original"), spec)
    # a third layer as wide as `stem` (32) from other features: they train as one stack
    feats["wide_blocks.1"] = np.concatenate([feats["blocks.1"], feats["blocks.1"][:, :8]], 1)
    assert feats["wide_blocks.1"].shape[1] == feats["stem"].shape[1] != feats["blocks.1"].shape[1]
    labels, split, n_classes = labels_and_split(experiment)
    config = stacking.ProbeConfig(hidden=hidden, lr=0.02, max_epochs=40, patience=3)
    batched, _ = fitting.train(
        feats, labels, split, n_classes, config, runs=[2, 3], device=device, engine=engine
    )
    assert [(h.run, h.layer) for h in batched] == [
        (run, layer) for run in (2, 3) for layer in feats
    ]
    stopped_early = 0
    for run in (2, 3):
        reference = looped_reference(feats, labels, split, n_classes, config, run)
        for head in (h for h in batched if h.run == run):
            best_epoch, epochs, proba = reference[head.layer]
            assert (head.best_epoch, head.epochs) == (best_epoch, epochs), (run, head.layer)
            np.testing.assert_allclose(head.test_proba, proba, rtol=1e-4, atol=1e-5)
            assert (head.test_proba.argmax(1) == proba.argmax(1)).all()
            stopped_early += epochs < config.max_epochs
    # early stopping is exercised, and heads of one stack stop at different epochs
    assert stopped_early > 0
    assert len({h.epochs for h in batched if h.layer in ("stem", "wide_blocks.1")}) > 1


@pytest.mark.parametrize("device,engine", engines())
def test_each_head_trains_as_it_would_alone(experiment, device, engine):
    spec = experiment.feature_spec("digits", "effnet", "original")
    feats = feature_store.read(experiment.feature_store("digits", "effnet", "original"), spec)
    labels, split, n_classes = labels_and_split(experiment)
    config = stacking.ProbeConfig(hidden=8, max_epochs=30, patience=3)
    kwargs = {"device": device, "engine": engine}
    together, _ = fitting.train(feats, labels, split, n_classes, config, runs=1, **kwargs)
    alone, _ = fitting.train(
        {"blocks.1": feats["blocks.1"]}, labels, split, n_classes, config, runs=1, **kwargs
    )
    assert together[1].layer == alone[0].layer == "blocks.1"
    assert (together[1].best_epoch, together[1].epochs) == (alone[0].best_epoch, alone[0].epochs)
    np.testing.assert_allclose(together[1].test_proba, alone[0].test_proba, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("device,engine", engines())
def test_a_weight_decay_grid_keeps_each_heads_lowest_validation_loss(experiment, device, engine):
    """A grid trains one head per decay in the same steps: each (run, layer) keeps the
    decay whose head, trained alone with that decay, reached the lower validation loss,
    with that head's epochs and probabilities."""
    feats = {}
    for backbone in ("effnet", "pixels"):
        spec = experiment.feature_spec("digits", backbone, "original")
        path = experiment.feature_store("digits", backbone, "original")
        feats |= feature_store.read(path, spec)
    labels, split, n_classes = labels_and_split(experiment)
    kwargs = {"device": device, "engine": engine, "runs": [0, 1]}
    config = stacking.ProbeConfig(hidden=0, lr=0.01, max_epochs=40, patience=4)
    decays = (1e-4, 1.0)
    grid, _ = fitting.train(
        feats, labels, split, n_classes, replace(config, weight_decay=decays), **kwargs
    )
    alone = {
        decay: fitting.train(
            feats, labels, split, n_classes, replace(config, weight_decay=decay), **kwargs
        )[0]
        for decay in decays
    }
    chosen = set()
    for k, head in enumerate(grid):
        best = min(decays, key=lambda d: alone[d][k].best_val_loss)
        twin = alone[best][k]
        assert (head.run, head.layer, head.weight_decay) == (twin.run, twin.layer, best)
        assert (head.best_epoch, head.epochs) == (twin.best_epoch, twin.epochs)
        assert head.best_val_loss == pytest.approx(twin.best_val_loss, rel=1e-6)
        np.testing.assert_allclose(head.test_proba, twin.test_proba, rtol=1e-4, atol=1e-6)
        chosen.add(best)
    assert chosen == set(decays)  # both decays win somewhere: the choice is real


@pytest.mark.parametrize("device,engine", engines())
def test_early_stopping_keeps_the_best_epoch(experiment, device, engine):
    spec = experiment.feature_spec("digits", "pixels", "original")
    feats = feature_store.read(experiment.feature_store("digits", "pixels", "original"), spec)
    labels, split, n_classes = labels_and_split(experiment)
    # a large lr overfits the validation loss within a few epochs
    config = stacking.ProbeConfig(hidden=0, lr=0.05, patience=4, max_epochs=300)
    kwargs = {"device": device, "engine": engine}
    (head,), _ = fitting.train(feats, labels, split, n_classes, config, runs=0, **kwargs)
    assert head.epochs == head.best_epoch + 4 < 300
    # the probabilities are those of the best epoch: its validation loss, recomputed
    short = stacking.ProbeConfig(hidden=0, lr=0.05, patience=10_000, max_epochs=head.best_epoch)
    (best,), _ = fitting.train(feats, labels, split, n_classes, short, runs=0, **kwargs)
    np.testing.assert_allclose(head.test_proba, best.test_proba, rtol=1e-5, atol=1e-7)
    assert head.best_val_loss == pytest.approx(best.best_val_loss)


def test_the_accuracy_monitor_counts_a_higher_accuracy_and_at_a_tie_a_lower_loss():
    loss, accuracy = torch.tensor([1.0, 0.5, 2.0, 1.0]), torch.tensor([0.5, 0.5, 0.6, 0.4])
    best = (torch.full((4,), 0.9), torch.full((4,), 0.5))
    assert stacking.improves("accuracy", (loss, accuracy), best).tolist() == [
        False,  # same accuracy, higher loss
        True,  # same accuracy, lower loss
        True,  # higher accuracy, whatever the loss
        False,  # lower accuracy, even at a lower loss
    ]
    assert stacking.improves("loss", (loss, accuracy), best).tolist() == [False, True, False, False]


@pytest.mark.parametrize("device,engine", engines())
def test_early_stopping_on_validation_accuracy_keeps_its_best_epoch(experiment, device, engine):
    """monitor: accuracy stops `patience` epochs after the best validation accuracy and
    keeps that epoch's weights, where the loss would have kept another (on a probe whose
    validation loss turns up before its accuracy stops rising)."""
    spec = experiment.feature_spec("digits", "pixels", "original")
    feats = feature_store.read(experiment.feature_store("digits", "pixels", "original"), spec)
    labels, split, n_classes = labels_and_split(experiment)
    kwargs = {"device": device, "engine": engine, "runs": 0}
    config = stacking.ProbeConfig(hidden=8, lr=0.1, patience=6, max_epochs=200)
    watched = {}
    for monitor in ("loss", "accuracy"):
        (head,), _ = fitting.train(
            feats, labels, split, n_classes, replace(config, monitor=monitor), **kwargs
        )
        watched[monitor] = head
    head = watched["accuracy"]
    assert head.epochs == head.best_epoch + 6 < 200
    assert head.best_epoch != watched["loss"].best_epoch
    assert head.best_val_accuracy >= watched["loss"].best_val_accuracy
    # the kept weights are the best epoch's: training only that long gives the same head
    short = replace(config, monitor="accuracy", patience=10_000, max_epochs=head.best_epoch)
    (best,), _ = fitting.train(feats, labels, split, n_classes, short, **kwargs)
    np.testing.assert_allclose(head.test_proba, best.test_proba, rtol=1e-5, atol=1e-7)
    assert head.best_val_accuracy == best.best_val_accuracy


def test_non_finite_features_fail_naming_the_layer(experiment, tmp_path):
    source = experiment.feature_store("digits", "effnet", "original")
    broken = tmp_path / "broken.zarr"
    shutil.copytree(source, broken)
    array = zarr.open_array(broken / "layers" / "blocks.1", mode="r+")
    values = array[:]
    values[17, 3] = np.nan
    values[40, 0] = np.inf
    array[:] = values
    # a store written that way (its manifest matches), not one damaged afterwards
    zarr.open_group(broken, mode="r+").attrs["manifest"] = store.manifest(str(broken))
    with pytest.raises(FeatureError, match=r"layer 'blocks.1' has 2 non-finite values .* image 17"):
        train_job(experiment, backbone="effnet", feature_path=str(broken))


def test_a_split_without_validation_images_is_refused_with_the_sizes():
    labels = np.repeat(np.arange(3), 10)
    split = np.where(np.arange(30) % 5 == 0, splits.TEST, splits.TRAIN)
    with pytest.raises(
        SplitError, match=r"the val part of the split is empty \(train=24, val=0, test=6\)"
    ):
        fitting.train(
            {"l": np.ones((30, 2), np.float32)}, labels, split, 3, stacking.ProbeConfig(), runs=0
        )


def test_runs_with_their_own_splits_train_together_as_they_would_alone(experiment):
    """split.resample: each run of a vectorised job has its own split and its own
    standardisation; its heads equal those of a job that trains that run alone."""
    resampled = {"val": 0.15, "test": 0.2, "seed": 0, "resample": True}

    def job(runs):
        return training.train_store(
            feature_path=experiment.feature_store("digits", "effnet", "original"),
            data_path=experiment.data_store("digits"),
            feature_spec=experiment.feature_spec("digits", "effnet", "original"),
            data_spec=experiment.data_spec("digits"),
            probe_spec=experiment.probe_spec("mlp"),
            split_spec=resampled,
            runs=runs,
            device="cpu",
        )

    together, predictions, heads_together = job([0, 1])
    assert not np.array_equal(predictions["image"][0], predictions["image"][1])
    for run in (0, 1):
        alone, own, heads_alone = job(run)
        assert np.array_equal(own["image"][0], predictions["image"][run])
        for a, b in zip(alone, [r for r in together if r["run"] == run], strict=True):
            assert (a["layer"], a["best_epoch"], a["epochs"]) == (
                b["layer"],
                b["best_epoch"],
                b["epochs"],
            )
            for metric in ("accuracy", "nll", "ece", "best_val_loss"):
                assert a[metric] == pytest.approx(b[metric], rel=1e-5), (run, a["layer"])
        # the kept heads carry their own run's standardisation and weights
        for a, b in zip(heads_alone, [h for h in heads_together if h.run == run], strict=True):
            assert np.array_equal(a.mean, b.mean) and np.array_equal(a.std, b.std)
            for wa, wb in zip(a.weights, b.weights, strict=True):
                np.testing.assert_allclose(wa, wb, rtol=1e-4, atol=1e-5)
    assert not np.array_equal(heads_together[0].mean, heads_together[2].mean)  # runs 0, 1
    # the predictions file holds what the rows were computed from
    row = together[0]
    correct = predictions["predicted"][0, 0] == predictions["label"][0]
    assert row["run"] == 0 and row["layer"] == "stem"
    assert correct.mean() == pytest.approx(row["accuracy"])


def test_too_few_images_for_the_split_are_refused_before_extraction():
    labels = np.repeat(np.arange(5), 2)  # 10 images, 5 classes
    expected = r"cannot split 10 images of 5 classes .* that gives train=6, val=2, test=2"
    with pytest.raises(SplitError, match=expected):
        splits.stratified_split(labels, 0.15, 0.2, 0, "tiny")


def test_store_module_reads_the_features_it_checked(experiment):
    # feature_store.read refuses a store made for another spec (the same check as every reader)
    other = experiment.feature_spec("digits", "pixels", "original") | {"format_version": 99}
    with pytest.raises(store.StoreError, match="built for another config"):
        feature_store.read(experiment.feature_store("digits", "pixels", "original"), other)


def test_adamw_matches_torch_step_for_step():
    import torch

    gen = torch.Generator().manual_seed(0)
    ours = [
        torch.randn(5, 3, generator=gen).requires_grad_(),
        torch.randn(3, generator=gen).requires_grad_(),
    ]
    theirs = [p.detach().clone().requires_grad_() for p in ours]
    mine = optimiser.AdamW(ours, lr=0.01, weight_decay=0.1)
    reference = torch.optim.AdamW(theirs, lr=0.01, weight_decay=0.1)
    x = torch.randn(8, 5, generator=gen)
    for step in range(25):
        for params in (ours, theirs):
            for p in params:
                p.grad = None
            loss = (torch.tanh(x @ params[0] + params[1]) ** 2).sum()
            if step >= 10:  # from step 10 on, only the first tensor gets a gradient
                loss = (x @ params[0]).square().sum()
            loss.backward()
        mine.step([p.grad for p in ours])
        reference.step()
        for a, b in zip(ours, theirs, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_device_adamw_matches_torch_step_for_step(device):
    """The static engine's optimizer: every tensor steps every step, as there."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no GPU here: benchmarks/gpu.py runs this test on one")
    gen = torch.Generator().manual_seed(0)
    ours = [torch.randn(5, 3, generator=gen), torch.randn(3, generator=gen)]
    ours = [p.to(device).requires_grad_() for p in ours]
    theirs = [p.detach().clone().requires_grad_() for p in ours]
    mine = optimiser.DeviceAdamW(ours, lr=0.01, weight_decay=0.1, max_steps=25)
    reference = torch.optim.AdamW(theirs, lr=0.01, weight_decay=0.1)
    x = torch.randn(8, 5, generator=gen).to(device)
    for _ in range(25):
        loss = (torch.tanh(x @ ours[0] + ours[1]) ** 2).sum()
        mine.step(list(torch.autograd.grad(loss, ours)))
        reference.zero_grad()
        (torch.tanh(x @ theirs[0] + theirs[1]) ** 2).sum().backward()
        reference.step()
        for a, b in zip(ours, theirs, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    assert int(mine.step_count) == 25


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("hidden", [0, 8])
def test_head_gradients_are_autograds_bit_for_bit(hidden, device):
    """The trainer's written-out backward pass against autograd on the same loss: two
    stacks of different widths, minibatch rows weighted 1/rows, a stopped head's 0. Equal
    up to float32 rounding: the same kernels, but a matmul over another shape (one
    buffer for both stacks) may take another BLAS path, and which one depends on the CPU
    (issue 30: bit for bit on one 2-core machine, not on another). A wrong gradient (a
    missing factor, a wrong ReLU mask, a stopped head's rows counted) is off by far more
    than the tolerance; the test checks that too."""
    import torch
    import torch.nn.functional as F

    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no GPU here: benchmarks/gpu.py runs this test on one")
    gen = torch.Generator().manual_seed(0)
    n_classes, rows = 5, 13
    stacks = []
    for heads, dim in ((6, 24), (4, 40)):
        params = stacking.init_head(dim, n_classes, hidden, seed=heads)
        params = [p.unsqueeze(0).repeat(heads, *[1] * p.dim()) for p in params]
        params = [(p if p.dim() == 3 else p.unsqueeze(1)).to(device) for p in params]
        x = torch.randn(heads, rows, dim, generator=gen).to(device) * 3
        stacks.append(([p.requires_grad_() for p in params], x))
    labels = torch.randint(0, n_classes, (10 * rows,), generator=gen).to(device)
    live = torch.ones(10, device=device)
    live[[1, 7]] = 0.0
    weight = (live / rows).repeat_interleave(rows)
    logits = torch.cat([stacking.head_logits(params, x) for params, x in stacks])
    loss = (F.cross_entropy(logits.flatten(0, 1), labels, reduction="none") * weight).sum()
    expected = torch.autograd.grad(loss, [p for params, _ in stacks for p in params])
    ours = stacking.head_gradients(stacks, labels, weight)
    assert len(ours) == len(expected) == 2 * (4 if hidden else 2)
    for a, b in zip(ours, expected, strict=True):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert not ours[0][1].any() and ours[0][0].any()  # the stopped head's gradient is 0
    # the tolerance catches a wrong gradient: the stopped heads' rows counted after all
    wrong = stacking.head_gradients(stacks, labels, torch.full_like(weight, 1.0 / rows))
    assert not torch.allclose(wrong[0], expected[0], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("device,engine", engines()[1:])
@pytest.mark.parametrize(
    "layout",
    [{"per_run_values": True}, {"max_padding": float("inf")}],
    ids=["per-run-values", "one-stack"],
)
def test_memory_layouts_change_no_number(experiment, device, engine, layout):
    """Each run's standardised copy of the features, or every layer in one zero-padded
    stack: the same heads as the eager engine's (bit for bit on the CPU)."""
    spec = experiment.feature_spec("digits", "effnet", "original")
    feats = feature_store.read(experiment.feature_store("digits", "effnet", "original"), spec)
    labels, _, n_classes = labels_and_split(experiment)
    split_of = splits.run_splits(labels, {**experiment.split, "resample": True}, [0, 1], "d")
    config = stacking.ProbeConfig(hidden=8, max_epochs=30, patience=3)
    reference, _ = fitting.train(feats, labels, split_of, n_classes, config, [0, 1])
    heads, _ = fitting.train(
        feats, labels, split_of, n_classes, config, [0, 1], device, engine=engine, **layout
    )
    exact = device == "cpu"
    for a, b in zip(reference, heads, strict=True):
        assert (a.run, a.layer, a.best_epoch, a.epochs) == (b.run, b.layer, b.best_epoch, b.epochs)
        if exact:
            assert np.array_equal(a.test_proba, b.test_proba)
        else:
            np.testing.assert_allclose(a.test_proba, b.test_proba, rtol=1e-4, atol=1e-5)


def test_on_cuda_an_epoch_syncs_the_host_once():
    """The static engine's promise: nothing inside an epoch waits for the GPU. torch's
    sync debug mode warns at every synchronising call; six more epochs may add at most
    six (the per-epoch `has every head stopped?`)."""
    import warnings

    import torch

    if not torch.cuda.is_available():
        pytest.skip("no GPU here: benchmarks/gpu.py runs this test on one")
    rng = np.random.default_rng(0)
    labels = np.arange(600) % 4
    feats = {"a": rng.normal(size=(600, 24)).astype(np.float32) + labels[:, None]}
    split = splits.stratified_split(labels, 0.15, 0.2, 0, "x")

    def syncs(epochs: int) -> int:
        config = stacking.ProbeConfig(hidden=8, max_epochs=epochs, patience=1000, batch_size=64)
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                fitting.train(feats, labels, split, 4, config, runs=[0, 1], device="cuda")
        finally:
            torch.cuda.set_sync_debug_mode(0)
        return sum("synchroniz" in str(w.message) for w in caught)

    few, more = syncs(3), syncs(9)
    assert more - few <= 6, (few, more)


def test_an_unknown_engine_is_refused():
    with pytest.raises(ValueError, match="engine 'fast'"):
        fitting.train(
            {"l": np.zeros((9, 2), np.float32)},
            np.arange(9) % 3,
            np.arange(9) % 3,
            3,
            stacking.ProbeConfig(),
            0,
            engine="fast",
        )


def test_a_train_job_imports_neither_sklearn_pandas_nor_dynamo():
    """Each of these costs 0.5-1.7 s per job (benchmarks/training.py); a train job runs
    hundreds of times, so its imports (its split included) are kept to torch, numpy and
    zarr."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from visual_ablation.data import splits\n"
        "from visual_ablation.probes import fitting, stacking, training, metrics\n"
        "labels = np.repeat(np.arange(3), 20)\n"
        "split = splits.run_splits(labels, {'val': .15, 'test': .2, 'seed': 0, "
        "'resample': True}, [0], 'x')[0]\n"
        "feats = {'l': np.random.default_rng(0).normal(size=(60, 4)).astype('float32')}\n"
        "heads, _ = fitting.train(feats, labels, split, 3, stacking.ProbeConfig(max_epochs=3), 0)\n"
        "metrics.classification_metrics(labels[split == 2], heads[0].test_proba)\n"
        "print(sorted(m for m in ('sklearn', 'pandas', 'torch._dynamo', 'scipy') "
        "if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_stack_groups_bound_the_padding():
    dims = {
        "stem": 32,
        "b1": 24,
        "b3": 40,
        "b5": 80,
        "b8": 112,
        "b11": 192,
        "b15": 320,
        "head": 1280,
    }
    groups = stacking.stack_groups(dims)
    assert groups == [["b1", "stem", "b3"], ["b5", "b8"], ["b11", "b15"], ["head"]]
    for group in groups:
        assert max(dims[g] for g in group) <= 2 * min(dims[g] for g in group)
    assert stacking.stack_groups(dims, max_padding=1.0) == [
        [name] for name in sorted(dims, key=dims.get)
    ]


@pytest.mark.parametrize("device,engine", engines())
def test_validation_and_test_rows_in_small_chunks_give_the_same_heads(monkeypatch, device, engine):
    from sklearn.datasets import load_digits

    digits = load_digits()
    x, labels = digits.data.astype(np.float32), digits.target
    split = np.random.default_rng(0).choice(3, size=len(labels), p=[0.65, 0.15, 0.2])
    feats = {"all": x, "half": x[:, :32].copy()}
    config = stacking.ProbeConfig(hidden=4, max_epochs=8, patience=2)
    kwargs = {"device": device, "engine": engine}
    whole, _ = fitting.train(feats, labels, split, 10, config, runs=[0, 1], **kwargs)
    monkeypatch.setattr(stacking.HeadStack, "CHUNK_VALUES", 64 * 5)  # 1-2 rows per chunk
    chunked, _ = fitting.train(feats, labels, split, 10, config, runs=[0, 1], **kwargs)
    for a, b in zip(whole, chunked, strict=True):
        assert (a.run, a.layer, a.best_epoch, a.epochs) == (b.run, b.layer, b.best_epoch, b.epochs)
        assert a.best_val_loss == pytest.approx(b.best_val_loss, rel=1e-6)
        np.testing.assert_allclose(a.test_proba, b.test_proba, rtol=1e-6, atol=1e-9)
