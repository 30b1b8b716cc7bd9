"""The 16 entry-level categories of Geirhos et al.'s cue-conflict stimuli and the ImageNet-1k
classes of each (207 classes), as texture-vs-shape's `code/helper/human_categories.py`
(and model-vs-human after it) lists them; a network's 16-way decision is the category with
the highest mean softmax probability over its classes (their
`ImageNetProbabilitiesTo16ClassesMapping` with `np.mean`; ties go to the first category in
alphabetical order, as their loop over the sorted categories does).
"""

from __future__ import annotations

import numpy as np

IMAGENET_CLASSES: dict[str, tuple[int, ...]] = {
    "airplane": (404,),
    "bear": (294, 295, 296, 297),
    "bicycle": (444, 671),
    "bird": (
        *(8, 10, 11, 12, 13, 14, 15, 16, 18, 19, 20, 22, 23, 24),
        *(80, 81, 82, 83, 87, 88, 89, 90, 91, 92, 93, 94, 95, 96, 98, 99, 100),
        *(127, 128, 129, 130, 131, 132, 133, 135, 136, 137, 138, 139, 140, 141, 142),
        *(143, 144, 145),
    ),
    "boat": (472, 554, 625, 814, 914),
    "bottle": (440, 720, 737, 898, 899, 901, 907),
    "car": (436, 511, 817),
    "cat": (281, 282, 283, 284, 285, 286),
    "chair": (423, 559, 765, 857),
    "clock": (409, 530, 892),
    "dog": (
        *range(152, 192),
        *(193, 194, 195, 196, 197, 198, 199, 200, 201, 202, 203),
        *range(205, 227),
        *range(228, 242),
        *range(243, 251),
        *(252, 253, 254, 255, 256, 257, 259, 261, 262, 263, 265, 266, 267, 268),
    ),
    "elephant": (385, 386),
    "keyboard": (508, 878),
    "knife": (499,),
    "oven": (766,),
    "truck": (555, 569, 656, 675, 717, 734, 864, 867),
}
CATEGORIES = tuple(sorted(IMAGENET_CLASSES))


def category_probabilities(probabilities: np.ndarray) -> np.ndarray:
    """[n, 1000] softmax probabilities -> [n, 16]: each category's mean over its classes."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.shape[-1] != 1000:
        raise ValueError(
            f"16-way decisions need ImageNet-1k probabilities (1000 columns), got "
            f"{probabilities.shape[-1]}"
        )
    return np.stack(
        [probabilities[..., list(IMAGENET_CLASSES[c])].mean(axis=-1) for c in CATEGORIES],
        axis=-1,
    )


def decisions(probabilities: np.ndarray) -> np.ndarray:
    """[n, 1000] softmax probabilities -> [n] index into CATEGORIES of each decision."""
    return category_probabilities(probabilities).argmax(axis=-1)  # argmax: the first of ties
