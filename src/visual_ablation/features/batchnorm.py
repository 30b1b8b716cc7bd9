"""An untrained network that is alive: BatchNorm statistics re-estimated on the dataset.

A randomly initialised network keeps BatchNorm's initial running statistics (mean 0,
variance 1). In eval mode nothing then renormalises its activations, and with PyTorch's
default init their scale falls about tenfold per stage of EfficientNet-Lite0 (0.12 at
`stem`, 1e-5 at `blocks.5`, 0 at `head`): its deep layers hold nothing a float16 store
keeps, and a probe on them measures the store, not the network. Re-estimating each
BatchNorm's running mean and variance on the dataset's images (labels unused; the
procedure of torch.optim.swa_utils.update_bn, a cumulative average over batches) gives
the random network the activation scale a trained one has, so that what its layers hold
is measured. Only untrained backbones (`weights: none`) are recalibrated: a trained
network's statistics are part of what it learned.

The images: a seeded sample of the dataset's images outside any test set fixed with the
data (a source's fixed conflict images, a given split's test part), seen as the original
representation, so that every representation of a dataset goes through the same network.
Features are computed once for every run's split, so the sample is not one run's
training split; the statistics use no label.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

# what a feature spec records for a recalibrated backbone (config.backbone_spec)
CALIBRATION = {"images": 1024, "seed": 0, "batch_size": 128}


def calibration_images(data, images: int, seed: int) -> np.ndarray:
    """Sorted indices of at most `images` images of the data store `data` that no fixed
    test set holds, drawn with `seed`."""
    # here, not at the top: every feature job imports this module, few calibrate
    from visual_ablation.data import data_store, splits

    n = data_store.images(data).shape[0]
    allowed = np.ones(n, dtype=bool)
    fixed = data_store.read_fixed_test(data)
    if fixed is not None:
        allowed &= ~fixed.astype(bool)
    given = data_store.read_given_split(data)
    if given is not None:
        allowed &= given != splits.TEST
    pool = np.flatnonzero(allowed)
    if len(pool) > images:
        pool = np.sort(np.random.default_rng(seed).choice(pool, images, replace=False))
    return pool


def recalibrate(extractor, data, device, calibration: dict[str, Any]) -> int:
    """Re-estimate every BatchNorm's running statistics of `extractor.net` on the
    calibration images of the data store `data` (their own cumulative mean and variance,
    each layer seeing the layers before it normalised); the net is left in eval mode.
    Returns the number of images used (0 where the net has no BatchNorm)."""
    import torch
    from torch.nn.modules.batchnorm import _BatchNorm

    from visual_ablation.data import data_store

    net = extractor.net
    layers = [] if net is None else [m for m in net.modules() if isinstance(m, _BatchNorm)]
    if not layers:
        return 0
    chosen = calibration_images(data, calibration["images"], calibration["seed"])
    if len(chosen) < 2:
        raise ValueError(
            f"cannot re-estimate the untrained backbone's BatchNorm statistics on "
            f"{len(chosen)} image(s) outside the fixed test set: use more images"
        )
    images = data_store.images(data).oindex[chosen]
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches: every image counts once
        m.train()  # BatchNorm alone: dropout and drop-connect stay off
    try:
        with torch.no_grad():
            parts = max(1, -(-len(chosen) // int(calibration["batch_size"])))
            for rows in np.array_split(np.arange(len(chosen)), parts):
                x = torch.from_numpy(np.ascontiguousarray(images[rows])).to(device)
                x = x.permute(0, 3, 1, 2).float().div_(255.0)
                extractor.family.run(net, extractor.preprocess(x))
    finally:
        for m, momentum in zip(layers, momenta, strict=True):
            m.momentum = momentum
        net.eval()
    log.info(
        "BatchNorm statistics of %d layers re-estimated on %d images", len(layers), len(chosen)
    )
    return len(chosen)
