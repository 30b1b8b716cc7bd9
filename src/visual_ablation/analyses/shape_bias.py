"""Shape bias per layer on cue-conflict images (the measure of Geirhos et al. 2019,
"ImageNet-trained CNNs are biased towards texture"): of the test decisions that follow
either the shape or the conflicting cue, the fraction that follow the shape. Computed from
the per-image predictions of the probes of the dataset's own labels (`class`: the shape),
within each representation and transferred from the reference, and the cue's class of each
image (the data store's `cue` factor). The interval is a bootstrap over test images
(Poisson weights) and runs (inference.bootstrap_weights), as the other image-level
intervals.

What it is: which of two cues a probe trained where both signal the class goes by, the
redundant-features preference of Hermann & Lampinen (2020), not the network's own bias
(Geirhos measured that with the network's own head). So each row carries its context:
- the share of decisions that follow either cue, against a guesser's 2/K (a probe that
  picks one of K classes at random follows one of the two that often): a layer whose
  share's interval reaches 2/K gets no shape bias (NaN, with the reason in `note`), since
  its ratio would be 0.5 by construction;
- how well the shape and the cue can each be decoded on the conflict images, where they
  are drawn apart (the `shape` and `cue` targets' accuracy, from summary.csv), when the
  dataset lists those targets: a layer that holds both but follows one is a preference,
  one that holds only one has no choice.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from visual_ablation.analyses import inference
from visual_ablation.data import data_store
from visual_ablation.data.stimuli import categories_of
from visual_ablation.layout import parse_run_path
from visual_ablation.plumbing import store
from visual_ablation.probes import run_files

log = logging.getLogger(__name__)

COLUMNS = [
    "dataset",
    "backbone",
    "representation",
    "train_representation",
    "transfer",
    "reference",
    "layer",
    "probe",
    "n_runs",
    "n_test_images",
    "shape_fraction",
    "cue_fraction",
    "either_fraction",
    "either_ci_low",
    "either_ci_high",
    "guesser_either",
    "shape_bias",
    "shape_bias_ci_low",
    "shape_bias_ci_high",
    "shape_decodability",
    "shape_decodability_ci_low",
    "shape_decodability_ci_high",
    "cue_decodability",
    "cue_decodability_ci_low",
    "cue_decodability_ci_high",
    "note",
]
# the targets whose accuracy on the conflict images is each cue's decodability
DECODED = {"shape": "shape", "cue": "cue"}


def _replicates(
    shape: np.ndarray, cue: np.ndarray, weights: tuple[np.ndarray, np.ndarray] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bootstrap replicates of the decisions [runs, n] that follow the shape, the cue, and
    all decisions (weighted counts pooled over runs)."""
    runs, n = shape.shape
    image_weights, run_weights = weights or inference.bootstrap_weights(n, runs)
    s = (run_weights * (image_weights @ shape.T.astype(np.float64))).sum(1)
    c = (run_weights * (image_weights @ cue.T.astype(np.float64))).sum(1)
    total = (run_weights * image_weights.sum(1, keepdims=True)).sum(1)
    return s, c, total


def shape_bias(
    shape: np.ndarray, cue: np.ndarray, weights: tuple[np.ndarray, np.ndarray] | None = None
) -> tuple[float, float, float]:
    """Shape bias of decisions [runs, n] (`shape`: the prediction is the shape's class,
    `cue`: the cue's), pooled over runs, and its 95% bootstrap interval (`weights`:
    `inference.bootstrap_weights` for n images and the runs). NaN when no decision follows
    either."""
    s, c, _ = _replicates(shape, cue, weights)
    with np.errstate(invalid="ignore", divide="ignore"):
        replicates = s / (s + c)
    total = shape.sum() + cue.sum()
    value = float(shape.sum() / total) if total else float("nan")
    low, high = np.nanpercentile(replicates, [2.5, 97.5]) if total else (np.nan, np.nan)
    return value, float(low), float(high)


def either_share(
    shape: np.ndarray, cue: np.ndarray, weights: tuple[np.ndarray, np.ndarray] | None = None
) -> tuple[float, float, float]:
    """The share of decisions [runs, n] that follow the shape or the cue (one image's two
    classes differ), pooled over runs, with its 95% bootstrap interval."""
    s, c, total = _replicates(shape, cue, weights)
    low, high = np.percentile((s + c) / total, [2.5, 97.5])
    return float((shape.sum() + cue.sum()) / shape.size), float(low), float(high)


def decisions(
    shape: np.ndarray,
    cue: np.ndarray,
    guesser: float,
    weights: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, float | str]:
    """One layer's decisions [runs, n] measured: the share that follow either cue and the
    shape bias, each with its interval; no shape bias (NaN, and why in `note`) where the
    share's interval reaches the `guesser`'s 2/K."""
    value, low, high = shape_bias(shape, cue, weights)
    either, either_low, either_high = either_share(shape, cue, weights)
    note = ""
    if either_low <= guesser:
        value = low = high = float("nan")
        note = (
            f"decisions follow the shape or the cue no more often than a guesser's "
            f"{guesser:.3g} (2/K) within the interval: no shape bias"
        )
    return {
        "either_fraction": either,
        "either_ci_low": either_low,
        "either_ci_high": either_high,
        "guesser_either": guesser,
        "shape_bias": value,
        "shape_bias_ci_low": low,
        "shape_bias_ci_high": high,
        "note": note,
    }


def decodabilities(summary: pd.DataFrame | None) -> dict[tuple, dict[str, float]]:
    """(dataset, backbone, representation, layer, probe) -> the `shape` and `cue` targets'
    mean accuracy and 95% interval over runs, from summary.csv's within rows."""
    if summary is None:
        return {}
    rows = summary[
        summary["target"].isin(list(DECODED))
        & (summary["representation"] == summary["train_representation"])
    ]
    out: dict[tuple, dict[str, float]] = {}
    for row in rows.itertuples(index=False):
        key = (row.dataset, row.backbone, row.representation, str(row.layer), row.probe)
        name = DECODED[row.target]
        out.setdefault(key, {}).update(
            {
                f"{name}_decodability": float(row.accuracy_mean),
                f"{name}_decodability_ci_low": float(row.accuracy_ci_low),
                f"{name}_decodability_ci_high": float(row.accuracy_ci_high),
            }
        )
    return out


def table(
    prediction_paths: list[str],
    data_paths: dict[str, str],
    data_specs: dict[str, dict],
    reference: str | None,
    summary: pd.DataFrame | None = None,
    decision_paths: list[str] = (),
) -> pd.DataFrame:
    """One row per (dataset, backbone, tested on, trained on, layer, probe) of the
    predictions files given, then one per network decisions file (`decision_rows`: layer
    `decision`, probe `network`) (target `class`, under runs/ or transfer/ as report/tables.py reads
    them), with each dataset's cue labels from its data store, and beside it the shape and
    cue decodabilities of the representation tested on (from `summary`, NaN where the
    dataset lists no `shape` or `cue` target)."""
    decoded = decodabilities(summary)
    cues, classes = {}, {}
    for dataset, path in data_paths.items():
        with store.reading(path, data_specs[dataset]) as group:
            cues[dataset], names = data_store.read_target(group, "cue", f"data store {path}")
            classes[dataset] = len(names)
    load = run_files.prediction_loader(prediction_paths, reference)
    rows = []
    for key in dict.fromkeys(parse_run_path(path, reference)[0] for path in prediction_paths):
        dataset, backbone, representation, trained_on, transfer, _, probe = key
        p = load(*key)
        image, label = p["image"], p["label"]
        cue = cues[dataset][image]  # [runs, n]
        if (cue == label).any():
            raise ValueError(
                f"{'/'.join(key)}: test images whose cue agrees with the shape; the data "
                f"store of {dataset} is not a cue-conflict set (rerun its train jobs)"
            )
        weights = inference.bootstrap_weights(image.shape[1], image.shape[0])
        guesser = 2.0 / classes[dataset]
        for j, layer in enumerate(p["layers"]):
            predicted = p["predicted"][:, j]
            follows_shape, follows_cue = predicted == label, predicted == cue
            measured = decisions(follows_shape, follows_cue, guesser, weights)
            context = decoded.get((dataset, backbone, representation, str(layer), probe), {})
            rows.append(
                {
                    "dataset": dataset,
                    "backbone": backbone,
                    "representation": representation,
                    "train_representation": trained_on,
                    "transfer": transfer,
                    "reference": reference,
                    "layer": str(layer),
                    "probe": probe,
                    "n_runs": int(image.shape[0]),
                    "n_test_images": int(len(np.unique(image))),
                    "shape_fraction": float(follows_shape.mean()),
                    "cue_fraction": float(follows_cue.mean()),
                    **measured,
                    **context,
                }
            )
    rows += decision_rows(list(decision_paths), reference)
    out = pd.DataFrame(rows, columns=COLUMNS)
    log.info("shape bias of %d layers from %d predictions files", len(out), len(prediction_paths))
    return out


# --- The network's own decision (Geirhos et al. 2019): its 16-way answer on each image.


def decision_shape_bias(
    shape: np.ndarray, texture: np.ndarray, decision: np.ndarray
) -> dict[str, float | int]:
    """Geirhos et al.'s shape bias of decisions on cue-conflict images ([n] category
    labels of the image's shape, its texture, and the decision; any labels that compare):
    over the images whose shape and texture differ, the shape decisions over shape plus
    texture decisions; shape-match and texture-match over all those images."""
    shape, texture, decision = (np.asarray(a) for a in (shape, texture, decision))
    conflict = shape != texture
    shape_hits = int((decision[conflict] == shape[conflict]).sum())
    texture_hits = int((decision[conflict] == texture[conflict]).sum())
    trials = int(conflict.sum())
    either = shape_hits + texture_hits
    return {
        "conflict_trials": trials,
        "excluded": int((~conflict).sum()),
        "shape_decisions": shape_hits,
        "texture_decisions": texture_hits,
        "shape_bias": shape_hits / either if either else float("nan"),
        "shape_match": shape_hits / trials if trials else float("nan"),
        "texture_match": texture_hits / trials if trials else float("nan"),
    }


def score_decisions(table: pd.DataFrame) -> dict[str, float | int]:
    """`decision_shape_bias` of a decisions table in texture-vs-shape's raw-data format
    (columns `subj`, `object_response`, `imagename`; one row per trial), every subject
    pooled."""
    missing = {"subj", "object_response", "imagename"} - set(table.columns)
    if missing:
        raise ValueError(
            f"a decisions table needs the columns subj, object_response and imagename "
            f"(texture-vs-shape's raw-data format); missing: {', '.join(sorted(missing))}"
        )
    shape, texture = zip(*(categories_of(n) for n in table["imagename"]), strict=True)
    return decision_shape_bias(
        np.array(shape), np.array(texture), table["object_response"].to_numpy()
    )


HUMAN_SHAPE_BIAS = 0.959  # Geirhos et al. 2019: 10 subjects pooled (`test_shape_bias.py`)
NETWORK = "network"  # the `probe` of a network's own decision rows
DECISION_LAYER = "decision"


def network_decisions(
    data_path: str,
    data_spec: dict,
    feature_spec: dict,
    device: str = "auto",
    batch_size: int = 64,
    threads: int = 1,
) -> dict[str, np.ndarray]:
    """A backbone's own 16-way decision on each image of a Geirhos cue-conflict data store
    (the representation of `feature_spec` applied first): its softmax over ImageNet-1k's
    classes, each category's mean (imagenet16). A backbone whose output is not 1000 classes
    gets no decisions: `reason` says why."""
    import torch

    from visual_ablation.analyses import imagenet16
    from visual_ablation.features.extraction import Pipeline, to_tensor
    from visual_ablation.plumbing import devices

    devices.set_cpu_threads(threads)
    torch_device = devices.choose_device(device)
    names = {
        "dataset": data_spec["name"],
        "backbone": feature_spec["backbone"]["name"],
        "representation": feature_spec["representation"]["name"],
    }
    with store.reading(data_path, data_spec) as group:
        classes = data_store.class_names(group)
        if tuple(classes) != imagenet16.CATEGORIES:
            raise ValueError(
                f"data store {data_path}: its classes are not Geirhos et al.'s 16 categories"
            )
        shape = data_store.class_labels(group)
        texture, _ = data_store.read_target(group, "texture", f"data store {data_path}")
        images = data_store.images(group)
        pipeline = Pipeline(feature_spec, torch_device)
        parts = []
        for start in range(0, len(shape), batch_size):
            block = images[start : start + batch_size]
            x = pipeline.transform(
                to_tensor(block, torch_device), torch.arange(start, start + len(block))
            )
            with pipeline.autocast():
                out = pipeline.extractor.forward_bare(x)
            if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[1] != 1000:
                shown = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                reason = (
                    f"{names['backbone']}: its output is {shown}, not ImageNet-1k's 1000 "
                    "classes, so it has no decision of its own among Geirhos' 16 categories"
                )
                log.info(reason)
                return {**names, "reason": reason}
            probabilities = torch.softmax(out.float(), dim=1).cpu().numpy()
            parts.append(imagenet16.category_probabilities(probabilities))
    category = np.concatenate(parts).astype(np.float32)
    return {
        **names,
        "shape": shape,
        "texture": texture,
        "category_probabilities": category,
        "decision": category.argmax(axis=1),
    }


def decision_rows(paths: list[str], reference: str | None) -> list[dict]:
    """shape_bias.csv's rows of the networks' own decisions (`network_decisions` files):
    per (dataset, backbone, representation), over its conflict images, the shape bias with
    its 95% bootstrap interval over images, shape-match (`shape_fraction`) and
    texture-match (`cue_fraction`); none for a backbone without an ImageNet-1k head."""
    rows = []
    for path in paths:
        with np.load(path) as values:
            found = {k: values[k] for k in values.files}
        if "reason" in found:
            log.info("no decision row: %s", found["reason"])
            continue
        shape, texture, decision = found["shape"], found["texture"], found["decision"]
        conflict = shape != texture
        follows_shape = (decision == shape)[conflict][None]
        follows_texture = (decision == texture)[conflict][None]
        weights = inference.bootstrap_weights(int(conflict.sum()), 1)
        measured = decisions(follows_shape, follows_texture, 2.0 / 16, weights)
        representation = str(found["representation"])
        rows.append(
            {
                "dataset": str(found["dataset"]),
                "backbone": str(found["backbone"]),
                "representation": representation,
                "train_representation": representation,
                "transfer": "none",
                "reference": reference,
                "layer": DECISION_LAYER,
                "probe": NETWORK,
                "n_runs": 1,
                "n_test_images": int(conflict.sum()),
                "shape_fraction": float(follows_shape.mean()),
                "cue_fraction": float(follows_texture.mean()),
                **measured,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    """python -m visual_ablation.analyses.shape_bias DECISIONS.csv [...]: each table's
    shape bias, shape-match, texture-match and conflict trials."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    parser.add_argument("tables", nargs="+", help="csv files in texture-vs-shape's raw-data format")
    args = parser.parse_args(argv)
    for path in args.tables:
        scored = score_decisions(pd.read_csv(path))
        print(
            f"{path}: shape bias {scored['shape_bias']:.4f}, shape-match "
            f"{scored['shape_match']:.4f}, texture-match {scored['texture_match']:.4f}; "
            f"{scored['conflict_trials']} conflict trials ({scored['shape_decisions']} shape, "
            f"{scored['texture_decisions']} texture decisions; {scored['excluded']} without a "
            "conflict left out)"
        )


if __name__ == "__main__":
    main()
