"""The untrained control, layer by layer: EfficientNet-Lite0 with seeded random weights
(the default config's `untrained` backbone) on the default `shapes` original images,
with BatchNorm as PyTorch initialises it (running mean 0, variance 1) and with its
statistics re-estimated on the dataset (features/batchnorm.py, what extraction does).
Per layer: the mean |activation| (float32), the distinct rows of the float16 store, the
share of nonzero stored values below float16's normal range, and the linear probe's
test accuracy for class, colour and position (the project's probe, its splits, 3 runs;
majority rate beside). The store check refuses the layers it marks.

    .venv/bin/python benchmarks/untrained.py [--n 1000]
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np
import torch
import zarr
from common import default_config

from visual_ablation.data import data_store, preparation, splits
from visual_ablation.features import batchnorm
from visual_ablation.features.extraction import StoreCheck, to_tensor
from visual_ablation.features.extractor import LayerExtractor
from visual_ablation.plan.config import resolve
from visual_ablation.probes import fitting, stacking

TARGETS = ("class", "colour", "position")


def features_of(extractor, images, batch: int = 200) -> dict[str, np.ndarray]:
    out: dict[str, list[np.ndarray]] = {}
    for begin in range(0, len(images), batch):
        x = to_tensor(images[begin : begin + batch], torch.device("cpu"))
        for layer, v in extractor(x).items():
            out.setdefault(layer, []).append(v.float().numpy())
    return {layer: np.concatenate(parts) for layer, parts in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(2)
    config = default_config()
    with tempfile.TemporaryDirectory() as tmp:
        config["results_dir"] = config["cache_dir"] = tmp
        config["datasets"]["shapes"]["n"] = args.n
        exp = resolve(config)
        preparation.prepare(exp.data_spec("shapes"), exp.data_store("shapes"), progress=False)
        data = zarr.open_group(exp.data_store("shapes"), mode="r")
        images = data["images"][:]
        spec = exp.feature_spec("shapes", "untrained", "original")["backbone"]
        labels = {t: data_store.read_target(data, t, "shapes")[0] for t in TARGETS}
        split_of = splits.run_splits(labels["class"], exp.split, list(range(exp.runs)), "shapes")
        probe = stacking.ProbeConfig.from_spec(exp.probe_spec("linear"))
        majority = {t: np.bincount(y).max() / len(y) for t, y in labels.items()}
        print(f"untrained EfficientNet-Lite0, shapes original, {args.n} images, {exp.runs} runs")
        print("majority rate: " + ", ".join(f"{t} {m:.3f}" for t, m in majority.items()))
        for calibrated in (False, True):
            extractor = LayerExtractor(spec, "cpu")
            if calibrated:
                batchnorm.recalibrate(
                    extractor, data, torch.device("cpu"), spec["batchnorm_statistics"]
                )
            feats = features_of(extractor, images)
            title = "re-estimated on the dataset" if calibrated else "as initialised"
            print(f"\nBatchNorm statistics {title}")
            print(
                f"{'layer':10s}{'mean |a|':>10s}{'rows':>6s}{'subnormal':>10s}  refused  "
                + "  ".join(f"{t:>8s}" for t in TARGETS)
            )
            for layer, x in feats.items():
                stored = x.astype(np.float16)
                check = StoreCheck()
                check.add(layer, stored)
                rows = len(np.unique(stored, axis=0))
                share = check.subnormal[layer] / max(1, check.nonzero[layer])
                accuracy = []
                for t in TARGETS if rows > 1 else ():  # a constant store: nothing to fit
                    n_classes = int(labels[t].max()) + 1
                    try:
                        heads, _ = fitting.train(
                            {layer: stored.astype(np.float32)},
                            labels[t],
                            split_of,
                            n_classes,
                            probe,
                            list(split_of),
                        )
                    except torch.linalg.LinAlgError:  # next to no distinct values
                        accuracy.append(np.nan)
                        continue
                    accuracy.append(
                        np.mean(
                            [
                                (h.test_proba.argmax(1) == labels[t][h.test_rows]).mean()
                                for h in heads
                            ]
                        )
                    )
                print(
                    f"{layer:10s}{np.abs(x).mean():10.2g}{rows:6d}{share:10.1%}  "
                    f"{'yes' if check.refusals() else 'no':7s}  "
                    + "  ".join(f"{a:8.3f}" for a in accuracy)
                )
        # a trained network's stores pass the same check
        extractor = LayerExtractor(
            exp.feature_spec("shapes", "effnet", "original")["backbone"], "cpu"
        )
        check = StoreCheck()
        for layer, x in features_of(extractor, images).items():
            check.add(layer, x.astype(np.float16))
        print(
            "\npretrained effnet, subnormal share: "
            + ", ".join(
                f"{layer} {check.subnormal[layer] / check.nonzero[layer]:.2%}"
                for layer in check.first
            )
            + f"; refused: {check.refusals() or 'none'}"
        )


if __name__ == "__main__":
    main()
